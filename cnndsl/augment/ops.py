"""Augmentation descriptions: one class per op, with parameter checks and its kernels.

An `Augmentation` is a plain description (name, params, p). It does not raise
on bad parameters when built: `validate(input_shape)` returns a list of
problems (plain sentences) that the caller turns into diagnostics. `apply_to`
runs it on a batch (the `Pipeline` does that for a list of ops).

    REGISTRY = {"grayscale": Grayscale, "hflip": HFlip, ...}
    make_augmentation("rotate", degrees=10, p=0.5)

Each class declares its options once, `options` (the op registry's `Attr`: kind, default, range,
unit, doc; `p` included): `validate` checks values against them, the train section's
`augment { ... }` lines are checked against them (cnndsl/frontend/training.py), and
docs/language.md's table is generated from them. The checks that need the input's shape or
several options (channels, crop size, scale min <= max) are the classes' `_check`.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from cnndsl.ops.registry import REQUIRED, Attr, AttrError, declare


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


def P(default: float) -> Attr:
    """The probability of applying a step to an image, which every step takes."""
    return Attr("p", "float", default, "probability of applying it to a sample", minimum=0, maximum=1)


def FILL(doc: str) -> Attr:
    return Attr("fill", "float", 0.0, doc)


def _num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


def _shape_text(shape) -> str:
    c, h, w = shape
    return f"{c}x{h}x{w}"


class Augmentation:
    """One augmentation step: `name`, `params` (dict, defaults filled) and probability `p`."""

    name: ClassVar[str] = ""
    # every option, p included, in the order documented; the first positional one (else p) may
    # be written without its name in a .cnn file
    options: ClassVar[dict[str, Attr]] = declare(P(1.0))
    NEEDS_RGB: ClassVar[bool] = False
    CHECKS: ClassVar[str] = ""  # what `_check` (and NEEDS_RGB) adds to the options' ranges, for the docs
    # derived from `options`: every parameter but p with its default, and p's default
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    DEFAULT_P: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.DEFAULTS = {k: a.default for k, a in cls.options.items() if k != "p"}
        cls.DEFAULT_P = cls.options["p"].default

    def __init__(self, p: float | None = None, **params: Any):
        unknown = sorted(set(params) - set(self.DEFAULTS))
        if unknown:
            known = ", ".join(list(self.DEFAULTS) + ["p"])
            raise TypeError(f"{self.name} has no parameter {', '.join(map(repr, unknown))} (parameters: {known})")
        missing = [k for k, v in self.DEFAULTS.items() if v is REQUIRED and k not in params]
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
        for key, attr in self.options.items():  # each value against its declaration
            value = self.p if key == "p" else self.params[key]
            if value is None and attr.default is None:
                continue  # random_crop size: the input's
            try:
                attr.coerce(value)
            except AttrError as e:
                problems.append(f"{self.name} {e}")
        if problems:
            return problems  # the rules below read the values
        if self.NEEDS_RGB and shape[0] != 3:
            problems.append(f"{self.name} needs 3 colour channels, but the input is {_shape_text(shape)}")
        problems += self._check(shape)
        return problems

    def _check(self, shape: Shape) -> list[str]:
        """The rules beyond each option's declaration: the input's shape, several options at once."""
        return []

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


class Grayscale(Augmentation):
    """Replace RGB by its ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) in all three channels."""

    name = "grayscale"
    options = declare(P(0.5))
    NEEDS_RGB = True
    CHECKS = "needs 3 channels (an error on a grey input, where it would do nothing)"

    def draw(self, indices, seed, epoch, op, shape):
        return self._flags(indices, seed, epoch, op)

    def run(self, src, dst, table):
        K._grayscale(src, dst, table)


class HFlip(Augmentation):
    """Mirror left-right (x[..., ::-1])."""

    name = "hflip"
    options = declare(P(0.5))

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
    options = declare(
        Attr("size", "pair", None, "crop size, S or HxW; must equal the input's HxW (default: that size)",
             unit="pixels", minimum=1, positional=True),
        Attr("padding", "int", 0, "zeros added on each side before cropping", unit="pixels", minimum=0),
        P(1.0))
    CHECKS = "size must equal the network input's HxW, and fit in the padded input"

    def _size(self, shape: Shape) -> tuple[int, int]:
        pair = _size_pair(self.params["size"])
        return pair if pair is not None else (shape[1], shape[2])

    def _check(self, shape):
        out = []
        sh, sw = self._size(shape)
        pad = int(self.params["padding"])
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
    options = declare(
        # as torchvision: any value >= 0, the factor drawn from [max(0, 1-v), 1+v]
        Attr("brightness", "float", 0.0, "brightness factor drawn from [max(0, 1-b), 1+b]", minimum=0),
        Attr("contrast", "float", 0.0, "contrast factor drawn from [max(0, 1-c), 1+c]", minimum=0),
        Attr("saturation", "float", 0.0, "saturation factor drawn from [max(0, 1-s), 1+s] (RGB only)", minimum=0),
        Attr("hue", "float", 0.0, "hue shift drawn from [-h, h] (fraction of the colour wheel; RGB only)",
             minimum=0, maximum=0.5),
        P(1.0))
    CHECKS = "saturation and hue need 3 channels"

    def _check(self, shape):
        out = []
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
    options = declare(
        Attr("degrees", "float", REQUIRED, "angle drawn from [-d, d]", unit="degrees", minimum=0, maximum=180,
             positional=True),
        FILL("value of the pixels rotated in from outside"),
        P(1.0))

    def draw(self, indices, seed, epoch, op, shape):
        return K.draw_rotate(indices, int(seed), int(epoch), int(op), float(self.p),
                             float(self.params["degrees"]))

    def run(self, src, dst, table):
        K._affine(src, dst, table, float(self.params["fill"]))


class Translate(Augmentation):
    """Shift by whole pixels: round(U(-f, f) * W) columns and round(U(-f, f) * H) rows;
    uncovered pixels get `fill`."""

    name = "translate"
    options = declare(
        Attr("fraction", "float", REQUIRED, "shift drawn from [-f, f] times the image size per axis",
             minimum=0, below=1, positional=True),
        FILL("value of the pixels shifted in from outside"),
        P(1.0))

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
    options = declare(
        Attr("min", "float", 0.9, "smallest zoom factor", above=0, maximum=10),
        Attr("max", "float", 1.1, "largest zoom factor", above=0, maximum=10),
        FILL("value of the pixels outside the image when zooming out"),
        P(1.0))
    CHECKS = "min <= max"

    def _check(self, shape):
        lo, hi = self.params["min"], self.params["max"]
        return [f"scale min {_num(lo)} is larger than max {_num(hi)}"] if float(lo) > float(hi) else []

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
