"""Implicit-GEMM conv / conv_transpose / dense kernels, both families (tiled: gemm.py; pipelined:
igemm.py), vs the NumPy references, on shapes that are not multiples of any tile: batch 2, 3 or
6 channels, 7x7 maps, 5 or 6 filters, odd strides, asymmetric padding, dilation, groups 1 and 3;
every tile and the split-K reduction. Tolerance: assert_close's float32 bound (1e-4 of the
largest expected value + 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.kernels.reference import conv as R
from cnndsl.kernels.reference import dense as RD

pytestmark = pytest.mark.cuda

CASES = [  # stride, pads (t, b, l, r), dilation, groups, C, F, K, tile
    ((1, 1), (1, 1, 1, 1), (1, 1), 1, 3, 5, 3, "s32x16"),
    ((2, 1), (1, 0, 2, 1), (1, 2), 1, 3, 5, 3, "s32x16"),
    ((2, 3), (0, 1, 1, 0), (1, 1), 3, 3, 6, 3, "m64x32"),
    ((1, 1), (2, 2, 0, 1), (2, 1), 1, 3, 5, 2, "n128x16"),
    # the pipelined family: unit and other strides (its BWD_DATA has a variant for stride 1)
    ((1, 1), (1, 1, 1, 1), (1, 1), 1, 3, 5, 3, "p32x16"),
    ((2, 1), (1, 0, 2, 1), (1, 2), 1, 3, 5, 3, "p32x16"),
    ((2, 3), (0, 1, 1, 0), (1, 1), 3, 3, 6, 3, "p64x32"),
    ((1, 1), (2, 2, 0, 1), (2, 1), 1, 3, 5, 2, "p128x16"),
    ((1, 1), (1, 1, 1, 1), (1, 1), 3, 6, 9, 3, "p128x32"),
]


def _geo(G, x, w, y, s, pads, d, groups):
    return ConvGeometry(N=x.shape[0], C=x.shape[1], H=x.shape[2], W=x.shape[3], F=w.shape[0], OH=y.shape[2],
                        OW=y.shape[3], KH=w.shape[2], KW=w.shape[3], sh=s[0], sw=s[1], pt=pads[0], pb=pads[1],
                        pl=pads[2], pr=pads[3], dh=d[0], dw=d[1], G=groups)


@pytest.mark.parametrize("s, pads, d, groups, C, F, K, tile", CASES)
def test_conv_forward_and_backward(s, pads, d, groups, C, F, K, tile):
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, C, 7, 7))
    w = rng.standard_normal((F, C // groups, K, K))
    b = rng.standard_normal(F)
    y = R.conv2d(x, w, b, s, pads, d, groups)
    geo = _geo(G, x, w, y, s, pads, d, groups)
    out = empty(y.size)
    G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, tile)()
    assert_close(host(out, y.shape), y, what="forward")

    dy = rng.standard_normal(y.shape)
    dx, dw, db = R.conv2d_backward(x, w, dy, s, pads, d, groups)
    out = empty(x.size)
    G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, tile)()
    assert_close(host(out, x.shape), dx, what="backward data")
    for splits in (1, 3):
        out, part = empty(w.size), empty(G.weight_workspace(geo, tile, splits))
        G.conv_backward_weight(dev(x), dev(dy), out, part, geo, tile, splits)()
        assert_close(host(out, w.shape), dw, what=f"backward weight, {splits} splits")


@pytest.mark.parametrize("tile", ["l64x64", "l128x64", "p64x64", "p128x64", "p128x128"])
def test_large_tiles_on_a_small_conv(tile):
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    y = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    geo = _geo(G, x, w, y, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    out = empty(y.size)
    G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, tile)()
    assert_close(host(out, y.shape), y, what=tile)
    if tile.startswith("p"):  # 8x8 fragments (two runs of 4 rows and of 4 columns) in every mode
        dy = rng.standard_normal(y.shape)
        dx, dw, _ = R.conv2d_backward(x, w, dy, (1, 1), (1, 1, 1, 1), (1, 1), 1)
        out = empty(x.size)
        G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, tile)()
        assert_close(host(out, x.shape), dx, what=f"{tile} backward data")
        out, part = empty(w.size), empty(G.weight_workspace(geo, tile, 1))
        G.conv_backward_weight(dev(x), dev(dy), out, part, geo, tile, 1)()
        assert_close(host(out, w.shape), dw, what=f"{tile} backward weight")


def test_fused_epilogue_residual_and_activations():
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    z = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    res = rng.standard_normal(z.shape)
    geo = _geo(G, x, w, z, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    expect = {G.NONE: z + res, G.RELU: np.maximum(z + res, 0), G.LEAKY_RELU: np.where(z + res > 0, z + res, 0.2 * (z + res)),
              G.SIGMOID: 1 / (1 + np.exp(-(z + res))), G.TANH: np.tanh(z + res)}
    for act, want in expect.items():
        out = empty(z.size)
        G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, "s32x16", res=dev(res), act=act, alpha=0.2)()
        assert_close(host(out, z.shape), want, what=f"activation {act}")


def test_conv_transpose_is_the_adjoint():
    """conv_transpose's forward, input gradient and weight gradient through conv's kernels on the
    adjoint geometry, as the launchers run them (stride 2, asymmetric padding, groups 3)."""
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(4)
    s, pads, d, groups = (2, 2), (1, 0, 0, 1), (1, 1), 3
    x, w, b = rng.standard_normal((2, 6, 3, 4)), rng.standard_normal((6, 1, 3, 3)), rng.standard_normal(3)
    oh = R.conv_transpose2d_output_size(3, 3, 2, 1, 0, 1, 1)
    ow = R.conv_transpose2d_output_size(4, 3, 2, 0, 1, 1, 0)
    y = R.conv_transpose2d(x, w, b, s, pads, d, groups, (oh, ow))
    geo = _geo(G, y, w, x, s, pads, d, groups)  # the conv from y-space to x-space
    out = empty(y.size)
    G.conv_backward_data(dev(x), dev(w), dev(b), True, out, geo, "s32x16")()
    assert_close(host(out, y.shape), y, what="conv_transpose forward")
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = R.conv_transpose2d_backward(x, w, dy, s, pads, d, groups)
    out = empty(x.size)
    G.conv_forward(dev(dy), dev(w), dev(b), False, out, geo, "s32x16")()
    assert_close(host(out, x.shape), dx, what="conv_transpose input gradient")
    out, part = empty(w.size), empty(G.weight_workspace(geo, "s32x16", 2))
    G.conv_backward_weight(dev(dy), dev(x), out, part, geo, "s32x16", 2)()
    assert_close(host(out, w.shape), dw, what="conv_transpose weight gradient")


def test_dense_forward_and_backward():
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 37)), rng.standard_normal((11, 37)), rng.standard_normal(11)
    geo = ConvGeometry.dense(3, 37, 11)
    out = empty(3 * 11)
    G.conv_forward(dev(x), dev(w), dev(b), True, out, geo)()
    assert_close(host(out, (3, 11)), RD.dense(x, w, b), what="dense")
    dy = rng.standard_normal((3, 11))
    dx, dw, _ = RD.dense_backward(x, w, dy)
    out = empty(x.size)
    G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo)()
    assert_close(host(out, x.shape), dx, what="dense backward data")
    out, part = empty(w.size), empty(G.weight_workspace(geo, "s32x16", 2))
    G.conv_backward_weight(dev(x), dev(dy), out, part, geo, "s32x16", 2)()
    assert_close(host(out, w.shape), dw, what="dense backward weight")
    # split-K with the dense operand orders (37 features: 5 steps of 8, the last one short)
    out = empty(3 * 11)
    G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, "p32x16", act=G.TANH, splits=3)()
    assert_close(host(out, (3, 11)), np.tanh(RD.dense(x, w, b)), what="split dense")
    out = empty(x.size)
    G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, "p32x16", splits=2)()
    assert_close(host(out, x.shape), dx, what="split dense backward data")


def test_tile_choice_and_split_sizes():
    from cnndsl.kernels.cuda import gemm as G

    assert G.choose_tile(10, 5) == "s32x16"
    geo = ConvGeometry(N=2, C=3, H=7, W=7, F=5, OH=7, OW=7, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    for tile in G.TILES:
        splits, kchunk = G.weight_splits(geo, tile)
        assert kchunk % G.TILES[tile].BK == 0 and splits * kchunk >= 2 * 7 * 7 > (splits - 1) * kchunk


def test_tensors_past_int32_fall_back_to_the_tiled_kernels(monkeypatch):
    """The pipelined kernels index in int32 (their k table too: 4 entries per reduction index)
    and keep taps' coordinates below 2**28 (igemm.OUTSIDE's margin); a geometry with any index
    past 2**31, or a coordinate past 2**28, gets the tiled family."""
    from cnndsl.kernels.cuda import gemm as G

    monkeypatch.delenv("CNNDSL_CUDA_GEMM", raising=False)
    small = ConvGeometry(N=8, C=3, H=32, W=32, F=16, OH=32, OW=32, KH=3, KW=3)
    assert G.family(small) == "pipelined"
    # one channel in and out: x and dy have N*OH*OW = 2**29 elements, within int32; the weight
    # gradient's k table has 4 * (2**29 + 8) entries, past it
    wide = ConvGeometry(N=2**11, C=1, H=512, W=512, F=1, OH=512, OW=512, KH=1, KW=1)
    assert wide.N * wide.F * wide.OH * wide.OW < 2**31 and G.family(wide) == "tiled"
    # a map 2**28 wide (one row, one image): its tensors and table are small, but a tap's coordinate
    # would leave too little margin below the kernels' OUTSIDE sentinel
    tall = ConvGeometry(N=1, C=1, H=1, W=2**28, F=1, OH=1, OW=2**28, KH=1, KW=1)
    narrower = ConvGeometry(N=1, C=1, H=1, W=2**28 - 1, F=1, OH=1, OW=2**28 - 1, KH=1, KW=1)
    assert G.family(tall) == "tiled" and G.family(narrower) == "pipelined"


@pytest.mark.parametrize("tile, splits, groups, stride", [("p32x16", 2, 1, (1, 1)), ("p64x32", 3, 3, (2, 1)),
                                                          ("p32x16", 5, 1, (1, 2))])
def test_split_forward_and_input_gradient(tile, splits, groups, stride):
    """FWD and BWD_DATA with the reduction split over grid z (tune.py's candidates): partial sums,
    then splitk_epilogue with bias, residual and activation, against the references."""
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(9)
    C, F = 6, 6
    x = rng.standard_normal((2, C, 7, 7))
    w = rng.standard_normal((F, C // groups, 3, 3))
    b = rng.standard_normal(F)
    pads = (1, 1, 1, 1)
    y = R.conv2d(x, w, b, stride, pads, (1, 1), groups)
    geo = _geo(G, x, w, y, stride, pads, (1, 1), groups)
    res = rng.standard_normal(y.shape)
    out = empty(y.size)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, tile, res=dev(res), act=G.RELU, splits=splits)
    assert len(launch.steps) == 2  # the split GEMM and its epilogue
    launch()
    assert_close(host(out, y.shape), np.maximum(y + res, 0), what=f"split forward ({splits})")

    dy = rng.standard_normal(y.shape)
    dx, _, _ = R.conv2d_backward(x, w, dy, stride, pads, (1, 1), groups)
    out = empty(x.size)
    launch = G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, tile, splits=splits)
    assert len(launch.steps) == 2
    launch()
    assert_close(host(out, x.shape), dx, what=f"split backward data ({splits})")


def test_split_candidates():
    from cnndsl.kernels.cuda import gemm as G

    # a long reduction on few blocks: split candidates; a short one or a full grid: none
    long = ConvGeometry(N=1, C=64, H=4, W=4, F=16, OH=4, OW=4, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    wide = ConvGeometry(N=1, C=16, H=4, W=4, F=64, OH=4, OW=4, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    assert G.data_splits(G.FWD, long, "p128x16") and G.data_splits(G.BWD_DATA, wide, "p128x16")
    assert all(s >= 2 for s in G.data_splits(G.FWD, long, "p128x16"))
    short = ConvGeometry(N=1, C=3, H=4, W=4, F=16, OH=4, OW=4, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    assert G.data_splits(G.FWD, short, "p128x16") == [] and G.data_splits(G.FWD, long, "s32x16") == []
