"""The optimizer step: runs once every parameter gradient of the step is written.

The node's attributes name the optimizer, its hyperparameters and the per-layer learning-rate
factors (cnndsl/ops/training/optimizers.py; the factors are expanded once into the store's
per-element array, ParamStore.expand_lr_mult); the learning rate is the run's (`rc.lr`); the
step count and state arrays are the runtime's (`rc.store.optimizer_state`). The launcher calls
the optimizer's kernel directly.
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.backend.cpu.launch import launches
from cnndsl.backend.optimizer_state import OptimizerState, state_for
from cnndsl.kernels.cpu import optim as kernels
from cnndsl.ops.training.optimizers import OPTIMIZERS, lr_mult_of

_DUMMY = np.zeros(1, np.float32)  # a state array the configuration does not keep (its kernel never reads it)


_UNSET = object()


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    # plan time (the node's first launch here, or a step node with other factors): the node's
    # per-layer lr_mult becomes the per-element array the kernel reads
    key, lr_mult = node.name + ":lr_mult", node.attrs.get("lr_mult")
    if rc.cache.get(key, _UNSET) is not lr_mult:
        rc.store.expand_lr_mult(lr_mult_of(node))
        rc.cache[key] = lr_mult
    if rc.comm is not None and rc.comm.size > 1:
        average_over_ranks(rc)
    # A non-finite loss must not reach the weights: the trainer reports it and the
    # last good checkpoint stays valid. (After averaging, every rank decides alike.)
    if all(math.isfinite(v) for v in rc.losses.values()):
        apply_step(node.attrs, rc.store.params, state_for(rc.store.optimizer_state, node.attrs), rc.lr)


def apply_step(attrs, params, state: OptimizerState, lr: float) -> None:
    """One update of the flat buffer `params` (a FlatParams) from its gradient, by the optimizer the
    step attributes `attrs` name (kind and hyperparameters), at learning rate `lr`; advances `state`."""
    d = OPTIMIZERS[attrs["kind"]]
    t = state.step + 1
    getattr(kernels, d.kernel)(params.data, params.grad, *d.kernel_arrays(state.arrays, _DUMMY), params.lr_mult,
                               params.wd_mult, *d.coefficients(attrs, lr, t))
    state.step = t


def average_over_ranks(rc) -> None:
    """Gradients and losses of the global batch: each rank's batch-mean values weighted by its
    share of the samples, summed over the ranks in one all-reduce of the flat gradient buffer."""
    grad = rc.store.params.grad
    grad *= np.float32(rc.share)
    rc.comm.allreduce_sum_(grad)
    names = list(rc.losses)
    totals = rc.comm.allreduce_scalars([rc.losses[n] * rc.share for n in names])
    rc.losses.update(zip(names, totals))
