"""Augmentation descriptions: one class per op, with parameter checks and its kernels.

An `Augmentation` is a plain description (name, params, p). It does not raise
on bad parameters when built: `validate(input_shape)` returns a list of
problems (plain sentences) that the caller turns into diagnostics. `apply_to`
runs it on a batch (the `Pipeline` does that for a list of ops).

    REGISTRY = {"grayscale": Grayscale, "hflip": HFlip, ...}
    make_augmentation("rotate", degrees=10, p=0.5)

Parameter names and defaults follow the model-file schema
(`cnndsl.frontend.training.AUGMENTATIONS`); `fill` is also accepted by
`translate` and `scale` (default 0).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np



class _Kernels:
    """cnndsl.augment.kernels, imported on first use: checking a model file needs the
    augmentations' rules but not their Numba kernels (importing Numba costs a second)."""

    def __getattr__(self, name):
        from cnndsl.augment import kernels

        return getattr(kernels, name)


K = _Kernels()

Shape = tuple[int, int, int]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


def _shape_text(shape) -> str:
    c, h, w = shape
    return f"{c}x{h}x{w}"


class Augmentation:
    """One augmentation step: `name`, `params` (dict, defaults filled) and probability `p`."""

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # every parameter but p, with its default
    DEFAULT_P: ClassVar[float] = 1.0
    NEEDS_RGB: ClassVar[bool] = False

    def __init__(self, p: float | None = None, **params: Any):
        unknown = sorted(set(params) - set(self.DEFAULTS))
        if unknown:
            known = ", ".join(list(self.DEFAULTS) + ["p"])
            raise TypeError(f"{self.name} has no parameter {', '.join(map(repr, unknown))} (parameters: {known})")
        missing = [k for k, v in self.DEFAULTS.items() if v is _REQUIRED and k not in params]
        if missing:
            raise TypeError(f"{self.name} needs {', '.join(missing)}")
        self.params: dict[str, Any] = {**self.DEFAULTS, **params}
        self.p = self.DEFAULT_P if p is None else p

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args + ', ' if args else ''}p={self.p!r})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.params == self.params and other.p == self.p

    # ---- checks ----------------------------------------------------------------
    def validate(self, input_shape) -> list[str]:
        """Problems with this op on images of `input_shape` (C, H, W); [] when fine."""
        problems: list[str] = []
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 3:
            return [f"{self.name} needs image inputs (C, H, W), but the input has shape "
                    f"{tuple(input_shape)}"]
        if not _is_number(self.p) or not 0.0 <= float(self.p) <= 1.0:
            problems.append(f"{self.name} p must be a probability between 0 and 1, got {self.p!r}")
        if self.NEEDS_RGB and shape[0] != 3:
            problems.append(f"{self.name} needs 3 colour channels, but the input is {_shape_text(shape)}")
        problems += self._check(shape)
        return problems

    def _check(self, shape: Shape) -> list[str]:
        return []

    def _range(self, key: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False) -> list[str]:
        v = self.params[key]
        if not _is_number(v):
            return [f"{self.name} {key} must be a finite number, got {v!r}"]
        v = float(v)
        bad = (lo is not None and (v <= lo if lo_open else v < lo)) or \
              (hi is not None and (v >= hi if hi_open else v > hi))
        if not bad:
            return []
        left = "" if lo is None else ("(" if lo_open else "[") + _num(lo)
        right = "" if hi is None else _num(hi) + (")" if hi_open else "]")
        if lo is not None and hi is not None:
            want = f"in {left}, {right}"
        elif lo is not None:
            want = f"{'above' if lo_open else 'at least'} {_num(lo)}"
        else:
            want = f"{'below' if hi_open else 'at most'} {_num(hi)}"
        return [f"{self.name} {key} must be {want}, got {_num(v)}"]

    def output_shape(self, input_shape) -> Shape:
        return tuple(int(d) for d in input_shape)  # type: ignore[return-value]

    # ---- running -----------------------------------------------------------------
    def draw(self, indices: np.ndarray, seed: int, epoch: int, op: int, shape: Shape) -> np.ndarray:
        """The per-image parameter table of this op on inputs of `shape` (C, H, W);
        `indices` is an int64 array (see cnndsl.augment.kernels)."""
        raise NotImplementedError

    def run(self, src: np.ndarray, dst: np.ndarray, table: np.ndarray) -> None:
        """Apply the drawn parameters: read `src`, write `dst` (distinct arrays)."""
        raise NotImplementedError

    def apply_to(self, batch: np.ndarray, indices, seed: int = 0, epoch: int = 0, op: int = 0) -> np.ndarray:
        """This op alone on a batch (a new array); `Pipeline` is the usual entry point."""
        from cnndsl.augment.pipeline import Pipeline
        return Pipeline([self], seed).apply(batch, indices, epoch, op_offset=op)

    def _flags(self, indices, seed, epoch, op) -> np.ndarray:
        return K.draw_flags(indices, int(seed), int(epoch), int(op), float(self.p))


