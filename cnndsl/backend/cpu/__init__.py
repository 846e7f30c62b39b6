"""The CPU backend: launchers that bind IR nodes to the Numba kernels in cnndsl/kernels/cpu.

Importing this package registers a launcher per op in `OpDef.kernels["cpu"]`.
A launcher is `fn(rc, node, ins, out)`: the RunContext, the node, its input
arrays (batched, in port order) and its output array (None for effect nodes).
"""
from cnndsl.backend.cpu import conv, elementwise, losses, pooling, shape_ops, step, yolo_loss  # noqa: F401
from cnndsl.backend.cpu import fused  # noqa: F401  (the optimization passes' fused ops)
from cnndsl.backend.cpu import layers  # noqa: F401  (global_maxpool, multiply, reshape, lrn, softmax_axis)
