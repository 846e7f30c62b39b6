"""Batchnorm: training/inference forward vs reference, backward vs finite differences, running stats;
the same for fused_batchnorm (batchnorm + activation) against the composed references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.cpu import batchnorm as K
from cnndsl.kernels.reference import batchnorm as R
from cnndsl.kernels.reference import fused as RF
from cnndsl.kernels.activations import FROM_OUTPUT
from cnndsl.ops.fused.epilogue import ACTIVATION_CODE

shapes = st.one_of(
    st.tuples(st.integers(2, 6), st.integers(1, 7)),
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
)


@SETTINGS
@given(shapes, st.integers(0, 2**31), st.sampled_from([1e-5, 1e-3]), st.sampled_from([0.1, 0.5, 1.0]))
def test_batchnorm_train_forward_backward(shape, seed, eps, momentum):
    rng = np.random.default_rng(seed)
    m = int(np.prod(shape)) // shape[1]
    if m < 2:
        shape = (2,) + shape[1:]
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    # a channel of nearly equal values (variance 7.7e-5 for shape (2, 4), seed 678) makes the
    # finite difference's 1e-3 step 1% off: outside the 0.1% tolerance, not a kernel error
    assume(x.var(axis=tuple(i for i in range(x.ndim) if i != 1)).min() > 1e-2)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    y, mean, inv_std, new_rm, new_rv = R.batchnorm_train(x, gamma, beta, eps, momentum, rm, rv)
    yk = np.full(shape, np.nan, np.float32)
    mk, ik = np.empty(c, np.float32), np.empty(c, np.float32)
    rmk, rvk = f32(rm), f32(rv)
    K.batchnorm_train_forward(f32(x), f32(gamma), f32(beta), eps, momentum, rmk, rvk, yk, mk, ik)
    assert_close(yk, y, rtol=1e-4, what="bn forward")
    assert_close(mk, mean, what="saved mean")
    assert_close(ik, inv_std, what="saved inv_std")
    assert_close(rmk, new_rm, what="running_mean")
    assert_close(rvk, new_rv, what="running_var")

    dy = rng.standard_normal(shape)
    dxk = np.full(shape, np.nan, np.float32)
    dgk, dbk = np.empty(c, np.float32), np.empty(c, np.float32)
    K.batchnorm_backward(f32(x), f32(dy), f32(gamma), mk, ik, dxk, dgk, dbk)
    dx, dg, db = R.batchnorm_backward(x, dy, gamma, mean, inv_std)
    assert_close(dxk, dx, rtol=1e-3, what="bn dx")
    assert_close(dgk, dg, what="bn dgamma")
    assert_close(dbk, db, what="bn dbeta")

    def loss(x_, g_, b_):
        return float((R.batchnorm_train(x_, g_, b_, eps, momentum, rm, rv)[0] * dy).sum())
    # dx is a difference of terms of size |gamma * inv_std * dy|: measure float32 rounding against that
    dx_scale = float(np.abs(gamma * inv_std).max() * np.linalg.norm(dy))
    check_grad_fd(loss, [x, gamma, beta], [dxk, dgk, dbk], rng, what="batchnorm", gscale=[dx_scale, None, None])


def test_running_stats_pytorch_convention_by_hand():
    rng = np.random.default_rng(3)
    x = f32(rng.standard_normal((4, 3, 5, 6)) * 3 + 2)
    rm = np.array([0.5, -1.0, 2.0], np.float32)
    rv = np.array([1.0, 2.0, 0.5], np.float32)
    mom = 0.1
    xd = x.astype(np.float64)
    m = 4 * 5 * 6
    bmean = xd.mean(axis=(0, 2, 3))
    bvar_unbiased = ((xd - bmean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / (m - 1)
    exp_rm = 0.9 * rm + 0.1 * bmean
    exp_rv = 0.9 * rv + 0.1 * bvar_unbiased
    y = np.empty_like(x)
    mk, ik = np.empty(3, np.float32), np.empty(3, np.float32)
    rmk, rvk = rm.copy(), rv.copy()
    K.batchnorm_train_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), 1e-5, mom, rmk, rvk, y, mk, ik)
    assert np.allclose(rmk, exp_rm, rtol=1e-5)
    assert np.allclose(rvk, exp_rv, rtol=1e-5)
    # normalization uses the BIASED variance
    bvar_biased = bvar_unbiased * (m - 1) / m
    assert np.allclose(ik, 1 / np.sqrt(bvar_biased + 1e-5), rtol=1e-5)


@SETTINGS
@given(shapes, st.integers(0, 2**31))
def test_batchnorm_inference(shape, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.1, 3, c)
    yk = np.full(shape, np.nan, np.float32)
    K.batchnorm_inference_forward(f32(x), f32(gamma), f32(beta), f32(rm), f32(rv), 1e-5, yk)
    assert_close(yk, R.batchnorm_inference(x, gamma, beta, rm, rv, 1e-5), what="bn inference")


def test_batchnorm_large_parallel_path():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 20, 20)) + 3
    c = 16
    y = np.empty(x.shape, np.float32)
    mk, ik = np.empty(c, np.float32), np.empty(c, np.float32)
    K.batchnorm_train_forward(f32(x), np.ones(c, np.float32), np.zeros(c, np.float32), 1e-5, 0.1,
                              np.zeros(c, np.float32), np.ones(c, np.float32), y, mk, ik)
    assert_close(y, R.batchnorm_train(x, np.ones(c), np.zeros(c), 1e-5, 0.1, np.zeros(c), np.ones(c))[0])


# -- fused_batchnorm: the activation in the same sweep, its gradient recomputed in the backward ------------


def _fused_case(shape, seed):
    rng = np.random.default_rng(seed)
    if int(np.prod(shape)) // shape[1] < 2:
        shape = (2,) + shape[1:]
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    return rng, x, rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2, c)


def _fused_forward_backward(x, gamma, beta, rm, rv, dy, activation):
    """The Numba kernels: (y, mean, inv_std, running_mean, running_var, dx, dgamma, dbeta)."""
    c = x.shape[1]
    y = np.full(x.shape, np.nan, np.float32)
    mean, inv, rmk, rvk = np.empty(c, np.float32), np.empty(c, np.float32), f32(rm), f32(rv)
    K.fused_batchnorm_train_forward(f32(x), f32(gamma), f32(beta), 1e-5, 0.1, rmk, rvk, ACTIVATION_CODE[activation],
                                    0.2, y, mean, inv)
    dx, dg, db = np.full(x.shape, np.nan, np.float32), np.empty(c, np.float32), np.empty(c, np.float32)
    K.fused_batchnorm_backward(f32(x), y, f32(dy), ACTIVATION_CODE[activation], 0.2, f32(gamma), mean, inv, dx, dg, db)
    return y, mean, inv, rmk, rvk, dx, dg, db


@SETTINGS
@given(shapes, st.integers(0, 2**31), st.sampled_from(FROM_OUTPUT))  # what fuses into batchnorm in training
def test_fused_batchnorm_matches_reference(shape, seed, activation):
    rng, x, gamma, beta, rm, rv = _fused_case(shape, seed)
    dy = rng.standard_normal(x.shape)
    y, mean, inv, rmk, rvk, dx, dg, db = _fused_forward_backward(x, gamma, beta, rm, rv, dy, activation)
    want = RF.fused_batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv, activation, 0.2)
    for got, ref, what in zip((y, mean, inv, rmk, rvk), want, ("y", "mean", "inv_std", "running_mean", "running_var")):
        assert_close(got, ref, what=f"{activation} {what}")
    # the reference's backward at z recomputed from x and the saved statistics
    # dx is a difference of terms of size |gamma * inv_std * dy|, and can be far smaller than them: with two
    # values per channel it is zero but for eps (shape (2, 4), seed 6818: dx ~2e-3 from terms ~48, float32's
    # rounding 6e-5). So dx's error is measured against those terms (1e-5 of them: ~100 float32 roundings).
    dx_scale = float(np.abs(gamma * inv).max() * np.linalg.norm(dy))
    for got, ref, what, atol in zip((dx, dg, db),
                                    RF.fused_batchnorm_backward(x, y, dy, gamma, beta, mean, inv, activation, 0.2),
                                    ("dx", "dgamma", "dbeta"), (max(1e-5, 1e-5 * dx_scale), 1e-5, 1e-5)):
        assert_close(got, ref, rtol=1e-3, atol=atol, what=f"{activation} {what}")
    yi = np.full(x.shape, np.nan, np.float32)
    K.fused_batchnorm_inference_forward(f32(x), f32(gamma), f32(beta), f32(rm), f32(rv), 1e-5,
                                        ACTIVATION_CODE[activation], 0.2, yi)
    assert_close(yi, RF.fused_batchnorm_inference(x, gamma, beta, rm, rv, 1e-5, activation, 0.2),
                 what=f"{activation} inference")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_fused_batchnorm_backward_finite_differences(activation):
    rng, x, gamma, beta, rm, rv = _fused_case((3, 2, 3, 4), 11)
    z = R.batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv)[0]
    assert np.abs(z).min() > 0.02  # no kink of relu / leaky_relu within the finite-difference steps
    dy = rng.standard_normal(x.shape)
    *_, dx, dg, db = _fused_forward_backward(x, gamma, beta, rm, rv, dy, activation)

    def loss(x_, g_, b_):
        return float((RF.fused_batchnorm_train(x_, g_, b_, 1e-5, 0.1, rm, rv, activation, 0.2)[0] * dy).sum())
    inv_std = R.batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv)[2]
    dx_scale = float(np.abs(gamma * inv_std).max() * np.linalg.norm(dy))
    check_grad_fd(loss, [x, gamma, beta], [dx, dg, db], rng, what=f"fused batchnorm {activation}",
                  gscale=[dx_scale, None, None])


def test_fused_batchnorm_large_parallel_path():
    rng, x, gamma, beta, rm, rv = _fused_case((8, 16, 20, 20), 0)
    dy = rng.standard_normal(x.shape)
    y, mean, inv, _, _, dx, dg, db = _fused_forward_backward(x, gamma, beta, rm, rv, dy, "relu")
    assert_close(y, RF.fused_batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv, "relu", 0.2)[0], what="y")
    for got, ref in zip((dx, dg, db), RF.fused_batchnorm_backward(x, y, dy, gamma, beta, mean, inv, "relu", 0.2)):
        assert_close(got, ref, rtol=1e-3, what="backward")