_REQUIRED = object()


class Grayscale(Augmentation):
    """Replace RGB by its ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) in all three channels."""

    name = "grayscale"
    DEFAULT_P = 0.5
    NEEDS_RGB = True

    def draw(self, indices, seed, epoch, op, shape):
        return self._flags(indices, seed, epoch, op)

    def run(self, src, dst, table):
        K._grayscale(src, dst, table)


class HFlip(Augmentation):
    """Mirror left-right (x[..., ::-1])."""

    name = "hflip"
    DEFAULT_P = 0.5

    def draw(self, indices, seed, epoch, op, shape):
        return self._flags(indices, seed, epoch, op)

    def run(self, src, dst, table):
        K._flip(src, dst, table, 0)


class VFlip(HFlip):
    """Mirror top-bottom (x[..., ::-1, :])."""

    name = "vflip"

    def run(self, src, dst, table):
        K._flip(src, dst, table, 1)


def _size_pair(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"random_crop size must be a whole number or (height, width), got {size!r}")


class RandomCrop(Augmentation):
    """Pad by `padding` zeros on each side, then cut a random size x size window.

    `size` is S, (H, W), or None for the input size. When the op is not applied
    (probability 1 - p) the centre window is taken, so the output shape is the
    same for every image: (C, size) — the input shape when size is the input size.
    """

    name = "random_crop"
    DEFAULTS = {"size": None, "padding": 0}

    def _size(self, shape: Shape) -> tuple[int, int]:
        pair = _size_pair(self.params["size"])
        return pair if pair is not None else (shape[1], shape[2])

    def _check(self, shape):
        out = []
        try:
            sh, sw = self._size(shape)
        except ValueError as e:
            return [str(e)]
        pad = self.params["padding"]
        if not isinstance(pad, (int, np.integer)) or isinstance(pad, bool) or pad < 0:
            return [f"random_crop padding must be a whole number >= 0, got {pad!r}"]
        if sh < 1 or sw < 1:
            out.append(f"random_crop size must be at least 1, got {sh}x{sw}")
        ph, pw = shape[1] + 2 * pad, shape[2] + 2 * pad
        if sh > ph or sw > pw:
            padded = f" padded by {pad} on each side ({ph}x{pw})" if pad else ""
            out.append(f"random_crop size {sh}x{sw} is larger than the {shape[1]}x{shape[2]} input{padded}")
        return out

    def output_shape(self, input_shape):
        c, h, w = (int(d) for d in input_shape)
        sh, sw = self._size((c, h, w))
        return (c, sh, sw)

    def draw(self, indices, seed, epoch, op, shape):
        sh, sw = self._size(shape)
        pad = int(self.params["padding"])
        return K.draw_crop(indices, int(seed), int(epoch), int(op), float(self.p),
                           shape[1] + 2 * pad - sh, shape[2] + 2 * pad - sw, pad)

    def run(self, src, dst, table):
        K._window(src, dst, table, 0.0)


class ColorJitter(Augmentation):
    """torchvision's ColorJitter: brightness, contrast, saturation factors drawn from
    [max(0, 1 - v), 1 + v], hue shift from [-hue, hue] (fraction of the colour wheel),
    applied in a random order, each clamped to [0, 1]. Saturation and hue need RGB."""

    name = "color_jitter"
    DEFAULTS = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}

    def _check(self, shape):
        out = []
        for key in ("brightness", "contrast", "saturation"):
            out += self._range(key, lo=0.0)
        out += self._range("hue", lo=0.0, hi=0.5)
        if shape[0] != 3:
            for key in ("saturation", "hue"):
                v = self.params[key]
                if _is_number(v) and float(v) > 0:
                    out.append(f"color_jitter {key} needs 3 colour channels, but the input is "
                               f"{_shape_text(shape)}")
        return out

    def draw(self, indices, seed, epoch, op, shape):
        q = self.params
        return K.draw_jitter(indices, int(seed), int(epoch), int(op), float(self.p), float(q["brightness"]),
                             float(q["contrast"]), float(q["saturation"]), float(q["hue"]))

    def run(self, src, dst, table):
        K._jitter(src, dst, table)


