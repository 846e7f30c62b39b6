"""The optimizer step on the device: SGD or Adam over the flat parameter buffers.

The scalar coefficients are computed here exactly as cnndsl/train/optim.py computes them
for its CPU kernels, and the host optimizer object's step count advances the same way;
its state arrays (momentum, Adam moments) live on the device (ParamStore.on_device()).
A non-finite loss makes the kernel skip the update on the device (CudaBackend.finish_run
then takes the step count back).
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.backend import STEPPED, loss_values
from cnndsl.backend.cuda.launch import launches
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.kernels.cuda.common import grid1d
from cnndsl.kernels.cuda.optim import adam_step, sgd_step


def _f32(x) -> np.float32:
    return np.float32(x)


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    dev = rc.store.on_device()
    values, names, _ = loss_values(rc)
    nloss, n = len(names), dev.data.size
    sgd, adam = sgd_step[grid1d(n)], adam_step[grid1d(n)]
    no_buffer = rc.backend.zeros(1, np.float32)

    def run(rc):
        if rc.comm is not None and rc.comm.size > 1:
            raise CnnError([Diagnostic("error", "data-parallel training is not supported on --device cuda yet",
                                       help="train on one process, or use --device cpu", code="cuda-distributed")])
        opt = rc.optimizer
        state = dev.optimizer_state(opt)
        if opt.kind == "sgd":
            buf = state["momentum_buffer"] if opt.momentum != 0 else no_buffer
            sgd(dev.data, dev.grad, buf, dev.lr_mult, dev.wd_mult, _f32(opt.lr), _f32(opt.momentum),
                _f32(1.0 - opt.dampening), _f32(opt.weight_decay), bool(opt.nesterov), opt.step_count == 0,
                values, nloss, n)
            opt.step_count += 1
        elif opt.kind == "adam":
            t = opt.step_count + 1
            bc1, bc2 = 1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t
            adam(dev.data, dev.grad, state["exp_avg"], state["exp_avg_sq"], dev.lr_mult, dev.wd_mult,
                 _f32(opt.lr / bc1), _f32(opt.beta2), _f32(1.0 - opt.beta1), _f32(1.0 - opt.beta2),
                 _f32(bc2 ** 0.5), _f32(opt.eps), _f32(opt.weight_decay), bool(abs(_f32(1.0 - opt.beta1)) < 0.5),
                 values, nloss, n)
            opt.step_count = t
        else:
            raise CnnError([Diagnostic("error", f"the cuda backend has no kernel for the {opt.kind} optimizer",
                                       code="no-kernel")])
        rc.cache[STEPPED] = True
    return run
