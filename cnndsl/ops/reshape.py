"""reshape: the same values with another per-sample shape (a view: nothing is copied)."""
from __future__ import annotations

import math

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import Attr, OpDef, ShapeContext, register


def _show(shape) -> str:
    return "x".join(str(d) for d in shape)


def reshape_shape(ctx: ShapeContext) -> TensorType:
    (t,) = ctx.inputs
    want = tuple(ctx.attrs["shape"])
    unknown = [i for i, d in enumerate(want) if d == -1]
    if len(unknown) > 1 or any(d < 1 and d != -1 for d in want):
        ctx.error(f"{ctx.describe()}: shape {_show(want)} has " +
                  ("more than one -1" if len(unknown) > 1 else "a size below 1"), attr="shape",
                  details=["expected: positive sizes, at most one of them -1 (inferred)"], code="reshape-shape")
    known = math.prod(d for d in want if d != -1)
    if unknown:
        if t.size % known:
            ctx.error(f"{ctx.describe()} cannot infer the -1 of {_show(want)}: {t.size} values ({t}) are not a "
                      f"multiple of {known}", attr="shape", code="reshape-size")
        want = tuple(t.size // known if d == -1 else d for d in want)
    if math.prod(want) != t.size:
        ctx.error(f"{ctx.describe()} cannot make {t.size} values ({t}) into {_show(want)} "
                  f"({math.prod(want)} values)", attr="shape",
                  details=[f"expected: sizes whose product is {t.size}", f"found: {' x '.join(map(str, want))} = "
                           f"{math.prod(want)}"],
                  help=f"use -1 for one size to have it inferred (e.g. `reshape {_show((-1,) + want[1:])}`)"
                  if len(want) > 1 else None, code="reshape-size")
    return TensorType(want, t.dtype)


def reshape_gradient(b, node, dy):
    """dy reshaped back to the input's shape (a view, like flatten's)."""
    return [b.input_grad("unflatten", node, [dy, b.graph.inputs_of(node.name)[0]])]


RESHAPE = register(OpDef(
    gradient=reshape_gradient,
    name="reshape",
    doc="The same values in row-major order with another per-sample shape: a vector F or a CxHxW map; one size "
        "may be -1 (inferred). A view of its input: nothing is copied. `flatten` is `reshape -1`.",
    attrs=(Attr("shape", "shape", doc="the new per-sample shape, F or CxHxW; one size may be -1",
                positional=True),),
    shape=reshape_shape,
    flops=lambda a, ins, out: 0,
    shape_doc="the given shape (same number of values)",
    params_doc="none",
    flops_doc="0 (a view)",
))
