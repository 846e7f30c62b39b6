"""The one place that chooses the `cuda` module the CUDA kernels are written against.

NVIDIA's numba-cuda-mlir when it is installed, otherwise numba's CUDA target (the
built-in `numba.cuda`, or NVIDIA's numba-cuda, which replaces it when installed).
numba-cuda-mlir has no simulator, so with NUMBA_ENABLE_CUDASIM=1 (which must be set
before numba is first imported) numba's target, i.e. its simulator, is used.
See docs/cuda.md.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

# numba-cuda 0.30 registers an overload of np.row_stack whenever NumPy >= 2.0, but NumPy 2.5
# removed it (deprecated since 2.0): the first kernel compilation then fails with
# "module 'numpy' has no attribute 'row_stack'" (seen on an H200 machine with NumPy 2.5.2).
# The alias is what NumPy itself had, and only fills the gap.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

# numba's CUDA dispatcher warns on every launch of fewer than 128 blocks. The launch configurations
# here are chosen per shape (cnndsl/kernels/cuda/gemm.py, common.grid1d), and a small layer has a
# small grid by nature: on an H200, `cnndsl train examples/lenet5.cnn --device cuda` printed 31 of
# these warnings and nothing a user could act on. (`cnndsl bench --per-kernel` shows where time goes.)
warnings.filterwarnings("ignore", message=".*will likely result in GPU under-utilization due to low occupancy")

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"

# Whether compiled CUDA kernels are kept on disk (numba-cuda's cache, in the folder kernel_cache.py
# fingerprints) and the generated ones written to files there so that they can be: "on" or "off".
# Off by default until a GPU session has timed it (docs/cuda.md, "Kept between processes").
CACHE_ENV = "CNNDSL_CUDA_CACHE"
CACHE_POLICIES = ("on", "off")


def env_policy(name: str, policies: tuple[str, ...], default: str) -> str:
    """The policy the environment variable `name` sets (one of `policies`; 1/true and 0/false
    read as on and off; unset or empty: `default`), or ValueError naming the variable, the value
    and the choices."""
    value = os.environ.get(name, "").strip().lower() or default
    value = {"1": "on", "0": "off", "true": "on", "false": "off"}.get(value, value)
    if value not in policies:
        raise ValueError(f"{name}={os.environ.get(name)!r}: expected one of {', '.join(policies)}")
    return value


def cache_policy() -> str:
    """CNNDSL_CUDA_CACHE, read when a kernel is made: "on" or "off" (the default)."""
    return env_policy(CACHE_ENV, CACHE_POLICIES, "off")


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
