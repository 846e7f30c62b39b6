"""Every element-wise activation, declared once.

An `Activation` record says everything about one activation: its name and code, its scalar
forward and gradient (float32 Numba code, compiled for the CPU kernels and as CUDA device
functions), whether the gradient reads the activation's input x or its output y, its FLOPs,
whether it is non-decreasing (so that act(max(z)) == max(act(z)) and a 2x2 max pool may run
before it), its NumPy reference (float64) and its reference gradient (from x, the oracle).

Derived from `ACTIVATIONS`, and nowhere spelled out again:
  - the ops `relu`, `gelu`, ... and their gradient rule        cnndsl/ops/activation.py
  - the fused epilogue's `activation` choices, codes, FLOPs    cnndsl/ops/fused/epilogue.py
  - which activations fuse where, and why not                  cnndsl/passes/fusion.py
  - the CPU kernels' dispatch on the code                      cnndsl/kernels/cpu/epilogue.py
  - the CUDA device functions' dispatch on the code            cnndsl/kernels/cuda/common.py
  - the NumPy reference by name                                cnndsl/kernels/reference/activation.py
  - the launchers of both backends                             cnndsl/backend/{cpu,cuda}/elementwise.py
  - the weight initialization (Glorot before squashing ones)   cnndsl/backend/params.py
  - docs/layers.md, and the registry-wide tests                tests/test_activations.py

Adding an activation is one record here (codes are stable: append, never renumber, since
compiled kernels and tests name them) and, when it has a corner worth pinning, a test line.

Scalar functions are written in the subset both Numba targets compile to float32 code:
float32 constants, `math` functions, comparisons (not `min`/`max`, which CUDA's target
refuses here), and the `HELPERS` (made jitable by `jit_helpers()`, which the kernel modules call). Numba has no SVML since 0.62, so the
`math.exp`/`erf`/`tanh` calls in these loops are scalar libm (CPU) or libdevice (CUDA) calls:
correct, not vectorized. `alpha` is every activation's one scalar option (leaky_relu's slope,
elu's scale); activations without one ignore it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

float32 = np.float32  # constants below are frozen into the compiled code as float32
OUTPUT, INPUT = "output", "input"  # what an activation's gradient reads


@dataclass(frozen=True)
class Activation:
    name: str
    code: int  # the kernels' branch code; 0 is "none"; stable once given
    doc: str
    forward: Callable  # (v: float32, alpha: float32) -> float32, Numba scalar code
    grad: Callable  # (g, v, alpha) -> dL/dz; v is y (grad_from OUTPUT) or z (INPUT)
    grad_from: str  # OUTPUT or INPUT
    flops: int  # per element, as docs/layers.md counts them
    flops_doc: str
    monotone: bool  # non-decreasing: act(max) == max(act), so a max pool may come first
    reference: Callable  # NumPy, float64: (x, alpha) -> y
    reference_grad: Callable  # NumPy, float64: (x, dy, alpha) -> dx (always from x)
    alpha: tuple | None = None  # (default, doc, minimum) of its `alpha` option, or None
    aliases: tuple[str, ...] = ()
    squashing: bool = False  # bounded output: layers feeding it get Glorot, not He, weights

    @property
    def fusable(self) -> bool:
        return self.code != 0


_Z, _ONE, _HALF = float32(0.0), float32(1.0), float32(0.5)
_SIX, _THREE, _SIXTH = float32(6.0), float32(3.0), float32(1.0 / 6.0)
_SQRT1_2 = float32(0.7071067811865476)  # 1/sqrt(2)
_INV_SQRT_2PI = float32(0.3989422804014327)  # 1/sqrt(2 pi)
_SQRT_2_PI = float32(0.7978845608028654)  # sqrt(2/pi)
_GELU_C = float32(0.044715)


def _clip(v, lo, hi):
    """v limited to [lo, hi] (NaN stays NaN). CUDA's target does not compile min/max here."""
    if v < lo:
        return lo
    return hi if v > hi else v


def _sig(v):
    """The stable logistic: exp of a non-positive number only."""
    if v >= _Z:
        return _ONE / (_ONE + math.exp(-v))
    e = math.exp(v)
    return e / (_ONE + e)


def _softplus(v):
    """log(1 + exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))."""
    if v > _Z:
        return v + math.log1p(math.exp(-v))
    return math.log1p(math.exp(v))


HELPERS = (_clip, _sig, _softplus)  # called by the scalar code below
_HELPERS_READY = []


def jit_helpers() -> None:
    """Make HELPERS callable from Numba code of either target (`register_jitable`). The kernel
    modules call this before compiling the table, so that importing this module (the ops and the
    passes do) does not import Numba: `cnndsl train` prints its first line before Numba loads."""
    if not _HELPERS_READY:
        from numba.extending import register_jitable

        for helper in HELPERS:
            register_jitable(helper)
        _HELPERS_READY.append(True)


