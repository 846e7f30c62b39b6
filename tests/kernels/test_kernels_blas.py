"""sgemm through SciPy's BLAS on flat buffers (blas.py) and the dot-product GEMM (dots.py) vs NumPy."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close

from cnndsl.kernels.cpu import blas, dots


@st.composite
def gemm_cases(draw):
    return dict(m=draw(st.integers(1, 40)), n=draw(st.integers(1, 40)), k=draw(st.integers(1, 30)),
                trans_a=draw(st.booleans()), trans_b=draw(st.booleans()), beta=draw(st.sampled_from([0.0, 1.0])),
                pad=draw(st.integers(0, 3)), seed=draw(st.integers(0, 2**31)))


def _operands(case):
    """Row-major operands inside larger flat buffers (offsets and leading dimensions > width)."""
    rng = np.random.default_rng(case["seed"])
    m, n, k, pad = case["m"], case["n"], case["k"], case["pad"]
    a = rng.standard_normal((k, m) if case["trans_a"] else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if case["trans_b"] else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    return a, b, c, pad


def _embed(mat, pad):
    """(buffer, offset, leading dimension) holding mat with `pad` junk columns and a junk prefix."""
    rows, cols = mat.shape
    big = np.full((rows, cols + pad), 7.0, np.float32)
    big[:, :cols] = mat
    buf = np.concatenate([np.full(5, -3.0, np.float32), big.ravel()])
    return buf, 5, cols + pad


@SETTINGS
@given(gemm_cases())
def test_gemm_and_pgemm_match_numpy(case):
    a, b, c, pad = _operands(case)
    op_a = a.T if case["trans_a"] else a
    op_b = b.T if case["trans_b"] else b
    expected = op_a.astype(np.float64) @ op_b + case["beta"] * c
    for fn in (blas.gemm, blas.pgemm):
        A, a0, lda = _embed(a, pad)
        B, b0, ldb = _embed(b, pad)
        C, c0, ldc = _embed(c, pad)
        fn(case["trans_a"], case["trans_b"], case["m"], case["n"], case["k"], np.float32(1.0), A, a0, lda, B, b0, ldb,
           np.float32(case["beta"]), C, c0, ldc)
        got = C[c0:].reshape(case["m"], ldc)
        assert_close(got[:, :case["n"]], expected, what=fn.__name__)
        assert (got[:, case["n"]:] == 7.0).all(), "wrote outside C's columns"
        assert (C[:c0] == -3.0).all(), "wrote before C"


def test_pgemm_splits_big_products_over_panels_both_ways():
    rng = np.random.default_rng(0)
    for m, n, k in [(37, 1000, 50), (1000, 37, 50), (64, 64, 64)]:  # split along N, along M, and not at all
        assert m * n * k >= blas.PAR_MIN_MACS or (m, n) == (64, 64)
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.full((m, n), np.nan, np.float32)
        blas.pgemm(False, False, m, n, k, np.float32(1.0), a.ravel(), 0, k, b.ravel(), 0, n, np.float32(0.0),
                   c.reshape(-1), 0, n)
        assert_close(c, a.astype(np.float64) @ b, what=f"pgemm {m}x{n}x{k}")


@SETTINGS
@given(st.integers(1, 14), st.integers(1, 14), st.integers(1, 200), st.booleans(), st.integers(0, 2**31))
def test_gemm_nt_matches_numpy_on_whole_and_edge_tiles(m, n, k, accumulate, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b.T + (c if accumulate else 0)
    dots.gemm_nt(a, b, accumulate, c)
    assert_close(c, expected, what="gemm_nt")


def test_gemm_nt_parallel_path():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 3000)).astype(np.float32)
    b = rng.standard_normal((26, 3000)).astype(np.float32)
    assert 16 * 26 * 3000 >= dots.PAR_MIN_MACS
    c = np.full((16, 26), np.nan, np.float32)
    dots.gemm_nt(a, b, False, c)
    assert_close(c, a.astype(np.float64) @ b.T, what="gemm_nt parallel")


# (M, N, K, trans_a) of the products vgg_small makes at batch 32, in the operand orders the conv
# kernels use: forward W (F x C*9) @ col (not transposed), backward data W^T @ dy (A is the weight,
# stored F x C*9, so trans_a), both cut into panels by pgemm. OpenBLAS picks its kernels by size
# and CPU, so small random products do not exercise the code these sizes reach.
VGG_SMALL_PRODUCTS = [(1152, 2048, 128, True), (576, 2048, 128, True), (576, 8192, 64, True),
                      (288, 8192, 64, True), (288, 32768, 32, True), (27, 32768, 32, True),
                      (128, 2048, 1152, False), (64, 8192, 576, False), (32, 32768, 288, False)]


def test_pgemm_on_the_conv_layers_own_shapes():
    rng = np.random.default_rng(3)
    for m, n, k, trans_a in VGG_SMALL_PRODUCTS:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.full((m, n), np.nan, np.float32)
        blas.pgemm(trans_a, False, m, n, k, np.float32(1.0), a.ravel(), 0, m if trans_a else k, b.ravel(), 0, n,
                   np.float32(0.0), c.reshape(-1), 0, n)
        expected = (a.T if trans_a else a).astype(np.float64) @ b
        assert_close(c, expected, what=f"pgemm {'T' if trans_a else 'N'}N {m}x{n}x{k}")


def test_scipy_linalg_is_whole_after_blas_loaded_its_extension_alone():
    """blas.py loads SciPy's cython_blas without scipy.linalg's __init__ (210 ms of a warm start)
    and takes it out of sys.modules once Numba holds its sgemm. In a fresh process: scipy.linalg
    was not imported by cnndsl, a later `import scipy.linalg.cython_blas` gives the usual package
    with that module as its attribute, SciPy's own BLAS-backed functions work, and so do
    Numba's np.dot (compiled after that entry was removed) and blas.gemm."""
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from cnndsl.kernels.cpu import blas
assert "scipy.linalg" not in sys.modules, "cnndsl imported scipy.linalg"
assert "scipy.linalg.cython_blas" not in sys.modules, "the extension was left in sys.modules"
import numba
@numba.njit
def dot(a, b):
    return np.dot(a, b)
a = np.arange(12, dtype=np.float32).reshape(3, 4)
assert np.allclose(dot(a, a.T), a @ a.T)
import scipy.linalg.cython_blas
assert "sgemm" in scipy.linalg.cython_blas.__pyx_capi__
assert abs(scipy.linalg.norm(np.ones(4)) - 2.0) < 1e-12
c = np.zeros(9, np.float32)
blas.gemm(False, True, 3, 3, 4, np.float32(1), a.ravel(), 0, 4, a.ravel(), 0, 4, np.float32(0), c, 0, 3)
assert np.allclose(c.reshape(3, 3), a @ a.T)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
