"""cuBLAS's SGEMM for the GEMM-shaped work of convolutions and dense layers (im2col.py), called
through ctypes as the CPU backend calls OpenBLAS's sgemm: no Python package, only the library.

Why: issue 20 measured the hand-written Numba GEMMs at 250 GFLOP/s on an H200 rated at about
67 TFLOP/s in FP32; cuBLAS's SGEMM is NVIDIA's own, tuned per architecture. It is one more
candidate of tune.py's measured choice per launch (the tile name "cublas"): used where it was
timed faster on this GPU, never by the shape rules, so a machine without cuBLAS runs as before.

Where the library comes from: `cuda.pathfinder` (a dependency of numba-cuda), which finds the
`nvidia-cublas` wheel that PyTorch and CuPy install, a conda environment or the CUDA toolkit;
then the nvidia wheels' folders and the loader's own search (`libcublas.so.13`, `.12`).
`CNNDSL_CUDA_BLAS=off` turns it off.

Numerics: the handle is set to CUBLAS_DEFAULT_MATH, i.e. FP32 arithmetic without TF32 tensor
cores (the fair baseline of issue 20: cuDNN FP32 with TF32 off); NVIDIA_TF32_OVERRIDE=1 in the
environment would change that for cuBLAS as for every CUDA library. cuBLAS's SGEMM is
deterministic for a given GPU, shape and library version (one stream, no atomics in SGEMM).

Ordering: numba launches on the legacy default stream and the handle uses the NULL stream,
which is the same stream, so the GEMMs run in order with the kernels around them.

Under numba's CUDA simulator the device arrays are NumPy arrays: `sgemm` computes the same
products with NumPy there (float32 matmul), so that the im2col kernels and the launch plans
around the GEMMs are tested in CI; the ctypes binding itself only on a GPU
(benchmarks/gpu_session.sh runs the same tests there).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from cnndsl.kernels.cuda.shim import SIMULATOR

ENV = "CNNDSL_CUDA_BLAS"
_OP_N, _OP_T = 0, 1
_DEFAULT_MATH = 0
_INT_MAX = 2**31 - 1


class _Library:
    def __init__(self):
        self.loaded = False
        self.lib = None
        self.handle = None
        self.why = ""

    def load(self):
        """(the bound library and a handle, "") or (None, why it is not available)."""
        if self.loaded:
            return self.lib, self.why
        self.loaded = True
        try:
            path = _find()
            lib = ctypes.CDLL(path)
            vp, i, ll, fp = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p
            lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
            lib.cublasSetMathMode.argtypes = [vp, i]
            lib.cublasSgemm_v2.argtypes = [vp, i, i, i, i, i, fp, vp, i, vp, i, fp, vp, i]
            lib.cublasSgemmStridedBatched.argtypes = [vp, i, i, i, i, i, fp, vp, i, ll, vp, i, ll, fp, vp, i, ll, i]
            handle = vp()
            _check(lib.cublasCreate_v2(ctypes.byref(handle)), "cuBLAS cublasCreate")
            _check(lib.cublasSetMathMode(handle, _DEFAULT_MATH), "cuBLAS cublasSetMathMode")
            self.lib, self.handle = lib, handle
        except Exception as e:  # no library, no driver, another ABI: the Numba kernels remain
            self.why = f"{type(e).__name__}: {e}"
        return self.lib, self.why


_LIB = _Library()


def _find() -> str:
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return load_nvidia_dynamic_lib("cublas").abs_path
    except Exception as first:
        import glob
        import site
        import sysconfig

        # the nvidia wheels' folders (PyTorch's cu12 and cu13 layouts), then the loader's search
        roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
        found = sorted(p for r in roots for pat in ("nvidia/cublas/lib/libcublas.so.*", "nvidia/cu*/lib/libcublas.so.*")
                       for p in glob.glob(os.path.join(r, pat)))
        for name in (*reversed(found), "libcublas.so.13", "libcublas.so.12", "libcublas.so"):
            try:
                ctypes.CDLL(name)
                return name
            except OSError:
                pass
        raise OSError(f"no cuBLAS library found (cuda.pathfinder: {first}; nor libcublas.so.13/.12 in the nvidia "
                      "wheels or on the loader's path): install the nvidia-cublas wheel of your CUDA version") from None


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} returned status {status}")


def available() -> tuple[bool, str]:
    """(True, "") where the "cublas" candidate can run; else (False, why)."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "false"):
        return False, f"{ENV}=off"
    if SIMULATOR:
        return True, ""
    lib, why = _LIB.load()
    return lib is not None, why