# -- scalar code (float32 in, float32 out) ------------------------------------------------
def _none(v, alpha):
    return v


def _none_grad(g, v, alpha):
    return g


def _relu(v, alpha):
    return _Z if v < _Z else v  # NaN stays NaN


def _relu_grad(g, y, alpha):
    return g if y > _Z else _Z


def _leaky(v, alpha):
    return v if v > _Z else alpha * v


def _leaky_grad(g, y, alpha):  # alpha >= 0: y > 0 exactly when z > 0
    return g if y > _Z else alpha * g


def _sigmoid(v, alpha):
    return _sig(v)


def _sigmoid_grad(g, y, alpha):
    return g * y * (_ONE - y)


def _tanh(v, alpha):
    return math.tanh(v)


def _tanh_grad(g, y, alpha):
    return g * (_ONE - y * y)


def _relu6(v, alpha):
    return _clip(v, _Z, _SIX)


def _relu6_grad(g, y, alpha):
    return g if _Z < y < _SIX else _Z


def _hardswish(v, alpha):
    return v * _clip(v + _THREE, _Z, _SIX) * _SIXTH


def _hardswish_grad(g, z, alpha):
    if z <= -_THREE:
        return _Z
    if z >= _THREE:
        return g
    return g * (z + z + _THREE) * _SIXTH


def _hardsigmoid(v, alpha):
    return _clip(v * _SIXTH + _HALF, _Z, _ONE)


def _hardsigmoid_grad(g, y, alpha):
    return g * _SIXTH if _Z < y < _ONE else _Z


def _gelu(v, alpha):
    return _HALF * v * (_ONE + math.erf(v * _SQRT1_2))


def _gelu_grad(g, z, alpha):
    cdf = _HALF * (_ONE + math.erf(z * _SQRT1_2))
    pdf = _INV_SQRT_2PI * math.exp(-_HALF * z * z)
    return g * (cdf + z * pdf)


def _gelu_tanh(v, alpha):
    return _HALF * v * (_ONE + math.tanh(_SQRT_2_PI * (v + _GELU_C * v * v * v)))


def _gelu_tanh_grad(g, z, alpha):
    t = math.tanh(_SQRT_2_PI * (z + _GELU_C * z * z * z))
    dt = _SQRT_2_PI * (_ONE + _THREE * _GELU_C * z * z)
    return g * (_HALF * (_ONE + t) + _HALF * z * (_ONE - t * t) * dt)


def _silu(v, alpha):
    return v * _sig(v)


def _silu_grad(g, z, alpha):
    s = _sig(z)
    return g * s * (_ONE + z * (_ONE - s))


def _mish(v, alpha):
    return v * math.tanh(_softplus(v))


def _mish_grad(g, z, alpha):
    t = math.tanh(_softplus(z))
    return g * (t + z * (_ONE - t * t) * _sig(z))


def _elu(v, alpha):
    return v if v > _Z else alpha * math.expm1(v)


def _elu_grad(g, y, alpha):  # y + alpha = alpha * exp(z) where z <= 0
    return g if y > _Z else g * (y + alpha)


def _softplus_fwd(v, alpha):
    return _softplus(v)


def _softplus_grad(g, y, alpha):  # sigmoid(z) = 1 - exp(-y)
    return -g * math.expm1(-y)


# -- NumPy references (float64) ------------------------------------------------------------
def _np_sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if np.size(x) else np.zeros_like(x, np.float64)


def _ref_gelu_grad(x, dy, a):
    return dy * (0.5 * (1 + _np_erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def _ref_gelu_tanh(x, a):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _ref_gelu_tanh_grad(x, dy, a):
    t = np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x))


def _ref_mish_grad(x, dy, a):
    t = np.tanh(_np_softplus(x))
    return dy * (t + x * (1 - t * t) * _np_sig(x))


