"""Dropout: reproducible counter-based mask, statistics, inference identity, backward mask."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import FAST, f32

from cnndsl.kernels.cpu import dropout as K
from cnndsl.kernels.reference import dropout as R


def test_inference_is_bit_exact_identity():
    x = f32(np.random.default_rng(0).standard_normal((3, 5, 7, 9)))
    x[0, 0, 0, :3] = [np.inf, -0.0, 1e-40]
    y = np.empty_like(x)
    K.dropout_inference(x, y)
    assert np.array_equal(x.view(np.uint32), y.view(np.uint32))


@FAST
@given(st.sampled_from([0.0, 0.1, 0.5, 0.9]), st.integers(0, 2**40), st.integers(0, 10**6))
def test_keep_rate_and_scale(p, seed, step):
    n = 200_000
    x = np.ones((8, n // 8), np.float32)
    y = np.empty_like(x)
    K.dropout_forward(x, p, seed, step, y)
    kept = y != 0
    rate = kept.mean()
    se = np.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) <= 5 * se + 1e-12
    assert np.allclose(y[kept], np.float32(1 / (1 - p)))
    # the mean of x is preserved within a few standard errors
    assert abs(y.mean() - 1.0) <= 5 * np.sqrt(p / (1 - p) / n) + 1e-9


@FAST
@given(st.sampled_from([0.2, 0.5]), st.integers(0, 2**40), st.integers(0, 1000),
       st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)))
def test_same_seed_same_mask_and_backward_uses_it(p, seed, step, shape):
    rng = np.random.default_rng(seed % 1000)
    x = f32(rng.standard_normal(shape) + 5)  # no zeros in x
    y1, y2 = np.empty_like(x), np.empty_like(x)
    K.dropout_forward(x, p, seed, step, y1)
    K.dropout_forward(x, p, seed, step, y2)
    assert np.array_equal(y1, y2)
    ref = R.dropout(x.astype(np.float64), p, seed, step)
    assert np.array_equal(y1 != 0, ref != 0)  # the kernel and the reference draw the same mask
    assert np.allclose(y1, ref, rtol=1e-6)
    dy = f32(rng.standard_normal(shape) + 5)
    dx = np.empty_like(dy)
    K.dropout_backward(dy, p, seed, step, dx)
    assert np.array_equal(dx != 0, y1 != 0)
    assert np.allclose(dx, R.dropout_backward(dy.astype(np.float64), p, seed, step), rtol=1e-6)
    mask = np.empty(shape, np.uint8)
    K.dropout_mask(p, seed, step, mask)
    assert np.array_equal(mask.astype(bool), y1 != 0)


def test_different_step_or_seed_changes_mask():
    x = np.ones((4, 1000), np.float32)
    a, b, c = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    K.dropout_forward(x, 0.5, 7, 0, a)
    K.dropout_forward(x, 0.5, 7, 1, b)
    K.dropout_forward(x, 0.5, 8, 0, c)
    assert (a != b).mean() > 0.3 and (a != c).mean() > 0.3
