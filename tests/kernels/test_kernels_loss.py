"""Fused losses vs the NumPy reference and finite differences."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.cpu import loss as K
from cnndsl.kernels.reference import loss as R


@SETTINGS
@given(st.integers(1, 8), st.integers(2, 12), st.sampled_from([1.0, 10.0, 100.0]), st.integers(0, 2**31))
def test_softmax_cross_entropy(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, n).astype(np.int64)
    loss, d = R.softmax_cross_entropy(z, labels)
    dk = np.full((n, k), np.nan, np.float32)
    lk = K.softmax_cross_entropy(f32(z), labels, dk)
    assert np.isfinite(lk)
    assert abs(lk - loss) <= 1e-4 * max(1.0, abs(loss))
    assert_close(dk, d, what="dlogits")
    if scale == 1.0:
        check_grad_fd(lambda z_: R.softmax_cross_entropy(z_, labels)[0], [z], [dk], rng, what="softmax CE")


def test_softmax_cross_entropy_huge_logits_stable():
    z = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], np.float32)
    d = np.empty_like(z)
    loss = K.softmax_cross_entropy(z, np.array([0, 0], np.int64), d)
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert np.isclose(loss, (0 + 6e4 + np.log(2)) / 2, rtol=1e-6)


@SETTINGS
@given(st.integers(1, 3), st.integers(2, 5), st.integers(1, 5), st.integers(1, 5), st.booleans(),
       st.integers(0, 2**31))
def test_pixel_cross_entropy(n, k, h, w, ignore, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k, h, w)) * 2
    labels = rng.integers(-1 if ignore else 0, k, (n, h, w)).astype(np.int64)
    loss, d = R.pixel_cross_entropy(z, labels)
    dk = np.full(z.shape, np.nan, np.float32)
    lk = K.pixel_cross_entropy(f32(z), labels, dk)
    assert abs(lk - loss) <= 1e-4 * max(1.0, abs(loss))
    assert_close(dk, d, what="pixel dlogits")
    if (labels >= 0).any():
        check_grad_fd(lambda z_: R.pixel_cross_entropy(z_, labels)[0], [z], [dk], rng, what="pixel CE")


@SETTINGS
@given(st.one_of(st.tuples(st.integers(1, 5), st.integers(1, 7)),
                 st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))),
       st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.integers(0, 2**31))
def test_mse_and_smooth_l1(shape, beta, seed):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(shape) * 2
    t = rng.standard_normal(shape) * 2
    if beta > 0:  # keep |p - t| off the kink at beta (finite differences)
        d = p - t
        p = np.where(np.abs(np.abs(d) - beta) < 0.02, p + 0.05, p)
    p = np.where(np.abs(p - t) < 0.02, p + 0.05, p)
    g = np.full(shape, np.nan, np.float32)
    lk = K.mse(f32(p), f32(t), g)
    loss, grad = R.mse(p, t)
    assert abs(lk - loss) <= 1e-4 * max(1.0, loss)
    assert_close(g, grad, what="mse grad")
    check_grad_fd(lambda p_: R.mse(p_, t)[0], [p], [g], rng, what="mse")
    g2 = np.full(shape, np.nan, np.float32)
    lk = K.smooth_l1(f32(p), f32(t), beta, g2)
    loss, grad = R.smooth_l1(p, t, beta)
    assert abs(lk - loss) <= 1e-4 * max(1.0, loss)
    assert_close(g2, grad, what="smooth_l1 grad")
    check_grad_fd(lambda p_: R.smooth_l1(p_, t, beta)[0], [p], [g2], rng, what="smooth_l1")
