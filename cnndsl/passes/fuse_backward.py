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

Guards: dz has a reader other than the layer's own gradient ops (a residual shortcut
takes dz as its gradient, so residual convs keep the three nodes); the backend lacks the
fused gradient op.
Tests: tests/passes/test_fuse_backward.py.
"""
from __future__ import annotations

from cnndsl.ir.graph import Node
from cnndsl.passes.base import TRAINING, Pass, PassContext
from cnndsl.passes.fusion import backend_has

GRAD_OPS = {"fused_conv": ("conv_grad_params", "conv_grad_input", "fused_conv_grad"),
            "fused_dense": ("dense_grad_params", "dense_grad_input", "fused_dense_grad")}


class FuseBackward(Pass):
    name = "fuse_backward"
    level = 2
    modes = frozenset({TRAINING})
    requires = ("typed", "training_graph")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op == "epilogue_grad":
                changed |= self.fuse(graph, name, ctx)
        return changed

    def fuse(self, graph, dz: str, ctx: PassContext) -> bool:
        fwd = graph.node(dz).attrs["forward"]
        if graph.node(fwd).op == "fused_batchnorm":
            return self.fuse_batchnorm(graph, dz, fwd, ctx)
        ops = GRAD_OPS.get(graph.node(fwd).op)
        if ops is None or not backend_has(ctx, ops[2]):
            return False
        readers = {graph.node(r).op: r for r in graph.consumers(dz)}
        if len(readers) != graph.nx.out_degree(dz) or set(readers) - set(ops[:2]) or \
                any(graph.node(r).attrs["forward"] != fwd for r in readers.values()):
            return False
        params_node, input_node = readers.get(ops[0]), readers.get(ops[1])
        dy, y = graph.inputs_of(dz)
        x = graph.inputs_of(fwd)[0]
        fused = Node(f"{fwd}.grad_fused", ops[2], {"forward": fwd, "like": 1, "params_grad": params_node is not None,
                                                   "input_grad": input_node is not None},
                     span=graph.node(dz).span, trace=graph.node(dz).trace)
        graph.add(fused, [dy, x, y])
        for old in (params_node, input_node):
            if old is not None:
                graph.replace_uses(old, fused.name)
                graph.remove(old)
        graph.remove(dz)
        fused.meta["rewritten_by"] = self.name
        ctx.fired(self.name, f"{graph.node(fwd).op.removeprefix('fused_')} backward fused")
        return True

    def fuse_batchnorm(self, graph, dz: str, fwd: str, ctx: PassContext) -> bool:
        if graph.nx.out_degree(dz) != 1 or not backend_has(ctx, "fused_batchnorm_grad"):
            return False
        grad = graph.consumers(dz)[0]
        if graph.node(grad).op != "batchnorm_grad" or graph.node(grad).attrs["forward"] != fwd:
            return False
        dy, y = graph.inputs_of(dz)
        x = graph.inputs_of(fwd)[0]
        fused = Node(f"{fwd}.grad_fused", "fused_batchnorm_grad", {"forward": fwd, "like": 1},
                     span=graph.node(dz).span, trace=graph.node(dz).trace)
        graph.add(fused, [dy, x, y])
        graph.replace_uses(grad, fused.name)  # the optimizer step waits for it: it writes dgamma, dbeta
        graph.remove(grad)
        graph.remove(dz)
        fused.meta["rewritten_by"] = self.name
        ctx.fired(self.name, "batchnorm backward fused")
        return True
