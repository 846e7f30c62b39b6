"""Pooling kernels vs the NumPy reference and finite differences."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, away_from_zero, check_grad_fd, f32

from cnndsl.kernels.cpu import pool as K
from cnndsl.kernels.reference import pool as R


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2]))
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # padding at most K/2 (as the op allows): every window holds at least one input value
    pads = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kh // 2)),
            draw(st.integers(0, kw // 2)), draw(st.integers(0, kw // 2)))
    h = max(draw(st.integers(1, 9)), keh)
    w = max(draw(st.integers(1, 9)), kew)
    return dict(shape=(draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w), kernel=(kh, kw),
                stride=(sh, sw), pads=pads, dilation=(dh, dw), seed=draw(st.integers(0, 2**31)))


def _geo(case):
    (kh, kw), (sh, sw), (dh, dw) = case["kernel"], case["stride"], case["dilation"]
    return kh, kw, sh, sw, case["pads"][0], case["pads"][2], dh, dw


def _args(case):
    return case["kernel"], case["stride"], case["pads"], case["dilation"]


@SETTINGS
@given(pool_cases())
def test_maxpool(case):
    rng = np.random.default_rng(case["seed"])
    # distinct, well separated values: no ties, finite differences never switch the argmax
    x = rng.permutation(np.prod(case["shape"])).reshape(case["shape"]) * 0.1 + rng.uniform(-0.01, 0.01, case["shape"])
    y = R.maxpool2d(x, *_args(case))
    yk = np.full(y.shape, np.nan, np.float32)
    idx = np.full(y.shape, -7, np.int32)
    K.maxpool2d_forward(f32(x), *_geo(case), yk, idx)
    assert_close(yk, y, what="maxpool forward")
    assert (idx >= 0).all()
    dy = rng.standard_normal(y.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    K.maxpool2d_backward(f32(dy), idx, dxk)
    assert_close(dxk, R.maxpool2d_backward(x, dy, *_args(case)), what="maxpool backward")
    check_grad_fd(lambda x_: float((R.maxpool2d(x_, *_args(case)) * dy).sum()), [x], [dxk], rng, what="maxpool")


@SETTINGS
@given(pool_cases())
def test_avgpool(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    y = R.avgpool2d(x, *_args(case))
    yk = np.full(y.shape, np.nan, np.float32)
    K.avgpool2d_forward(f32(x), *_geo(case), yk)
    assert_close(yk, y, what="avgpool forward")
    dy = rng.standard_normal(y.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    K.avgpool2d_backward(f32(dy), *_geo(case), dxk)
    assert_close(dxk, R.avgpool2d_backward(x, dy, *_args(case)), what="avgpool backward")
    check_grad_fd(lambda x_: float((R.avgpool2d(x_, *_args(case)) * dy).sum()), [x], [dxk], rng, what="avgpool")


@SETTINGS
@given(pool_cases())
def test_l2pool(case):
    rng = np.random.default_rng(case["seed"])
    x = away_from_zero(rng.standard_normal(case["shape"]))  # 1x1 windows are |x|: keep off the kink
    y = R.l2pool2d(x, *_args(case))
    yk = np.full(y.shape, np.nan, np.float32)
    K.l2pool2d_forward(f32(x), *_geo(case), yk)
    assert_close(yk, y, what="l2pool forward")
    dy = rng.standard_normal(y.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    K.l2pool2d_backward(f32(x), yk, f32(dy), *_geo(case), dxk)
    assert_close(dxk, R.l2pool2d_backward(x, dy, *_args(case)), rtol=1e-3, what="l2pool backward")
    check_grad_fd(lambda x_: float((R.l2pool2d(x_, *_args(case)) * dy).sum()), [x], [dxk], rng, what="l2pool")


def test_avg_divisor_excludes_padding():
    x = np.ones((1, 1, 3, 3), np.float32)
    y = np.empty((1, 1, 3, 3), np.float32)
    K.avgpool2d_forward(x, 3, 3, 1, 1, 1, 1, 1, 1, y)
    assert np.array_equal(y, np.ones_like(y))  # corners average 4 ones, not 4/9
    K.l2pool2d_forward(x * 2, 3, 3, 1, 1, 1, 1, 1, 1, y)
    assert np.allclose(y, 2)


def test_l2pool_zero_window_gradient_is_finite():
    x = np.zeros((1, 2, 4, 4), np.float32)
    x[0, 1, 0, 0] = 3.0
    y = np.empty((1, 2, 2, 2), np.float32)
    K.l2pool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, y)
    dx = np.full(x.shape, np.nan, np.float32)
    K.l2pool2d_backward(x, y, np.ones_like(y), 2, 2, 2, 2, 0, 0, 1, 1, dx)
    assert np.isfinite(dx).all()
    assert (dx[0, 0] == 0).all()
    assert np.isclose(dx[0, 1, 0, 0], 0.5)  # d sqrt(x^2/4)/dx = 1/2 for x > 0


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**31))
def test_global_avgpool(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    yk = np.full((n, c), np.nan, np.float32)
    K.global_avgpool_forward(f32(x), yk)
    assert_close(yk, R.global_avgpool(x), what="global_avgpool forward")
    dy = rng.standard_normal((n, c))
    dxk = np.full(x.shape, np.nan, np.float32)
    K.global_avgpool_backward(f32(dy), dxk)
    assert_close(dxk, R.global_avgpool_backward(x.shape, dy), what="global_avgpool backward")
    check_grad_fd(lambda x_: float((R.global_avgpool(x_) * dy).sum()), [x], [dxk], rng, what="global_avgpool")


def test_pool_large_parallel_path():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 32, 32))
    y = np.empty((4, 16, 16, 16), np.float32)
    idx = np.empty(y.shape, np.int32)
    K.maxpool2d_forward(f32(x), 2, 2, 2, 2, 0, 0, 1, 1, y, idx)
    assert_close(y, R.maxpool2d(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)))
    K.avgpool2d_forward(f32(x), 3, 3, 2, 2, 1, 1, 1, 1, y)
    assert_close(y, R.avgpool2d(x, (3, 3), (2, 2), (1, 0, 1, 0), (1, 1)))


def test_maxpool_2x2_fast_path_matches_the_general_loop():
    """2x2/stride-2 windows take a specialized loop: same values, same argmax (first maximum in
    row-major window order on ties), also when floor rounding leaves a last row/column out."""
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 8, 8), (1, 2, 7, 9), (2, 1, 2, 2)]:
        x = rng.integers(0, 3, shape).astype(np.float32)  # many ties
        oh, ow = shape[2] // 2, shape[3] // 2
        fast_y, fast_i = np.empty((shape[0], shape[1], oh, ow), np.float32), np.empty((shape[0], shape[1], oh, ow), np.int32)
        K.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, 1, 1, fast_y, fast_i)
        gen_y, gen_i = np.empty_like(fast_y), np.empty_like(fast_i)
        for n in range(shape[0]):
            for c in range(shape[1]):
                K._maxpool_plane(x[n, c], 2, 2, 2, 2, 0, 0, 1, 1, gen_y[n, c], gen_i[n, c])
        np.testing.assert_array_equal(fast_y, gen_y)
        np.testing.assert_array_equal(fast_i, gen_i)
        assert_close(fast_y, R.maxpool2d(x.astype(np.float64), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)))
