"""What values a loss accepts in its target, declared once per loss op (`OpDef.target_values`).

A class-index target is used by the loss kernels as an index (`logits[n, label]`,
`dlogits[n, label]`): Numba does not check bounds, so one label >= the class count is an
out-of-bounds write that corrupts memory (seen: a segfault for 10^7, "double free or corruption"
for 5 on a 5-class head, a loss of -2.25e28 and exit 0 for 10^5). Every target is therefore
checked against its rule where it enters: once per data set with the file's name
(`cnndsl.train.data.check_dataset_targets`), and on every batch fed to a model
(`cnndsl.model.Model`), which costs one min/max over the batch's targets: measured 9 us for a
LeNet-5 batch of 64 labels and 34 us for a U-Net batch of 64 32x32 masks, against milliseconds
per training step.

A rule finds the first bad value (`first_bad`) and says what is allowed (`allowed`); the
caller words the error, since only it knows the file and the layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnndsl.ir.graph import TensorType


@dataclass(frozen=True)
class BadTarget:
    """The first offending value of a target array, in C order."""

    index: tuple[int, ...]  # position in the target array; index[0] is the sample
    value: object
    count: int  # how many values break the rule
    total: int  # values checked

    def where(self) -> str:
        sample = f"sample {self.index[0]}"
        rest = self.index[1:]
        return sample + (f", position ({', '.join(map(str, rest))})" if rest else "")


def _first(mask: np.ndarray, values: np.ndarray) -> BadTarget | None:
    count = int(np.count_nonzero(mask))
    if not count:
        return None
    flat = int(np.argmax(mask.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, mask.shape))
    value = values.reshape(-1)[flat]
    return BadTarget(index, value.item() if hasattr(value, "item") else value, count, int(mask.size))


@dataclass(frozen=True)
class ClassIndices:
    """Integer class indices in [0, K), K = the head's channel count; `ignore` is also allowed
    (pixels the loss skips)."""

    ignore: int | None = None
    kind = "class"

    def classes(self, head: TensorType) -> int:
        return int(head.shape[0])

    def allowed(self, head: TensorType) -> str:
        text = f"class indices 0..{self.classes(head) - 1}"
        return text + (f" (or {self.ignore}: ignored)" if self.ignore is not None else "")

    def example(self, head: TensorType, shape: tuple[int, ...], rng, attrs: dict | None = None) -> np.ndarray:
        """Random valid targets of `shape` (for warm-ups, gradient checks and benchmarks)."""
        return rng.integers(0, self.classes(head), size=shape)

    def first_bad(self, head: TensorType, t: np.ndarray, attrs: dict | None = None) -> BadTarget | None:
        t = np.asarray(t)
        if not t.size:
            return None
        if t.dtype.kind == "f":  # whole numbers stored as floats are judged by value
            with np.errstate(invalid="ignore"):
                fractional = ~np.isfinite(t) | (t != np.round(t))
            if fractional.any():
                return _first(fractional, t)
            if np.abs(t).max() >= 2.0 ** 62:
                return _first(np.abs(t) >= 2.0 ** 62, t)
            t = t.astype(np.int64)
        elif t.dtype.kind not in "iu":
            return _first(np.ones(t.shape, bool), t.astype(object))
        k = self.classes(head)
        lo, hi = t.min(), t.max()  # the common case, all good, costs two reductions
        if lo >= 0 and hi < k:
            return None
        bad = (t < 0) | (t >= k)
        if self.ignore is not None:
            bad &= t != self.ignore
        return _first(bad, t)


@dataclass(frozen=True)
class RealValues:
    """Finite real numbers. With `unit_from`, the channels of each predictor from that one on
    (objectness and class probabilities of a YOLO grid: 4, 5, ...) must lie in [0, 1]; a
    predictor is (head channels / the loss's `boxes`) channels."""

    unit_from: int | None = None
    kind = "real"

    def allowed(self, head: TensorType) -> str:
        if self.unit_from is None:
            return "finite numbers"
        return (f"finite numbers, with channels {self.unit_from}, {self.unit_from + 1}, ... of each predictor "
                "(objectness, class probabilities) in [0, 1]")

    def _unit(self, channels: int, attrs: dict | None) -> np.ndarray:
        """Which channels must lie in [0, 1]."""
        period = max(1, channels // int((attrs or {}).get("boxes", 1)))
        return (np.arange(channels) % period) >= self.unit_from

    def example(self, head: TensorType, shape: tuple[int, ...], rng, attrs: dict | None = None) -> np.ndarray:
        """Random valid targets of `shape`: normal values, uniform in [0, 1] where they must be."""
        t = rng.standard_normal(shape).astype(np.float32)
        if self.unit_from is not None and len(shape) >= 2:
            unit = self._unit(shape[1], attrs)
            t[:, unit] = rng.uniform(0, 1, t[:, unit].shape).astype(np.float32)
        return t

    def first_bad(self, head: TensorType, t: np.ndarray, attrs: dict | None = None) -> BadTarget | None:
        t = np.asarray(t)
        if not t.size:
            return None
        if t.dtype.kind not in "fiu":
            return _first(np.ones(t.shape, bool), t.astype(object))
        bad = ~np.isfinite(t) if t.dtype.kind == "f" else np.zeros(t.shape, bool)
        if self.unit_from is not None and t.ndim >= 2:
            unit = self._unit(t.shape[1], attrs)
            with np.errstate(invalid="ignore"):
                out = (t < 0) | (t > 1)
            out[:, ~unit] = False
            bad |= out
        return _first(bad, t)
