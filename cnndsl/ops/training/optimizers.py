"""The optimizers, each declared once, and the `optimizer_step` op derived from them.

An `OptimizerDef` says everything about one optimizer: its kind, its options (`Attr`s: the
learning rate's default and range, then its hyperparameters with theirs), the state arrays it
keeps (each the size of the flat parameter buffer), its step kernel (by name: the same in
cnndsl/kernels/cpu/optim.py and cnndsl/kernels/cuda/optim.py), which state arrays the kernel
takes, and `coefficients(hyper, lr, t)`: the kernel's scalar arguments for step t (1-based),
computed once here for both backends in double precision and rounded to float32, as PyTorch
does on the CPU (Adam's bias correction included). The update rules themselves are documented
at the kernels and in cnndsl/train/optim.py.

Derived from `OPTIMIZERS`, and nowhere spelled out again:
  - the `optimizer_step` op's attributes (`kind` and every hyperparameter) and their check
    per kind, set by the autodiff pass (cnndsl/passes/autodiff.py)   this module
  - the launchers of both backends, which read the step node's attributes and call the kernel
    directly                                            cnndsl/backend/{cpu,cuda}/step.py
  - the Python optimizer classes (SGD, Adam, ...)                    cnndsl/train/optim.py

The learning rate is not an attribute: it is the step's run-time input (`RunContext.lr`, given
to each run by `Model.train_step`), so a schedule changes it every step without rebuilding the
graph or recompiling a kernel. The hyperparameters are attributes: changing one (a different
optimizer object given to `Model.set_optimizer`) rebuilds the training graph, not the kernels,
which take them as scalars. The per-layer learning-rate multipliers are an attribute too,
`lr_mult` (LR_MULT: ((layer, factor), ...); the training section's `lr_mult` lines and, as 0, its
`freeze`; a layer not named has 1): the launchers expand it at plan time into the per-element
array the kernels read (`ParamStore.expand_lr_mult`), so the node is its one source. The step
count and the state arrays are kept by the runtime (cnndsl/backend/optimizer_state.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, AttrError, OpDef, ShapeContext, register


def _f32(x: float) -> np.float32:
    return np.float32(x)


@dataclass(frozen=True)
class OptimizerDef:
    kind: str
    doc: str
    lr: Attr  # the learning rate's default and range (a run-time input of the step, not an attribute)
    options: tuple[Attr, ...]  # the hyperparameters: the step node's attributes besides `kind`
    kernel: str  # the step kernel's name in cnndsl/kernels/{cpu,cuda}/optim.py
    kernel_state: tuple[str, ...]  # the state arrays the kernel takes, in order
    coefficients: Callable[[Mapping[str, Any], float, int], tuple]  # (hyper, lr, t) -> the kernel's scalars
    # the state arrays kept for these hyperparameters (SGD without momentum keeps none)
    state: Callable[[Mapping[str, Any]], tuple[str, ...]]
    # a constraint between options: (hyper) -> what is wrong, or None
    check: Callable[[Mapping[str, Any]], str | None] = lambda hyper: None

    def option(self, name: str) -> Attr | None:
        return next((a for a in self.options if a.name == name), None)

    def resolve(self, hyper: Mapping[str, Any]) -> dict[str, Any]:
        """Every hyperparameter: the given ones checked by their `Attr`, the others defaulted.
        Raises AttrError naming an option this optimizer does not have, or a value that does not fit."""
        unknown = [k for k in hyper if self.option(k) is None]
        if unknown:
            raise AttrError(f"the {self.kind} optimizer has no option {', '.join(unknown)}; its options are "
                            f"{', '.join(['lr'] + [a.name for a in self.options])}")
        out = {a.name: a.coerce(hyper[a.name]) if a.name in hyper else a.default for a in self.options}
        problem = self.check(out)
        if problem:
            raise AttrError(problem)
        return out

    def kernel_arrays(self, state: Mapping, dummy) -> tuple:
        """The state arrays the step kernel takes, in order (host or device arrays); one this
        configuration does not keep (SGD's momentum buffer without momentum) is `dummy`."""
        return tuple(state[k] if k in state else dummy for k in self.kernel_state)


# -- the hyperparameters (shared where two optimizers mean the same thing by a name)
def _lr(default: float, doc: str = "learning rate") -> Attr:
    return Attr("lr", "float", default, doc, above=0)


def _momentum() -> Attr:
    return Attr("momentum", "float", 0.0, "momentum factor", minimum=0, below=1)


def _beta(n: int, default: float, doc: str) -> Attr:
    return Attr(f"beta{n}", "float", default, doc, minimum=0, below=1)


EPS = Attr("eps", "float", 1e-8, "added to the denominator", minimum=0)
L2 = Attr("weight_decay", "float", 0.0, "L2 penalty added to the gradient", minimum=0)


def _decoupled(default: float) -> Attr:
    return Attr("weight_decay", "float", default, "decoupled decay: weights shrink by lr * weight_decay per step",
                minimum=0)


# -- coefficients: the kernels' scalar arguments after the arrays (cnndsl/kernels/cpu/optim.py)
def _sgd_coefficients(h, lr: float, t: int) -> tuple:
    return (_f32(lr), _f32(h["momentum"]), _f32(1.0 - h["dampening"]), _f32(h["weight_decay"]),
            bool(h["nesterov"]), t == 1)


def _sgd_check(h) -> str | None:
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        return "Nesterov momentum requires a momentum and zero dampening"
    return None


def bias_corrections(h, t: int) -> tuple[float, float]:
    """Adam's (1 - beta1^t, 1 - beta2^t), in double precision."""
    return 1.0 - h["beta1"] ** t, 1.0 - h["beta2"] ** t


def _adam_coefficients(decoupled: bool):
    def coefficients(h, lr: float, t: int) -> tuple:
        bc1, bc2 = bias_corrections(h, t)
        beta1, beta2, wd = h["beta1"], h["beta2"], h["weight_decay"]
        l2, decay = (0.0, wd) if decoupled else (wd, 0.0)
        return (_f32(lr / bc1), _f32(beta2), _f32(1.0 - beta1), _f32(1.0 - beta2), _f32(bc2 ** 0.5),
                _f32(h["eps"]), _f32(l2), bool(abs(_f32(1.0 - beta1)) < 0.5), _f32(lr * decay))
    return coefficients


def _rmsprop_coefficients(h, lr: float, t: int) -> tuple:
    return (_f32(lr), _f32(h["alpha"]), _f32(1.0 - h["alpha"]), _f32(h["eps"]), _f32(h["weight_decay"]),
            _f32(h["momentum"]))


def _lion_coefficients(h, lr: float, t: int) -> tuple:
    return (_f32(lr), _f32(h["beta1"]), _f32(1.0 - h["beta1"]), _f32(h["beta2"]), _f32(1.0 - h["beta2"]),
            _f32(h["weight_decay"]))


_ADAM_OPTIONS = (_beta(1, 0.9, "decay of the first-moment average"),
                 _beta(2, 0.999, "decay of the second-moment average"), EPS)

SGD = OptimizerDef(
    "sgd", "torch.optim.SGD: momentum, Nesterov, L2 weight decay", _lr(0.01),
    (_momentum(), Attr("nesterov", "bool", False, "Nesterov momentum"), L2,
     Attr("dampening", "float", 0.0, "dampening of the momentum (PyTorch's)", minimum=0, maximum=1)),
    "sgd_step", ("momentum_buffer",), _sgd_coefficients,
    lambda h: ("momentum_buffer",) if h["momentum"] != 0 else (), _sgd_check)
ADAM = OptimizerDef(
    "adam", "torch.optim.Adam with L2 weight decay (added to the gradient)", _lr(0.001), _ADAM_OPTIONS + (L2,),
    "adam_step", ("exp_avg", "exp_avg_sq"), _adam_coefficients(False), lambda h: ("exp_avg", "exp_avg_sq"))
ADAMW = OptimizerDef(
    "adamw", "torch.optim.AdamW: Adam with decoupled weight decay (the moments never see it)", _lr(0.001),
    _ADAM_OPTIONS + (_decoupled(0.01),), "adam_step", ("exp_avg", "exp_avg_sq"), _adam_coefficients(True),
    lambda h: ("exp_avg", "exp_avg_sq"))
RMSPROP = OptimizerDef(
    "rmsprop", "torch.optim.RMSprop (centered=False)", _lr(0.01),
    (Attr("alpha", "float", 0.99, "decay of the squared-gradient average", minimum=0, below=1), EPS, _momentum(), L2),
    "rmsprop_step", ("square_avg", "momentum_buffer"), _rmsprop_coefficients,
    lambda h: ("square_avg", "momentum_buffer") if h["momentum"] != 0 else ("square_avg",))
LION = OptimizerDef(
    "lion", "Lion (Chen et al. 2023): the sign of an interpolation of momentum and gradient",
    _lr(0.0001, "learning rate (typically 3-10x smaller than AdamW's)"),
    (_beta(1, 0.9, "interpolation of momentum and gradient for the update's sign"),
     _beta(2, 0.99, "decay of the momentum"), _decoupled(0.0)),
    "lion_step", ("exp_avg",), _lion_coefficients, lambda h: ("exp_avg",))

OPTIMIZERS: dict[str, OptimizerDef] = {d.kind: d for d in (SGD, ADAM, ADAMW, RMSPROP, LION)}


def step_attrs(kind: str, **hyper) -> dict[str, Any]:
    """The attributes of an `optimizer_step` node: `kind` and every hyperparameter of that kind
    (`hyper` checked, the rest defaulted). Raises AttrError for an unknown kind or option."""
    d = OPTIMIZERS.get(kind)
    if d is None:
        raise AttrError(f"unknown optimizer '{kind}'; choose one of {', '.join(OPTIMIZERS)}")
    return {"kind": kind, **d.resolve(hyper)}


LR_MULT = Attr("lr_mult", "multipliers", None, "per-layer learning-rate factors (the training section's lr_mult; "
               "0: frozen); a layer not named has 1; none: every layer 1", minimum=0)


def step_attrs_of(node) -> dict[str, Any]:
    """A step node's optimizer and hyperparameters: its attributes less those of other kinds
    (shape inference fills every declared attribute, None where the kind has no such option) and
    less its per-layer multipliers (`lr_mult_of`)."""
    return {k: v for k, v in node.attrs.items() if v is not None and k != LR_MULT.name}


def lr_mult_of(node) -> tuple[tuple[str, float], ...]:
    """A step node's per-layer learning-rate factors, ((layer, factor), ...); () when every layer has 1."""
    return node.attrs.get(LR_MULT.name) or ()


def _union_options() -> tuple[Attr, ...]:
    """Every hyperparameter name any optimizer declares, once, as an attribute of the step op
    (no default: the autodiff pass writes every option of the node's kind, and the shape rule
    checks each value against its kind's own declaration)."""
    by_name: dict[str, list[tuple[str, Attr]]] = {}
    for d in OPTIMIZERS.values():
        for a in d.options:
            by_name.setdefault(a.name, []).append((d.kind, a))
    out = []
    for name, uses in by_name.items():
        docs = dict.fromkeys(a.doc for _, a in uses)
        doc = "; ".join(f"{', '.join(k for k, a in uses if a.doc == text)}: {text}" for text in docs)
        out.append(Attr(name, uses[0][1].kind, None, doc))
    return tuple(out)


def _check_step(ctx: ShapeContext) -> TensorType:
    """The step produces no tensor; its attributes must be those of its kind, in range."""
    kind = ctx.attrs.get("kind")
    d = OPTIMIZERS.get(kind)
    if d is None:
        ctx.error(f"{ctx.describe()} names no known optimizer: {kind!r}", attr="kind", code="optimizer")
    if ctx.attrs.get(LR_MULT.name) is not None:
        try:
            ctx.attrs[LR_MULT.name] = LR_MULT.coerce(ctx.attrs[LR_MULT.name])
        except AttrError as e:
            ctx.error(f"{ctx.describe()}: {e}", attr=LR_MULT.name, code="optimizer")
    given = {k: v for k, v in ctx.attrs.items() if k not in ("kind", LR_MULT.name) and v is not None}
    try:
        want = d.resolve(given)
    except AttrError as e:
        ctx.error(f"{ctx.describe()}: {e}", code="optimizer")
    missing = [k for k in want if k not in given]
    if missing:
        ctx.error(f"{ctx.describe()} lacks the {kind} option{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                  code="optimizer")
    return TensorType(())


OPTIMIZER_STEP = register(OpDef(
    name="optimizer_step",
    doc="Apply the optimizer to every parameter once all parameter gradients are written; its "
        "attributes are the optimizer, its hyperparameters and the per-layer learning-rate factors, the "
        "learning rate is a run-time input.",
    attrs=(Attr("kind", "enum", "sgd", "the optimizer", choices=tuple(OPTIMIZERS)),) + _union_options() + (LR_MULT,),
    min_inputs=0,
    max_inputs=None,
    shape=_check_step,
    category="optimizer",
    shape_doc="()",
))
