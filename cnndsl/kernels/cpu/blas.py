"""sgemm for the CPU kernels: row-major, on flat buffers with offsets and leading dimensions,
single-threaded (`gemm`) or split over Numba's threads (`pgemm`).

Why not `np.dot`: it needs whole C-contiguous operands, so a GEMM into one column block of an
NCHW output, or one that accumulates (beta = 1), costs an extra copy; and it calls BLAS with
BLAS's own thread pool, which fights Numba's (cnndsl sets OPENBLAS_NUM_THREADS=1, so np.dot
uses one core). Here both cores run: `pgemm` cuts C into panels inside a `prange`
and each thread calls the single-threaded sgemm on its panel.

The sgemm is the one Numba's own np.dot calls (SciPy's cython_blas, reached through Numba's
helper `numba_xxgemm`, which is resolved by symbol name, so the kernels stay cacheable).
That helper imports SciPy's function on its first call and needs the GIL to do so: `_warm_up`
calls it once at import, from the main thread, so a worker thread never has to.
"""
from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.np.linalg import _BLAS, ensure_blas

from cnndsl.kernels.cpu.common import BOUNDSCHECK, kernel, parallel_kernel

ensure_blas()
_xxgemm = _BLAS.numba_xxgemm(types.float32)
_SINGLE = 115  # ord('s'): float32
_NO, _YES = 110, 116  # ord('n'), ord('t')

# Below this many multiply-adds a GEMM stays on one thread (a parallel region costs ~10 us).
PAR_MIN_MACS = 1 << 18
# A parallel GEMM is cut into at most this many panels, each at least PANEL_MIN wide, and the
# prange deals them out to the threads. The count does not depend on the thread count on
# purpose: numba.get_num_threads() inside a kernel would make it uncacheable.
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


@parallel_kernel
def _pgemm_split(parts, split_n, trans_a, trans_b, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    for i in prange(parts):
        if split_n:
            lo, hi = _panel(parts, N, np.int64(i))  # a prange index is uint64
            b_off = b0 + (lo * ldb if trans_b else lo)
            gemm(trans_a, trans_b, M, hi - lo, K, alpha, A, a0, lda, B, b_off, ldb, beta, C, c0 + lo, ldc)
        else:
            lo, hi = _panel(parts, M, np.int64(i))
            a_off = a0 + (lo if trans_a else lo * lda)
            gemm(trans_a, trans_b, hi - lo, N, K, alpha, A, a_off, lda, B, b0, ldb, beta, C, c0 + lo * ldc, ldc)


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


def _warm_up() -> None:
    one = np.ones(1, np.float32)
    gemm(False, False, 1, 1, 1, np.float32(1.0), one, 0, 1, one, 0, 1, np.float32(0.0), one.copy(), 0, 1)


_warm_up()
