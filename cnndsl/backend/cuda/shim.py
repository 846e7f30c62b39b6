"""The one place that chooses the `cuda` module the CUDA kernels are written against.

NVIDIA's numba-cuda-mlir when it is installed, otherwise numba's CUDA target (the
built-in `numba.cuda`, or NVIDIA's numba-cuda, which replaces it when installed).
numba-cuda-mlir has no simulator, so with NUMBA_ENABLE_CUDASIM=1 (which must be set
before numba is first imported) numba's target, i.e. its simulator, is used.
See /work/shared/notes/numba-performance.md §4.1.
"""
from __future__ import annotations

import os

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"

if SIMULATOR:
    from numba import cuda  # noqa: F401  (numba's simulator)
else:
    try:
        from numba_cuda_mlir import cuda  # noqa: F401
    except ImportError:
        from numba import cuda  # noqa: F401


def device_available() -> bool:
    """True when kernels can run: a usable CUDA device, or the simulator."""
    if SIMULATOR:
        return True
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install reads as "no device"
        return False
