"""C (+)= A @ B^T as blocks of dot products: the GEMM of weight gradients, whose reduction runs
over every pixel of the batch (thousands of terms) while the result is tiny (filters x taps).

    gemm_nt(A, B, accumulate, C)        # C (M x N) = A (M x K) @ B (N x K)^T, or +=

A and B are C-contiguous 2-D float32 arrays with the reduction axis contiguous in both, which is
exactly how an im2col matrix (taps x pixels) and a gathered output gradient (filters x pixels)
are laid out. Each step computes a 3 x 4 block of C with twelve scalar sums over k; Numba's
loop vectorizer turns each sum into a vector register (fastmath allows the reassociation), so
one pass over the 7 rows feeds 12 FMAs per lane: about 1.5x to 2.5x OpenBLAS's sgemm on these
long, thin shapes on the 2-core AVX2 machine of docs/performance.md, where BLAS spends its time
packing. For short reductions (K of a few hundred) BLAS is faster: use `blas.pgemm` there.
"""
from __future__ import annotations

import numpy as np

from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

ROWS, COLS = 3, 4  # the register block
# Below this many multiply-adds the blocks run on the calling thread.
PAR_MIN_MACS = 1 << 17


@kernel
def _edge_tile(A, B, accumulate, C, i, j):
    """A tile on the right or bottom edge: single dot products for what does not fill a block."""
    M, K = A.shape
    N = B.shape[0]
    for r in range(i, min(i + ROWS, M)):
        x = A[r]
        for q in range(j, min(j + COLS, N)):
            y = B[q]
            s = np.float32(0.0)
            for k in range(K):
                s += x[k] * y[k]
            C[r, q] = C[r, q] + s if accumulate else s


@kernel
def _tile(A, B, accumulate, C, ti, tiles_n):
    K = A.shape[1]
    i = (ti // tiles_n) * ROWS
    j = (ti % tiles_n) * COLS
    if i + ROWS > A.shape[0] or j + COLS > B.shape[0]:
        _edge_tile(A, B, accumulate, C, i, j)
        return
    r0 = A[i]
    r1 = A[i + 1]
    r2 = A[i + 2]
    q0 = B[j]
    q1 = B[j + 1]
    q2 = B[j + 2]
    q3 = B[j + 3]
    s00 = s01 = s02 = s03 = np.float32(0.0)
    s10 = s11 = s12 = s13 = np.float32(0.0)
    s20 = s21 = s22 = s23 = np.float32(0.0)
    for k in range(K):
        x0 = r0[k]
        x1 = r1[k]
        x2 = r2[k]
        y0 = q0[k]
        y1 = q1[k]
        y2 = q2[k]
        y3 = q3[k]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
    if not accumulate:
        for r in range(ROWS):
            for q in range(COLS):
                C[i + r, j + q] = np.float32(0.0)
    C[i, j] += s00
    C[i, j + 1] += s01
    C[i, j + 2] += s02
    C[i, j + 3] += s03
    C[i + 1, j] += s10
    C[i + 1, j + 1] += s11
    C[i + 1, j + 2] += s12
    C[i + 1, j + 3] += s13
    C[i + 2, j] += s20
    C[i + 2, j + 1] += s21
    C[i + 2, j + 2] += s22
    C[i + 2, j + 3] += s23


@kernel
def _gemm_nt_tiles(t, per, A, B, accumulate, C, tiles_n, tiles):
    """Tiles t*per .. of gemm_nt (an item of parallel.parallel_items)."""
    for ti in range(t * per, min((t + 1) * per, tiles)):
        _tile(A, B, accumulate, C, ti, tiles_n)


_gemm_nt_items = parallel_items(_gemm_nt_tiles)
_gemm_nt_tiles_at = by_address(_gemm_nt_tiles)  # the serial call: the tiles' code not linked into gemm_nt


@kernel
def gemm_nt(A, B, accumulate, C):
    """C = A @ B^T, or C += A @ B^T when `accumulate`; A (M x K), B (N x K), C (M x N)."""
    M, K = A.shape
    N = B.shape[0]
    tiles_n = (N + COLS - 1) // COLS
    tiles = ((M + ROWS - 1) // ROWS) * tiles_n
    if M * N * K >= PAR_MIN_MACS:  # a chunk of tiles per thread, on the shared parallel loop
        items, per = chunks(tiles)
        _gemm_nt_items(items, per, A, B, accumulate, C, tiles_n, tiles)
    else:
        _gemm_nt_tiles_at(np.int64(0), tiles, A, B, accumulate, C, tiles_n, tiles)


# gemm_nt for kernels that call it once per launch: by address (byaddress.py)
gemm_nt_at = by_address(gemm_nt)
