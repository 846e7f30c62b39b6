"""Kernels for every op: NumPy references (`cnndsl.kernels.reference`, the test
oracle, float64-friendly) and Numba CPU kernels (`cnndsl.kernels.cpu`, float32,
forward and backward). The table of ops, functions, signatures and layouts is in
cnndsl/kernels/README.md.
"""
