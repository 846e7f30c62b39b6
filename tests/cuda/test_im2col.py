"""The "cublas" candidate (cnndsl/kernels/cuda/im2col.py: gather kernels around cuBLAS SGEMMs,
cnndsl/kernels/cuda/blas.py) vs the NumPy references, through gemm.py's launches as the
launchers call them: conv forward with bias, residual (in place too) and activation, input and
weight gradients, conv_transpose (the adjoint), dense, the 1x1 shortcut and several chunks of
images. Under the simulator the GEMMs are NumPy's (blas.py); on a GPU (benchmarks/gpu_session.sh,
CNNDSL_CUDA_ON_DEVICE=1) cuBLAS's. Tolerance: assert_close's float32 bound (1e-4 of the largest
expected value + 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.kernels.reference import conv as R
from cnndsl.kernels.reference import dense as RD

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _cublas_here():
    """On a GPU without cuBLAS (or with CNNDSL_CUDA_BLAS=off) these tests say why they skip."""
    from cnndsl.kernels.cuda import blas

    ok, why = blas.available()
    if not ok:
        pytest.skip(f"the cublas candidate is not available here: {why}")

CASES = [  # N, C, H, W, F, K, stride, pads (t, b, l, r), dilation
    (2, 3, 7, 7, 5, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 3, 7, 6, 5, 3, (2, 1), (1, 0, 2, 1), (1, 2)),
    (2, 4, 5, 5, 3, 1, (1, 1), (0, 0, 0, 0), (1, 1)),   # 1x1, stride 1, no padding: no im2col
    (2, 4, 6, 5, 3, 1, (2, 2), (0, 0, 0, 0), (1, 1)),   # 1x1 strided: im2col
    (2, 2, 6, 6, 4, 2, (1, 1), (2, 2, 0, 1), (2, 1)),
]


def _geo(x, w, y, s, pads, d):
    return ConvGeometry(N=x.shape[0], C=x.shape[1], H=x.shape[2], W=x.shape[3], F=w.shape[0], OH=y.shape[2],
                        OW=y.shape[3], KH=w.shape[2], KW=w.shape[3], sh=s[0], sw=s[1], pt=pads[0], pb=pads[1],
                        pl=pads[2], pr=pads[3], dh=d[0], dw=d[1])


@pytest.fixture(params=[False, True], ids=["one chunk", "one image per chunk"])
def chunks(request, monkeypatch):
    from cnndsl.kernels.cuda import im2col

    if request.param:
        monkeypatch.setattr(im2col, "COL_CAP", 1)
    return request.param


@pytest.mark.parametrize("N, C, H, W, F, K, s, pads, d", CASES)
def test_conv_through_cublas(N, C, H, W, F, K, s, pads, d, chunks):
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import im2col

    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C, K, K)), rng.standard_normal(F)
    z = R.conv2d(x, w, b, s, pads, d, 1)
    geo = _geo(x, w, z, s, pads, d)
    if chunks:
        assert im2col.chunk(geo, G.FWD) == 1 and im2col.chunk(geo, G.BWD_WEIGHT) == 1
    res = rng.standard_normal(z.shape)
    out = empty(z.size)
    G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, G.CUBLAS, res=dev(res), act=G.LEAKY_RELU, alpha=0.1)()
    assert_close(host(out, z.shape), np.where(z + res > 0, z + res, 0.1 * (z + res)), what="forward")
    out = empty(z.size)
    G.conv_forward(dev(x), dev(w), dev(b), False, out, geo, G.CUBLAS)()
    assert_close(host(out, z.shape), z - b.reshape(1, -1, 1, 1), what="forward without bias or epilogue")

    dy = rng.standard_normal(z.shape)
    dx, dw, _ = R.conv2d_backward(x, w, dy, s, pads, d, 1)
    out = empty(x.size)
    G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, G.CUBLAS)()
    assert_close(host(out, x.shape), dx, what="backward data")
    out = empty(w.size)
    out.copy_to_device(np.full(w.size, np.nan, np.float32))  # overwritten, not added to
    part = empty(G.weight_workspace(geo, G.CUBLAS))
    G.conv_backward_weight(dev(x), dev(dy), out, part, geo, G.CUBLAS)()
    assert_close(host(out, w.shape), dw, what="backward weight")
    for splits in (2, 3):  # partial sums per equal part of each chunk (the rest onto the first), then reduced
        out = empty(w.size)
        part = empty(G.weight_workspace(geo, G.CUBLAS, splits))
        G.conv_backward_weight(dev(x), dev(dy), out, part, geo, G.CUBLAS, splits)()
        assert_close(host(out, w.shape), dw, what=f"backward weight, {splits} splits")


def test_split_weight_gradient_with_a_short_last_chunk(monkeypatch):
    """Three images, two per chunk: the last chunk's 4 columns are fewer than the 5 splits, so all
    of it goes onto the first partial sum; the first chunk's 8 columns make 5 parts of 1 and a rest
    of 3. A request whose first chunk would leave a part empty is refused."""
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import im2col

    rng = np.random.default_rng(15)
    x, w = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((3, 2, 2, 2))
    y = R.conv2d(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    geo = _geo(x, w, y, (1, 1), (0, 0, 0, 0), (1, 1))
    monkeypatch.setattr(im2col, "COL_CAP", 2 * (8 + 3) * 4)  # two images of (C*KH*KW + F) * OH*OW floats
    assert im2col.chunk(geo, G.BWD_WEIGHT) == 2
    dy = rng.standard_normal(y.shape)
    _, dw, _ = R.conv2d_backward(x, w, dy, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    out = empty(w.size)
    G.conv_backward_weight(dev(x), dev(dy), out, empty(G.weight_workspace(geo, G.CUBLAS, 5)), geo, G.CUBLAS, 5)()
    assert_close(host(out, w.shape), dw, what="5 splits, a short last chunk")
    with pytest.raises(ValueError, match="9 splits"):
        G.conv_backward_weight(dev(x), dev(dy), out, empty(G.weight_workspace(geo, G.CUBLAS, 9)), geo, G.CUBLAS, 9)


def test_weight_split_candidates(monkeypatch):
    """With the GPU's 264 target blocks (the simulator's are 4): enough splits for them in 64x64
    output tiles, and half; none for a dense layer; every part of the first chunk at least 256 long."""
    from cnndsl.kernels.cuda import im2col

    monkeypatch.setattr(im2col, "TARGET_BLOCKS", 264)
    big = ConvGeometry(N=64, C=64, H=56, W=56, F=64, OH=56, OW=56, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    assert im2col.weight_splits(big) == [14, 29]  # 1 x 9 tiles of the 64 x 576 result: 264 // 9 = 29
    wide = ConvGeometry(N=64, C=256, H=8, W=8, F=256, OH=8, OW=8, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    assert im2col.weight_splits(wide) == []  # 4 x 36 tiles: 264 // 144 = 1, no split
    assert im2col.weight_splits(ConvGeometry.dense(64, 400, 120)) == []
    tiny = ConvGeometry(N=1, C=64, H=4, W=4, F=8, OH=4, OW=4, KH=1, KW=1)
    assert im2col.weight_splits(tiny) == []  # 16 columns: no part could be 256 long


def test_in_place_residual():
    """fused_conv's residual may be its own output buffer: the GEMM adds onto it (beta 1)."""
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((3, 3, 3, 3)), rng.standard_normal(3)
    z = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    res = rng.standard_normal(z.shape)
    geo = _geo(x, w, z, (1, 1), (1, 1, 1, 1), (1, 1))
    both = dev(res)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, both, geo, G.CUBLAS, res=both, act=G.RELU)
    launch()
    assert_close(host(both, z.shape), np.maximum(z + res, 0), what="in-place residual")


