"""conv2d and conv_transpose2d: Numba kernels vs the NumPy reference and finite differences."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32

from cnndsl.kernels.cpu import conv as K
from cnndsl.kernels.reference import conv as R


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))
    fg = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k - 1)) for k in (keh, keh, kew, kew))
    h = max(draw(st.integers(1, 10)), keh - pads[0] - pads[1])
    w = max(draw(st.integers(1, 10)), kew - pads[2] - pads[3])
    n = draw(st.integers(1, 4))
    nb = draw(st.integers(0, n))  # 0: direct loops; >= 1: im2col + GEMM in chunks of nb images
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    return dict(n=n, c=groups * cg, f=groups * fg, h=h, w=w, kernel=(kh, kw), stride=(sh, sw),
                dilation=(dh, dw), pads=pads, groups=groups, nb=nb, bias=bias, seed=seed)


def _workspace(k, p, f, nb):
    return np.empty(k * nb * p, np.float32), np.empty(f * nb * p + f * k, np.float32)


def _conv_run(case):
    rng = np.random.default_rng(case["seed"])
    n, c, f, g = case["n"], case["c"], case["f"], case["groups"]
    kh, kw = case["kernel"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((f, c // g, kh, kw))
    b = rng.standard_normal(f) if case["bias"] else None
    args = (case["stride"], case["pads"], case["dilation"], g)
    y = R.conv2d(x, w, b, *args)
    oh, ow = y.shape[2:]
    col, tmp = _workspace((c // g) * kh * kw, oh * ow, f, case["nb"])
    geo = (case["stride"][0], case["stride"][1], case["pads"][0], case["pads"][2],
           case["dilation"][0], case["dilation"][1], g, case["nb"])
    return rng, x, w, b, y, geo, col, tmp, args


@SETTINGS
@given(conv_cases())
def test_conv2d_forward_matches_reference(case):
    rng, x, w, b, y, geo, col, tmp, _ = _conv_run(case)
    yk = np.full(y.shape, np.nan, np.float32)
    bb = f32(b) if b is not None else np.zeros(1, np.float32)
    K.conv2d_forward(f32(x), f32(w), bb, b is not None, *geo, col, tmp, yk)
    assert_close(yk, y, what="conv2d forward")


@SETTINGS
@given(conv_cases())
def test_conv2d_backward_matches_reference_and_fd(case):
    rng, x, w, b, y, geo, col, tmp, args = _conv_run(case)
    dy = rng.standard_normal(y.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    dwk = np.full(w.shape, np.nan, np.float32)
    dbk = np.full(case["f"], np.nan, np.float32)
    K.conv2d_backward_data(f32(dy), f32(w), *geo, col, tmp, dxk)
    K.conv2d_backward_weight(f32(x), f32(dy), True, *geo, col, tmp, dwk, dbk)
    dx, dw, db = R.conv2d_backward(x, w, dy, *args)
    assert_close(dxk, dx, what="dx")
    assert_close(dwk, dw, what="dw")
    assert_close(dbk, db, what="db")

    def loss(x_, w_, b_):
        return float((R.conv2d(x_, w_, b_, *args) * dy).sum())
    bias = np.zeros(case["f"]) if b is None else b
    check_grad_fd(loss, [x, w, bias], [dxk, dwk, dbk], rng, what="conv2d")
    check_grad_fd(loss, [x, w, bias], [dx, dw, db], rng, rtol=1e-6, what="conv2d reference")


@st.composite
def convt_cases(draw):
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))
    fg = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k - 1)) for k in (keh, keh, kew, kew))
    oph = draw(st.integers(0, max(sh, dh) - 1))
    opw = draw(st.integers(0, max(sw, dw) - 1))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    oh = R.conv_transpose2d_output_size(h, kh, sh, pads[0], pads[1], dh, oph)
    ow = R.conv_transpose2d_output_size(w, kw, sw, pads[2], pads[3], dw, opw)
    if oh < 1 or ow < 1:
        h, w, pads = h + keh, w + kew, (0, 0, 0, 0)
        oh = R.conv_transpose2d_output_size(h, kh, sh, 0, 0, dh, oph)
        ow = R.conv_transpose2d_output_size(w, kw, sw, 0, 0, dw, opw)
    n = draw(st.integers(1, 3))
    return dict(n=n, c=groups * cg, f=groups * fg, h=h, w=w, oh=oh, ow=ow, kernel=(kh, kw), stride=(sh, sw),
                dilation=(dh, dw), pads=pads, groups=groups, nb=draw(st.integers(0, n)), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(convt_cases())
def test_conv_transpose2d_forward_backward(case):
    rng = np.random.default_rng(case["seed"])
    n, c, f, g = case["n"], case["c"], case["f"], case["groups"]
    kh, kw = case["kernel"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((c, f // g, kh, kw))
    b = rng.standard_normal(f) if case["bias"] else None
    args = (case["stride"], case["pads"], case["dilation"], g)
    y = R.conv_transpose2d(x, w, b, *args, (case["oh"], case["ow"]))
    k = (f // g) * kh * kw
    p = case["h"] * case["w"]
    col, tmp = _workspace(k, p, c, case["nb"])
    geo = (case["stride"][0], case["stride"][1], case["pads"][0], case["pads"][2],
           case["dilation"][0], case["dilation"][1], g, case["nb"])
    yk = np.full(y.shape, np.nan, np.float32)
    bb = f32(b) if b is not None else np.zeros(1, np.float32)
    K.conv_transpose2d_forward(f32(x), f32(w), bb, b is not None, *geo, col, tmp, yk)
    assert_close(yk, y, what="conv_transpose2d forward")

    dy = rng.standard_normal(y.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    dwk = np.full(w.shape, np.nan, np.float32)
    dbk = np.full(f, np.nan, np.float32)
    K.conv_transpose2d_backward_data(f32(dy), f32(w), *geo, col, tmp, dxk)
    K.conv_transpose2d_backward_weight(f32(x), f32(dy), True, *geo, col, tmp, dwk, dbk)
    dx, dw, db = R.conv_transpose2d_backward(x, w, dy, *args)
    assert_close(dxk, dx, what="dx")
    assert_close(dwk, dw, what="dw")
    assert_close(dbk, db, what="db")

    def loss(x_, w_, b_):
        return float((R.conv_transpose2d(x_, w_, b_, *args, (case["oh"], case["ow"])) * dy).sum())
    check_grad_fd(loss, [x, w, np.zeros(f) if b is None else b], [dxk, dwk, dbk], rng, what="conv_transpose2d")


@pytest.mark.parametrize("name, n, c, f, hw, kernel, stride, pads, dilation, groups", [
    ("1x1 direct", 1, 6, 4, (5, 7), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ("1x1 grouped batch", 3, 6, 4, (5, 7), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),
    ("same asymmetric s2", 2, 3, 5, (8, 7), (3, 3), (2, 2), (0, 1, 1, 1), (1, 1), 1),
    ("same asymmetric k2", 2, 3, 5, (6, 6), (2, 2), (1, 1), (0, 1, 0, 1), (1, 1), 1),
    ("depthwise", 2, 4, 4, (9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
    ("lenet conv1", 2, 1, 6, (28, 28), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),
    ("floor rounding drops rows", 2, 2, 3, (9, 8), (3, 2), (2, 3), (1, 0, 0, 0), (1, 1), 1),
])
def test_conv2d_special_cases(name, n, c, f, hw, kernel, stride, pads, dilation, groups):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c) + hw)
    w = rng.standard_normal((f, c // groups) + kernel)
    b = rng.standard_normal(f)
    args = (stride, pads, dilation, groups)
    y = R.conv2d(x, w, b, *args)
    for nb in (0, 1, n):  # direct loops; GEMM straight into y; GEMM over the batch + scatter
        col, tmp = _workspace((c // groups) * kernel[0] * kernel[1], y.shape[2] * y.shape[3], f, max(nb, 1))
        geo = (stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1], groups, nb)
        yk = np.empty(y.shape, np.float32)
        K.conv2d_forward(f32(x), f32(w), f32(b), True, *geo, col, tmp, yk)
        assert_close(yk, y, what=name)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = R.conv2d_backward(x, w, dy, *args)
        dxk, dwk, dbk = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(f, np.float32)
        K.conv2d_backward_data(f32(dy), f32(w), *geo, col, tmp, dxk)
        K.conv2d_backward_weight(f32(x), f32(dy), True, *geo, col, tmp, dwk, dbk)
        assert_close(dxk, dx, what=name + " dx")
        assert_close(dwk, dw, what=name + " dw")
        assert_close(dbk, db, what=name + " db")


@pytest.mark.parametrize("n, c, f, hw", [(32, 128, 128, 8), (32, 64, 128, 8), (32, 32, 64, 16)])
def test_conv2d_at_vgg_small_layer_shapes(n, c, f, hw):
    """A whole layer at training size, chunked as the launcher chunks it: the BLAS and the loops
    meet sizes here that the small cases above never reach (vgg_small's stage 3 and 2)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, hw, hw))
    w = rng.standard_normal((f, c, 3, 3)) * 0.1
    dy = rng.standard_normal((n, f, hw, hw))
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    dx, dw, _ = R.conv2d_backward(x, w, dy, *args)
    nb, col_len, tmp_len = K.conv2d_workspace(n, c, f, 3, 3, 1, hw, hw)
    col, tmp = np.empty(max(col_len, K.saved_col_len(n, c, 3, 3, hw, hw)), np.float32), np.empty(tmp_len, np.float32)
    geo = (1, 1, 1, 1, 1, 1, 1, nb)
    yk = np.empty((n, f, hw, hw), np.float32)
    K.conv2d_forward(f32(x), f32(w), np.zeros(f, np.float32), False, *geo, col, tmp, yk, True)
    assert_close(yk, R.conv2d(x, w, None, *args), what="forward")
    dxk, dwk, dbk = np.empty(x.shape, np.float32), np.empty(w.shape, np.float32), np.empty(f, np.float32)
    K.conv2d_backward_weight(f32(x), f32(dy), False, *geo, col, tmp, dwk, dbk, True)  # from the kept columns
    K.conv2d_backward_data(f32(dy), f32(w), *geo, col, tmp, dxk)
    assert_close(dxk, dx, what="dx")
    assert_close(dwk, dw, what="dw")


def test_workspace_too_small_raises():
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    y = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError):
        K.conv2d_forward(x, w, np.zeros(3, np.float32), True, 1, 1, 0, 0, 1, 1, 1, 1,
                         np.empty(4, np.float32), np.empty(4, np.float32), y)


