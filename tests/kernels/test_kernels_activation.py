"""Softmax kernels vs the NumPy reference and finite differences; the element-wise activations'
in-place use. Every element-wise activation's kernels, reference and finite differences:
tests/test_activations.py (it loops over the registry)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.activations import CODE
from cnndsl.kernels.cpu import activation as K
from cnndsl.kernels.reference import activation as R

shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 9)),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
)


@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**31))
def test_softmax(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    y = R.softmax(x)
    yk = np.full(shape, np.nan, np.float32)
    K.softmax_forward(f32(x), yk)
    assert_close(yk, y, what="softmax")
    dy = rng.standard_normal(shape)
    dxk = np.full(shape, np.nan, np.float32)
    K.softmax_backward(yk, f32(dy), dxk)
    assert_close(dxk, R.softmax_backward(y, dy), rtol=1e-4, what="softmax backward")
    # softmax's dx = y * (dy - <y, dy>) cancels: float32 rounding is relative to |dy|, not to |dx|
    check_grad_fd(lambda x_: float((R.softmax(x_) * dy).sum()), [x], [dxk], rng, what="softmax",
                  gscale=[float(np.linalg.norm(dy))])


def test_sigmoid_softmax_extremes_are_finite():
    x = np.array([[-1000.0, -80.0, 0.0, 80.0, 1000.0]], np.float32)
    y = np.empty_like(x)
    K.activation_forward(x, CODE["sigmoid"], np.float32(0.0), y)
    assert np.isfinite(y).all() and y[0, 0] == 0 and y[0, -1] == 1
    K.softmax_forward(x, y)
    assert np.isfinite(y).all() and np.isclose(y.sum(), 1)


def test_inplace_elementwise():
    rng = np.random.default_rng(0)
    x = f32(rng.standard_normal((70000,)))
    expected = np.maximum(x, 0)
    K.activation_forward(x, CODE["relu"], np.float32(0.0), x)
    assert np.array_equal(x, expected)
