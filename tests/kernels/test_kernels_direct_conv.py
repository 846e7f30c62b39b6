"""The register-blocked direct convolution (cnndsl/kernels/cpu/direct.py and the tile of
microkernel.py): every tile vs its NumPy statement, then the forward, input gradient and weight
gradient vs the NumPy reference, and finite differences.

Tolerance: assert_close's float32 bound (1e-5 + 1e-4 x max |expected|), the same as the im2col
kernels' tests: the direct kernels sum the same products in another order, nothing more.
Channel counts go past 32 so that every VF (8, 16, 32) and partial last blocks are drawn."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, VECTOR_FILES, assert_close, check_grad_fd, f32
from kernels_testutil import vector_file  # noqa: F401 (a fixture)
from nets_testutil import WINOGRAD_NET

from cnndsl.kernels.cpu import direct as DR
from cnndsl.kernels.cpu import microkernel as M
from cnndsl.kernels.cpu import outer as O
from cnndsl.kernels.cpu import transpose as TR
from cnndsl.kernels.reference import conv as R
from cnndsl.kernels.activations import ACTIVATIONS

ACTS = {a.code: a for a in ACTIVATIONS}  # every activation, by the code the epilogue takes
ALPHA = 0.1


@st.composite
def cases(draw, stride1=False):
    c = draw(st.sampled_from([1, 2, 3, 6, 9, 17]))
    f = draw(st.sampled_from([1, 5, 8, 9, 16, 17, 32, 33]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = (1, 1) if stride1 else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pads = tuple(draw(st.integers(0, k - 1)) for k in (keh, keh, kew, kew))
    h = max(draw(st.integers(1, 11)), keh - pads[0] - pads[1])
    w = max(draw(st.integers(1, 19)), kew - pads[2] - pads[3])
    return dict(n=draw(st.integers(1, 3)), c=c, f=f, h=h, w=w, kernel=(kh, kw), stride=(sh, sw),
                dilation=(dh, dw), pads=pads, act=draw(st.sampled_from(sorted(ACTS))),
                residual=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


def _setup(case):
    rng = np.random.default_rng(case["seed"])
    n, c, f = case["n"], case["c"], case["f"]
    kh, kw = case["kernel"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((f, c, kh, kw))
    b = rng.standard_normal(f) if case["bias"] else None
    args = (case["stride"], case["pads"], case["dilation"], 1)
    z = R.conv2d(x, w, b, *args)
    sh, sw = case["stride"]
    dh, dw = case["dilation"]
    geo = dict(sh=sh, sw=sw, pt=case["pads"][0], pl=case["pads"][2], dh=dh, dw=dw)
    return rng, x, w, b, z, args, geo


def _plan(case, z, geo):
    kh, kw = case["kernel"]
    return DR.plan(case["c"], case["f"], case["h"], case["w"], kh, kw, geo["sh"], geo["sw"], geo["pt"], geo["pl"],
                   geo["dh"], geo["dw"], 1, z.shape[2], z.shape[3])


@SETTINGS
@given(cases())
def test_forward_matches_reference(case):
    rng, x, w, b, z, args, geo = _setup(case)
    p = _plan(case, z, geo)
    if p is None:  # a plain 1x1 conv: the im2col path serves it
        return
    res = rng.standard_normal(z.shape) if case["residual"] else None
    expected = z + res if res is not None else z
    expected = ACTS[case["act"]].reference(expected, ALPHA)
    xl, wl = DR.scratch_len(case["n"], case["c"], case["f"], *case["kernel"], p)
    y = np.full(z.shape, np.nan, np.float32)
    DR.forward(f32(x), f32(w), f32(b) if b is not None else np.zeros(1, np.float32), b is not None,
               f32(res) if res is not None else y, res is not None, case["act"], ALPHA, geo["sh"], geo["sw"],
               geo["pt"], geo["pl"], geo["dh"], geo["dw"], y, np.full(xl, np.nan, np.float32),
               np.full(wl, np.nan, np.float32))
    assert_close(y, expected, what=f"direct forward {p}")


@pytest.mark.parametrize("n, c, f, hw, k, pad, residual", [
    (4, 3, 6, 30, 3, 1, False),   # pixel vectors, in parallel bands: rows written straight into y
    (4, 3, 6, 30, 3, 1, True),    # the same with a residual: every row through the tile buffer
    (2, 2, 5, 7, 3, 1, False),    # pixel vectors, one thread, a spill longer than a row (OW = 7)
    (16, 8, 16, 12, 3, 0, False),  # no padding needed: the tiles read x itself, in parallel
    (1, 8, 16, 12, 3, 0, True),   # ... and on one thread
    (4, 3, 20, 32, 3, 1, False),  # pixel vectors in channel blocks of 7, 7, 6; rows of exactly 32 lanes
    (4, 3, 20, 32, 3, 1, True),   # ... with a residual: a band's rows, one tile each, in one call via tb
    (2, 3, 12, 30, 3, 1, False),  # two blocks of 6 channels, rows spilling 2 lanes, in parallel
    (1, 2, 12, 16, 3, 1, True),   # one thread: every row of the image in one call through tb
    (3, 16, 24, 8, 3, 1, True),   # channel vectors, a row one tile: several rows per call, one thread
    (8, 16, 24, 8, 3, 1, False),  # ... in parallel bands
])
@pytest.mark.parametrize("kind", sorted(VECTOR_FILES))
def test_forward_paths(n, c, f, hw, k, pad, residual, kind, vector_file):
    """The forward's fixed paths that random draws reach only by chance (the comments say which
    on AVX-512), planned for both register files: a NaN-filled output and scratch, so a row left
    unwritten or a spill onto a finished row shows (tolerance as above)."""
    vector_file(kind)
    rng = np.random.default_rng(n * 100 + c)
    x, w, b = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)
    z = R.conv2d(x, w, b, (1, 1), (pad,) * 4, (1, 1), 1)
    res = rng.standard_normal(z.shape) if residual else None
    expected = np.maximum(z + res if residual else z, 0.0)
    p = DR.plan(c, f, hw, hw, k, k, 1, 1, pad, pad, 1, 1, 1, z.shape[2], z.shape[3])
    y = np.full(z.shape, np.nan, np.float32)
    xl, wl = DR.scratch_len(n, c, f, k, k, p)
    relu = next(a.code for a in ACTIVATIONS if a.name == "relu")
    DR.forward(f32(x), f32(w), f32(b), True, f32(res) if residual else y, residual, relu, ALPHA, 1, 1, pad, pad,
               1, 1, y, np.full(xl, np.nan, np.float32), np.full(wl, np.nan, np.float32), p)
    assert_close(y, expected, what=f"direct forward {p}")


@SETTINGS
@given(cases())
def test_weight_gradient_matches_reference(case):
    rng, x, w, b, z, args, geo = _setup(case)
    kh, kw = case["kernel"]
    q = DR.wgrad_plan(case["c"], case["f"], case["h"], case["w"], kh, kw, geo["sh"], geo["sw"], geo["pt"],
                      geo["pl"], geo["dh"], geo["dw"], 1, z.shape[2], z.shape[3])
    if q is None:
        return
    dy = rng.standard_normal(z.shape)
    threads = numba.get_num_threads()
    bufs = [np.full(m, np.nan, np.float32) for m in
            DR.wgrad_scratch_len(case["n"], case["c"], case["f"], kh, kw, z.shape[2], z.shape[3], q, threads)]
    dwk = np.full(w.shape, np.nan, np.float32)
    DR.backward_weight(f32(x), f32(dy), geo["pt"], geo["pl"], geo["sh"], geo["sw"], geo["dh"], geo["dw"], dwk,
                       *bufs, threads)
    _, dw_ref, _ = R.conv2d_backward(x, w, dy, *args)
    assert_close(dwk, dw_ref, what=f"direct weight gradient {q}")


@pytest.mark.parametrize("kind", sorted(VECTOR_FILES))
@pytest.mark.parametrize("n, c, f, hw, k, pad, dil", [
    (2, 20, 40, 13, 3, 1, 1),  # AVX2: 3 blocks of 16 channels (the last 8 past F); AVX-512: 2 of 32
    (1, 16, 24, 9, 5, 2, 1),   # 5x5, rows of 9: AVX2's 5-pixel tiles, a short last one
    (3, 9, 64, 10, 3, 1, 2),   # dilation 2, 64 channels: 4 blocks of 16 (AVX2), 2 of 32
    (2, 33, 17, 15, 3, 1, 1),  # 17 output channels: channel vectors 32 (AVX-512) or 2 x 16 (AVX2)
])
def test_each_register_files_plans_compute_the_convolution(n, c, f, hw, k, pad, dil, kind, vector_file):
    """Forward, input gradient and weight gradient planned for AVX-512 and for AVX2 on this machine
    (the plans differ in VF, RB and the pixel-vector choice; each kind is the other's untested path
    on a CI machine of one kind): NaN-filled scratch, float64 references (tolerance as above)."""
    vector_file(kind)
    rng = np.random.default_rng(n * 100 + c + f)
    x, w, b = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)
    geo = ((1, 1), (pad,) * 4, (dil, dil), 1)
    z = R.conv2d(x, w, b, *geo)
    oh, ow = z.shape[2:]
    p = DR.plan(c, f, hw, hw, k, k, 1, 1, pad, pad, dil, dil, 1, oh, ow)
    y = np.full(z.shape, np.nan, np.float32)
    xl, wl = DR.scratch_len(n, c, f, k, k, p)
    DR.forward(f32(x), f32(w), f32(b), True, y, False, 0, ALPHA, 1, 1, pad, pad, dil, dil, y,
               np.full(xl, np.nan, np.float32), np.full(wl, np.nan, np.float32), p)
    assert_close(y, z, what=f"{kind} forward {p}")
    dy = rng.standard_normal(z.shape)
    dx_ref, dw_ref, _ = R.conv2d_backward(x, w, dy, *geo)
    q = DR.backward_data_plan(c, f, hw, hw, k, k, 1, 1, pad, pad, dil, dil, 1, oh, ow)
    dx = np.full(x.shape, np.nan, np.float32)
    xl, wl = DR.scratch_len(n, f, c, k, k, q)
    DR.backward_data(f32(dy), f32(w), pad, pad, dil, dil, dx, np.full(xl, np.nan, np.float32),
                     np.full(wl, np.nan, np.float32))
    assert_close(dx, dx_ref, what=f"{kind} input gradient {q}")
    qw = DR.wgrad_plan(c, f, hw, hw, k, k, 1, 1, pad, pad, dil, dil, 1, oh, ow)
    threads = numba.get_num_threads()
    bufs = [np.full(m, np.nan, np.float32) for m in DR.wgrad_scratch_len(n, c, f, k, k, oh, ow, qw, threads)]
    dwk = np.full(w.shape, np.nan, np.float32)
    DR.backward_weight(f32(x), f32(dy), pad, pad, 1, 1, dil, dil, dwk, *bufs, threads)
    assert_close(dwk, dw_ref, what=f"{kind} weight gradient {qw}")


@pytest.mark.parametrize("n, c, f, hw, k, s", [(4, 16, 32, 32, 1, 2), (2, 3, 20, 13, 3, 2), (1, 5, 9, 19, 1, 2)])
def test_strided_convs_without_padding_read_x_itself(n, c, f, hw, k, s):
    """No padding and every tile's reach inside x (ResNet's 1x1 stride-2 shortcut): the plan keeps x's
    own size, so the tiles read x with no copy; NaN scratch shows a read of the unused copy."""
    rng = np.random.default_rng(c)
    x, w, b = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)
    z = R.conv2d(x, w, b, (s, s), (0,) * 4, (1, 1), 1)
    p = DR.plan(c, f, hw, hw, k, k, s, s, 0, 0, 1, 1, 1, z.shape[2], z.shape[3])
    assert p[2:] == (hw, hw), p
    y = np.full(z.shape, np.nan, np.float32)
    xl, wl = DR.scratch_len(n, c, f, k, k, p)
    DR.forward(f32(x), f32(w), f32(b), True, y, False, 0, ALPHA, s, s, 0, 0, 1, 1, y,
               np.full(xl, np.nan, np.float32), np.full(wl, np.nan, np.float32), p)
    assert_close(y, z, what=f"strided direct forward reading x {p}")


@pytest.mark.parametrize("n, c, f, hw, k, pad, dil", [
    (4, 3, 16, 32, 3, 1, 1),   # pixel-vector weight gradient, in parallel (2 threads' partials)
    (2, 5, 6, 28, 5, 2, 1),    # F not a multiple of 4 (zero rows), rows of 28 in 32 lanes
    (1, 2, 7, 15, 3, 2, 2),    # one image, dilation, 15 of 16 lanes, 18 taps: groups of 4 and 2
    (3, 17, 9, 16, 3, 0, 1),   # no padding, 153 taps: the last group 1 tap
])
def test_pixel_vector_weight_gradient(n, c, f, hw, k, pad, dil, vector_file):
    """The pixel-vector weight gradient (outer.py's tile) on the shapes that select it (planned as
    on AVX-512, which takes it for more shapes than AVX2), NaN-filled scratch so a lane past the row
    or a row past F that is read and not zeroed shows (tolerance as above)."""
    vector_file("avx512")
    rng = np.random.default_rng(n * 100 + c)
    x, w = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, k, k))
    z = R.conv2d(x, w, None, (1, 1), (pad,) * 4, (dil, dil), 1)
    q = DR.wgrad_plan(c, f, hw, hw, k, k, 1, 1, pad, pad, dil, dil, 1, z.shape[2], z.shape[3])
    assert q[0] == 0, q  # the shapes above are the pixel-vector path's
    dy = rng.standard_normal(z.shape)
    threads = numba.get_num_threads()
    bufs = [np.full(m, np.nan, np.float32) for m in DR.wgrad_scratch_len(n, c, f, k, k, *z.shape[2:], q, threads)]
    dwk = np.full(w.shape, np.nan, np.float32)
    DR.backward_weight(f32(x), f32(dy), pad, pad, 1, 1, dil, dil, dwk, *bufs, threads)
    _, dw_ref, _ = R.conv2d_backward(x, w, dy, (1, 1), (pad,) * 4, (dil, dil), 1)
    assert_close(dwk, dw_ref, what=f"pixel-vector weight gradient {q}")


@pytest.mark.parametrize("kind,rows,lanes", [("transpose_8x16", 8, 16), ("transpose_16x8", 16, 8)])
def test_the_block_transposes_match_their_numpy_statement(kind, rows, lanes):
    """transpose.py's register transposes, called from compiled code with odd strides and offsets,
    against reference_transpose; NaN elsewhere, so a store outside the block shows."""
    src = f32(np.random.default_rng(3).standard_normal(700))
    out = np.full(2000, np.nan, np.float32)
    expected = out.copy()
    fn = getattr(TR, kind)
    numba.njit(lambda *a: fn(*a))(src, np.int64(5), np.int64(37), out, np.int64(11), np.int64(123))
    TR.reference_transpose(src, 5, 37, expected, 11, 123, rows, lanes)
    assert np.array_equal(out, expected, equal_nan=True)


def test_every_outer_tile_matches_its_numpy_statement():
    """outer.py's tile for every RX against reference_outer: scattered step offsets, a non-zero
    starting accumulator, and NaN around each tile's accumulators so a store outside them shows.
    Tolerance: float32 sums of K = 7 products (plus the start) against float64, as above."""
    rng = np.random.default_rng(5)
    k = 7
    dyf, xf = f32(rng.standard_normal(700)), f32(rng.standard_normal(600))
    doffs = rng.integers(0, 200, k).astype(np.int64)
    xoffs = rng.integers(0, 300, k).astype(np.int64)
    for rx in range(1, O.MAX_RX + 1):
        xro = rng.integers(0, 250, rx).astype(np.int64)
        acc = np.full(40 + O.RF * rx * O.LANES + 40, np.nan, np.float32)
        acc[40:40 + O.RF * rx * O.LANES] = rng.standard_normal(O.RF * rx * O.LANES)
        expected = acc.copy()
        O.outer_tile(np.int64(rx), dyf, np.int64(9), doffs, np.int64(101), xf, np.int64(3), xoffs, xro, np.int64(k),
                     acc, np.int64(40))
        O.reference_outer(rx, dyf, 9, doffs, 101, xf, 3, xoffs, xro, k, expected, 40)
        assert np.isnan(acc[:40]).all() and np.isnan(acc[-40:]).all(), f"outer tile {rx} wrote outside its block"
        assert_close(acc[40:-40], expected[40:-40], what=f"outer tile {rx}")


@SETTINGS
@given(cases(stride1=True))
def test_input_gradient_matches_reference_and_fd(case):
    rng, x, w, b, z, args, geo = _setup(case)
    kh, kw = case["kernel"]
    q = DR.backward_data_plan(case["c"], case["f"], case["h"], case["w"], kh, kw, 1, 1, geo["pt"], geo["pl"],
                              geo["dh"], geo["dw"], 1, z.shape[2], z.shape[3])
    assert q is not None or (kh == kw == 1)
    if q is None:
        return
    dy = rng.standard_normal(z.shape)
    xl, wl = DR.scratch_len(case["n"], case["f"], case["c"], kh, kw, q)
    dxk = np.full(x.shape, np.nan, np.float32)
    DR.backward_data(f32(dy), f32(w), geo["pt"], geo["pl"], geo["dh"], geo["dw"], dxk,
                     np.full(xl, np.nan, np.float32), np.full(wl, np.nan, np.float32))
    dx_ref, _, _ = R.conv2d_backward(x, w, dy, *args)
    assert_close(dxk, dx_ref, what=f"direct input gradient {q}")

    def loss(x_):
        return float((R.conv2d(x_, w, None, *args) * dy).sum())
    check_grad_fd(loss, [x], [dxk], rng, what="direct input gradient")


@SETTINGS
@given(cases())
def test_strided_input_gradient_by_phases_matches_reference_and_fd(case):
    # every stride, padding (asymmetric, and larger than a phase's window: negative sub-padding),
    # dilation and odd size of cases(); tolerance: kernels_testutil.assert_close's float32 one
    if case["stride"] == (1, 1):
        return
    rng, x, w, b, z, args, geo = _setup(case)
    kh, kw = case["kernel"]
    q = DR.strided_data_plan(case["c"], case["f"], case["h"], case["w"], kh, kw, geo["sh"], geo["sw"], geo["pt"],
                             geo["pl"], geo["dh"], geo["dw"], 1, z.shape[2], z.shape[3], case["n"], 0)
    assert q is not None
    dy = rng.standard_normal(z.shape)
    dxk = np.full(x.shape, np.nan, np.float32)
    DR.backward_data_strided(f32(dy), f32(w), q, geo["sh"], geo["sw"], dxk, np.full(q.x_len, np.nan, np.float32),
                             np.full(q.w_len, np.nan, np.float32), np.full(q.buf_len, np.nan, np.float32))
    dx_ref, _, _ = R.conv2d_backward(x, w, dy, *args)
    assert_close(dxk, dx_ref, what=f"input gradient by phases {[ph.plan for ph in q.phases]}")

    def loss(x_):
        return float((R.conv2d(x_, w, None, *args) * dy).sum())
    check_grad_fd(loss, [x], [dxk], rng, what="input gradient by phases")


def test_phases_serve_large_strided_input_gradients_only():
    # resnet_tiny's down blocks: 3x3 stride 2 from batch 4 (PHASES_MIN_WORK), the 1x1 shortcut
    # (one live phase of four, three of zeros) from batch 32; stride 1 never
    assert DR.phases_from_batch(16, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 16, 16) == 4
    assert DR.phases_from_batch(16, 32, 32, 32, 1, 1, 2, 2, 0, 0, 1, 1, 1, 16, 16) == 32
    q = DR.strided_data_plan(16, 32, 32, 32, 1, 1, 2, 2, 0, 0, 1, 1, 1, 16, 16, 32)
    assert [ph.plan is not None for ph in q.phases] == [True, False, False, False]
    assert DR.strided_data_plan(16, 32, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1, 16, 16, 3) is None
    assert DR.phases_from_batch(16, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is None
    assert DR.phases_from_batch(16, 16, 32, 32, 3, 3, 2, 2, 1, 1, 1, 1, 2, 16, 16) is None  # grouped


def test_plan_declines_what_it_does_not_serve():
    # grouped convs, plain 1x1 convs, and the input gradient of a strided conv go to im2col
    assert DR.plan(8, 8, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2, 10, 10) is None
    assert DR.plan(8, 8, 10, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1, 10, 10) is None
    assert DR.plan(8, 8, 10, 10, 1, 1, 2, 2, 0, 0, 1, 1, 1, 5, 5) is not None
    assert DR.backward_data_plan(8, 8, 10, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1, 5, 5) is None

def test_the_vector_registers_are_those_numba_compiles_for(monkeypatch):
    """microkernel._vector_file follows Numba's target: the features NUMBA_CPU_FEATURES names,
    SSE2's for NUMBA_CPU_NAME=generic, else the host's."""
    from numba.core import config
    host = not config.CPU_FEATURES and config.CPU_NAME in (None, "host")  # compiling for this host
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+fma,-avx512f")
    assert M._vector_file() == (8, 16)
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+avx512f,+avx512bw")
    assert M._vector_file() == (16, 32)
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert M._vector_file() == (4, 16)
    monkeypatch.setattr(config, "CPU_NAME", None)
    assert M._vector_file() == (M.VECTOR_LANES, M.VECTOR_REGISTERS) or not host


@pytest.mark.parametrize("kind", sorted(VECTOR_FILES))
def test_plans_fit_the_cpus_vector_registers(kind, vector_file):
    """Which tile each conv gets, on AVX-512 (32 zmm registers) and on AVX2 (16 ymm: a 16-channel
    vector takes two, so 6 pixels at most, no 32-channel blocks, and pixel vectors only for F <= 8;
    microkernel.fit_rb, direct._pixel_vectors)."""
    vector_file(kind)
    avx512 = kind == "avx512"

    def plan(*a):
        return DR.plan(*a)[:2]

    # F <= 8: pixel vectors, 8 channels per tile (AVX2: two tiles of 4)
    assert plan(8, 8, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 10, 10) == ((-8, 16) if avx512 else (-4, 16))
    # short K: blocks of 7 in vectors of 32 pixels (AVX2: channel vectors, 4 pixels x 16 channels)
    assert plan(3, 20, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) == ((-7, 32) if avx512 else (4, 16))
    # 16 channels, K 144: pixel vectors (AVX2: channel vectors)
    assert plan(16, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) == ((-8, 32) if avx512 else (4, 16))
    # K 288: channel vectors, 8 (AVX2: 4) pixels of 16 channels
    assert plan(32, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) == ((8, 16) if avx512 else (4, 16))
    # 24 of 32 lanes used: channel vectors
    assert plan(3, 16, 24, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 24, 24) == ((12, 16) if avx512 else (6, 16))
    assert plan(8, 8, 10, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1, 5, 5) == (8, 8)  # strided: channel vectors, one ymm
    # a row in one tile (AVX2: two of 5)
    assert plan(8, 12, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 10, 10) == ((10, 16) if avx512 else (5, 16))
    # 7 tiles of 8 pixels x 32 channels, 16 accumulators (AVX2: 14 tiles of 4 x 16, 8 accumulators)
    assert plan(64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 56, 56) == ((8, 32) if avx512 else (4, 16))
    assert plan(8, 40, 10, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 10, 10)[1] == (32 if avx512 else 16)
    # the weight gradient's taps: 3x3 in one tile of 9 (AVX2: two of 5)
    assert DR.wgrad_plan(64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 56, 56)[:2] == ((9, 32) if avx512 else (5, 16))
    for vf in sorted(M.SHAPES):  # accumulators, the weight vectors and a broadcast in the register file
        n = M.registers(vf)
        assert (M.fit_rb(vf) + 1) * n + 1 <= M.VECTOR_REGISTERS or M.fit_rb(vf) == 1
        assert M.fit_rb(vf) == M.MAX_RB[vf] or (M.fit_rb(vf) + 2) * n + 1 > M.VECTOR_REGISTERS


@pytest.mark.parametrize("vf", sorted(M.SHAPES))
def test_every_tile_matches_its_numpy_statement(vf):
    """Each tile (every RB of every VF class, through its dispatch function) against
    microkernel.reference_tile, with scattered offsets, a non-zero init and strided rows, so a
    dispatch line that called the wrong RB, or a tile that read a wrong offset, fails. Tolerance:
    float32 sums of K = 13 products against float64, 1e-5 + 1e-4 x max |expected|."""
    rng = np.random.default_rng(vf)
    k = 13
    xf = f32(rng.standard_normal(460))
    wf = f32(rng.standard_normal(70 + 3 + (k + 1) * vf))
    xoffs = rng.integers(0, 300, k).astype(np.int64)
    codes = list(range(1, M.MAX_RB[vf] + 1))
    codes += [M.TABLE + rb for rb in range(1, M.PV_MAX_RB + 1)] if vf in M.PV_SHAPES else []
    for code in codes:
        rb = code % M.TABLE
        xro = rng.integers(0, 80, rb).astype(np.int64)
        init = f32(rng.standard_normal(7 + 2 + rb * (vf + 5)))
        out = np.full(11 + vf + 2 + rb * (2 * vf + 4), np.nan, np.float32)
        expected = out.copy()
        woffs = rng.integers(0, 60, k).astype(np.int64)
        # two tiles per call, every base moved by a step between them, the rows interleaved
        args = (xf, 9, xoffs, xro, wf, 5, woffs, k, init, 7, vf + 5, out, 11, 2 * vf + 4, 2, 37, 3, 2, vf + 2)
        M.TILES[vf](np.int64(code), *[np.int64(a) if isinstance(a, int) else a for a in args])
        M.reference_tile(code, vf, *args[:11], expected, *args[12:])
        written = ~np.isnan(expected)
        assert np.array_equal(~np.isnan(out), written), f"tile {code} x {vf} wrote outside its rows"
        assert_close(out[written], expected[written], what=f"tile {code} x {vf}")


def test_the_tile_is_vector_code():
    """The reason the tile is written in LLVM IR: its inner loop is vector FMAs with broadcast
    loads and no scalar FMA, on whatever vector width the CPU has (ymm or zmm; xmm on a CPU
    without AVX)."""
    import re
    fresh = numba.njit(M.tile_v32.py_func)  # not cache-loaded: Numba's cache keeps no assembly
    a64, f1, i1 = np.int64(0), np.zeros(64, np.float32), np.zeros(4, np.int64)
    fresh(np.int64(4), f1, a64, i1, i1, f1, a64, i1, a64, f1, a64, a64, f1, a64, a64, a64, a64, a64, a64, a64)
    asm = "".join(fresh.inspect_asm(s) for s in fresh.signatures)
    assert re.search(r"vfmadd\w*ps\s[^\n]*[xyz]mm", asm)
    assert not re.search(r"vfmadd\w*ss", asm)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lenet5", "winograd"])
def test_a_pool_filled_cache_runs(tmp_path, model):
    """A first training step with an empty Numba cache filled by the compile pool (two
    processes), then again from that cache: LeNet-5 (the direct convolution) and a network with
    Winograd layers. When the cached conv launcher itself called the parallel kernels, the second
    process crashed with SIGSEGV every time (2026-12-02); the launchers now call each parallel
    kernel from Python (direct.run, winograd.run)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if model == "lenet5":
        path = root / "examples" / "lenet5.cnn"
    else:
        path = tmp_path / "w.cnn"
        path.write_text(WINOGRAD_NET)
    snippet = (
        "import cnndsl\nfrom cnndsl.data.digits import load_digits\nfrom cnndsl.train.optim import SGD\n"
        f"m = cnndsl.compile({str(path)!r})\n"
        "m.set_optimizer(SGD(m.store.params, lr=0.01))\nx, y = load_digits('train')\n"
        "m.train_step(x[:64], y[:64], step=0)\nprint('stepped')\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), CNNDSL_COMPILE_WORKERS="2",
               NUMBA_NUM_THREADS="2", PYTHONPATH=str(root))
    for run in ("cold, through the pool", "warm, from the pool's cache"):
        done = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0 and "stepped" in done.stdout, f"{run}: exit {done.returncode}\n{done.stderr[-3000:]}"
