"""Dense kernels vs the NumPy reference and finite differences."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.cpu import dense as K
from cnndsl.kernels.reference import dense as R


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 17), st.integers(1, 13), st.booleans(), st.integers(0, 2**31))
def test_dense(n, fin, units, has_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fin))
    w = rng.standard_normal((units, fin))
    b = rng.standard_normal(units) if has_bias else None
    y = R.dense(x, w, b)
    yk = np.full(y.shape, np.nan, np.float32)
    K.dense_forward(f32(x), f32(w), f32(b) if has_bias else np.zeros(1, np.float32), has_bias, yk)
    assert_close(yk, y, what="dense forward")
    dy = rng.standard_normal(y.shape)
    dxk, dwk, dbk = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(units, np.float32)
    K.dense_backward_data(f32(dy), f32(w), dxk)
    K.dense_backward_weight(f32(x), f32(dy), True, dwk, dbk)
    dx, dw, db = R.dense_backward(x, w, dy)
    assert_close(dxk, dx, what="dx")
    assert_close(dwk, dw, what="dW")
    assert_close(dbk, db, what="db")
    check_grad_fd(lambda x_, w_, b_: float((R.dense(x_, w_, b_) * dy).sum()),
                  [x, w, np.zeros(units) if b is None else b], [dxk, dwk, dbk], rng, what="dense")


def test_dense_forward_takes_both_matmul_paths():
    """dense_matmul uses dot products for few rows or long rows, BLAS otherwise; every path,
    with the parallel splits of both, matches the reference."""
    rng = np.random.default_rng(5)
    cases = [(1, 400, 120), (K.DOTS_MAX_ROWS, 30, 7),          # few rows: dot products
             (64, K.DOTS_MIN_IN, 37), (9, 300, 5),             # long rows: dot products
             (64, 120, 84), (K.DOTS_MAX_ROWS + 1, 17, 3)]      # BLAS (parallel panels for the big one)
    for n, fin, units in cases:
        x, w, b = rng.standard_normal((n, fin)), rng.standard_normal((units, fin)), rng.standard_normal(units)
        yk = np.full((n, units), np.nan, np.float32)
        K.dense_forward(f32(x), f32(w), f32(b), True, yk)
        assert_close(yk, R.dense(x, w, b), what=f"dense forward {n}x{fin}->{units}")
