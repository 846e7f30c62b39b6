"""fuse_dense_activation (-O2, both modes): dense + bias + activation become one fused_dense.

    h = dense(x) 120 ; r = relu(h)        ->   h = fused_dense(x) units=120 activation=relu

Same rule and guards as fuse_conv_activation (ONNX Runtime GemmActivationFusion).
Tests: tests/passes/test_fuse_dense_activation.py.
"""
from __future__ import annotations

from cnndsl.passes.base import Pass, PassContext
from cnndsl.passes.fuse_conv_activation import fuse_activation


class FuseDenseActivation(Pass):
    name = "fuse_dense_activation"
    level = 2
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op in ("dense", "fused_dense"):
                changed |= fuse_activation(graph, name, self.name, ctx)
        return changed
