"""Activation kernels vs the NumPy reference and finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, away_from_zero, check_grad_fd, f32

from cnndsl.kernels.cpu import activation as K
from cnndsl.kernels.reference import activation as R

shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 9)),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "sigmoid", "softmax"])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**31), alpha=st.sampled_from([0.0, 0.01, 0.2, 1.5]))
def test_activation(name, shape, seed, alpha):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng.standard_normal(shape) * 3)
    extra = (alpha,) if name == "leaky_relu" else ()
    ref = getattr(R, name)
    y = ref(x, *extra)
    yk = np.full(shape, np.nan, np.float32)
    getattr(K, name + "_forward")(f32(x), *extra, yk)
    assert_close(yk, y, what=name)
    dy = rng.standard_normal(shape)
    dxk = np.full(shape, np.nan, np.float32)
    if name == "leaky_relu":
        K.leaky_relu_backward(f32(x), f32(dy), alpha, dxk)
        expected = R.leaky_relu_backward(x, dy, alpha)
    elif name == "relu":
        K.relu_backward(yk, f32(dy), dxk)
        expected = R.relu_backward(x, dy)
    else:
        getattr(K, name + "_backward")(yk, f32(dy), dxk)
        expected = getattr(R, name + "_backward")(y, dy)
    assert_close(dxk, expected, rtol=1e-4, what=name + " backward")
    # softmax's dx = y * (dy - <y, dy>) cancels: float32 rounding is relative to |dy|, not to |dx|
    gscale = [float(np.linalg.norm(dy))] if name == "softmax" else None
    check_grad_fd(lambda x_: float((ref(x_, *extra) * dy).sum()), [x], [dxk], rng, what=name, gscale=gscale)


def test_sigmoid_softmax_extremes_are_finite():
    x = np.array([[-1000.0, -80.0, 0.0, 80.0, 1000.0]], np.float32)
    y = np.empty_like(x)
    K.sigmoid_forward(x, y)
    assert np.isfinite(y).all() and y[0, 0] == 0 and y[0, -1] == 1
    K.softmax_forward(x, y)
    assert np.isfinite(y).all() and np.isclose(y.sum(), 1)


def test_inplace_elementwise():
    rng = np.random.default_rng(0)
    x = f32(rng.standard_normal((70000,)))
    expected = np.maximum(x, 0)
    K.relu_forward(x, x)
    assert np.array_equal(x, expected)
