"""global_maxpool, multiply (channel broadcasting), lrn, softmax along any axis and bilinear
upsampling: the CPU kernels against the NumPy references (forward and backward), and the
references' backward against finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from kernels_testutil import assert_close, check_grad_fd, f32

from cnndsl.backend.cpu.layers import lines
from cnndsl.kernels.cpu import activation as A
from cnndsl.kernels.cpu import layers as K
from cnndsl.kernels.reference import layers as R


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1), (3, 1, 7, 2)])
def test_global_maxpool(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    x[0, 0, 0, 0] = x[0, 0].max()  # a tie: the gradient goes to the first maximum only
    n, c = shape[:2]
    y = np.empty((n, c), np.float32)
    K.global_maxpool_forward(f32(x).reshape(n, c, -1), y)
    assert np.array_equal(y, f32(R.global_maxpool(x)))
    dy = rng.standard_normal((n, c))
    dx = np.full(shape, 7.0, np.float32)  # overwritten
    K.global_maxpool_backward(f32(x).reshape(n, c, -1), f32(dy), dx.reshape(n, c, -1))
    assert_close(dx, R.global_maxpool_backward(x, dy), what="global_maxpool backward")
    assert (dx != 0).sum() <= n * c
    xs = x + rng.random(shape) * 1e-3  # distinct values: no tie for the finite differences to straddle
    check_grad_fd(lambda x_: float((R.global_maxpool(x_) * dy).sum()), [xs],
                  [R.global_maxpool_backward(xs, dy)], rng, eps=1e-6, what="global_maxpool")


@pytest.mark.parametrize("a_shape,b_shape", [((2, 3, 4, 4), (2, 3)), ((2, 3, 4, 4), (2, 3, 1, 1)),
                                             ((2, 3, 4, 4), (2, 3, 4, 4)), ((2, 5), (2, 5)),
                                             ((2, 3), (2, 3, 2, 2))])
def test_multiply(a_shape, b_shape):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    y_ref = R.multiply(a, b)
    big, small = (a, b) if a.size >= b.size else (b, a)
    n, c = big.shape[:2]
    y = np.empty(y_ref.shape, np.float32)
    K.multiply_forward(f32(big).reshape(n, c, -1), f32(small).reshape(n, c, -1), y.reshape(n, c, -1))
    assert_close(y, y_ref, what="multiply")
    dy = rng.standard_normal(y_ref.shape)
    da_ref, db_ref = R.multiply_backward(a, b, dy)
    for mine, other, ref in ((a, b, da_ref), (b, a, db_ref)):
        out = np.empty(mine.shape, np.float32)
        if mine.size >= other.size:
            K.multiply_forward(f32(dy).reshape(n, c, -1), f32(other).reshape(n, c, -1), out.reshape(n, c, -1))
        else:
            K.multiply_backward_reduce(f32(dy).reshape(n, c, -1), f32(other).reshape(n, c, -1), out.reshape(n, c))
        assert_close(out, ref, what="multiply backward")
    check_grad_fd(lambda a_, b_: float((R.multiply(a_, b_) * dy).sum()), [a, b], [da_ref, db_ref], rng,
                  what="multiply")


@pytest.mark.parametrize("shape,size,alpha,beta,k", [((2, 7, 3, 3), 5, 1e-2, 0.75, 2.0),
                                                     ((2, 4, 2, 2), 2, 0.5, 0.6, 1.0),
                                                     ((3, 6), 3, 0.1, 0.75, 1.0),
                                                     ((1, 3, 2, 1), 8, 1.0, 1.5, 0.5)])
def test_lrn(shape, size, alpha, beta, k):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 2
    n, c = shape[:2]
    y = np.empty(shape, np.float32)
    args = (np.int64(size), np.float32(alpha), np.float32(beta), np.float32(k))
    K.lrn_forward(f32(x).reshape(n, c, -1), *args, y.reshape(n, c, -1))
    assert_close(y, R.lrn(x, size, alpha, beta, k), what="lrn")
    dy = rng.standard_normal(shape)
    dx = np.empty(shape, np.float32)
    K.lrn_backward(f32(x).reshape(n, c, -1), f32(dy).reshape(n, c, -1), *args, dx.reshape(n, c, -1))
    dx_ref = R.lrn_backward(x, dy, size, alpha, beta, k)
    assert_close(dx, dx_ref, what="lrn backward")
    check_grad_fd(lambda x_: float((R.lrn(x_, size, alpha, beta, k) * dy).sum()), [x], [dx_ref], rng,
                  what="lrn")


def test_lrn_matches_alexnet_formula_by_hand():
    """One pixel, 3 channels, size 3: s_c = k + alpha/3 * (x_{c-1}^2 + x_c^2 + x_{c+1}^2)."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    s = 2 + 0.3 / 3 * np.array([1 + 4, 1 + 4 + 9, 4 + 9])
    assert np.allclose(R.lrn(x, 3, 0.3, 0.75, 2.0).ravel(), x.ravel() / s ** 0.75)