def address(a) -> int:
    """The device address of a (contiguous) device array's first element."""
    if SIMULATOR:
        return a._ary.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


def _view(a, offset: int, rows: int, cols: int, ld: int, batch: int, stride: int) -> np.ndarray:
    """The simulator's (batch, rows, cols) view of flat array a (its NumPy buffer) at `offset`."""
    base = a._ary.reshape(-1)
    need = offset + (batch - 1) * stride + (rows - 1) * ld + cols if rows and cols and batch else 0
    if need > base.size:
        raise IndexError(f"GEMM operand past its array: {need} > {base.size}")
    return np.lib.stride_tricks.as_strided(base[offset:], shape=(batch, rows, cols),
                                           strides=(stride * 4, ld * 4, 4), writeable=True)


def sgemm(ta: bool, tb: bool, M: int, N: int, K: int, A, lda: int, B, ldb: int, C, ldc: int, beta: float = 0.0,
         a_off: int = 0, b_off: int = 0, c_off: int = 0, batch: int = 1, sa: int = 0, sb: int = 0, sc: int = 0):
    """A no-argument callable computing, for i < batch, the row-major product
    C_i = op(A_i) @ op(B_i) + beta * C_i, op(A_i) M x K (A_i = A[a_off + i*sa:] as a matrix with
    leading dimension lda, stored K x M where ta), op(B_i) K x N likewise, C_i M x N; all float32
    device arrays. The ctypes arguments are made once."""
    for v in (M, N, K, lda, ldb, ldc, batch):
        if not 0 <= v <= _INT_MAX:
            raise ValueError(f"a cuBLAS dimension of {v} is outside int32")
    if SIMULATOR:
        def run() -> None:
            a = _view(A, a_off, K if ta else M, M if ta else K, lda, batch, sa)
            b = _view(B, b_off, N if tb else K, K if tb else N, ldb, batch, sb)
            c = _view(C, c_off, M, N, ldc, batch, sc)
            prod = np.matmul(a.transpose(0, 2, 1) if ta else a, b.transpose(0, 2, 1) if tb else b)
            c[...] = prod if beta == 0.0 else prod + np.float32(beta) * c
        run.name = "cublas_sgemm"
        return run
    lib, why = _LIB.load()
    if lib is None:
        raise RuntimeError(f"cuBLAS is not available: {why}")
    # row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first, the dimensions swapped
    alpha, beta_ = ctypes.c_float(1.0), ctypes.c_float(beta)
    pa, pb, pc = (address(A) + 4 * a_off, address(B) + 4 * b_off, address(C) + 4 * c_off)
    opb, opa = (_OP_T if tb else _OP_N), (_OP_T if ta else _OP_N)
    h, keep = _LIB.handle, (A, B, C, alpha, beta_)
    if batch == 1:
        fn = lib.cublasSgemm_v2
        args = (h, opb, opa, N, M, K, ctypes.byref(alpha), pb, ldb, pa, lda, ctypes.byref(beta_), pc, ldc)
    else:
        fn = lib.cublasSgemmStridedBatched
        args = (h, opb, opa, N, M, K, ctypes.byref(alpha), pb, ldb, sb, pa, lda, sa, ctypes.byref(beta_), pc, ldc,
                sc, batch)

    what = f"cuBLAS SGEMM ({M}x{N}x{K}, batch {batch})"

    def run() -> None:
        _check(fn(*args), what)
    run.keep = keep  # the arrays stay alive as long as their addresses are used
    run.name = "cublas_sgemm"
    return run
