"""Optimizers over one flat float32 parameter buffer.

All learnable tensors of a network live in ONE contiguous float32 buffer
`FlatParams.data`, with a gradient buffer `FlatParams.grad` of the same size;
`FlatParams.layout` maps each tensor name to its (offset, shape) segment, and
`FlatParams.view(name)` / `grad_view(name)` are reshaped views (no copies), so
kernels write gradients straight into the flat buffer and the optimizer
updates everything in one loop.

Per-element multipliers (float32, same size as the buffer):

* `lr_mult`: the learning rate of element i is `lr * lr_mult[i]` (per-layer
  learning rates). 0 freezes the element: the update loop skips it entirely,
  so its value, and its optimizer state, stay bit-exact unchanged -- weight
  decay included.
* `wd_mult`: the weight decay of element i is `weight_decay * wd_mult[i]`
  (e.g. 0 to exempt biases); 1 by default.

The update rules are PyTorch's (`torch.optim.SGD` / `torch.optim.Adam`,
`maximize=False`, `amsgrad=False`), evaluated in float32 with the scalar
coefficients computed in double precision and rounded to float32, as PyTorch
does on CPU:

SGD(lr, momentum=0, dampening=0, nesterov=False, weight_decay=0)::

    g = grad + weight_decay * p                   # L2, added to the gradient
    if momentum != 0:
        buf = g                        on the first step (step count 0)
        buf = momentum * buf + (1 - dampening) * g    afterwards
        g = g + momentum * buf   if nesterov  else  g = buf
    p = p - lr * g

Adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0)::

    t = t + 1
    g = grad + weight_decay * p                   # L2 (Adam), not decoupled (AdamW)
    m = torch.lerp(m, g, 1 - beta1)               # m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    step_size = lr / (1 - beta1**t)
    denom = sqrt(v) / sqrt(1 - beta2**t) + eps
    p = p - (step_size * m) / denom               # torch.addcdiv

The step count `t` is shared by all elements (PyTorch keeps one per tensor;
the two differ only for a tensor that was frozen for a while and then
unfrozen, whose bias correction then uses the global count).

Kernels are `@njit(cache=True)` loops in float32 (no float64 literals).
`state_dict()` returns a dict of numpy arrays including the step count as a
0-d int64 array; `load_state_dict()` restores it (checked against the sizes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numba import njit

from cnndsl.diagnostics import file_error


# ---------------------------------------------------------------------------- flat parameters

@dataclass(frozen=True)
class Segment:
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stop(self) -> int:
        return self.offset + self.size


class ParamLayout:
    """name -> (offset, shape) of each tensor in the flat buffer, in insertion order."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], align: int = 1):
        self.segments: dict[str, Segment] = {}
        offset = 0
        for name, shape in shapes.items():
            shape = tuple(int(d) for d in shape)
            seg = Segment(offset, shape)
            self.segments[name] = seg
            offset = seg.stop
            if align > 1:
                offset = -(-offset // align) * align
        self.size = offset

    def __contains__(self, name: str) -> bool:
        return name in self.segments

    def __iter__(self):
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, name: str) -> Segment:
        return self.segments[name]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: s.shape for k, s in self.segments.items()}


class FlatParams:
    """The flat parameter buffer, its gradient, and the per-element multipliers."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | ParamLayout):
        self.layout = shapes if isinstance(shapes, ParamLayout) else ParamLayout(shapes)
        n = self.layout.size
        self.data = np.zeros(n, dtype=np.float32)
        self.grad = np.zeros(n, dtype=np.float32)
        self.lr_mult = np.ones(n, dtype=np.float32)
        self.wd_mult = np.ones(n, dtype=np.float32)

    @property
    def size(self) -> int:
        return self.layout.size

    def _slice(self, name: str) -> slice:
        seg = self.layout[name]
        return slice(seg.offset, seg.stop)

    def view(self, name: str) -> np.ndarray:
        """The tensor `name` as a writable view into `data`."""
        return self.data[self._slice(name)].reshape(self.layout[name].shape)

    def grad_view(self, name: str) -> np.ndarray:
        return self.grad[self._slice(name)].reshape(self.layout[name].shape)

    def views(self) -> dict[str, np.ndarray]:
        return {k: self.view(k) for k in self.layout}

    def grad_views(self) -> dict[str, np.ndarray]:
        return {k: self.grad_view(k) for k in self.layout}

    def tensors(self) -> dict[str, np.ndarray]:
        """Copies of every tensor (e.g. for `save_weights`)."""
        return {k: self.view(k).copy() for k in self.layout}

    def load(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Copy tensors into the buffer (shapes must match; see `match_weights` for user files)."""
        for name, value in tensors.items():
            dst = self.view(name)
            value = np.asarray(value)
            if value.shape != dst.shape:
                raise ValueError(f"tensor '{name}': shape {value.shape}, expected {dst.shape}")
            dst[...] = value

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def set_lr_mult(self, name: str, mult: float) -> None:
        """Learning-rate multiplier of tensor `name` (0 freezes it)."""
        self.lr_mult[self._slice(name)] = np.float32(mult)

    def set_wd_mult(self, name: str, mult: float) -> None:
        """Weight-decay multiplier of tensor `name` (0 exempts it from weight decay)."""
        self.wd_mult[self._slice(name)] = np.float32(mult)

    def frozen(self) -> np.ndarray:
        return self.lr_mult == 0


