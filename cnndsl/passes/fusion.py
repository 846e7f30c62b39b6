"""Helpers shared by the fusion passes (not a pass): turning a layer into its fused op, and the
guards the passes declare (each returns why it declines a match, or None).

A layer becomes its fused op in place: the node keeps its name (so its parameters stay
`<layer>.weight`), its options, and gains the epilogue options with their defaults; the
absorbed nodes are then removed by the pass (`absorb`).
"""
from __future__ import annotations

from cnndsl.kernels.activations import ACTIVATIONS, BY_NAME, INPUT
from cnndsl.ops.build import default_value
from cnndsl.ops.registry import get_op

FUSED_OF = {"conv": "fused_conv", "dense": "fused_dense"}
ANCHORS = tuple(FUSED_OF) + tuple(FUSED_OF.values())  # ops an epilogue can be fused into
FUSABLE_ACTIVATIONS = tuple(a.name for a in ACTIVATIONS if a.fusable)  # every element-wise activation


def activation_refusal(op: str, ctx) -> str | None:
    """Why an activation op cannot join a layer's epilogue here, or None when it can. In training
    the fused layer's backward has only the activation's output y, so an activation whose gradient
    reads its input (gelu, silu, hardswish, mish) stays a separate op there; at inference
    (no backward) every element-wise activation fuses."""
    act = BY_NAME.get(op)
    if act is None or not act.fusable:
        return f"{op} is not an element-wise activation"
    if ctx.mode == "training" and act.grad_from == INPUT:
        return f"{op}'s gradient needs its input, which the fused layer does not keep (training)"
    return None


def pool_refusal(activation: str) -> str | None:
    """Why a 2x2 max pool cannot run before this epilogue activation: act(max) == max(act) only for a
    non-decreasing activation."""
    if not BY_NAME[activation].monotone:
        return f"{activation} is not monotone: the max pool cannot come before it"
    return None


ACTIVATION_OPS = FUSABLE_ACTIVATIONS + ("softmax", "prelu")  # what an epilogue match looks at


def backend_has(ctx, *ops: str) -> bool:
    """Can ctx.backend run these ops? (True without a backend: a pure graph rewrite.) A backend's
    launchers register their ops in the op registry when it is loaded (load_backend), which
    `optimize` requires of a backend it is given: the passes read the registry, they never load one."""
    if ctx.backend is None:
        return True
    return all(ctx.backend in get_op(op).kernels for op in ops)


def can_make_fused(node, ctx) -> bool:
    """The fused op of this layer, and in training its epilogue gradient, exist on ctx.backend."""
    fused = FUSED_OF.get(node.op, node.op)
    return backend_has(ctx, fused, "epilogue_grad") if ctx.mode == "training" else backend_has(ctx, fused)


def has_epilogue_room(node) -> bool:
    """A layer (or fused layer) whose output is still the plain affine result: no activation yet."""
    return node.op in ANCHORS and node.attrs.get("activation", "none") == "none"


# -- guards ----------------------------------------------------------------------------------
def layer_has_room(graph, m, ctx) -> str | None:
    node = graph.node(m.node)
    if not has_epilogue_room(node):
        return f"'{m.node}' already has an activation ({node.attrs.get('activation')})"
    return None


def backend_can_fuse(graph, m, ctx) -> str | None:
    node = graph.node(m.node)
    if not can_make_fused(node, ctx):
        return f"backend {ctx.backend} has no kernel for {FUSED_OF.get(node.op, node.op)} (or its gradient)"
    return None


def consumer_activation_fuses(graph, m, ctx) -> str | None:
    return activation_refusal(graph.node(m.consumer).op, ctx)


def make_fused(node) -> None:
    """conv -> fused_conv, dense -> fused_dense (a no-op on an already fused layer)."""
    if node.op not in FUSED_OF:
        return
    node.op = FUSED_OF[node.op]
    for attr in get_op(node.op).attrs:
        if attr.name not in node.attrs:
            node.attrs[attr.name] = default_value(attr)


def set_activation(node, activation_node) -> None:
    node.attrs["activation"] = activation_node.op
    node.attrs["alpha"] = float(activation_node.attrs.get("alpha", 0.01))
