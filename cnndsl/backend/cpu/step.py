"""The optimizer step: runs once every parameter gradient of the step is written."""
from __future__ import annotations

import math

from cnndsl.backend.cpu.launch import launches


@launches("optimizer_step")
def optimizer_step(rc, node, ins, out):
    # A non-finite loss must not reach the weights: the trainer reports it and the
    # last good checkpoint stays valid.
    if all(math.isfinite(v) for v in rc.losses.values()):
        rc.optimizer.step()
