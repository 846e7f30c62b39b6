"""NumPy reference implementations: the test oracle for the CPU kernels.

Simple and obviously right rather than fast; every function works in the dtype
it is given (tests use float64). Forward functions return new arrays; backward
functions return the gradients as a tuple. Padding is always the resolved
(top, bottom, left, right) tuple of node.geometry.pads (cnndsl/kernels/geometry.py).

Modules (import the functions from them, e.g. `reference.conv.conv2d`; no flat
re-exports, because `dense` and `dropout` are both module and function names):
activation, batchnorm, conv, dense, dropout, loss, pool, tensor.
"""