# ---------------------------------------------------------------------------- kernels

@njit(cache=True)
def _sgd_kernel(p, g, buf, lr_mult, wd_mult, lr, momentum, dampening_c, wd, nesterov, first):
    use_momentum = momentum != np.float32(0)
    for i in range(p.shape[0]):
        mult = lr_mult[i]
        if mult == np.float32(0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != np.float32(0):
            d = d + w * p[i]
        if use_momentum:
            if first:
                b = d
            else:
                b = momentum * buf[i] + dampening_c * d
            buf[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        p[i] = p[i] - (lr * mult) * d


@njit(cache=True)
def _adam_kernel(p, g, m, v, lr_mult, wd_mult, step_size, beta2, one_minus_beta1,
                 one_minus_beta2, bc2_sqrt, eps, wd, lerp_low):
    for i in range(p.shape[0]):
        mult = lr_mult[i]
        if mult == np.float32(0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != np.float32(0):
            d = d + w * p[i]
        if lerp_low:  # torch.lerp's two branches: weight (1 - beta1) < 0.5 or not
            mi = m[i] + one_minus_beta1 * (d - m[i])
        else:
            mi = d - (d - m[i]) * (np.float32(1) - one_minus_beta1)
        vi = beta2 * v[i] + one_minus_beta2 * d * d
        m[i] = mi
        v[i] = vi
        denom = np.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] - (step_size * mult) * mi / denom  # addcdiv: (value * m) / denom


# ---------------------------------------------------------------------------- optimizers

def _f32(x: float) -> np.float32:
    return np.float32(x)


class Optimizer:
    """Base class: holds the `FlatParams`, the base learning rate and the step count."""

    kind = "optimizer"
    state_keys: tuple[str, ...] = ()

    def __init__(self, params: FlatParams, lr: float):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.params = params
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, np.ndarray] = {k: np.zeros(params.size, np.float32) for k in self.state_keys}

    def step(self, lr: float | None = None) -> None:
        """Apply one update from `params.grad` (with `lr` if given, e.g. from a schedule)."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array(self.step_count, dtype=np.int64)}
        out.update({k: v.copy() for k, v in self.state.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray], path="<optimizer state>") -> None:
        """Restore `state_dict()` output; a `CnnError` names `path` if it does not fit."""
        want = ("step",) + self.state_keys
        missing = [k for k in want if k not in state]
        if missing:
            raise file_error(path, f"optimizer state does not fit the {self.kind} optimizer",
                             expected="arrays " + ", ".join(want),
                             found="arrays " + (", ".join(sorted(state)) or "none"),
                             help="the checkpoint was written with a different optimizer; "
                                  "start a new run or use the same optimizer",
                             code="optimizer-state")
        for k in self.state_keys:
            arr = np.asarray(state[k])
            if arr.shape != (self.params.size,):
                raise file_error(path, f"optimizer state '{k}' has the wrong size",
                                 expected=f"{self.params.size} elements (the network's parameters)",
                                 found=f"shape {arr.shape}", code="optimizer-state")
        for k in self.state_keys:
            self.state[k][...] = np.asarray(state[k], dtype=np.float32)
        self.step_count = int(np.asarray(state["step"]))


class SGD(Optimizer):
    """torch.optim.SGD semantics (see the module docstring)."""

    kind = "sgd"

    def __init__(self, params: FlatParams, lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0):
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.state_keys = ("momentum_buffer",) if momentum != 0 else ()
        super().__init__(params, lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.dampening = float(dampening)

    def step(self, lr: float | None = None) -> None:
        lr = self.lr if lr is None else float(lr)
        p = self.params
        buf = self.state["momentum_buffer"] if self.momentum != 0 else np.zeros(1, np.float32)
        _sgd_kernel(p.data, p.grad, buf,
                    p.lr_mult, p.wd_mult, _f32(lr), _f32(self.momentum), _f32(1.0 - self.dampening),
                    _f32(self.weight_decay), self.nesterov, self.step_count == 0)
        self.step_count += 1


class Adam(Optimizer):
    """torch.optim.Adam semantics with L2 weight decay (see the module docstring)."""

    kind = "adam"
    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: FlatParams, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError("beta1 and beta2 must lie in [0, 1)")
        if eps < 0 or weight_decay < 0:
            raise ValueError("eps and weight_decay must be >= 0")
        super().__init__(params, lr)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step(self, lr: float | None = None) -> None:
        lr = self.lr if lr is None else float(lr)
        t = self.step_count + 1
        bc1 = 1.0 - self.beta1 ** t
        bc2 = 1.0 - self.beta2 ** t
        p = self.params
        _adam_kernel(p.data, p.grad, self.state["exp_avg"], self.state["exp_avg_sq"],
                     p.lr_mult, p.wd_mult, _f32(lr / bc1), _f32(self.beta2), _f32(1.0 - self.beta1),
                     _f32(1.0 - self.beta2), _f32(bc2 ** 0.5), _f32(self.eps), _f32(self.weight_decay),
                     bool(abs(_f32(1.0 - self.beta1)) < 0.5))
        self.step_count = t


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(kind: str, params: FlatParams, **hyper) -> Optimizer:
    """`SGD` or `Adam` by name ('sgd' / 'adam') with keyword hyper-parameters."""
    try:
        cls = OPTIMIZERS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {sorted(OPTIMIZERS)}") from None
    return cls(params, **hyper)