@SETTINGS
@given(conv_cases())
def test_weight_gradient_from_the_forwards_kept_columns(case):
    """Training keeps the forward's unfolded input (keep_col) and the weight gradient reuses it
    (col_ready): same gradients as unfolding again, for every chunking and grouping."""
    if case["nb"] == 0:
        case = dict(case, nb=1)  # the direct path unfolds nothing
    rng, x, w, b, y, geo, _, tmp, args = _conv_run(case)
    n, c, f, g = case["n"], case["c"], case["f"], case["groups"]
    kh, kw = case["kernel"]
    kept = np.full(K.saved_col_len(n, c, kh, kw, y.shape[2], y.shape[3]), np.nan, np.float32)
    yk = np.full(y.shape, np.nan, np.float32)
    bb = f32(b) if b is not None else np.zeros(1, np.float32)
    K.conv2d_forward(f32(x), f32(w), bb, b is not None, *geo, kept, tmp, yk, True)
    assert_close(yk, y, what="conv2d forward keeping its columns")
    dy = rng.standard_normal(y.shape)
    _, dw, db = R.conv2d_backward(x, w, dy, *args)
    x_gone = np.full(x.shape, np.nan, np.float32)  # col_ready must not read x again
    dwk, dbk = np.full(w.shape, np.nan, np.float32), np.full(f, np.nan, np.float32)
    K.conv2d_backward_weight(x_gone, f32(dy), True, *geo, kept, tmp, dwk, dbk, True)
    assert_close(dwk, dw, what="weight gradient from kept columns")
    assert_close(dbk, db, what="bias gradient")


def test_kept_columns_buffer_too_small_raises():
    x = np.zeros((2, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    y = np.zeros((2, 3, 3, 3), np.float32)
    one_image = np.empty(K.saved_col_len(1, 2, 3, 3, 3, 3), np.float32)  # room for 1 of 2 images
    with pytest.raises(ValueError):
        K.conv2d_forward(x, w, np.zeros(3, np.float32), True, 1, 1, 0, 0, 1, 1, 1, 1,
                         one_image, np.empty(64, np.float32), y, True)
