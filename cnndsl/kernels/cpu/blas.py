"""sgemm for the CPU kernels: row-major, on flat buffers with offsets and leading dimensions,
single-threaded (`gemm`) or split over Numba's threads (`pgemm`).

Why not `np.dot`: it needs whole C-contiguous operands, so a GEMM into one column block of an
NCHW output, or one that accumulates (beta = 1), costs an extra copy; and it calls BLAS with
BLAS's own thread pool, which fights Numba's (cnndsl sets OPENBLAS_NUM_THREADS=1, so np.dot
uses one core). Here both cores run: `pgemm` cuts C into panels on the shared parallel loop (parallel.py)
and each thread calls the single-threaded sgemm on its panel.

The sgemm is the one Numba's own np.dot calls (SciPy's cython_blas, reached through Numba's
helper `numba_xxgemm`, which is resolved by symbol name, so the kernels stay cacheable).
That helper imports SciPy's function on its first call and needs the GIL to do so: `_warm_up`
calls it once at import, from the main thread, so a worker thread never has to.

`_load_cython_blas` loads that one extension module without scipy.linalg's package: `import
scipy.linalg.cython_blas` took 210 ms of the 0.97 s warm start of LeNet-5's first training step
(2-core EPYC, quiet), almost all in scipy.linalg's __init__ (numpy.f2py, charset_normalizer through
scipy._lib.array_api_compat); the extension alone takes 21 ms.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import numpy as np
from numba import types
from numba.np.linalg import _BLAS, ensure_blas

from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import BOUNDSCHECK, kernel
from cnndsl.kernels.cpu.parallel import parallel_items

_CYTHON_BLAS = "scipy.linalg.cython_blas"


def _load_cython_blas() -> bool:
    """Put SciPy's cython_blas extension into sys.modules, loaded from its file without running
    scipy.linalg's __init__ (see the module docstring). True when this function put it there (the
    caller takes it out again once Numba has its sgemm); False when it was imported already or the
    file is not where SciPy keeps it, and Numba's own import then does the work."""
    if _CYTHON_BLAS in sys.modules:
        return False
    try:
        scipy = importlib.util.find_spec("scipy")
        folder = os.path.join(os.path.dirname(scipy.origin), "linalg")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "cython_blas" + suffix)
            if os.path.isfile(path):
                break
        else:
            return False
        spec = importlib.util.spec_from_file_location(_CYTHON_BLAS, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_CYTHON_BLAS] = module
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - any surprise: leave it to the normal import
        sys.modules.pop(_CYTHON_BLAS, None)
        return False
    return True


_loaded_alone = _load_cython_blas()
ensure_blas()
_xxgemm = _BLAS.numba_xxgemm(types.float32)
_SINGLE = 115  # ord('s'): float32
_NO, _YES = 110, 116  # ord('n'), ord('t')

# Below this many multiply-adds a GEMM stays on one thread (a parallel region costs ~10 us).
PAR_MIN_MACS = 1 << 18
# A parallel GEMM is cut into at most this many panels, each at least PANEL_MIN wide, and the
# shared parallel loop (parallel.py) deals them out to the threads in equal blocks.
MAX_PANELS = 8
PANEL_MIN = 16


@kernel
def _check_extent(X, x0, rows, cols, ld, name):
    """IndexError unless the flat buffer X holds a rows x cols matrix at offset x0 with row
    stride ld (used under NUMBA_BOUNDSCHECK only)."""
    if x0 < 0 or ld < cols or x0 + (rows - 1) * ld + cols > X.size:
        raise IndexError("gemm operand " + name + ": " + str(rows) + " x " + str(cols) + " at offset "
                         + str(x0) + ", row stride " + str(ld) + " does not fit its "
                         + str(X.size) + " elements")


