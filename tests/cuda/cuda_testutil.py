"""Helpers of the CUDA simulator tests (imported by file name; tests/cuda has no __init__.py)."""
from __future__ import annotations

import numpy as np


def dev(a, dtype=np.float32):
    """A flat device copy of a host array."""
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype).ravel())


def empty(n, dtype=np.float32):
    """A device array of n elements filled with NaN (ints: -7 or 7), so unwritten outputs show up."""
    from numba import cuda

    fill = {"i": -7, "u": 7}.get(np.dtype(dtype).kind, np.nan)
    return cuda.to_device(np.full(max(int(n), 1), fill, dtype))


def host(d, shape):
    return d.copy_to_host()[: int(np.prod(shape))].reshape(shape)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """Max abs error within atol + rtol * max|expected| (float32 kernels vs float64 references)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), f"{what}: non-finite values (an output element left unwritten?)"
    if expected.size == 0:
        return
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual - expected).max())
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"
