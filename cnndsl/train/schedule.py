"""Learning-rate schedules as functions of a continuous epoch position.

`Schedule.lr_at(e)` gives the learning rate at epoch position `e` (a float:
2.5 is half-way through the third epoch). Kinds:

* constant: `lr`
* step:     `lr * gamma ** floor(e / step_size)` (decays at absolute epochs
            step_size, 2*step_size, ...)
* cosine:   anneals from `lr` at the end of the warm-up to `min_lr` (default 0) at `epochs`:
            `min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (e - warmup) / (epochs - warmup)))`

Each has an optional linear warm-up over the first `warmup` epochs (a float,
0 = none): `lr_at(e) = lr * e / warmup` for `e < warmup` (for constant and
step the result is also multiplied by the step decay, which is 1 there unless
step_size < warmup).

Per-step use: the learning rate of an interval of training is the schedule at
the interval's MIDPOINT, so warm-up never gives a zero first step, cosine
never gives a zero last step, and step decays switch exactly at epoch
boundaries:

    lr = schedule.lr_for_step(epoch, batch, batches_per_epoch)  # per batch
    lr = schedule.lr_for_epoch(epoch)                           # per epoch
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("constant", "step", "cosine")


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    lr: float = 0.01
    epochs: float = 1.0  # length of the run (cosine reaches 0 there)
    warmup: float = 0.0  # epochs of linear warm-up
    step_size: float = 1.0  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # cosine: the rate reached at the end

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {self.lr}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 epochs, got {self.warmup}")
        if self.kind == "step":
            if self.step_size <= 0:
                raise ValueError(f"step_size must be > 0 epochs, got {self.step_size}")
            if not 0 < self.gamma <= 1:
                raise ValueError(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.kind == "cosine" and self.warmup >= self.epochs:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than the run ({self.epochs} epochs)")

    def lr_at(self, epoch: float) -> float:
        """The learning rate at continuous epoch position `epoch` (clamped to [0, epochs])."""
        e = min(max(float(epoch), 0.0), float(self.epochs))
        if self.warmup > 0 and e < self.warmup:
            factor = e / self.warmup
            if self.kind == "step":
                factor *= self._decay(e)
            return self.lr * factor
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self._decay(e)
        span = self.epochs - self.warmup
        t = (e - self.warmup) / span
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _decay(self, e: float) -> float:
        # the epsilon keeps e.g. 0.3 / 0.1 = 2.9999999999999996 on the right side of 3
        return self.gamma ** math.floor(e / self.step_size + 1e-9)

    def lr_for_step(self, epoch: int, batch: int, batches_per_epoch: int) -> float:
        """The learning rate of batch `batch` (0-based) of epoch `epoch` (0-based)."""
        if batches_per_epoch < 1:
            raise ValueError("batches_per_epoch must be >= 1")
        return self.lr_at(epoch + (batch + 0.5) / batches_per_epoch)

    def lr_for_epoch(self, epoch: int) -> float:
        """The learning rate of a whole epoch when it is updated once per epoch."""
        return self.lr_at(epoch + 0.5)


def make_schedule(kind: str = "constant", lr: float = 0.01, epochs: float = 1.0, **kw) -> Schedule:
    return Schedule(kind=kind, lr=lr, epochs=epochs, **kw)
