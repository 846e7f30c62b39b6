"""The optimizer step on the device, for every optimizer of cnndsl/ops/training/optimizers.py.

The node's attributes name the optimizer (its kernel: the same name in cnndsl/kernels/cpu/optim.py
and cnndsl/kernels/cuda/optim.py), its hyperparameters and the per-layer learning-rate factors
(expanded once, when the launch is prepared, into the device's per-element array); the scalar
coefficients are computed on the host by the optimizer's `coefficients(hyper, lr, t)`, shared with the CPU backend, from the
run's learning rate (`rc.lr`). The step count is the runtime's host `OptimizerState`
(`rc.store.optimizer_state`); its arrays (momentum, Adam moments, ...) live on the device
(`DeviceTensors.optimizer_arrays`). A non-finite loss makes the kernel skip the update on the
device (CudaBackend.finish_run then takes the step count back).
"""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.backend import STEPPED, loss_values
from cnndsl.backend.cuda.launch import launch, launches
from cnndsl.backend.optimizer_state import state_for
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.kernels.cuda import optim as kernels
from cnndsl.kernels.cuda.common import grid1d
from cnndsl.ops.training.optimizers import OPTIMIZERS, lr_mult_of


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    attrs = dict(node.attrs)
    d = OPTIMIZERS[attrs["kind"]]
    kernel = getattr(kernels, d.kernel, None)
    if kernel is None:
        raise CnnError([Diagnostic("error", f"the cuda backend has no kernel for the {d.kind} optimizer",
                                   code="no-kernel")])
    dev = rc.store.on_device()
    rc.store.expand_lr_mult(lr_mult_of(node))  # plan time: the node's per-layer factors, per element on the device
    values, names, _ = loss_values(rc)
    nloss, n = len(names), dev.data.size
    dummy = rc.backend.zeros(1, np.float32)
    placeholder = d.coefficients(attrs, 1.0, 1)  # the coefficients' types and count; each step passes its own
    bound = [None, None]  # the optimizer state the prepared launch holds the arrays of, and that launch

    def prepare(state):
        """The step's prepared launch over `state`'s device arrays, its coefficients varying."""
        arrays = d.kernel_arrays(dev.optimizer_arrays(state), dummy)
        first = 4 + len(arrays)
        return launch(kernel, grid1d(n), dev.data, dev.grad, *arrays, dev.lr_mult, dev.wd_mult, *placeholder,
                      values, nloss, n, varying=tuple(range(first, first + len(placeholder))))

    def run(rc):
        if rc.comm is not None and rc.comm.size > 1:
            raise CnnError([Diagnostic("error", "data-parallel training is not supported on --device cuda yet",
                                       help="train on one process, or use --device cpu", code="cuda-distributed")])
        state = state_for(rc.store.optimizer_state, attrs)
        if bound[0] is not state:  # a new state (a resumed run's): its arrays were uploaded anew
            bound[:] = state, prepare(state)
        t = state.step + 1
        bound[1](*d.coefficients(attrs, rc.lr, t))
        state.step = t
        rc.cache[STEPPED] = True
    return run
