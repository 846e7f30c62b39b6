"""Learning-rate schedules as functions of a continuous epoch position.

`Schedule.lr_at(e)` gives the learning rate at epoch position `e` (a float:
2.5 is half-way through the third epoch). Kinds:

* constant: `lr`
* step:     `lr * gamma ** floor(e / step_size)` (decays at absolute epochs
            step_size, 2*step_size, ...)
* cosine:   anneals from `lr` at the end of the warm-up to `min_lr` (default 0) at `epochs`:
            `min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (e - warmup) / (epochs - warmup)))`
* onecycle: PyTorch's OneCycleLR (cosine annealing, no momentum cycling): from lr / div_factor up
            to `lr` over the first pct_start of the run, then down to lr / (div_factor *
            final_div_factor) at `epochs` (Smith & Topin 2017)
* plateau:  PyTorch's ReduceLROnPlateau (threshold_mode rel, cooldown 0), once per epoch on a
            held-out value: `lr * factor ** k` (never below min_lr), k the reductions so far, one
            each time `patience` epochs in a row did not improve the best by more than
            threshold * |best|. `plateau_scale(values)` replays the epochs' values (so a resumed
            run reduces exactly as an uninterrupted one); `lr_at` is the rate before reductions.

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

The options each kind takes in a .cnn file (`schedule KIND key=value...`) are declared once in
OPTIONS (the op registry's `Attr`: kind, default, range, doc); the frontend checks a file against
them, docs/language.md's table is generated from them, and `Schedule` reads its defaults from them
and checks its fields with them: the same `Attr`s, so a value a file may not write is refused from
Python too, with the same words. `Schedule` also takes the run's `lr` and `epochs` (RUN), and one
option is wider from Python on purpose (PYTHON_WIDER: a fractional step_size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cnndsl.ops.registry import Attr, AttrError, declare

WARMUP = Attr("warmup", "float", 0.0, "epochs of linear warmup from 0 to lr (may be fractional)", unit="epochs",
              minimum=0)
MIN_LR = Attr("min_lr", "float", 0.0, "learning rate at the last epoch", minimum=0)
OPTIONS: dict[str, dict[str, Attr]] = {  # kind -> its options, in the order documented
    "constant": declare(WARMUP),
    "step": declare(
        Attr("step_size", "int", 10, "epochs between decays", unit="epochs", minimum=1),
        Attr("gamma", "float", 0.1, "factor applied to lr at each decay", above=0, maximum=1),
        WARMUP),
    "cosine": declare(MIN_LR, WARMUP),
    "onecycle": declare(  # rises by itself: no warmup
        Attr("pct_start", "float", 0.3, "share of the run spent rising to lr", above=0, below=1),
        Attr("div_factor", "float", 25.0, "the run starts at lr / div_factor", minimum=1),
        Attr("final_div_factor", "float", 1e4, "the run ends at lr / (div_factor * final_div_factor)", minimum=1)),
    "plateau": declare(
        Attr("factor", "float", 0.1, "applied to lr at each reduction", above=0, below=1),
        Attr("patience", "int", 10, "epochs without improvement before a reduction", unit="epochs", minimum=0,
             maximum=1_000_000),
        Attr("threshold", "float", 1e-4, "relative improvement of the best value that counts", minimum=0),
        # the names a run records are known only with the network: cnndsl/frontend/training.py checks them
        Attr("metric", "name", "loss", "the held-out value watched: loss, or a metric of the `metric` lines "
             "(accuracy, ...)"),
        Attr("min_lr", "float", 0.0, "the reductions stop there", minimum=0),
        WARMUP),
}
KINDS = tuple(OPTIONS)
KIND = Attr("kind", "enum", "constant", "the schedule", choices=KINDS)
RUN = declare(  # what `Schedule` takes besides a kind's options: the run's, not the file's schedule line
    Attr("lr", "float", 0.01, "the base learning rate", minimum=0),
    Attr("epochs", "float", 1.0, "the length of the run", unit="epochs", above=0))
# From Python a step decay may come every fraction of an epoch (positions are continuous; a file
# keeps whole epochs): the declared option, widened, not a second check.
PYTHON_WIDER = {"step_size": replace(OPTIONS["step"]["step_size"], kind="float", minimum=None, above=0)}


def _cosine_check(s) -> str | None:
    if s.warmup >= s.epochs:
        return f"warmup ({s.warmup:g}) must be shorter than the run ({s.epochs:g} epochs)"
    return None


# constraints between options that no single option's range says: kind -> (schedule) -> what is wrong
CHECKS = {"cosine": _cosine_check}


def _default(name: str):
    """The declared default of an option (the same for every kind that takes it)."""
    return next(opts[name].default for opts in OPTIONS.values() if name in opts)


_ALL = {name: _default(name) for opts in OPTIONS.values() for name in opts}  # every option, its default


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    lr: float = 0.01
    epochs: float = 1.0  # length of the run (cosine reaches 0 there)
    # the options of OPTIONS, defaults as declared there
    warmup: float = _default("warmup")  # epochs of linear warm-up
    step_size: float = _default("step_size")  # step: epochs between decays
    gamma: float = _default("gamma")  # step: decay factor
    min_lr: float = _default("min_lr")  # cosine: the rate reached at the end; plateau: the floor
    pct_start: float = _default("pct_start")  # onecycle: share of the run spent rising
    div_factor: float = _default("div_factor")  # onecycle: the start is lr / div_factor
    final_div_factor: float = _default("final_div_factor")  # onecycle: the end is lr / (div_factor * final_div_factor)
    factor: float = _default("factor")  # plateau: applied at each reduction
    patience: int = _default("patience")  # plateau: epochs without improvement before a reduction
    threshold: float = _default("threshold")  # plateau: relative improvement that counts
    metric: str = _default("metric")  # plateau: the held-out value watched (the trainer reads it)

    def __post_init__(self):
        """Every field checked by its declared `Attr` (OPTIONS of this kind, RUN); an option this kind
        does not take must keep its default. Raises ValueError (AttrError) naming the option."""
        try:
            KIND.coerce(self.kind)
        except AttrError as e:
            raise AttrError(f"schedule: {e}") from None
        try:
            options = OPTIONS[self.kind]
            for name, attr in {**RUN, **options}.items():
                PYTHON_WIDER.get(name, attr).coerce(getattr(self, name))
            foreign = [name for name, default in _ALL.items() if name not in options and getattr(self, name) != default]
            if foreign:
                raise AttrError(f"it has no option {', '.join(foreign)}; its options are "
                                f"{', '.join(options) or 'none'}")
            problem = CHECKS.get(self.kind, lambda s: None)(self)
            if problem:
                raise AttrError(problem)
        except AttrError as e:
            raise AttrError(f"schedule {self.kind}: {e}") from None

    def lr_at(self, epoch: float) -> float:
        """The learning rate at continuous epoch position `epoch` (clamped to [0, epochs])."""
        e = min(max(float(epoch), 0.0), float(self.epochs))
        if self.warmup > 0 and e < self.warmup:
            factor = e / self.warmup
            if self.kind == "step":
                factor *= self._decay(e)
            return self.lr * factor
        if self.kind in ("constant", "plateau"):
            return self.lr
        if self.kind == "onecycle":
            return self._one_cycle(e)
        if self.kind == "step":
            return self.lr * self._decay(e)
        span = self.epochs - self.warmup
        t = (e - self.warmup) / span
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _one_cycle(self, e: float) -> float:
        peak = self.pct_start * self.epochs
        start, end = self.lr / self.div_factor, self.lr / (self.div_factor * self.final_div_factor)
        if e < peak:
            return _cos_anneal(start, self.lr, e / peak)
        return _cos_anneal(self.lr, end, (e - peak) / (self.epochs - peak))

    def plateau_scale(self, values, lower_is_better: bool = True) -> float:
        """The factor the epochs' held-out `values` (oldest first; None or non-finite ones are
        skipped) have reduced the rate by so far: 1 unless kind is plateau."""
        if self.kind != "plateau":
            return 1.0
        scale, best, bad = 1.0, None, 0
        for v in values:
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            v = float(v)
            better = best is None or (v < best - self.threshold * abs(best) if lower_is_better
                                      else v > best + self.threshold * abs(best))
            if better:
                best, bad = v, 0
            else:
                bad += 1
            if bad > self.patience:
                scale *= self.factor
                bad = 0
        return scale

    def reduced(self, lr: float, scale: float) -> float:
        """lr after plateau reductions by `scale`, not below min_lr (unless lr itself is lower)."""
        return lr if scale == 1.0 else max(lr * scale, min(self.min_lr, lr))

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


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """PyTorch's _annealing_cos: from start (pct 0) to end (pct 1) along half a cosine."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
