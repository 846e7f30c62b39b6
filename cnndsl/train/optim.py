"""Optimizers over one flat float32 parameter buffer: SGD, Adam, AdamW, RMSprop, Lion.

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

The step kernels are in cnndsl/kernels/cpu/optim.py (and cnndsl/kernels/cuda/optim.py): each optimizer
below names its kernel and computes the kernel's scalar coefficients once per step, `coefficients(lr, t)`,
for both backends. AdamW, RMSprop and Lion are declared the same way (docs/language.md).
`state_dict()` returns a dict of numpy arrays including the step count as a
0-d int64 array; `load_state_dict()` restores it (checked against the sizes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from cnndsl.diagnostics import file_error
from cnndsl.kernels.cpu import optim as kernels


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


# ---------------------------------------------------------------------------- optimizers

def _f32(x: float) -> np.float32:
    return np.float32(x)


class Optimizer:
    """Base class: holds the `FlatParams`, the base learning rate and the step count.

    A subclass declares its `kind`, its `state_keys` (arrays of the parameters' size), the name of
    its step kernel (`kernel`: the same name in cnndsl/kernels/cpu/optim.py and
    cnndsl/kernels/cuda/optim.py), which state arrays the kernel takes (`kernel_state`, a missing
    one, such as SGD's momentum buffer without momentum, passed as a 1-element dummy) and
    `coefficients(lr, t)`: the kernel's scalar arguments for step number t (1-based), computed
    once here for both backends (Adam's bias correction included)."""

    kind = "optimizer"
    state_keys: tuple[str, ...] = ()
    kernel = ""
    kernel_state: tuple[str, ...] = ()

    def __init__(self, params: FlatParams, lr: float):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.params = params
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, np.ndarray] = {k: np.zeros(params.size, np.float32) for k in self.state_keys}

    def coefficients(self, lr: float, t: int) -> tuple:
        raise NotImplementedError

    def kernel_arrays(self, state: Mapping, dummy) -> tuple:
        """The state arrays the step kernel takes, in order (`state` host or device arrays)."""
        return tuple(state[k] if k in state else dummy for k in self.kernel_state)

    def step(self, lr: float | None = None) -> None:
        """Apply one update from `params.grad` (with `lr` if given, e.g. from a schedule)."""
        lr = self.lr if lr is None else float(lr)
        t = self.step_count + 1
        p = self.params
        getattr(kernels, self.kernel)(p.data, p.grad, *self.kernel_arrays(self.state, np.zeros(1, np.float32)),
                                      p.lr_mult, p.wd_mult, *self.coefficients(lr, t))
        self.step_count = t

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
    kernel = "sgd_step"
    kernel_state = ("momentum_buffer",)

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

    def coefficients(self, lr: float, t: int) -> tuple:
        return (_f32(lr), _f32(self.momentum), _f32(1.0 - self.dampening), _f32(self.weight_decay),
                self.nesterov, t == 1)


class Adam(Optimizer):
    """torch.optim.Adam semantics with L2 weight decay (see the module docstring)."""

    kind = "adam"
    state_keys = ("exp_avg", "exp_avg_sq")
    kernel = "adam_step"
    kernel_state = ("exp_avg", "exp_avg_sq")
    decoupled = False

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

    def bias_corrections(self, t: int) -> tuple[float, float]:
        """(1 - beta1^t, 1 - beta2^t), in double precision."""
        return 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t

    def coefficients(self, lr: float, t: int) -> tuple:
        bc1, bc2 = self.bias_corrections(t)
        l2, decoupled = (0.0, self.weight_decay) if self.decoupled else (self.weight_decay, 0.0)
        return (_f32(lr / bc1), _f32(self.beta2), _f32(1.0 - self.beta1), _f32(1.0 - self.beta2),
                _f32(bc2 ** 0.5), _f32(self.eps), _f32(l2), bool(abs(_f32(1.0 - self.beta1)) < 0.5),
                _f32(lr * decoupled))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, p <- p * (1 - lr * weight_decay) before
    the update (the moments never see it); PyTorch's default weight_decay is 0.01."""

    kind = "adamw"
    decoupled = True

    def __init__(self, params: FlatParams, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, beta1, beta2, eps, weight_decay)


class RMSprop(Optimizer):
    """torch.optim.RMSprop (centered=False): sq = alpha*sq + (1-alpha)*g^2 (g with L2 weight decay);
    p -= lr * g / (sqrt(sq) + eps), through a momentum buffer when momentum > 0."""

    kind = "rmsprop"
    kernel = "rmsprop_step"
    kernel_state = ("square_avg", "momentum_buffer")

    def __init__(self, params: FlatParams, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        if not 0 <= alpha < 1:
            raise ValueError("alpha must lie in [0, 1)")
        if eps < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("eps, momentum and weight_decay must be >= 0")
        self.state_keys = ("square_avg", "momentum_buffer") if momentum != 0 else ("square_avg",)
        super().__init__(params, lr)
        self.alpha, self.eps = float(alpha), float(eps)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def coefficients(self, lr: float, t: int) -> tuple:
        return (_f32(lr), _f32(self.alpha), _f32(1.0 - self.alpha), _f32(self.eps), _f32(self.weight_decay),
                _f32(self.momentum))


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation of the momentum and the gradient, with decoupled weight decay:
    p <- p * (1 - lr*wd) - lr * sign(beta1*m + (1-beta1)*g); m <- beta2*m + (1-beta2)*g. Its
    learning rate is typically 3-10 times smaller than AdamW's."""

    kind = "lion"
    state_keys = ("exp_avg",)
    kernel = "lion_step"
    kernel_state = ("exp_avg",)

    def __init__(self, params: FlatParams, lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
                 weight_decay: float = 0.0):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError("beta1 and beta2 must lie in [0, 1)")
        if weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        super().__init__(params, lr)
        self.beta1, self.beta2, self.weight_decay = float(beta1), float(beta2), float(weight_decay)

    def coefficients(self, lr: float, t: int) -> tuple:
        return (_f32(lr), _f32(self.beta1), _f32(1.0 - self.beta1), _f32(self.beta2), _f32(1.0 - self.beta2),
                _f32(self.weight_decay))


OPTIMIZERS = {cls.kind: cls for cls in (SGD, Adam, AdamW, RMSprop, Lion)}


def make_optimizer(kind: str, params: FlatParams, **hyper) -> Optimizer:
    """An optimizer by name (sgd, adam, adamw, rmsprop, lion) with keyword hyper-parameters."""
    try:
        cls = OPTIMIZERS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {sorted(OPTIMIZERS)}") from None
    return cls(params, **hyper)
