"""add, concat, flatten, upsample nearest, copy."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.cpu import tensor as K
from cnndsl.kernels.reference import tensor as R

maps = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))


@SETTINGS
@given(maps, st.integers(2, 4), st.integers(0, 2**31))
def test_add_nary(shape, k, seed):
    rng = np.random.default_rng(seed)
    xs = [f32(rng.standard_normal(shape)) for _ in range(k)]
    out = np.empty(shape, np.float32)
    K.add2(xs[0], xs[1], out)
    for x in xs[2:]:
        K.add_accumulate(out, x)
    assert_close(out, R.add(*[x.astype(np.float64) for x in xs]), what="add")


@SETTINGS
@given(st.integers(1, 3), st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(1, 5),
       st.integers(1, 5), st.booleans(), st.integers(0, 2**31))
def test_concat(n, chans, h, w, vectors, seed):
    rng = np.random.default_rng(seed)
    tail = () if vectors else (h, w)
    xs = [rng.standard_normal((n, c) + tail) for c in chans]
    out = np.full((n, sum(chans)) + tail, np.nan, np.float32)
    off = 0
    for x in xs:
        K.concat_forward(f32(x), off, out)
        off += x.shape[1]
    assert np.array_equal(out, f32(R.concat(xs)))
    dy = rng.standard_normal(out.shape)
    off = 0
    for x, expected in zip(xs, R.concat_backward(dy, chans)):
        dx = np.full(x.shape, np.nan, np.float32)
        K.concat_backward(f32(dy), off, dx)
        assert np.array_equal(dx, f32(expected))
        off += x.shape[1]


def test_flatten_is_a_view():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    y = K.flatten(x)
    assert y.shape == (2, 60) and np.shares_memory(x, y)
    assert np.array_equal(y, R.flatten(x))
    dx = K.flatten_backward(y, x.shape)
    assert dx.shape == x.shape and np.shares_memory(dx, y)


@SETTINGS
@given(maps, st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31))
def test_upsample_nearest(shape, sh, sw, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    n, c, h, w = shape
    y = np.full((n, c, h * sh, w * sw), np.nan, np.float32)
    K.upsample_nearest_forward(f32(x), sh, sw, y)
    assert np.array_equal(y, f32(R.upsample_nearest(x, sh, sw)))
    dy = rng.standard_normal(y.shape)
    dx = np.full(shape, np.nan, np.float32)
    K.upsample_nearest_backward(f32(dy), sh, sw, dx)
    assert_close(dx, R.upsample_nearest_backward(dy, sh, sw), what="upsample backward")
    check_grad_fd(lambda x_: float((R.upsample_nearest(x_, sh, sw) * dy).sum()), [x], [dx], rng, what="upsample")


def test_copy_and_large_parallel_paths():
    rng = np.random.default_rng(0)
    a, b = f32(rng.standard_normal((4, 8, 40, 40))), f32(rng.standard_normal((4, 8, 40, 40)))
    out = np.empty_like(a)
    K.add2(a, b, out)
    assert np.array_equal(out, a + b)
    K.add_accumulate(out, a)
    assert np.array_equal(out, (a + b) + a)
    K.copy(a, out)
    assert np.array_equal(out, a)
    y = np.empty((4, 8, 80, 80), np.float32)
    K.upsample_nearest_forward(a, 2, 2, y)
    assert np.array_equal(y, R.upsample_nearest(a, 2, 2))
