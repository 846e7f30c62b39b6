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

Guards (each declines with its reason): the layer has another reader or is a head; the batchnorm
is a head; the layer already has an activation, a residual or a folded batchnorm; the backend
lacks the fused op.
Tests: tests/passes/test_fold_batchnorm.py.
"""
from __future__ import annotations

from cnndsl.passes.base import INFERENCE, Match, RewritePass, absorb, consumer_not_head, mark_rewritten
from cnndsl.passes.fusion import ANCHORS, backend_can_fuse, layer_has_room, make_fused


def nothing_in_epilogue(graph, m, ctx) -> str | None:
    a = graph.node(m.node).attrs
    if a.get("residual"):
        return f"'{m.node}' adds a residual before the batchnorm would apply"
    if a.get("folded_bn"):
        return f"'{m.node}' already has a folded batchnorm"
    return None


class FoldBatchnorm(RewritePass):
    name = "fold_batchnorm"
    level = 2
    modes = frozenset({INFERENCE})
    requires = ("typed", "forward")
    ops = ANCHORS
    then = ("batchnorm",)
    guards = (consumer_not_head, layer_has_room, nothing_in_epilogue, backend_can_fuse)

    def rewrite(self, graph, m: Match, ctx) -> str:
        layer = graph.node(m.node)
        eps = float(graph.node(m.consumer).attrs["eps"])
        make_fused(layer)
        layer.attrs["folded_bn"], layer.attrs["bn_eps"] = m.consumer, eps
        absorb(graph, m.node, m.consumer)
        mark_rewritten(layer, self.name)
        return f"batchnorm folded into {layer.op.removeprefix('fused_')}"