@pytest.mark.parametrize("shape,axis", [((2, 3, 4, 5), "channels"), ((2, 3, 4, 5), "height"),
                                        ((2, 3, 4, 5), "width"), ((2, 3, 4, 5), "spatial"), ((3, 6), "channels")])
def test_softmax_axis(shape, axis):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 3
    y_ref = R.softmax_axis(x, axis)
    sums = {"channels": 1, "height": 2, "width": 3, "spatial": (2, 3)}[axis] if len(shape) == 4 else 1
    assert np.allclose(y_ref.sum(axis=sums), 1.0)
    view = lines(shape, axis)
    y = np.empty(shape, np.float32)
    A.softmax_forward(f32(x).reshape(view), y.reshape(view))
    assert_close(y, y_ref, what=f"softmax {axis}")
    dy = rng.standard_normal(shape)
    dx = np.empty(shape, np.float32)
    A.softmax_backward(y.reshape(view), f32(dy).reshape(view), dx.reshape(view))
    dx_ref = R.softmax_axis_backward(y_ref, dy, axis)
    assert_close(dx, dx_ref, what=f"softmax {axis} backward")
    check_grad_fd(lambda x_: float((R.softmax_axis(x_, axis) * dy).sum()), [x], [dx_ref], rng, what="softmax")


def test_bilinear_matches_pytorch_values_by_hand():
    """F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), scale_factor=2, mode="bilinear")
    (align_corners=False) and align_corners=True, computed by hand from their definitions."""
    x = np.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    row = np.array([0.0, 0.25, 0.75, 1.0])  # sources 0, 0.25, 0.75, 1 (the first clamped at 0)
    expected = row[None, :] + 2 * row[:, None]
    assert np.allclose(R.upsample_bilinear(x, 2, False)[0, 0], expected)
    corner = np.array([0.0, 1 / 3, 2 / 3, 1.0])  # src = dst * (2 - 1) / (4 - 1)
    assert np.allclose(R.upsample_bilinear(x, 2, True)[0, 0], corner[None, :] + 2 * corner[:, None])
    assert np.array_equal(R.upsample_bilinear(x, 1, False), x)


@pytest.mark.parametrize("shape,scale,corners", [((2, 3, 3, 4), 2, False), ((1, 2, 3, 3), 3, True),
                                                 ((1, 1, 1, 2), 2, False), ((2, 1, 2, 2), 1, True)])
def test_bilinear(shape, scale, corners):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    n, c, h, w = shape
    tables = K.bilinear_tables(h * scale, h, scale, corners) + K.bilinear_tables(w * scale, w, scale, corners)
    y = np.empty((n, c, h * scale, w * scale), np.float32)
    K.bilinear_forward(f32(x).reshape(n * c, h, w), *tables, y.reshape(n * c, h * scale, w * scale))
    y_ref = R.upsample_bilinear(x, scale, corners)
    assert_close(y, y_ref, what="bilinear")
    dy = rng.standard_normal(y_ref.shape)
    dx = np.full(shape, 5.0, np.float32)
    K.bilinear_backward(f32(dy).reshape(n * c, h * scale, w * scale), *tables, dx.reshape(n * c, h, w))
    dx_ref = R.upsample_bilinear_backward(dy, shape, scale, corners)
    assert_close(dx, dx_ref, what="bilinear backward")
    check_grad_fd(lambda x_: float((R.upsample_bilinear(x_, scale, corners) * dy).sum()), [x], [dx_ref], rng,
                  what="bilinear")
