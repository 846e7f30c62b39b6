"""Optimizers over one flat float32 parameter buffer: SGD, Adam, AdamW, RMSprop, Lion.

All learnable tensors of a network live in ONE contiguous float32 buffer
`FlatParams.data` (cnndsl/backend/params.py), with a gradient buffer `FlatParams.grad` of the
same size; `FlatParams.view(name)` / `grad_view(name)` are reshaped views (no copies), so
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

Each optimizer is declared once, in cnndsl/ops/training/optimizers.py (options, state arrays,
step kernel, `coefficients(hyper, lr, t)`: the kernels' scalars, computed once for both backends);
the step kernels are in cnndsl/kernels/cpu/optim.py and cnndsl/kernels/cuda/optim.py. AdamW,
RMSprop and Lion are declared the same way (docs/language.md). The classes below are their Python
face. `state_dict()` returns a dict of numpy arrays including the step count as a 0-d int64 array;
`load_state_dict()` restores it (checked against the sizes): cnndsl/backend/optimizer_state.py.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from cnndsl.backend.optimizer_state import OptimizerState
from cnndsl.backend.params import FlatParams
from cnndsl.ops.registry import Attr, AttrError
from cnndsl.ops.training.optimizers import OPTIMIZERS as DECLARATIONS


# ---------------------------------------------------------------------------- optimizers

class Optimizer:
    """An optimizer over one FlatParams: its kind, hyperparameters and base learning rate, and the
    state its steps carry (an OptimizerState: the step count and the state arrays).

    A subclass names its `kind`; everything else comes from its declaration in
    cnndsl/ops/training/optimizers.py (options with defaults and ranges, state arrays, step kernel,
    `coefficients`). Given to `Model.set_optimizer`, its hyperparameters become the attributes of
    the training graph's `optimizer_step` node (`step_attrs`), its state the runtime's, and `lr`
    each step's learning rate; the step launchers never call it. `step()` runs the same CPU step
    for use outside a Model (the tests against PyTorch's formulas)."""

    kind = "optimizer"
    options: dict[str, Attr] = {}  # lr and the hyperparameters, as declared (set per subclass)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        d = DECLARATIONS[cls.kind]
        cls.options = {"lr": d.lr, **{a.name: a for a in d.options}}

    def __init__(self, params: FlatParams, lr: float | None = None, **hyper):
        d = DECLARATIONS[self.kind]
        lr = d.lr.default if lr is None else float(lr)
        if not lr >= 0:  # 0 is allowed here: warm_up steps at lr 0 to compile without changing anything
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        try:
            self.hyper = d.resolve(hyper)
        except AttrError as e:
            raise ValueError(str(e)) from None
        self.params = params
        self.lr = lr
        self.slots = OptimizerState(self.kind, d.state(self.hyper), params.size)

    def __getattr__(self, name: str):
        hyper = self.__dict__.get("hyper")
        if hyper is not None and name in hyper:  # opt.momentum, opt.beta1, ...
            return hyper[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def declaration(self):
        return DECLARATIONS[self.kind]

    @property
    def step_attrs(self) -> dict:
        """The attributes of the optimizer_step node that applies this optimizer."""
        return {"kind": self.kind, **self.hyper}

    # the declaration's step kernel and its arguments (the CUDA kernel test calls them directly)
    @property
    def kernel(self) -> str:
        return self.declaration.kernel

    @property
    def state_keys(self) -> tuple[str, ...]:
        return self.slots.keys

    def kernel_arrays(self, state: Mapping, dummy) -> tuple:
        return self.declaration.kernel_arrays(state, dummy)

    def coefficients(self, lr: float, t: int) -> tuple:
        """The step kernel's scalar arguments for step t (1-based) at learning rate lr."""
        return self.declaration.coefficients(self.hyper, lr, t)

    @property
    def state(self) -> dict[str, np.ndarray]:
        return self.slots.arrays

    @property
    def step_count(self) -> int:
        return self.slots.step

    @step_count.setter
    def step_count(self, value: int) -> None:
        self.slots.step = int(value)

    def step(self, lr: float | None = None) -> None:
        """Apply one update from `params.grad` (with `lr` if given, e.g. from a schedule)."""
        from cnndsl.backend.cpu.step import apply_step

        apply_step(self.step_attrs, self.params, self.slots, self.lr if lr is None else float(lr))

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.slots.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray], path="<optimizer state>") -> None:
        """Restore `state_dict()` output; a `CnnError` names `path` if it does not fit."""
        self.slots.load_state_dict(state, path)


class SGD(Optimizer):
    """torch.optim.SGD semantics (see the module docstring)."""
    kind = "sgd"


class Adam(Optimizer):
    """torch.optim.Adam semantics with L2 weight decay (see the module docstring)."""
    kind = "adam"


class AdamW(Optimizer):
    """torch.optim.AdamW: Adam with decoupled weight decay, p <- p * (1 - lr * weight_decay) before
    the update (the moments never see it); PyTorch's default weight_decay is 0.01."""
    kind = "adamw"


class RMSprop(Optimizer):
    """torch.optim.RMSprop (centered=False): sq = alpha*sq + (1-alpha)*g^2 (g with L2 weight decay);
    p -= lr * g / (sqrt(sq) + eps), through a momentum buffer when momentum > 0."""
    kind = "rmsprop"


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation of the momentum and the gradient, with decoupled weight decay:
    p <- p * (1 - lr*wd) - lr * sign(beta1*m + (1-beta1)*g); m <- beta2*m + (1-beta2)*g. Its
    learning rate is typically 3-10 times smaller than AdamW's."""
    kind = "lion"


OPTIMIZERS = {cls.kind: cls for cls in (SGD, Adam, AdamW, RMSprop, Lion)}
assert list(OPTIMIZERS) == list(DECLARATIONS), "one class per declared optimizer"


def make_optimizer(kind: str, params: FlatParams, **hyper) -> Optimizer:
    """An optimizer by name (sgd, adam, adamw, rmsprop, lion) with keyword hyper-parameters."""
    try:
        cls = OPTIMIZERS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {sorted(OPTIMIZERS)}") from None
    return cls(params, **hyper)
