"""The optimizer step: runs once every parameter gradient of the step is written."""
from __future__ import annotations

import math

import numpy as np

from cnndsl.backend.cpu.launch import launches


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    if rc.comm is not None and rc.comm.size > 1:
        average_over_ranks(rc)
    # A non-finite loss must not reach the weights: the trainer reports it and the
    # last good checkpoint stays valid. (After averaging, every rank decides alike.)
    if all(math.isfinite(v) for v in rc.losses.values()):
        rc.optimizer.step()


def average_over_ranks(rc) -> None:
    """Gradients and losses of the global batch: each rank's batch-mean values weighted by its
    share of the samples, summed over the ranks in one all-reduce of the flat gradient buffer."""
    grad = rc.store.params.grad
    grad *= np.float32(rc.share)
    rc.comm.allreduce_sum_(grad)
    names = list(rc.losses)
    totals = rc.comm.allreduce_scalars([rc.losses[n] * rc.share for n in names])
    rc.losses.update(zip(names, totals))
