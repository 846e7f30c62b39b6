"""The optimizer step on the device, for every optimizer of cnndsl/train/optim.py.

The optimizer object declares its step kernel (by name: the same in cnndsl/kernels/cpu/optim.py
and cnndsl/kernels/cuda/optim.py), the state arrays it takes and its scalar `coefficients(lr, t)`,
computed once on the host for both backends; the host object's step count advances the same
way; its state arrays (momentum, Adam moments, ...) live on the device (ParamStore.on_device()).
A non-finite loss makes the kernel skip the update on the device (CudaBackend.finish_run then
takes the step count back).
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.backend import STEPPED, loss_values
from cnndsl.backend.cuda.launch import launches
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.kernels.cuda import optim as kernels
from cnndsl.kernels.cuda.common import grid1d


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    dev = rc.store.on_device()
    values, names, _ = loss_values(rc)
    nloss, n = len(names), dev.data.size
    dummy = rc.backend.zeros(1, np.float32)

    def run(rc):
        if rc.comm is not None and rc.comm.size > 1:
            raise CnnError([Diagnostic("error", "data-parallel training is not supported on --device cuda yet",
                                       help="train on one process, or use --device cpu", code="cuda-distributed")])
        opt = rc.optimizer
        kernel = getattr(kernels, opt.kernel, None)
        if kernel is None:
            raise CnnError([Diagnostic("error", f"the cuda backend has no kernel for the {opt.kind} optimizer",
                                       code="no-kernel")])
        t = opt.step_count + 1
        kernel[grid1d(n)](dev.data, dev.grad, *opt.kernel_arrays(dev.optimizer_state(opt), dummy), dev.lr_mult,
                          dev.wd_mult, *opt.coefficients(opt.lr, t), values, nloss, n)
        opt.step_count = t
        rc.cache[STEPPED] = True
    return run
