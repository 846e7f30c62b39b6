"""The CUDA backend: launchers that bind IR nodes to the Numba CUDA kernels in
cnndsl/kernels/cuda, registered in `OpDef.kernels["cuda"]`.

`load()` (called by `executor.load_backend("cuda")`) checks for a device, imports the
launcher modules and returns the backend object (cnndsl/backend/cuda/backend.py).
Importing this package imports nothing: without a device, `cnndsl` never loads the launchers.
"""
from __future__ import annotations

_BACKEND = None


def load():
    global _BACKEND
    if _BACKEND is None:
        from cnndsl.kernels.cuda.shim import SIMULATOR, device_available
        from cnndsl.diagnostics import CnnError, Diagnostic

        if not device_available():
            raise CnnError([Diagnostic(
                "error", "no CUDA device found: --device cuda needs an NVIDIA GPU with its driver "
                "(and `pip install cnndsl[cuda]`)", help="use --device cpu", code="no-cuda-device")])
        from cnndsl.backend.cuda import conv, dense, elementwise, losses, pooling, shape_ops, step  # noqa: F401
        from cnndsl.backend.cuda import layers, yolo_loss  # noqa: F401
        from cnndsl.backend.cuda.backend import CudaBackend

        _BACKEND = CudaBackend(simulated=SIMULATOR)
    return _BACKEND
