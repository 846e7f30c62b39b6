"""Fused ops: what the optimization passes (cnndsl/passes/) rewrite chains of ops into.

They are ordinary registered ops (shape rule, params, FLOPs, gradient rule, kernels),
so a rewritten graph is verified, shape-checked, planned and run like any other.
A fused op keeps the name of the layer it grew from, and the same `params`, so the
weights stay `<layer>.weight` / `<layer>.bias` under every pass.

The modules live one level below cnndsl/ops/ on purpose: docs/layers.md documents
the language's own layers (cnndsl/ops/*.py) and these are compiler-made. They may
still be written in source, so that `dump()` of an optimized graph parses back.
"""
from cnndsl.ops.fused import batchnorm, conv, conv_pool, dense, grads  # noqa: F401
