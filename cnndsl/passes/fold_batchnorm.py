"""fold_batchnorm (-O2, inference only): batchnorm after a conv or dense folds into its weights.

    c = conv(x) ; b = batchnorm(c)        ->   c = fused_conv(x) folded_bn=b bn_eps=...

At inference batchnorm is y = s * z + (beta - s * mean) per output channel with
s = gamma / sqrt(running_var + eps), so w' = s * w and b' = s * (b - mean) + beta give the
same output with one pass less over the activations (ONNX Runtime ConvBNFusion,
TVM SimplifyInference + FoldScaleAxis). Never while training: there batchnorm uses the
batch statistics and updates the running ones.

Folded values never overwrite the stored parameters: the node names its batchnorm, and the
launcher folds the current stored values into scratch at run time (cnndsl/backend/cpu/fused.py,
docs/passes.md "Folded constants").

Guards (each bails out): the producer is not a conv/dense or already has an activation,
residual or folded batchnorm; the producer has another reader or is a head; the batchnorm
is a head.
Tests: tests/passes/test_fold_batchnorm.py.
"""
from __future__ import annotations

from cnndsl.passes.base import INFERENCE, Pass, PassContext, absorb, is_head, mark_rewritten, sole_consumer
from cnndsl.passes.fusion import can_make_fused, has_epilogue_room, make_fused


class FoldBatchnorm(Pass):
    name = "fold_batchnorm"
    level = 2
    modes = frozenset({INFERENCE})
    requires = ("typed", "forward")

    def run(self, graph, ctx: PassContext) -> bool:
        changed = False
        for name in graph.topo_order():
            if name in graph and graph.node(name).op == "batchnorm":
                changed |= self.fold(graph, name, ctx)
        return changed

    def fold(self, graph, bn_name: str, ctx: PassContext) -> bool:
        if is_head(graph, bn_name):
            return False
        layer_name = graph.inputs_of(bn_name)[0]
        layer = graph.node(layer_name)
        if not has_epilogue_room(layer) or layer.attrs.get("residual") or layer.attrs.get("folded_bn"):
            return False
        if sole_consumer(graph, layer_name) != bn_name or not can_make_fused(layer, ctx):
            return False
        eps = float(graph.node(bn_name).attrs["eps"])
        make_fused(layer)
        layer.attrs["folded_bn"], layer.attrs["bn_eps"] = bn_name, eps
        absorb(graph, layer_name, bn_name)
        mark_rewritten(layer, self.name)
        ctx.fired(self.name, f"batchnorm folded into {layer.op.removeprefix('fused_')}")
        return True
