"""Merges: `add` (residual connections) and `concat` (channel / feature concatenation).

When the inputs do not fit, the error names both incoming tensors and their
shapes, and the help proposes a concrete layer that would make them fit.
"""
from __future__ import annotations

from cnndsl.ir.graph import TensorType
from cnndsl.ops.registry import OpDef, ShapeContext, register


def _both(ctx: ShapeContext, i: int, j: int) -> str:
    return f"'{ctx.input_names[i]}' ({ctx.inputs[i]}) and '{ctx.input_names[j]}' ({ctx.inputs[j]})"


def _add_help(ctx: ShapeContext, i: int, j: int) -> str:
    """A layer on one path that makes its shape equal to the other's."""
    a, b = ctx.inputs[i].shape, ctx.inputs[j].shape
    na, nb = ctx.input_names[i], ctx.input_names[j]
    if len(a) == 1 and len(b) == 1:
        return f"a `dense {a[0]}` on '{nb}' makes it {a[0]}"
    if len(a) != len(b):
        vec, vname, fmap, fname = (a, na, b, nb) if len(a) == 1 else (b, nb, a, na)
        if fmap[0] == vec[0]:
            return f"`global_avgpool` on '{fname}' makes it a vector of {vec[0]}"
        return f"add `flatten` (gives {fmap[0] * fmap[1] * fmap[2]}) and a `dense {vec[0]}` on '{fname}'"
    # two feature maps: bring the bigger one down to the smaller one
    (target, tname), (src, sname) = ((a, na), (b, nb)) if a[1] * a[2] <= b[1] * b[2] else ((b, nb), (a, na))
    if src[1] % target[1] == 0 and src[2] % target[2] == 0 and src[1] // target[1] == src[2] // target[2]:
        s = src[1] // target[1]
        stride = f" and stride={s}" if s > 1 else ""
        fix = f"a 1x1 conv with {target[0]} filters{stride} on '{sname}' (`conv {target[0]} kernel=1" + \
              (f" stride={s}" if s > 1 else "") + f"`) makes it {TensorType(target)}"
        if src[0] == target[0] and s > 1:
            fix += f"; so does `avgpool {s}`"
        return fix
    return (f"the two paths must end with the same shape: check the strides and paddings between them "
            f"('{tname}' is {TensorType(target)}, '{sname}' is {TensorType(src)})")


def add_shape(ctx: ShapeContext) -> TensorType:
    first = ctx.inputs[0]
    for j in range(1, len(ctx.inputs)):
        if ctx.inputs[j].shape != first.shape:
            details = ["add needs inputs of exactly the same shape"]
            if len(ctx.inputs) > 2:
                details += [f"'{n}' is {t}" for n, t in zip(ctx.input_names, ctx.inputs)]
            ctx.error(
                f"{ctx.describe()} cannot add {_both(ctx, 0, j)}",
                details=details,
                help=_add_help(ctx, 0, j),
                code="add-shape",
            )
    return first


def add_gradient(b, node, dy):
    """Every input of a sum gets dy itself."""
    return [dy if b.needs(src) else None for src in b.graph.inputs_of(node.name)]


def concat_gradient(b, node, dy):
    """Each input gets its slice of dy along the channels (or features)."""
    grads, offset = [], 0
    for port, src in enumerate(b.graph.inputs_of(node.name)):
        grads.append(b.add("concat_grad", node, [dy, src], f"grad_input{port}", like=1, offset=offset)
                     if b.needs(src) else None)
        offset += b.graph.node(src).type.shape[0]
    return grads


ADD = register(OpDef(
    gradient=add_gradient,
    name="add",
    category="merge",
    doc="Element-wise sum of two or more tensors of the same shape (residual connections).",
    min_inputs=2,
    max_inputs=None,
    shape=add_shape,
    flops=lambda a, ins, out: (len(ins) - 1) * out.size,
    shape_doc="same as the inputs, which must all have the same shape",
    params_doc="none",
    flops_doc="(n - 1) adds per element for n inputs",
))


def concat_shape(ctx: ShapeContext) -> TensorType:
    first = ctx.inputs[0]
    for j in range(1, len(ctx.inputs)):
        t = ctx.inputs[j]
        if len(t.shape) != len(first.shape):
            fmap_i = 0 if len(first.shape) == 3 else j
            fmap = ctx.inputs[fmap_i]
            ctx.error(
                f"{ctx.describe()} cannot join a feature map and a vector: {_both(ctx, 0, j)}",
                details=["concat joins feature maps along channels, or vectors along features"],
                help=f"add `flatten` after '{ctx.input_names[fmap_i]}' (gives {fmap.size}) "
                     f"or `global_avgpool` (gives {fmap.shape[0]})",
                code="concat-shape",
            )
        if len(t.shape) == 3 and t.shape[1:] != first.shape[1:]:
            (h0, w0), (h1, w1) = first.shape[1:], t.shape[1:]
            big, small = (0, j) if h0 * w0 >= h1 * w1 else (j, 0)
            bh, bw = ctx.inputs[big].shape[1:]
            sh, sw = ctx.inputs[small].shape[1:]
            rows, cols = bh - sh, bw - sw
            diff = []
            if rows:
                diff.append(f"{abs(rows)} row{'s' if abs(rows) != 1 else ''}")
            if cols:
                diff.append(f"{abs(cols)} column{'s' if abs(cols) != 1 else ''}")
            bn, sn = ctx.input_names[big], ctx.input_names[small]
            if bh % sh == 0 and bw % sw == 0 and bh // sh == bw // sw:
                r = bh // sh
                fix = (f"'{bn}' is {r} times larger: `upsample {r}` on '{sn}' or a layer with stride={r} "
                       f"on the way to '{bn}' makes them agree")
            else:
                fix = (f"crop '{bn}' to {sh}x{sw} or pad '{sn}' to {bh}x{bw}: e.g. padding=same or rounding=ceil "
                       f"on the layer that shrank '{sn}', or an input size that every stride on the way divides")
            ctx.error(
                f"{ctx.describe()} cannot join {_both(ctx, 0, j)}: their heights and widths differ "
                f"({h0}x{w0} vs {h1}x{w1})",
                details=["concat joins along channels, so every input needs the same height and width",
                         f"'{ctx.input_names[big]}' is larger by {' and '.join(diff)}"],
                help=fix,
                code="concat-shape",
            )
    if len(first.shape) == 1:
        return TensorType((sum(t.shape[0] for t in ctx.inputs),))
    return TensorType((sum(t.shape[0] for t in ctx.inputs),) + first.shape[1:])


CONCAT = register(OpDef(
    gradient=concat_gradient,
    name="concat",
    aliases=("cat",),
    category="merge",
    doc="Join two or more feature maps along channels (or vectors along features), in input order.",
    min_inputs=2,
    max_inputs=None,
    shape=concat_shape,
    flops=lambda a, ins, out: 0,
    shape_doc="(C_1 + C_2 + ...) x H x W for maps with equal H and W; F_1 + F_2 + ... for vectors",
    params_doc="none",
    flops_doc="0 (copies)",
))