def test_conv_transpose_through_cublas():
    from cnndsl.kernels.cuda import gemm as G

    rng = np.random.default_rng(13)
    s, pads, d = (2, 2), (1, 0, 0, 1), (1, 1)
    x, w, b = rng.standard_normal((2, 4, 3, 4)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(3)
    oh = R.conv_transpose2d_output_size(3, 3, 2, 1, 0, 1, 1)
    ow = R.conv_transpose2d_output_size(4, 3, 2, 0, 1, 1, 0)
    y = R.conv_transpose2d(x, w, b, s, pads, d, 1, (oh, ow))
    geo = _geo(y, w, x, s, pads, d)  # the conv from y-space to x-space
    out = empty(y.size)
    G.conv_backward_data(dev(x), dev(w), dev(b), True, out, geo, G.CUBLAS)()
    assert_close(host(out, y.shape), y, what="conv_transpose forward (with its bias)")
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = R.conv_transpose2d_backward(x, w, dy, s, pads, d, 1)
    out = empty(x.size)
    G.conv_forward(dev(dy), dev(w), dev(b), False, out, geo, G.CUBLAS)()
    assert_close(host(out, x.shape), dx, what="conv_transpose input gradient")
    out, part = empty(w.size), empty(G.weight_workspace(geo, G.CUBLAS))
    G.conv_backward_weight(dev(dy), dev(x), out, part, geo, G.CUBLAS)()
    assert_close(host(out, w.shape), dw, what="conv_transpose weight gradient")


def test_dense_through_cublas():
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import im2col

    rng = np.random.default_rng(14)
    x, w, b = rng.standard_normal((3, 37)), rng.standard_normal((11, 37)), rng.standard_normal(11)
    geo = ConvGeometry.dense(3, 37, 11)
    assert all(im2col.workspace(geo, m) == 0 for m in (G.FWD, G.BWD_DATA, G.BWD_WEIGHT))
    out = empty(3 * 11)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, G.CUBLAS, act=G.SIGMOID)
    launch()
    assert len(launch.steps) == 2  # one GEMM, one epilogue
    assert_close(host(out, (3, 11)), 1 / (1 + np.exp(-RD.dense(x, w, b))), what="dense")
    dy = rng.standard_normal((3, 11))
    dx, dw, _ = RD.dense_backward(x, w, dy)
    out = empty(x.size)
    G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, G.CUBLAS)()
    assert_close(host(out, x.shape), dx, what="dense backward data")
    out = empty(w.size)
    G.conv_backward_weight(dev(x), dev(dy), out, empty(1), geo, G.CUBLAS)()
    assert_close(host(out, w.shape), dw, what="dense backward weight")


def test_the_candidate_is_offered_where_usable(monkeypatch):
    """tune.py measures "cublas" beside the tiles for groups of 1 (and picks it when it is fastest);
    not for grouped convs, nor with CNNDSL_CUDA_BLAS=off."""
    from cnndsl.kernels.cuda import blas, im2col

    plain = ConvGeometry(N=2, C=4, H=5, W=5, F=6, OH=5, OW=5, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    grouped = ConvGeometry(N=2, C=4, H=5, W=5, F=6, OH=5, OW=5, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1, G=2)
    monkeypatch.delenv(blas.ENV, raising=False)
    assert im2col.usable(plain) == (True, "")
    assert im2col.usable(grouped) == (False, "grouped convolution")
    monkeypatch.setenv(blas.ENV, "off")
    assert im2col.usable(plain) == (False, f"{blas.ENV}=off")
