"""fuse_backward (-O2, training only): the same fusion on the backward graph.

A fused layer's gradient rule emits dz = epilogue_grad(dy, y) (the activation's gradient)
read by the layer's two gradient ops. When nothing else reads dz, the three become one
node that computes dz in scratch and runs both gradient kernels on it:

    e = epilogue_grad(dy, c) ; conv_grad_params(e, x) ; gi = conv_grad_input(e, x)
        ->   gi = fused_conv_grad(dy, x, c)           (likewise dense)

dz is then never a planned tensor (one buffer less per layer in the memory plan) and
the relu mask is applied in the same launch as the gradient GEMMs that read it.

A fused_batchnorm's dz is read by one node, its batchnorm_grad; the two become one node whose
kernel recomputes dz = act'(y) * dy in each of the batchnorm backward's two sweeps (no scratch):

    e = epilogue_grad(dy, b) ; gi = batchnorm_grad(e, x)   ->   gi = fused_batchnorm_grad(dy, x, b)

Guards (each declines with its reason): the forward layer has no fused gradient op; the backend
lacks it; dz has a reader other than the layer's own gradient ops (a residual shortcut takes dz as
its gradient, so residual convs keep the three nodes).
Tests: tests/passes/test_fuse_backward.py.
"""
from __future__ import annotations

from cnndsl.ir.graph import Node
from cnndsl.passes.base import TRAINING, Match, RewritePass
from cnndsl.passes.fusion import backend_has

GRAD_OPS = {"fused_conv": ("conv_grad_params", "conv_grad_input", "fused_conv_grad"),
            "fused_dense": ("dense_grad_params", "dense_grad_input", "fused_dense_grad"),
            "fused_batchnorm": (None, "batchnorm_grad", "fused_batchnorm_grad")}


def has_fused_gradient(graph, m, ctx) -> str | None:
    fwd = graph.node(graph.node(m.node).attrs["forward"])
    ops = GRAD_OPS.get(fwd.op)
    if ops is None:
        return f"{fwd.op} '{fwd.name}' has no fused gradient op"
    if not backend_has(ctx, ops[2]):
        return f"backend {ctx.backend} has no kernel for {ops[2]}"
    return None


def only_own_readers(graph, m, ctx) -> str | None:
    """dz is read by the forward layer's own gradient ops and nothing else."""
    dz = m.node
    fwd = graph.node(dz).attrs["forward"]
    allowed = GRAD_OPS[graph.node(fwd).op][:2]
    readers = {graph.node(r).op: r for r in graph.consumers(dz)}
    foreign = [r for r in graph.consumers(dz) if graph.node(r).op not in allowed
               or graph.node(r).attrs.get("forward") != fwd]
    if foreign:
        return f"'{dz}' is also read by {', '.join(foreign)}: it must stay materialized"
    if len(readers) != graph.nx.out_degree(dz):
        return f"'{dz}' is read twice by one of its gradient ops"
    if allowed[0] is None and not readers:
        return f"'{dz}' has no batchnorm gradient to fuse with"
    return None


class FuseBackward(RewritePass):
    name = "fuse_backward"
    level = 2
    modes = frozenset({TRAINING})
    requires = ("typed", "training_graph")
    ops = ("epilogue_grad",)
    guards = (has_fused_gradient, only_own_readers)

    def rewrite(self, graph, m: Match, ctx) -> str:
        dz = m.node
        fwd = graph.node(dz).attrs["forward"]
        kind = graph.node(fwd).op
        params_op, input_op, fused_op = GRAD_OPS[kind]
        readers = {graph.node(r).op: r for r in graph.consumers(dz)}
        params_node, input_node = readers.get(params_op), readers.get(input_op)
        dy, y = graph.inputs_of(dz)
        x = graph.inputs_of(fwd)[0]
        attrs = {"forward": fwd, "like": 1}
        if kind != "fused_batchnorm":
            attrs.update(params_grad=params_node is not None, input_grad=input_node is not None)
        fused = Node(f"{fwd}.grad_fused", fused_op, attrs, span=graph.node(dz).span, trace=graph.node(dz).trace)
        graph.add(fused, [dy, x, y])
        for old in (params_node, input_node):  # the optimizer step waits for them: they write gradients
            if old is not None:
                graph.replace_uses(old, fused.name)
                graph.remove(old)
        graph.remove(dz)
        fused.meta["rewritten_by"] = self.name
        return f"{kind.removeprefix('fused_')} backward fused"