ACTIVATIONS: tuple[Activation, ...] = (
    Activation("none", 0, "No activation (the identity).", _none, _none_grad, OUTPUT, 0, "none", True,
               lambda x, a: x, lambda x, dy, a: dy),
    Activation("relu", 1, "max(x, 0).", _relu, _relu_grad, OUTPUT, 1, "1 per element (a comparison)", True,
               lambda x, a: np.maximum(x, 0), lambda x, dy, a: np.where(x > 0, dy, 0.0)),
    Activation("leaky_relu", 2, "x for x > 0, alpha*x otherwise.", _leaky, _leaky_grad, OUTPUT, 2,
               "2 per element (a comparison and a multiply)", True,
               lambda x, a: np.where(x > 0, x, a * x), lambda x, dy, a: np.where(x > 0, dy, a * dy),
               alpha=(0.01, "slope for negative inputs", 0), aliases=("leaky",)),
    Activation("sigmoid", 3, "1 / (1 + exp(-x)).", _sigmoid, _sigmoid_grad, OUTPUT, 3,
               "3 per element (exp, add, divide)", True,
               lambda x, a: _np_sig(x), lambda x, dy, a: dy * _np_sig(x) * (1 - _np_sig(x)),
               aliases=("logistic",), squashing=True),
    Activation("tanh", 4, "Hyperbolic tangent.", _tanh, _tanh_grad, OUTPUT, 1,
               "1 per element (tanh counted as one operation)", True,
               lambda x, a: np.tanh(x), lambda x, dy, a: dy * (1 - np.tanh(x) ** 2), squashing=True),
    Activation("relu6", 5, "min(max(x, 0), 6) (MobileNet).", _relu6, _relu6_grad, OUTPUT, 2,
               "2 per element (two comparisons)", True,
               lambda x, a: np.clip(x, 0, 6), lambda x, dy, a: np.where((x > 0) & (x < 6), dy, 0.0)),
    Activation("hardswish", 6, "x * relu6(x + 3) / 6 (MobileNetV3). Not monotone: never fused before a pool; "
               "its gradient needs the input x, so in training it is not fused into the layer before it.",
               _hardswish, _hardswish_grad, INPUT, 5, "5 per element (add, two comparisons, two multiplies)", False,
               lambda x, a: x * np.clip(x + 3, 0, 6) / 6,
               lambda x, dy, a: dy * np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, (2 * x + 3) / 6))),
    Activation("hardsigmoid", 7, "min(max(x / 6 + 1/2, 0), 1) (MobileNetV3).", _hardsigmoid, _hardsigmoid_grad,
               OUTPUT, 4, "4 per element (multiply, add, two comparisons)", True,
               lambda x, a: np.clip(x / 6 + 0.5, 0, 1), lambda x, dy, a: np.where((x > -3) & (x < 3), dy / 6, 0.0),
               squashing=True),
    Activation("gelu", 8, "x * Phi(x), Phi the standard normal CDF, computed exactly with erf (BERT, ViT). "
               "Not monotone; its gradient needs the input x (not fused in training).", _gelu, _gelu_grad, INPUT, 5,
               "5 per element (erf counted as one operation)", False,
               lambda x, a: 0.5 * x * (1 + _np_erf(x / math.sqrt(2))), _ref_gelu_grad),
    Activation("gelu_tanh", 9, "GELU's tanh approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) (GPT-2). "
               "Not monotone; its gradient needs the input x (not fused in training).", _gelu_tanh, _gelu_tanh_grad,
               INPUT, 8, "8 per element (tanh counted as one operation)", False, _ref_gelu_tanh, _ref_gelu_tanh_grad),
    Activation("silu", 10, "x * sigmoid(x) (swish). Not monotone; its gradient needs the input x (not fused in "
               "training).", _silu, _silu_grad, INPUT, 4, "4 per element (exp, add, divide, multiply)", False,
               lambda x, a: x * _np_sig(x), lambda x, dy, a: dy * _np_sig(x) * (1 + x * (1 - _np_sig(x))),
               aliases=("swish",)),
    Activation("mish", 11, "x * tanh(softplus(x)). Not monotone; its gradient needs the input x (not fused in "
               "training).", _mish, _mish_grad, INPUT, 6, "6 per element (exp, log1p, tanh counted as one each)",
               False, lambda x, a: x * np.tanh(_np_softplus(x)), _ref_mish_grad),
    Activation("elu", 12, "x for x > 0, alpha * (exp(x) - 1) otherwise.", _elu, _elu_grad, OUTPUT, 3,
               "3 per element (a comparison, expm1, a multiply)", True,
               lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
               lambda x, dy, a: np.where(x > 0, dy, dy * a * np.exp(np.minimum(x, 0))),
               alpha=(1.0, "scale of the negative part", 0)),
    Activation("softplus", 13, "log(1 + exp(x)), a smooth relu.", _softplus_fwd, _softplus_grad, OUTPUT, 4,
               "4 per element (abs, exp, log1p, max)", True,
               lambda x, a: _np_softplus(x), lambda x, dy, a: dy * _np_sig(x)),
)

BY_NAME: dict[str, Activation] = {a.name: a for a in ACTIVATIONS}
CODE: dict[str, int] = {a.name: a.code for a in ACTIVATIONS}
# the activations a fused layer can differentiate (from its output y): fusable in training too
FROM_OUTPUT: tuple[str, ...] = tuple(a.name for a in ACTIVATIONS if a.grad_from == OUTPUT)
assert [a.code for a in ACTIVATIONS] == list(range(len(ACTIVATIONS))), "codes are 0, 1, 2, ... in order"


def get(name: str) -> Activation:
    return BY_NAME[name]
