"""Fused conv / dense kernels and batchnorm folding: Numba vs the composed NumPy references."""
from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from kernels_testutil import FAST, assert_close, f32
from test_kernels_conv import conv_cases

from cnndsl.kernels.cpu import fused as K
from cnndsl.kernels.reference import batchnorm as RB
from cnndsl.kernels.reference import conv as RC
from cnndsl.kernels.reference import dense as RD
from cnndsl.kernels.reference import fused as R
from cnndsl.ops.fused.epilogue import ACTIVATION_CODE, ACTIVATIONS

_activations = st.sampled_from(ACTIVATIONS)


@FAST
@given(conv_cases(), _activations, st.booleans())
def test_fused_conv_matches_reference(case, activation, residual):
    rng = np.random.default_rng(case["seed"])
    n, c, f, g = case["n"], case["c"], case["f"], case["groups"]
    kh, kw = case["kernel"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((f, c // g, kh, kw))
    b = rng.standard_normal(f) if case["bias"] else None
    args = (case["stride"], case["pads"], case["dilation"], g)
    z = RC.conv2d(x, w, b, *args)
    res = rng.standard_normal(z.shape) if residual else None
    want = R.fused_conv2d(x, w, b, res, activation, 0.1, *args)
    oh, ow = z.shape[2:]
    k, p, nb = (c // g) * kh * kw, oh * ow, case["nb"]
    col, tmp = np.empty(k * nb * p, np.float32), np.empty(f * nb * p + f * k, np.float32)
    y = np.full(z.shape, np.nan, np.float32)
    resk = f32(res) if residual else y
    K.fused_conv2d_forward(f32(x), f32(w), f32(b) if b is not None else np.zeros(1, np.float32), b is not None,
                           resk, residual, ACTIVATION_CODE[activation], 0.1,
                           case["stride"][0], case["stride"][1], case["pads"][0], case["pads"][2],
                           case["dilation"][0], case["dilation"][1], g, nb, col, tmp, y)
    assert_close(y, want, what=f"fused conv {activation} residual={residual}")


@FAST
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 20), _activations, st.booleans(), st.integers(0, 99))
def test_fused_dense_matches_reference(n, fin, units, activation, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, fin)), rng.standard_normal((units, fin))
    b = rng.standard_normal(units) if bias else None
    y = np.full((n, units), np.nan, np.float32)
    K.fused_dense_forward(f32(x), f32(w), f32(b) if bias else np.zeros(1, np.float32), bias,
                          ACTIVATION_CODE[activation], 0.2, y)
    assert_close(y, R.fused_dense(x, w, b, activation, 0.2), what=f"fused dense {activation}")


def test_large_fused_conv_takes_the_parallel_paths():
    """Big enough for the prange branches (PAR_MIN) of both the GEMM and the direct path."""
    rng = np.random.default_rng(0)
    for c, nb in ((8, 2), (1, 0)):
        x, w, b = rng.standard_normal((4, c, 40, 40)), rng.standard_normal((16, c, 3, 3)), rng.standard_normal(16)
        res = rng.standard_normal((4, 16, 40, 40))
        want = R.fused_conv2d(x, w, b, res, "relu", 0.0, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        col = np.empty(c * 9 * max(nb, 1) * 1600, np.float32)
        tmp = np.empty(16 * max(nb, 1) * 1600 + 16 * c * 9, np.float32)
        y = np.empty(want.shape, np.float32)
        K.fused_conv2d_forward(f32(x), f32(w), f32(b), True, f32(res), True, 1, 0.0, 1, 1, 1, 1, 1, 1, 1, nb,
                               col, tmp, y)
        assert_close(y, want, what=f"large fused conv nb={nb}")


@FAST
@given(st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 99))
def test_fold_batchnorm_equals_conv_then_batchnorm(f, c, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((2, c, 5, 5)), rng.standard_normal((f, c, 3, 3))
    b = rng.standard_normal(f) if bias else None
    gamma, beta, mean = rng.standard_normal(f), rng.standard_normal(f), rng.standard_normal(f)
    var = rng.uniform(0.1, 2.0, f)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    want = RB.batchnorm_inference(RC.conv2d(x, w, b, *args), gamma, beta, mean, var, 1e-3)
    wf, bf = R.fold_batchnorm(w, b, gamma, beta, mean, var, 1e-3)
    assert_close(RC.conv2d(x, wf, bf, *args), want, what="reference fold")
    wk, bk = np.empty(w.shape, np.float32), np.empty(f, np.float32)
    K.fold_batchnorm(f32(w), f32(b) if bias else np.zeros(1, np.float32), bias, f32(gamma), f32(beta), f32(mean),
                     f32(var), 1e-3, wk, bk)
    assert_close(wk, wf, what="folded weight")
    assert_close(bk, bf, what="folded bias")
    # dense layout (units, in) folds the same way
    wd = rng.standard_normal((f, 7))
    xd = rng.standard_normal((3, 7))
    wdf, bdf = R.fold_batchnorm(wd, b, gamma, beta, mean, var, 1e-3)
    assert_close(RD.dense(xd, wdf, bdf), RB.batchnorm_inference(RD.dense(xd, wd, b), gamma, beta, mean, var, 1e-3),
                 what="dense fold")