@kernel
def gemm(trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """C[c0:] (M x N, row stride ldc) = alpha * op(A) @ op(B) + beta * C, all row-major float32.

    op(A) is M x K: A[a0:] read as M x K with row stride lda, or as K x M when trans_a.
    op(B) is K x N: B[b0:] read as K x N with row stride ldb, or as N x K when trans_b.
    With beta == 0, C need not be initialized.
    """
    if M <= 0 or N <= 0:
        return
    if BOUNDSCHECK:  # the sgemm gets pointers: NUMBA_BOUNDSCHECK cannot see its reads and writes
        if K > 0:
            _check_extent(A, a0, K if trans_a else M, M if trans_a else K, lda, "A")
            _check_extent(B, b0, N if trans_b else K, K if trans_b else N, ldb, "B")
        _check_extent(C, c0, M, N, ldc, "C")
    scal = np.empty(2, np.float32)
    scal[0] = alpha
    scal[1] = beta
    # Column-major BLAS sees a row-major matrix as its transpose: C^T = op(B)^T op(A)^T.
    _xxgemm(_SINGLE, _YES if trans_b else _NO, _YES if trans_a else _NO, N, M, K,
            scal[0:].ctypes, B[b0:].ctypes, ldb, A[a0:].ctypes, lda, scal[1:].ctypes, C[c0:].ctypes, ldc)


@kernel
def _panel(parts, size, i):
    """[lo, hi) of panel i when `size` rows or columns are cut into `parts` near-equal panels,
    each (but the last) a multiple of 8 so that the vector kernels see whole registers."""
    step = (size + parts - 1) // parts
    step = (step + 7) // 8 * 8
    lo = min(size, i * step)
    return lo, min(size, lo + step)


@kernel
def _pgemm_panel(i, parts, split_n, trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """Panel i of _pgemm_split (an item of parallel.parallel_items)."""
    if split_n:
        lo, hi = _panel(parts, N, i)
        b_off = b0 + (lo * ldb if trans_b else lo)
        gemm(trans_a, trans_b, M, hi - lo, K, alpha, A, a0, lda, B, b_off, ldb, beta, C, c0 + lo, ldc)
    else:
        lo, hi = _panel(parts, M, i)
        a_off = a0 + (lo if trans_a else lo * lda)
        gemm(trans_a, trans_b, hi - lo, N, K, alpha, A, a_off, lda, B, b0, ldb, beta, C, c0 + lo * ldc, ldc)


_pgemm_items = parallel_items(_pgemm_panel)


@kernel
def _pgemm_split(parts, split_n, trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """The panels on the shared parallel loop (parallel.py), one sgemm each."""
    _pgemm_items(parts, parts, split_n, trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)


@kernel
def pgemm(trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """`gemm` with C cut into panels (along N, or along M when M is the larger), each computed
    by a single-threaded sgemm on one of Numba's threads; small products stay on the calling
    thread."""
    split_n = N >= M
    parts = min(MAX_PANELS, (M * N * K) // PAR_MIN_MACS, (N if split_n else M) // PANEL_MIN)
    if parts <= 1:
        gemm(trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)
        return
    _pgemm_split(parts, split_n, trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)


# pgemm for kernels that call it once per launch (the dense layer's): called by address, its code
# is not linked into each of them and compiled again there (byaddress.py)
pgemm_at = by_address(pgemm)


def _warm_up() -> None:
    one = np.ones(1, np.float32)
    gemm(False, False, 1, 1, 1, np.float32(1.0), one, 0, 1, one, 0, 1, np.float32(0.0), one.copy(), 0, 1)


_warm_up()
if _loaded_alone:
    # Numba's helper holds its sgemm pointer now. Without the entry a later `import scipy.linalg`
    # (a user's, or Numba compiling an np.dot) runs the whole package, and Python hands its
    # cython_blas the module loaded here (extension modules load once per process), so
    # scipy.linalg.cython_blas is that module's attribute as usual.
    del sys.modules[_CYTHON_BLAS]