class Rotate(Augmentation):
    """Rotate about the centre by an angle uniform in [-degrees, degrees] (positive =
    counter-clockwise), bilinear; uncovered pixels get `fill`."""

    name = "rotate"
    DEFAULTS = {"degrees": _REQUIRED, "fill": 0.0}

    def _check(self, shape):
        return self._range("degrees", 0.0, 180.0) + self._range("fill")

    def draw(self, indices, seed, epoch, op, shape):
        return K.draw_rotate(indices, int(seed), int(epoch), int(op), float(self.p),
                             float(self.params["degrees"]))

    def run(self, src, dst, table):
        K._affine(src, dst, table, float(self.params["fill"]))


class Translate(Augmentation):
    """Shift by whole pixels: round(U(-f, f) * W) columns and round(U(-f, f) * H) rows;
    uncovered pixels get `fill`."""

    name = "translate"
    DEFAULTS = {"fraction": _REQUIRED, "fill": 0.0}

    def _check(self, shape):
        return self._range("fraction", 0.0, 1.0, hi_open=True) + self._range("fill")

    def draw(self, indices, seed, epoch, op, shape):
        f = float(self.params["fraction"])
        return K.draw_translate(indices, int(seed), int(epoch), int(op), float(self.p),
                                f * shape[1], f * shape[2])

    def run(self, src, dst, table):
        K._window(src, dst, table, float(self.params["fill"]))


class Scale(Augmentation):
    """Zoom about the centre by a factor uniform in [min, max] (> 1 enlarges), bilinear;
    uncovered pixels get `fill`."""

    name = "scale"
    DEFAULTS = {"min": 0.9, "max": 1.1, "fill": 0.0}

    def _check(self, shape):
        out = self._range("min", 0.0, 10.0, lo_open=True) + self._range("max", 0.0, 10.0, lo_open=True) \
            + self._range("fill")
        lo, hi = self.params["min"], self.params["max"]
        if not out and float(lo) > float(hi):
            out.append(f"scale min {_num(lo)} is larger than max {_num(hi)}")
        return out

    def draw(self, indices, seed, epoch, op, shape):
        return K.draw_scale(indices, int(seed), int(epoch), int(op), float(self.p),
                            float(self.params["min"]), float(self.params["max"]))

    def run(self, src, dst, table):
        K._affine(src, dst, table, float(self.params["fill"]))


REGISTRY: dict[str, type[Augmentation]] = {
    cls.name: cls for cls in (Grayscale, HFlip, VFlip, RandomCrop, ColorJitter, Rotate, Translate, Scale)
}


def make_augmentation(name: str, p: float | None = None, **params: Any) -> Augmentation:
    """The op `name` of REGISTRY with its parameters; KeyError/TypeError for unknown names/parameters."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown augmentation {name!r} (known: {', '.join(REGISTRY)})") from None
    return cls(p=p, **params)


def from_config(aug) -> Augmentation:
    """An op from the model file's description (anything with .kind, .p and .params,
    e.g. cnndsl.frontend.training.Augmentation)."""
    return make_augmentation(aug.kind, aug.p, **dict(aug.params))


# ---- helpers taking explicit parameters (tests, previews) -----------------------------
def _as_batch(batch) -> np.ndarray:
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {x.shape}")
    return x


def rotate_images(batch, degrees, fill: float = 0.0) -> np.ndarray:
    """Rotate every image of `batch` by its own angle (degrees, counter-clockwise; a
    scalar applies to all) with the same kernel as `rotate`."""
    x = _as_batch(batch)
    angles = np.broadcast_to(np.asarray(degrees, dtype=np.float64), (len(x),)).copy()
    rows = K.rotation_rows(np.ones(len(x), np.float64), angles)
    out = np.empty_like(x)
    K._affine(x, out, rows, float(fill))
    return out


def crop_images(batch, offsets, size, padding: int = 0) -> np.ndarray:
    """Crop windows at explicit (row, col) offsets in the padded image (one per image)."""
    x = _as_batch(batch)
    sh, sw = _size_pair(size)
    table = np.ascontiguousarray(np.asarray(offsets, dtype=np.int64).reshape(len(x), 2) - int(padding))
    out = np.empty((x.shape[0], x.shape[1], sh, sw), np.float32)
    K._window(x, out, table, 0.0)
    return out


def jitter_images(batch, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=(0, 1, 2, 3)) -> np.ndarray:
    """Color-jitter every image with explicit factors (torchvision adjust_* semantics),
    steps in `order` (0 brightness, 1 contrast, 2 saturation, 3 hue)."""
    x = _as_batch(batch)
    packed = sum(int(k) << (2 * j) for j, k in enumerate(order))
    rows = np.empty((len(x), 6), np.float64)
    rows[:] = (1.0, brightness, contrast, saturation, hue, float(packed))
    out = np.empty_like(x)
    K._jitter(x, out, rows)
    return out
