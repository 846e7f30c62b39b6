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


def test_kernel_codes_written_out_or_through_the_table():
    """The launchers' codes (epilogue.KERNEL_CODE): none and relu as np.uint8 (kernels compiled for
    them leave the activation table out), every other as np.int64. Both compute the same; a uint8
    code of a table activation is refused instead of computing nothing."""
    import pytest

    from cnndsl.kernels.cpu.epilogue import KERNEL_CODE

    assert {n for n, c in KERNEL_CODE.items() if c.dtype == np.uint8} == {"none", "relu"}
    assert all(c.dtype == np.int64 for n, c in KERNEL_CODE.items() if n not in ("none", "relu"))
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    for name in ("none", "relu"):
        y8, y64 = np.empty_like(x), np.empty_like(x)
        K.activation_forward(x, KERNEL_CODE[name], np.float32(0.0), y8)
        K.activation_forward(x, np.int64(CODE[name]), np.float32(0.0), y64)
        np.testing.assert_array_equal(y8, y64)
        assert_close(y8, R.activation(x.astype(np.float64), name))
        d8, d64 = np.empty_like(x), np.empty_like(x)
        K.activation_backward(y8, dy, KERNEL_CODE[name], np.float32(0.0), d8)
        K.activation_backward(y8, dy, np.int64(CODE[name]), np.float32(0.0), d64)
        np.testing.assert_array_equal(d8, d64)
    y = np.empty_like(x)
    with pytest.raises(ValueError, match="not a written-out activation"):
        K.activation_forward(x, np.uint8(CODE["sigmoid"]), np.float32(0.0), y)
    with pytest.raises(ValueError, match="not a written-out activation"):
        K.activation_backward(x, dy, np.uint8(CODE["sigmoid"]), np.float32(0.0), y)
