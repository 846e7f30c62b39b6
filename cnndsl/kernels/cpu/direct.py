"""Register-blocked direct convolution: the forward, the input gradient (stride 1) and the weight
gradient of a conv with groups = 1, all three built on the one multiply-accumulate tile of
microkernel.py (RB pixels or taps x VF output channels, held in vector registers).

    plan(...)            the forward's tile (RB pixels x VF channels) and padded input size, or None
                         when the conv is not one this path serves (grouped, plain 1x1)
    forward(...)         y = act(conv(x, w) + b (+ res)), any stride, padding and dilation
    backward_data(...)   dx = dL/dx for stride 1: the forward run on dy padded by the flipped window,
                         with the weights transposed and flipped
    backward_data_strided(...)  dx of a strided conv: one stride-1 forward per phase (sub-pixel
                         decomposition, strided_data_plan), interleaved into dx
    backward_weight(...) dW: per-thread partial sums over the thread's images, added at the end

Two tile orientations (plan, _pixel_vectors): channel vectors (RB pixels x VF channels, the outputs
turned into NCHW rows by transpose.py's register transpose) and pixel vectors (up to 8 channels x 16
or 32 neighbouring pixels, written straight into y's rows) for stride-1 convs with few output
channels, short reductions or 16 channels. The weight gradient of those shapes runs outer.py's
tile on pixel vectors (dy and the input read as rows); the others, channel vectors over dy
transposed into (pixels, channels) blocks.

Per call, small copies come before the tiles: the input into a zero-padded buffer wide enough for
the last tile of every row (so the tile has no bounds checks and no remainder code; pixels past
the row's end are computed and not stored), the weights into (F/VF, C*KH*KW, VF) blocks (channels
past F are zero, computed and not stored), the bias into a padded vector, and two offset tables.
The tile itself cannot be bounds-checked (an LLVM intrinsic): every launcher here checks the
largest index each of its tiles can reach before the first one runs.
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import numpy as np

from cnndsl.kernels.cpu import microkernel as M
from cnndsl.kernels.cpu import outer as O
from cnndsl.kernels.cpu.transpose import transpose_8x16, transpose_16x8
from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import I0, NO, ONE, PAR_MIN_WORK, ZERO, add_row, copy_row, fill_row, kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE, NONE, activate_affine

_NO_RES = np.zeros((1, 1, 1, 1), np.float32)
_NO_BIAS = np.zeros(1, np.float32)


def allowed() -> bool:
    """False when CNNDSL_CPU_CONV=im2col: every conv takes the im2col + BLAS path (A/B measurements,
    and the equivalence tests); read at each launch."""
    return os.environ.get("CNNDSL_CPU_CONV", "auto") != "im2col"


def _lanes(f: int) -> int:
    """VF for F output channels: the fewest lanes that hold F, 8 (one ymm register), 16 (one zmm)
    or 32 (two); channels past F are computed and dropped, so LeNet's first conv (F = 6) ran 2.5x
    slower with VF = 16 than im2col (0.077 against 0.031 ms, batch 1, 1 thread). At most
    M.VF_MAX: on AVX2 a 32-channel tile has room for 2 pixels (85 GFLOP/s on one Zen 3 core), a
    16-channel one for 6 (100; microkernel.fit_rb)."""
    return 8 if f <= 8 else 16 if f <= 16 else M.VF_MAX


def _min_acc(vf: int) -> int:
    """Pixels per tile below which the FMA units wait: a core keeps two 4-cycle FMAs in flight per
    cycle, so a tile wants 8 independent accumulators (RB x the registers of a VF-lane vector); a
    smaller tile costs as much."""
    return max(1, 8 // M.registers(vf))


def tile_pixels(vf: int, ow: int) -> int:
    """RB for rows of OW pixels: the fewest FMA-unit cycles per row, ceil(OW / RB) x max(RB, the
    latency minimum), the larger RB on a tie (fewer tiles, each reading the weights once)."""
    lo = _min_acc(vf)
    return min(range(1, M.fit_rb(vf) + 1), key=lambda rb: (-(-ow // rb) * max(rb, lo), -rb))


# When a stride-1 conv runs on pixel vectors (conv_direct's pv mode): tiles of up to 8 output
# channels x 16 or 32 neighbouring pixels, written straight into y's rows, instead of pixels x a
# vector of VF channels that go to y's planes one by one (a gather per output element). Measured
# forward GFLOP/s, pixel vectors against channel vectors (bench in docs/performance.md, "Pixel
# vectors"; Zen 5, 2 threads, 3x3 convs, batch 64, 2026-12-02): F <= 8 (LeNet-5's first conv: 81
# against 36); a short reduction, K = C*KH*KW <= 80, where the gather costs more than the FMAs
# (3 -> 16, 32, 64 channels at 32x32: 1.6 to 2.3x; 8 -> 16: 1.2 to 1.45x); 16 channels with K up
# to 160, whose channel-vector tile is load-bound (16 -> 16 at 28 to 56 pixels: 1.09 to 1.21x). Not
# where most lanes would be past the row (24 pixels in 32 lanes: 0.75 to 0.99x), nor for longer
# reductions (32 -> 16 at 56 pixels: 0.51x; 16 -> 32: 0.6 to 0.99x). The weight gradient on pixel
# vectors (outer.py: no transposition of dy) by the same rule, 16 lanes, measured the same way:
# 1 -> 6 channels 5x5 28x28 66 against 32 GFLOP/s; 3 -> 16 and 3 -> 32 at 32x32 95 against 57 and
# 96 against 44; 16 -> 16 at 32x32 164 against 138; not 32 -> 32 at 32x32 (176 against 196), 32 ->
# 64 at 16x16 (140 against 258), nor rows of 8 or 10 in 16 lanes (50 against 214, 64 against 122).
PV_MAX_CHANNELS = 8
PV_SHORT_K = 80
PV_LANE_USE = 0.85


def _pixel_vectors(f: int, k: int, ow: int, vf: int) -> bool:
    """Whether a stride-1 conv with F output channels, K = C*KH*KW and rows of OW pixels in
    vectors of vf lanes runs on pixel vectors (see above; the weight gradient's rule is the same,
    measured separately: docs/performance.md, "Pixel vectors")."""
    if ow / (-(-ow // vf) * vf) < PV_LANE_USE:
        return False
    if f <= PV_MAX_CHANNELS:
        return True
    if M.VECTOR_LANES < 16:
        # AVX2: outer.py's tile keeps RF x MAX_RX = 16 accumulators of 16 lanes, 32 ymm registers,
        # and spills; the channel-vector weight gradient ran 1.3 to 1.9x faster on every such shape
        # (batch 64, 2 threads, GFLOP/s: 3 -> 16 at 32x32 52 against 71-75, 16 -> 16 51-56 against
        # 77-107, 3 -> 32 53-55 against 72-75, 8 -> 16 55-58 against 101-108; MAX_RX 1 or 2 changed
        # nothing), and the channel-vector forward 1.03 to 1.2x (46-49 against 53-57 for 3 -> 16,
        # 89-109 against 94-124 for 16 -> 16). AMD EPYC (Zen 3), 2026-12-04, quiet. F <= 8 stays
        # on pixel vectors (LeNet-5's first conv: 22-27 against 17-22 for the weight gradient).
        return False
    return (f <= 16 and k <= 160) or (f <= 64 and k <= PV_SHORT_K)


def pv_block(f: int, vf: int) -> int:
    """Channels per pixel-vector tile for F output channels in vectors of vf pixels: F in the
    fewest blocks of at most M.PV_MAX_RB (fewer where the CPU's registers hold fewer:
    microkernel.fit_rb), of equal size (the last may be smaller)."""
    nb = -(-f // M.fit_rb(vf, M.PV_MAX_RB))
    return -(-f // nb)


@functools.lru_cache(maxsize=4096)
def plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int,
         dw: int, groups: int, oh: int, ow: int, plain_1x1: bool = False):
    """(rb, vf, hp, wp) of the forward, or None when the direct path does not serve this conv:
    grouped convs (the depthwise loops and im2col serve them) and plain 1x1 convs (one GEMM with
    no unfolding already; plain_1x1: serve them too, as a strided input gradient's phase). rb < 0:
    pixel vectors, tiles of -rb channels (pv_block) x vf neighbouring pixels (stride 1, see
    _pixel_vectors); else tiles of rb pixels x vf channels."""
    if groups != 1:
        return None
    if kh == kw == 1 and sh == sw == 1 and pt == pl == 0 and (oh, ow) == (h, w) and not plain_1x1:
        return None
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    vf = 16 if ow <= 16 else M.VF_MAX
    if sw == 1 and (f <= PV_MAX_CHANNELS or _pixel_vectors(f, c * kh * kw, ow, vf)):
        return -pv_block(f, vf), vf, hp, -(-ow // vf) * vf + (kw - 1) * dw
    vf = _lanes(f)
    rb = tile_pixels(vf, ow)
    wp = (-(-ow // rb) * rb - 1) * sw + (kw - 1) * dw + 1
    if pt == pl == 0 and hp <= h and wp <= w:
        # no zeros needed, and every tile's reach inside x: the tiles read x itself (conv_setup's
        # unpadded path) instead of a copy cut to the reach: resnet_tiny's 1x1 stride-2 shortcuts
        # (64x16x32x32 -> 64x32x16x16: 0.37 ms, the copy of 31x31 of each 32x32 plane most of it)
        return rb, vf, h, w
    return rb, vf, hp, wp


def clear_plans() -> None:
    """Forget the plans made so far (tests that plan for another CPU's vector registers)."""
    for fn in (plan, launch, backward_data_plan, strided_data_plan, wgrad_plan):
        fn.cache_clear()


def describe_wgrad(q) -> str:
    """A weight-gradient plan in words, for `cnndsl compile --print-ir`."""
    if q[0] == 0:
        return f"direct ({O.RF} channels x {O.MAX_RX} taps x {O.LANES}-pixel vectors)"
    return f"direct ({q[0]} taps x {q[1]} channels)"


def describe(p, f: int) -> str:
    """A plan in words, for `cnndsl compile --print-ir`."""
    if p[0] < 0:
        return f"direct ({-p[0]} channels x {p[1]}-pixel vectors)"
    return f"direct ({p[0]} pixels x {p[1]} channels)"


def scratch_len(n: int, c: int, f: int, kh: int, kw: int, p) -> tuple[int, int]:
    """(padded-input elements, weight-block + padded-bias elements) for a plan p = (rb, vf, hp, wp)."""
    rb, vf, hp, wp = p
    if rb < 0:
        return n * c * hp * wp, f * (c * kh * kw + vf)
    fb = -(-f // vf)
    return n * c * hp * wp, fb * vf * (c * kh * kw + 1)


@kernel
def _pad_planes(x, p0, p1, top, left, xp):
    """Planes p0..p1-1 (p = n*C + c): zeros over all of each, then x's rows copied in, loops with
    unsigned indices that LLVM vectorizes (common.copy_row). Measured on resnet_tiny's shapes
    (batch 64, 2 threads, Zen 5): 0.09 to 0.13 ms against 0.29 to 0.40 for zeros and copies row by
    row, and 0.39 to 0.46 for slice statements per row (their views and overlap tests: 17 ns a
    row). A range, not a plane per call: called per plane through pad_input's parallel items, the
    64x16x32x32 padding took 146 to 180 us instead of 116 to 124."""
    C = x.shape[1]
    H = x.shape[2]
    W = x.shape[3]
    Hp = xp.shape[2]
    Wp = xp.shape[3]
    j0 = min(max(left, 0), Wp)
    j1 = min(max(left + W, j0), Wp)
    xf = x.reshape(x.size)
    pf = xp.reshape(xp.size)
    for p in range(p0, p1):
        n = p // C
        xb = p * H * W
        pb = (n * xp.shape[1] + p - n * C) * Hp * Wp
        fill_row(pf, pb, Hp * Wp, ZERO)
        for i in range(max(top, 0), min(top + H, Hp)):
            copy_row(xf, xb + (i - top) * W + j0 - left, pf, pb + i * Wp + j0, j1 - j0)


# The padding and the weights' reorderings are called by address (byaddress.py) where they are
# called once per launch, per thread or per image: linked into each caller, they were optimized and turned
# into machine code again in every one (conv_setup's module held all three: 7,763 lines of LLVM IR
# and 1.8 CPU s to compile, against 4,037 lines and 1.1 s when it calls them by address).
_pad_planes_at = by_address(_pad_planes)


@kernel
def _pad_chunk(t, per, x, top, left, xp):
    """Planes t*per .. of pad_input (an item of parallel.parallel_items)."""
    _pad_planes_at(x, t * per, min((t + 1) * per, x.shape[0] * x.shape[1]), top, left, xp)


_pad_items = parallel_items(_pad_chunk)


@kernel
def pad_input(x, top, left, xp):
    """xp[n, c, i, j] = x[n, c, i - top, j - left] inside x, 0 outside (a negative top or left crops x).
    Large: a chunk of planes per thread through the shared parallel loop (parallel.py)."""
    N, C = x.shape[0], x.shape[1]
    if N * C * xp.shape[2] * xp.shape[3] >= PAR_MIN_WORK:
        items, per = chunks(N * C)
        _pad_items(items, per, x, top, left, xp)
    else:
        _pad_planes_at(x, I0, N * C, top, left, xp)


@kernel
def reorder_weights(w, flip, wb):
    """wb[fb, c, kh, kw, j] = w[fb*VF + j, c, kh, kw], zero past F. flip: the backward-data form,
    wb[cb, f, kh, kw, j] = w[f, cb*VF + j, KH-1-kh, KW-1-kw] (channels and window swapped)."""
    F, C, KH, KW = w.shape
    FB, CI, _, _, VF = wb.shape
    fill_row(wb.reshape(wb.size), I0, wb.size, ZERO)
    for fb in range(FB):
        for ci in range(CI):
            for kh in range(KH):
                for kw in range(KW):
                    for j in range(VF):
                        o = fb * VF + j
                        if flip:
                            if o < C:
                                wb[fb, ci, kh, kw, j] = w[ci, o, KH - 1 - kh, KW - 1 - kw]
                        elif o < F:
                            wb[fb, ci, kh, kw, j] = w[o, ci, kh, kw]




# Below the launch sizes of SERIAL_WORK multiply-adds a conv runs on one thread: a parallel region
# costs more than it saves there (LeNet-5's first conv at batch 1 is 0.12 M multiply-adds).
SERIAL_WORK = 1 << 20
# Output rows per parallel work item: enough items to share among the threads, few enough
# activation calls (one per channel and band).
BAND_ROWS = 4


@kernel
def _tile(vf, code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep,
          istep, ostep):
    """nrep tiles of VF channels (microkernel.py) in one call; each VF class compiled once, and
    called by address (microkernel.call_tile), so that no caller compiles the tiles again."""
    M.call_tile(vf, code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
                wstep, istep, ostep)


@kernel
def _conv_band(af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, n, fb, oh0, oh1, C, Hp,
               Wp, sh, sw, OH, OW, tb):
    """Output rows oh0..oh1-1 of image n, channel block fb: the tiles (microkernel.py) into y, or
    through the buffer tb to y's channel planes with the residual; then the activation, once per
    channel over the band (contiguous in NCHW; per row, the activation's dispatch cost LeNet-5's
    first conv at batch 1 more than its tiles did). Two tile layouts:
        pv False: a tile is RB = aro.size pixels x VF channels; af = the padded input, bf = the
                  weight blocks; tb holds pixel-major vectors of VF channels;
        pv True:  a tile is RB = the block's channels x VF neighbouring pixels (stride 1); af = the
                  weights (F, K), bf = the padded input; tb holds the pixels channel by channel.
    Channel block fb is channels fb*bs.. of bs = aro.size (pv) or VF; the last block may be short.
    One call runs a row of tiles, or, where a row is one tile, several rows (tile q is row oh + q):
    a call costs about 80 ns before its first FMA, a quarter of a 16-channel 32-pixel row's tile."""
    rb = aro.size
    K = aoffs.size
    bs = rb if pv else vf
    nj = min(bs, F - fb * bs)
    code = np.int64(M.TABLE + nj if pv else rb)
    step = vf if pv else rb
    nt = (OW + step - 1) // step  # tiles per row
    one = nt == 1
    # the input's step from one tile to the next (pv: the input is the tile's vector operand, wf)
    xtile = sh * Wp if one else (vf if pv else rb * sw)
    plane = OH * OW
    oh = oh0
    # pixel vectors without a residual: the tiles write straight into y, the lanes past OW
    # spilling onto the start of the next row, which is computed (and overwritten) after. Not the
    # band's last row when it spills (the next band may be another thread's), nor a spill longer
    # than a row. (The copy through tb cost LeNet-5's first conv 3.8 of its 8 us at batch 1.)
    if pv and not has_res and nt * vf <= 2 * OW:
        end = oh1 - 1 if nt * vf > OW else oh1
        while oh < end:
            nr = end - oh if one else 1
            _tile(vf, code, af, fb * bs * K, aoffs, aro, bf, (n * C * Hp + oh * sh) * Wp, boffs, K, init,
                  fb * bs * vf, vf, yf, ((n * F + fb * bs) * OH + oh) * OW, plane, nt * nr, I0, xtile, I0,
                  OW if one else vf)
            oh += nr
    rows = tb.size // (rb * nt * vf)  # the rows tb holds (one, or a band's where a row is one tile)
    while oh < oh1:
        nr = min(rows, oh1 - oh) if one else 1
        xrow = (n * C * Hp + oh * sh) * Wp
        # tb: pv, row i of channel j at (j*nr + i)*nt*vf; else pixel p of row i at (i*nt*rb + p)*vf
        if pv:
            _tile(vf, code, af, fb * bs * K, aoffs, aro, bf, xrow, boffs, K, init, fb * bs * vf, vf, tb, I0,
                  nr * nt * vf, nt * nr, I0, xtile, I0, vf)
        else:
            _tile(vf, code, af, xrow, aoffs, aro, bf, fb * K * vf, boffs, K, init, fb * vf, I0, tb, I0, vf, nt * nr,
                  xtile, I0, I0, rb * vf)
        for i in range(nr):
            yb = ((n * F + fb * bs) * OH + oh + i) * OW
            if pv:
                for j in range(nj):
                    yj = yb + j * plane
                    tj = (j * nr + i) * nt * vf
                    if has_res:
                        add_row(tb, tj, resf, yj, yf, yj, OW)
                    else:
                        copy_row(tb, tj, yf, yj, OW)
                continue
            _channel_rows(tb, i * nt * rb * vf, vf, yf, yb, plane, OW, nj)
            if has_res:
                for j in range(nj):
                    yj = yb + j * plane
                    add_row(yf, yj, resf, yj, yf, yj, OW)
        oh += nr
    if act != NONE:
        for j in range(nj):
            b0 = ((n * F + fb * bs + j) * OH + oh0) * OW
            band = yf[b0:b0 + (oh1 - oh0) * OW]
            activate_affine(band, band, ONE, ZERO, act, alpha)


_conv_band_at = by_address(_conv_band)


@kernel
def _channel_rows(tb, t0, vf, yf, yb, plane, OW, nj):
    """y's rows (yb + j*plane, OW pixels) of nj channels from tb's pixel vectors (pixel r's channel
    j at t0 + r*vf + j): 8 pixels x 16 channels at a time transposed in registers, the rest
    element by element (the element copy alone ran at 0.6 ns per element, 11x the transpose's)."""
    r8 = OW - OW % 8
    j16 = nj - nj % 16
    for j0 in range(0, j16, 16):
        for r0 in range(0, r8, 8):
            transpose_8x16(tb, t0 + r0 * vf + j0, vf, yf, yb + j0 * plane + r0, plane)
    for j in range(nj):
        for r in range(r8 if j < j16 else 0, OW):
            yf[yb + j * plane + r] = tb[t0 + r * vf + j]


def tb_len(rb: int, vf: int, ow: int, rows: int) -> int:
    """Elements of _conv_band's buffer for plan (rb, vf) and rows of OW pixels: `rows` rows of
    tiles where a row is one tile, else one row (rb < 0: pixel vectors)."""
    step = vf if rb < 0 else rb
    nt = -(-ow // step)
    return abs(rb) * nt * vf * (rows if nt == 1 else 1)


@kernel
def _bands_chunk(t, per, af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, C, hp, wp, sh,
                 sw, OH, OW, N, FB, band, tbn):
    """Work items t*per .. of _bands_parallel, each an (image, channel block, band of rows): an item
    of parallel.parallel_items, so that no conv compiles a prange loop of its own. _conv_band is
    called by address: linked, it was optimized and generated again in the caller (byaddress.py)."""
    nband = (OH + band - 1) // band
    tb = np.empty(tbn, np.float32)
    for w in range(t * per, min((t + 1) * per, N * FB * nband)):
        n = w // (FB * nband)
        fb = (w - n * FB * nband) // nband
        oh0 = (w - n * FB * nband - fb * nband) * band
        _conv_band_at(af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, n, fb, oh0,
                      min(oh0 + band, OH), C, hp, wp, sh, sw, OH, OW, tb)


_bands_items = parallel_items(_bands_chunk)


@kernel
def _bands_parallel(af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, C, hp, wp, sh, sw, OH,
                    OW, N, FB, band, tbn):
    """The tiles of every (image, channel block, band of rows), a chunk of them per thread (the
    shared parallel loop, parallel.py; a prange loop here cost 0.7 to 1.1 self CPU s to compile,
    and 2.6 with _conv_band linked in). tbn: the size of tb (tb_len)."""
    items, per = chunks(N * FB * ((OH + band - 1) // band))
    _bands_items(items, per, af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, C, hp, wp,
                 sh, sw, OH, OW, N, FB, band, tbn)


@kernel
def _pv_weights(w, flip, wk):
    """wk[f, (c*KH + i)*KW + j] = w[f, c, i, j]; flip: w is (C, F, KH, KW), wk[f, (c*KH + i)*KW + j] =
    w[c, f, KH-1-i, KW-1-j] (the input gradient's transposed, flipped window)."""
    KH, KW = w.shape[2], w.shape[3]
    Fo, K = wk.shape
    Ci = K // (KH * KW)
    for f in range(Fo):
        for c in range(Ci):
            for i in range(KH):
                for j in range(KW):
                    k = (c * KH + i) * KW + j
                    wk[f, k] = w[c, f, KH - 1 - i, KW - 1 - j] if flip else w[f, c, i, j]


_pv_weights_at = by_address(_pv_weights)
_reorder_weights_at = by_address(reorder_weights)


@kernel
def conv_setup(x, w, b, has_bias, res, has_res, flip, sh, sw, pt, pl, dh, dw, rb, vf, hp, wp, xbuf, wbuf, y,
               parallel, tables):
    """The copies and checks of a conv with the plan (rb, vf, hp, wp) (rb < 0: pixel vectors, see
    plan): the weights into the tiles' layout, the bias, the offset tables, and unless `parallel`
    (the caller has padded the input into xbuf with pad_input) the padded input; the checks of the
    farthest element any tile reads. Returns the tiles' operands (af, bf, init, aoffs, aro, boffs).
    flip: w is (C, F, KH, KW) and is used transposed and flipped (the input gradient). A large conv
    calls this, then _bands_parallel; a small one conv_direct, which calls it and runs the tiles:
    so a training step at batch 64 (every conv large) never compiles the serial tile loop."""
    N, C = x.shape[0], x.shape[1]
    F, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    KH, KW = w.shape[2], w.shape[3]
    pv = rb < 0
    FB = (F - rb - 1) // -rb if pv else (F + vf - 1) // vf
    K = C * KH * KW
    nw = F * K + F * vf if pv else FB * vf * (K + 1)
    if xbuf.size < N * C * hp * wp or wbuf.size < nw:
        raise ValueError("direct conv: scratch smaller than scratch_len()")
    # a conv that needs no padding (no zeros around x, and its tiles' rows exactly x's) reads x
    # itself: LeNet-5's second conv at batch 1 spent 1.6 of its 8 us copying x
    unpadded = pt == 0 and pl == 0 and hp == x.shape[2] and wp == x.shape[3]
    xp = x if unpadded else xbuf[:N * C * hp * wp].reshape((N, C, hp, wp))
    if not parallel and not unpadded:
        _pad_planes_at(x, I0, N * C, pt, pl, xp)
    xf = xp.reshape(xp.size)
    # tables (3 x max(K, F, RB) int64, the caller's): the offsets the tiles read
    M_ = max(K, F, abs(rb))
    if tables.shape[0] < 3 or tables.shape[1] < M_:
        raise ValueError("direct conv: offset tables too small")
    xoffs = tables[0, :K]  # the input's offset of each (input channel, kernel row, column)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                xoffs[(c * KH + i) * KW + j] = (c * hp + i * dh) * wp + j * dw
    kvf = tables[1, :K]  # pixel vectors: k, the weights' offset of each step
    if pv:
        rb_ = -rb
        wk = wbuf[:F * K].reshape((F, K))
        _pv_weights_at(w, flip, wk)
        init = wbuf[F * K:F * K + F * vf]
        for f in range(F):
            fill_row(init, f * vf, vf, b[f] if has_bias else ZERO)
        aro = tables[2, :rb_]
        for r in range(rb_):
            aro[r] = r * K
        for k in range(K):
            kvf[k] = k
        af, bf, aoffs, boffs = wk.reshape(wk.size), xf, kvf, xoffs
        # the farthest input element a vector reads (lanes past OW read the padding)
        far = ((N - 1) * C * hp + (OH - 1) * sh) * wp + ((OW + vf - 1) // vf) * vf - 1 + xoffs[K - 1]
    else:
        rb_ = rb
        wb = wbuf[:FB * K * vf].reshape((FB, C, KH, KW, vf))
        _reorder_weights_at(w, flip, wb)
        init = wbuf[FB * K * vf:FB * K * vf + FB * vf]
        fill_row(init, I0, init.size, ZERO)
        if has_bias:
            copy_row(b, I0, init, I0, F)
        aro = tables[2, :rb]
        for r in range(rb):
            aro[r] = r * sw
        af, bf, aoffs, boffs = xf, wb.reshape(wb.size), xoffs, xoffs  # boffs unused: the weights' offset is k * vf
        nt = (OW + rb - 1) // rb
        far = ((N - 1) * C * hp + (OH - 1) * sh) * wp + (nt - 1) * rb * sw + aro[rb - 1] + xoffs[K - 1]
    # the tile has no bounds checks: the farthest input element any tile reads must be inside xp
    if far >= xp.size:
        raise IndexError("direct conv: a tile would read past the padded input")
    if has_res and res.size < y.size:
        raise IndexError("direct conv: residual smaller than the output")
    return af, bf, init, aoffs, aro, boffs


@kernel
def conv_direct(x, w, b, has_bias, res, has_res, act, alpha, flip, sh, sw, pt, pl, dh, dw, rb, vf, hp, wp,
                xbuf, wbuf, y, tables):
    """y = act(conv(x, w) + b (+ res)) on one thread: conv_setup and the tiles in one Numba call
    (LeNet-5's first conv at batch 1: 51 us as six calls from Python, most of it their overhead)."""
    af, bf, init, aoffs, aro, boffs = conv_setup(x, w, b, has_bias, res, has_res, flip, sh, sw, pt, pl, dh, dw, rb,
                                                 vf, hp, wp, xbuf, wbuf, y, NO, tables)
    N, C = x.shape[0], x.shape[1]
    F, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    pv = rb < 0
    FB = (F - rb - 1) // -rb if pv else (F + vf - 1) // vf
    step = vf if pv else rb
    nt = (OW + step - 1) // step
    tb = np.empty(abs(rb) * nt * vf * (OH if nt == 1 else 1), np.float32)  # see tb_len
    yf = y.reshape(y.size)
    resf = res.reshape(res.size)
    for n in range(N):
        for fb in range(FB):
            _conv_band(af, bf, init, aoffs, aro, boffs, resf, has_res, act, alpha, pv, vf, F, yf, np.int64(n),
                       np.int64(fb), I0, OH, C, hp, wp, sh, sw, OH, OW, tb)


class Launch(NamedTuple):
    """What a conv's launches pass besides their arrays, worked out once per layer shape (launch()):
    at batch 1 this Python work, redone per call, cost LeNet-5 more than its tiles did."""

    big: bool  # tiles in parallel (_bands_parallel, after conv_direct), with the padding before
    unpadded: bool  # no padding needed: the tiles read x itself
    scalars: tuple  # conv_direct's (sh, sw, pt, pl, dh, dw, rb, vf, hp, wp), as int64
    tables: np.ndarray  # conv_direct fills them (the same values for every conv of this shape)
    bands: tuple  # _bands_parallel's (vf, f, c, hp, wp, sh, sw, oh, ow, n, fb, band rows, buffer size)
    plan: tuple  # (rb, vf, hp, wp)


@functools.lru_cache(maxsize=4096)
def launch(n, c, h, w, f, kh, kw, oh, ow, sh, sw, pt, pl, dh, dw, p) -> Launch:
    """The Launch of a conv from (n, c, h, w) to (n, f, oh, ow) with plan p."""
    rb, vf, hp, wp = p
    k = c * kh * kw
    fb = -(-f // -rb) if rb < 0 else -(-f // vf)
    big = n * fb * oh * ow * vf * k >= SERIAL_WORK
    band = min(oh, BAND_ROWS)
    i64 = np.int64
    return Launch(big, pt == 0 and pl == 0 and hp == h and wp == w,  # the unpadded test of conv_direct
                  tuple(i64(v) for v in (sh, sw, pt, pl, dh, dw, rb, vf, hp, wp)),
                  np.empty((3, max(k, f, abs(rb))), np.int64),
                  tuple(i64(v) for v in (vf, f, c, hp, wp, sh, sw, oh, ow, n, fb, band, tb_len(rb, vf, ow, band))), p)


def run(L: Launch, x, w, b, has_bias, res, has_res, act, alpha, flip, xp_buf, wb_buf, y):
    """conv_direct with L for a small conv; for a large one the padding, conv_setup and the tiles
    in parallel, each a separate call from here: a cached kernel that called the parallel ones, once the
    compile pool's two processes had filled the cache, crashed (SIGSEGV) the process that loaded
    it (tests/kernels/test_kernels_direct_conv.py::test_a_pool_filled_cache_runs reproduces it).
    has_bias, has_res and flip are bools, act an int64, alpha a float32 (one signature)."""
    rb, vf, hp, wp = L.plan
    M.require(vf)
    n, c = x.shape[0], x.shape[1]
    if L.big and not L.unpadded:
        if xp_buf.size < n * c * hp * wp:
            raise ValueError("direct conv: scratch smaller than scratch_len()")
        pad_input(x, L.scalars[2], L.scalars[3], xp_buf[:n * c * hp * wp].reshape(n, c, hp, wp))
    res_ = res if has_res else _NO_RES
    tables = L.tables
    if not L.big:
        conv_direct(x, w, b, has_bias, res_, has_res, act, alpha, flip, *L.scalars, xp_buf, wb_buf, y, tables)
        return
    af, bf, init, aoffs, aro, boffs = conv_setup(x, w, b, has_bias, res_, has_res, flip, *L.scalars, xp_buf, wb_buf,
                                                 y, True, tables)
    vf_, f_, c_, hp_, wp_, sh_, sw_, oh_, ow_, n_, fb_, band, tbn = L.bands
    _bands_parallel(af, bf, init, aoffs, aro, boffs, res_.reshape(-1), has_res, act, alpha, rb < 0, vf_, f_,
                    y.reshape(-1), c_, hp_, wp_, sh_, sw_, oh_, ow_, n_, fb_, band, tbn)


def kernel_code(act):
    """An activation code as the kernels take it: the launchers' typed code (epilogue.KERNEL_CODE:
    np.uint8 for the written-out none and relu, so that their kernels are compiled without the
    activation table: docs/performance.md, "Compile time") kept as it is, any other integer as an
    np.int64."""
    return act if isinstance(act, (np.uint8, np.int64)) else np.int64(act)


def _conv(x, w, b, has_bias, res, has_res, act, alpha, flip, sh, sw, pt, pl, dh, dw, p, xp_buf, wb_buf, y):
    """run() for one call (tests, benchmarks and the input gradient)."""
    L = launch(*x.shape, *y.shape[1:2], *w.shape[2:], *y.shape[2:], sh, sw, pt, pl, dh, dw, p)
    run(L, x, w, b, bool(has_bias), res, bool(has_res), kernel_code(act), np.float32(alpha), bool(flip), xp_buf,
        wb_buf, y)


def forward(x, w, b, has_bias, res, has_res, act, alpha, sh, sw, pt, pl, dh, dw, y, xp_buf, wb_buf, p=None):
    """y = act(conv(x, w) + b (+ res)); x (N, C, H, W), w (F, C, KH, KW), y (N, F, OH, OW); pt/pl:
    top/left padding (the output size is y's); xp_buf/wb_buf: 1-D float32 scratch of at least
    scratch_len(...) elements (wb_buf also holds the padded bias after the weights); p: the plan
    (computed here when not given)."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    p = p or plan(c, f, h, wd, kh, kw, sh, sw, pt, pl, dh, dw, 1, y.shape[2], y.shape[3])
    _conv(x, w, b, has_bias, res, has_res, act, alpha, False, sh, sw, pt, pl, dh, dw, p, xp_buf, wb_buf, y)


@functools.lru_cache(maxsize=4096)
def backward_data_plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int,
                       dh: int, dw: int, groups: int, oh: int, ow: int):
    """The forward plan of the conv that computes dx (F -> C channels, an (h, w) output), or None:
    stride 1 only (a strided conv's input gradient is not a plain conv), groups 1, and padding no
    larger than the dilated window (the flipped window's padding must not be negative)."""
    if groups != 1 or sh != 1 or sw != 1:
        return None
    if pt > (kh - 1) * dh or pl > (kw - 1) * dw:
        return None
    return plan(f, c, oh, ow, kh, kw, 1, 1, (kh - 1) * dh - pt, (kw - 1) * dw - pl, dh, dw, 1, h, w)


def backward_data(dy, w, pt, pl, dh, dw, dx, xp_buf, wb_buf):
    """dx (N, C, H, W) overwritten with dL/dx of the stride-1 conv y = conv(x, w) from dy."""
    n, f, oh, ow = dy.shape
    _, c, kh, kw = w.shape
    h, wd = dx.shape[2], dx.shape[3]
    p = backward_data_plan(c, f, h, wd, kh, kw, 1, 1, pt, pl, dh, dw, 1, oh, ow)
    _conv(dy, w, _NO_BIAS, False, _NO_RES, False, KERNEL_CODE["none"], 0.0, True, 1, 1, (kh - 1) * dh - pt,
          (kw - 1) * dw - pl, dh, dw, p, xp_buf, wb_buf, dx)


# ----------------------------------------------------------------------------
# input gradient of a strided conv, by phases (sub-pixel decomposition). With stride S, dx's
# pixel y = S*a + r receives dy[(y + pt - kh*dh) / S] * w[kh] from the taps kh that make the
# division exact: for each residue r (a phase) those taps are every st-th row from kh0 (st =
# S / gcd(dh, S)), and they read dy at a + a constant, step dh / gcd(dh, S). So each phase (r, s)
# of dx is a stride-1 conv of dy with the flipped sub-window w[:, :, kh0::st, kw0::st'], run by the
# direct forward into a phase buffer; interleave_phases then writes the phases into dx (a phase
# with no tap is zeros). The multiply-adds are the forward's, against im2col's col2im of every
# tap: resnet_tiny's 3x3 stride-2 input gradients took 2.6 and 2.1 ms that way (59 and 71
# GFLOP/s), its 1x1 stride-2 ones 1.6 and 0.7 ms (measured, docs/performance.md).

class Phase(NamedTuple):
    """One phase of a strided input gradient: dx[:, :, r::S, s::S'] from dy."""

    r: int
    s: int
    kh0: int  # its window: w[:, :, kh0::st_h, kw0::st_w]
    kw0: int
    st_h: int
    st_w: int
    pt: int  # the stride-1 conv on dy that computes it (padding, dilation, output size)
    pl: int
    dh: int
    dw: int
    oh: int
    ow: int
    plan: tuple | None  # its forward plan; None: no tap reaches this phase (zeros)
    start: int  # where its (N, C, oh, ow) output starts in the phase buffer


class StridedData(NamedTuple):
    """A strided conv's input gradient by phases (strided_data_plan)."""

    phases: tuple  # of Phase, row-major over (r, s)
    geo: np.ndarray  # (S*S', 3) int64: interleave_phases' start, row step and plane step per phase
    buf_len: int  # phase buffer elements (the phases' outputs, then a row of zeros)
    zeros_at: int  # where that row of zeros starts
    x_len: int  # the largest phase's scratch (padded dy; weights and bias)
    w_len: int


def _phase_taps(k: int, s: int, p: int, d: int, r: int):
    """(first tap, tap step, taps, padding, dilation) of residue r along one axis of a window of k
    taps, stride s, padding p, dilation d; taps = 0 when none reaches r."""
    g = math.gcd(d, s)
    st = s // g
    k0 = next((t for t in range(min(k, st)) if (r + p - t * d) % s == 0), None)
    if k0 is None:
        return 0, st, 0, 0, d // g
    m = len(range(k0, k, st))
    last = k0 + st * (m - 1)
    return k0, st, m, (last * d - r - p) // s, d // g


# Below this many multiply-adds (dx's: N*C*H*W*F*KH*KW / (SH*SW)) the phases' launches cost more
# than im2col's col2im saves: 16 -> 32 and 32 -> 64 channels 3x3 stride 2 at 32x32 and 16x16,
# phases against im2col, batch 2: 0.13 against 0.08 ms; batch 4 (4.7 M): 0.12 against 0.13; batch
# 16: 0.32 against 0.64 and 0.32 against 0.39; batch 64: 1.16 against 1.81 and 1.00 against 1.43
# (2 threads, Zen 5).
PHASES_MIN_WORK = 4 << 20


@functools.lru_cache(maxsize=4096)
def strided_data_plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int,
                      dh: int, dw: int, groups: int, oh: int, ow: int, n: int = 1,
                      min_work: int = PHASES_MIN_WORK):
    """The phases of the input gradient of a strided conv (groups 1) from an (oh, ow) dy to an
    (h, w) dx, for batch n, or None: a stride-1 or grouped conv, one too small for phases to pay
    (fewer multiply-adds than min_work), or one with a phase the direct forward does not serve."""
    if groups != 1 or (sh == 1 and sw == 1) or n * c * h * w * f * kh * kw < min_work * sh * sw:
        return None
    phases, start, x_len, w_len, zeros = [], 0, 0, 0, 0
    for r in range(sh):
        kh0, sth, mh, ph, dh2 = _phase_taps(kh, sh, pt, dh, r)
        for s in range(sw):
            kw0, stw, mw, pw, dw2 = _phase_taps(kw, sw, pl, dw, s)
            ha, wa = -(-(h - r) // sh), -(-(w - s) // sw)
            p = None
            if mh and mw and ha > 0 and wa > 0:
                # a negative padding crops dy's first rows (pad_input reads x[i - top]); the
                # unpadded path is taken only at zero padding
                p = plan(f, c, oh, ow, mh, mw, 1, 1, ph, pw, dh2, dw2, 1, ha, wa, True)
                if p is None:
                    return None
                xl, wl = scratch_len(n, f, c, mh, mw, p)
                x_len, w_len = max(x_len, xl), max(w_len, wl)
            phases.append(Phase(r, s, kh0, kw0, sth, stw, ph, pw, dh2, dw2, max(ha, 0), max(wa, 0), p, start))
            if p is not None:
                start += n * c * ha * wa
            zeros = max(zeros, wa)
    geo = np.array([(ph.start, ph.ow, ph.oh * ph.ow) if ph.plan is not None else (start, 0, 0) for ph in phases],
                   np.int64)
    return StridedData(tuple(phases), geo, start + zeros, start, x_len, w_len)


def phases_from_batch(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int,
                      dh: int, dw: int, groups: int, oh: int, ow: int) -> int | None:
    """The smallest batch whose input gradient runs by phases, or None (never)."""
    if groups != 1 or (sh == 1 and sw == 1):
        return None
    b = max(1, -(-(PHASES_MIN_WORK * sh * sw) // (c * h * w * f * kh * kw)))
    return b if strided_data_plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, groups, oh, ow, b) else None


def describe_phases(q: StridedData) -> str:
    """A strided input gradient's plan in words, for `cnndsl compile --print-ir`."""
    live = sum(ph.plan is not None for ph in q.phases)
    return f"direct by phases ({live} stride-1 conv{'s' if live != 1 else ''}, interleaved)"


@kernel
def _interleave_planes(t, per, buf, geo, sh, sw, dx):
    """Planes t*per .. of interleave_phases (an item of parallel.parallel_items)."""
    for p in range(t * per, min((t + 1) * per, dx.shape[0] * dx.shape[1])):
        _interleave_plane(buf, geo, sh, sw, p, dx)


_interleave_items = parallel_items(_interleave_planes)


@kernel
def interleave_phases(buf, geo, sh, sw, dx):
    """dx[n, c, a*sh + r, b*sw + s] = buf[start + (n*C + c)*plane + a*row + b] with (start, row,
    plane) = geo[r*sw + s] (row = plane = 0: a row of zeros). Checks the farthest read first."""
    N, C, H, W = dx.shape
    for r in range(min(sh, H)):
        for s in range(min(sw, W)):
            g0, g1, g2 = geo[r * sw + s, 0], geo[r * sw + s, 1], geo[r * sw + s, 2]
            far = g0 + (N * C - 1) * g2 + ((H - 1 - r) // sh) * g1 + (W - 1 - s) // sw
            if g0 < 0 or far >= buf.size:
                raise IndexError("interleave_phases: a phase reads past its buffer")
    if N * C * H * W >= PAR_MIN_WORK:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(N * C)
        _interleave_items(items, per, buf, geo, sh, sw, dx)
    else:
        _interleave_planes(I0, N * C, buf, geo, sh, sw, dx)


@kernel
def _interleave_plane(buf, geo, sh, sw, t, dx):
    """Plane t of dx from its phases' rows: stride 2 across as pairs written side by side (0.21 to
    0.32 ms for resnet_tiny's down blocks as strided stores of one phase at a time)."""
    H, W = dx.shape[2], dx.shape[3]
    df = dx.reshape(dx.size)
    for y in range(H):
        r = y % sh
        a = y // sh
        o = (t * H + y) * W
        if sw == 2:
            b0 = geo[2 * r, 0] + t * geo[2 * r, 2] + a * geo[2 * r, 1]
            b1 = geo[2 * r + 1, 0] + t * geo[2 * r + 1, 2] + a * geo[2 * r + 1, 1]
            for b in range(W // 2):
                df[np.uint64(o + 2 * b)] = buf[np.uint64(b0 + b)]
                df[np.uint64(o + 2 * b + 1)] = buf[np.uint64(b1 + b)]
            if W % 2:
                df[np.uint64(o + W - 1)] = buf[np.uint64(b0 + W // 2)]
            continue
        for s in range(min(sw, W)):
            p = r * sw + s
            base = geo[p, 0] + t * geo[p, 2] + a * geo[p, 1]
            for b in range((W - s + sw - 1) // sw):
                df[np.uint64(o + s + b * sw)] = buf[np.uint64(base + b)]


def backward_data_strided(dy, w, q: StridedData, sh, sw, dx, xp_buf, wb_buf, phase_buf):
    """dx (N, C, H, W) overwritten with dL/dx of the strided conv y = conv(x, w) from dy, by the
    phases of q = strided_data_plan(...) (for this batch); phase_buf: q.buf_len elements."""
    n, c = dx.shape[0], dx.shape[1]
    buf = phase_buf[:q.buf_len]
    buf[q.zeros_at:] = 0.0
    for ph in q.phases:
        if ph.plan is None:
            continue
        wsub = np.ascontiguousarray(w[:, :, ph.kh0::ph.st_h, ph.kw0::ph.st_w])
        out = buf[ph.start:ph.start + n * c * ph.oh * ph.ow].reshape(n, c, ph.oh, ph.ow)
        _conv(dy, wsub, _NO_BIAS, False, _NO_RES, False, KERNEL_CODE["none"], 0.0, True, 1, 1, ph.pt, ph.pl, ph.dh,
              ph.dw, ph.plan, xp_buf, wb_buf, out)
    interleave_phases(buf, q.geo, np.int64(sh), np.int64(sw), dx)


# ----------------------------------------------------------------------------
# weight gradient: dW[f, c, kh, kw] = sum over images and output pixels of dy[n, f, oh, ow] *
# x[n, c, oh*sh + kh*dh - pt, ow*sw + kw*dw - pl]. dy is first copied into channel blocks
# (N, F/VF, OH*OW, VF) so that the VF channels of one pixel are one vector; the tile then runs over
# the image's pixels (k) for RB taps of the window (r) of one input channel. Each thread sums its
# share of the images into its own partial gradient (no races, and the thread's images stay in
# its cache), laid out (F/VF, C, taps, VF) with the taps padded to whole tiles; the partials are
# added at the end.

@functools.lru_cache(maxsize=4096)
def wgrad_plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int,
               dw: int, groups: int, oh: int, ow: int):
    """(rb, vf, hp, wp) of the direct weight gradient, RB = taps per tile, or None (grouped convs,
    plain 1x1 convs). The KH*KW taps are split into the fewest tiles of at most MAX_RB taps, of
    equal size (the last tile's missing taps read pixel 0 and are never summed)."""
    p = plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, groups, oh, ow)
    if p is None:
        return None
    if sh == sw == 1 and _pixel_vectors(f, c * kh * kw, ow, O.LANES):
        owp = -(-ow // O.LANES) * O.LANES
        return 0, O.LANES, oh + (kh - 1) * dh, owp + (kw - 1) * dw
    vf = _lanes(f)
    taps = kh * kw
    groups_ = -(-taps // M.fit_rb(vf))
    rb = -(-taps // groups_)
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = (ow - 1) * sw + (kw - 1) * dw + 1
    return rb, vf, hp, wp


def _padded_taps(kh: int, kw: int, rb: int) -> int:
    return -(-(kh * kw) // rb) * rb


def wgrad_scratch_len(n: int, c: int, f: int, kh: int, kw: int, oh: int, ow: int, q, threads: int):
    """(padded input, blocked dy, partial sums) elements for a plan q = (rb, vf, hp, wp); for the
    pixel-vector plan (rb = 0), (padded input, a padded dy image per thread, partial vectors)."""
    rb, vf, hp, wp = q
    if rb == 0:
        t = max(1, min(n, threads))
        fb, ng = -(-f // O.RF), -(-(c * kh * kw) // O.MAX_RX)
        return n * c * hp * wp, t * fb * O.RF * oh * _pv_row(ow), t * fb * ng * _PV_BLOCK
    fb = -(-f // vf)
    t = max(1, min(n, threads))
    return n * c * hp * wp, n * fb * oh * ow * vf, t * fb * c * _padded_taps(kh, kw, rb) * vf


@kernel
def _block_image(dy, n, dyt):
    """Image n's dy in channel blocks: dyt[n, fb, p, v] = dy[n, fb*VF + v, p] (pixels p of the plane,
    zero past F); 16 channels x 8 pixels at a time through transpose_16x8, the rest element by
    element. (Element by element, all of it read the 16 or 32 planes of a block 4 KB apart:
    vgg_small's 32 -> 32 at 32x32, batch 64, took 4.1 ms on one thread, its whole weight gradient
    on two 3.9.)"""
    F = dy.shape[1]
    P = dy.shape[2] * dy.shape[3]
    FB, VF = dyt.shape[1], dyt.shape[4]
    src = dy.reshape(dy.size)
    dst = dyt.reshape(dyt.size)
    p8 = P - P % 8
    for fb in range(FB):
        for v0 in range(0, VF, 16):
            f0 = fb * VF + v0
            d0 = (n * FB + fb) * P * VF + v0
            s0 = (n * F + f0) * P
            first = 0
            if VF >= 16 and f0 + 16 <= F:
                for p in range(0, p8, 8):
                    transpose_16x8(src, s0 + p, P, dst, d0 + p * VF, VF)
                first = p8
            for p in range(first, P):
                for v in range(min(16, VF - v0)):
                    d = np.uint64(d0 + p * VF + v)
                    dst[d] = src[np.uint64(s0 + v * P + p)] if f0 + v < F else ZERO


@kernel
def _wgrad_image_block(xf, dyf, xoffs, xro, rb, vf, n, fb, FB, C, plane, pf):
    """Adds image n's share of the gradient of channel block fb, every input channel, into the
    thread's partial sums pf, laid out (F/VF, C, taps, VF): one call per tap group, its tiles
    the C input channels."""
    P = xoffs.size
    KP = xro.size
    code = np.int64(rb)
    for g in range(0, KP, rb):
        o = (fb * C * KP + g) * vf
        _tile(vf, code, xf, n * C * plane, xoffs, xro[g:g + rb], dyf, (n * FB + fb) * P * vf, xoffs, P, pf, o, vf, pf,
              o, vf, C, plane, I0, KP * vf, KP * vf)


@kernel
def sum_partials(part, KH, KW, dweight):
    """dweight[f, c, kh, kw] = sum over t of part[t, f // VF, c, kh*KW + kw, f % VF]: one thread,
    (F x C x KH x KW x T additions: 74,000 for the 64->64 3x3 conv at 2 threads, not worth a
    parallel region's compilation)."""
    T, FB, C, KP, VF = part.shape
    F = dweight.shape[0]
    pf = part.reshape(part.size)
    dwf = dweight.reshape(dweight.size)
    per = FB * C * KP * VF
    KK = KH * KW
    for f64 in range(F):
        fb = f64 // VF
        for c in range(C):
            base = ((fb * C + c) * KP) * VF + (f64 - fb * VF)
            for k in range(KK):
                s = np.float32(0.0)
                for t in range(T):
                    s += pf[t * per + base + k * VF]
                dwf[(f64 * C + c) * KK + k] = s


@kernel
def _wgrad_image(x, dy, pt, pl, xp, dyt, xf, dyf, xoffs, xro, rb, vf, n, FB, C, plane, pf):
    """Image n: its padded copy and its dy in channel blocks (each image's own slices, so threads
    never share them), then its share of the gradient of every channel block into pf."""
    _pad_planes_at(x, n * C, n * C + C, pt, pl, xp)
    _block_image(dy, n, dyt)
    for fb in range(FB):
        _wgrad_image_block(xf, dyf, xoffs, xro, rb, vf, n, fb, FB, C, plane, pf)


_wgrad_image_at = by_address(_wgrad_image)


@kernel
def _wgrad_thread(t, pv, x, dy, pt, pl, xp, dybuf, t0, t1, t2, rb, vf, FB, T, pflat):
    """Partial sums t of _wgrad_parallel: the images t, t + T, ... (an item of parallel_items)."""
    N, C = xp.shape[0], xp.shape[1]
    plane = xp.shape[2] * xp.shape[3]
    per = pflat.size // T
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    dper = dybuf.size // T if pv else 0
    dyt = dybuf[:0 if pv else N * FB * OH * OW * vf].reshape((0 if pv else N, FB, OH, OW, vf))
    xf = xp.reshape(xp.size)
    dyf = dyt.reshape(dyt.size)
    pf = pflat[t * per:(t + 1) * per]
    for i in range(per):
        pf[i] = 0.0
    if pv:
        dyp = dybuf[t * dper:(t + 1) * dper]
        for n in range(t, N, T):  # by address: linked, they were compiled again here
            _pv_wgrad_image_at(x, dy, pt, pl, xp, dyp, n, t0, t1, t2, pf)
    else:
        for n in range(t, N, T):
            _wgrad_image_at(x, dy, pt, pl, xp, dyt, xf, dyf, t0, t1, rb, vf, n, FB, C, plane, pf)


_wgrad_items = parallel_items(_wgrad_thread)


@kernel
def _wgrad_parallel(pv, x, dy, pt, pl, xp, dybuf, t0, t1, t2, rb, vf, FB, T, pflat):
    """Thread t adds the images t, t + T, ... into its partial sums pflat[t*per:(t+1)*per]: on pixel
    vectors (pv: dybuf holds a padded dy image per thread; t0, t1, t2 = _pv_tables' doffs, xoffs,
    taps), else over dy in channel blocks (dybuf (N, F/VF, OH, OW, VF); t0, t1 = wgrad_tables'
    pixel and tap offsets). The T items run on the shared parallel loop (parallel.py): as a
    prange loop of its own this function took 3.8 to 7.0 CPU s to compile with its callees linked,
    1.0 with them called by address, and a parallel function's lowering is Numba's slowest pass.
    The pixel-vector tile's bounds check is _pv_backward_weight's. The copies of each image are
    made by the thread that uses it."""
    _wgrad_items(T, pv, x, dy, pt, pl, xp, dybuf, t0, t1, t2, rb, vf, FB, T, pflat)


@kernel
def wgrad_tables(x, dy, sh, sw, dh, dw, rb, vf, hp, wp, T, xbuf, dybuf, pbuf, dweight, tables):
    """The checks and the offset tables (tables[0] the pixels', tables[1] the taps') of the weight
    gradient with the plan (rb, vf, hp, wp) and T partial sums; _wgrad_parallel does the rest, with
    T = 1 for a small conv. (A serial path here, beside the parallel driver, compiled the image
    loop and its tiles a second time, unused at batch 64: 2 to 3 s of LeNet-5's cold compile.)"""
    N, C = x.shape[0], x.shape[1]
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    KH, KW = dweight.shape[2], dweight.shape[3]
    FB = (F + vf - 1) // vf
    KK = KH * KW
    KP = (KK + rb - 1) // rb * rb
    P = OH * OW
    if xbuf.size < N * C * hp * wp or dybuf.size < N * FB * P * vf or pbuf.size < T * FB * C * KP * vf:
        raise ValueError("direct conv: scratch smaller than wgrad_scratch_len()")
    if tables.shape[0] < 2 or tables.shape[1] < max(P, KP):
        raise ValueError("direct conv: offset tables too small")
    xoffs = tables[0, :P]
    for i in range(OH):
        for j in range(OW):
            xoffs[i * OW + j] = i * sh * wp + j * sw
    xro = tables[1, :KP]
    for r in range(KP):
        xro[r] = 0  # taps past KK read pixel 0 into partial sums nobody reads
    for i in range(KH):
        for j in range(KW):
            xro[i * KW + j] = i * dh * wp + j * dw
    # the farthest tap is the last (padded taps read 0); not xro.max(), which compiles Numba's max
    if (N * C - 1) * hp * wp + xoffs[P - 1] + (KH - 1) * dh * wp + (KW - 1) * dw >= N * C * hp * wp:
        raise IndexError("direct conv: a weight-gradient tile would read past the padded input")


def backward_weight(x, dy, pt, pl, sh, sw, dh, dw, dweight, xp_buf, dy_buf, part_buf, threads):
    """dweight (F, C, KH, KW) overwritten with the batch-summed weight gradient (no bias: the
    caller adds conv.py's bias_grad). threads: how many partial sums (numba.get_num_threads())."""
    n, c, h, wd = x.shape
    f, _, kh, kw = dweight.shape
    rb, vf, hp, wp = wgrad_plan(c, f, h, wd, kh, kw, sh, sw, pt, pl, dh, dw, 1, dy.shape[2], dy.shape[3])
    oh, ow = dy.shape[2], dy.shape[3]
    if rb == 0:
        _pv_backward_weight(x, dy, pt, pl, dh, dw, dweight, hp, wp, xp_buf, dy_buf, part_buf, threads)
        return
    M.require(vf)
    fb = -(-f // vf)
    kp = _padded_taps(kh, kw, rb)
    t = max(1, min(n, threads)) if n * fb * c * kp * vf * oh * ow >= SERIAL_WORK else 1
    tables = np.empty((2, max(oh * ow, kp)), np.int64)
    i64 = np.int64
    wgrad_tables(x, dy, i64(sh), i64(sw), i64(dh), i64(dw), i64(rb), i64(vf), i64(hp), i64(wp), i64(t), xp_buf,
                 dy_buf, part_buf, dweight, tables)
    per = fb * c * kp * vf
    _wgrad_parallel(False, x, dy, i64(pt), i64(pl), xp_buf[:n * c * hp * wp].reshape(n, c, hp, wp),
                    dy_buf[:n * fb * oh * ow * vf], tables[0, :oh * ow], tables[1, :kp], tables[1, :kp], i64(rb),
                    i64(vf), i64(fb), i64(t), part_buf[:t * per])
    sum_partials(part_buf[:t * per].reshape(t, fb, c, kp, vf), i64(kh), i64(kw), dweight)


# ----------------------------------------------------------------------------
# weight gradient on pixel vectors (outer.py's tile), stride 1: the lanes are 16 neighbouring output
# pixels of a row, so dy and the padded input are read as they lie (no transposition of dy). Each
# thread adds its images into its own partial vectors, laid out (F/RF, tap groups, RF*MAX_RX, 16);
# pv_wgrad_sum adds the threads and the lanes at the end.

_PV_BLOCK = O.RF * O.MAX_RX * O.LANES  # one tile's accumulators


def _pv_row(ow: int) -> int:
    """dy's row in the padded copy: OW rounded up to whole vectors (zeros past OW)."""
    return -(-ow // O.LANES) * O.LANES


@functools.lru_cache(maxsize=1024)
def _pv_tables(c: int, kh: int, kw: int, oh: int, ow: int, hp: int, wp: int, dh: int, dw: int):
    """(doffs, xoffs, taps): per step k = (row, vector of the row), dy's and the input's offset;
    per tap (c, i, j), the input's offset. Shared by every launch of this shape (never written)."""
    row = _pv_row(ow)
    r, v = np.divmod(np.arange(oh * (row // O.LANES), dtype=np.int64), row // O.LANES)
    doffs = r * row + v * O.LANES
    xoffs = r * wp + v * O.LANES
    cc, i, j = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    taps = ((cc * hp + i * dh) * wp + j * dw).reshape(-1).astype(np.int64)
    return doffs, xoffs, taps  # writable, as the channel-vector path's tables: one signature of _wgrad_parallel


@kernel
def _pv_wgrad_image(x, dy, pt, pl, xp, dyp, n, doffs, xoffs, taps, pf):
    """Image n: its padded copy, its dy with rows padded to whole vectors and channels to a
    multiple of RF (zeros), then its products added into the thread's partial vectors pf."""
    C = x.shape[1]
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    _pad_planes_at(x, n * C, n * C + C, pt, pl, xp)
    dyf = dy.reshape(dy.size)
    row = dyp.size // (((F + O.RF - 1) // O.RF) * O.RF * OH)
    P = OH * row
    Fp = dyp.size // P
    for f in range(Fp):
        for oh in range(OH):
            o = f * P + oh * row
            if f < F:
                copy_row(dyf, ((n * F + f) * OH + oh) * OW, dyp, o, OW)
                fill_row(dyp, o + OW, row - OW, ZERO)
            else:
                fill_row(dyp, o, row, ZERO)
    xf = xp.reshape(xp.size)
    xbase = n * C * xp.shape[2] * xp.shape[3]
    T = taps.size
    NG = (T + O.MAX_RX - 1) // O.MAX_RX
    K = doffs.size
    for fb in range(Fp // O.RF):
        for g in range(NG):
            rx = min(O.MAX_RX, T - g * O.MAX_RX)
            O.outer_tile(np.int64(rx), dyp, fb * O.RF * P, doffs, P, xf, xbase, xoffs,
                         taps[g * O.MAX_RX:g * O.MAX_RX + rx], K, pf, (fb * NG + g) * _PV_BLOCK)


_pv_wgrad_image_at = by_address(_pv_wgrad_image)


@kernel
def pv_wgrad_sum(pflat, T, dweight):
    """dweight[f, c, i, j] = the sum over the T threads and the 16 lanes of its accumulator."""
    F, C, KH, KW = dweight.shape
    TT = C * KH * KW
    NG = (TT + O.MAX_RX - 1) // O.MAX_RX
    per = pflat.size // T
    dwf = dweight.reshape(dweight.size)
    for f in range(F):
        fb = f // O.RF
        a = f - fb * O.RF
        for tap in range(TT):
            g = tap // O.MAX_RX
            b = tap - g * O.MAX_RX
            rx = min(O.MAX_RX, TT - g * O.MAX_RX)
            o = (fb * NG + g) * _PV_BLOCK + (a * rx + b) * O.LANES
            s = np.float32(0.0)
            for t in range(T):
                for lane in range(O.LANES):
                    s += pflat[t * per + o + lane]
            dwf[f * TT + tap] = s


def _pv_backward_weight(x, dy, pt, pl, dh, dw, dweight, hp, wp, xp_buf, dy_buf, part_buf, threads):
    n, c = x.shape[0], x.shape[1]
    f, _, kh, kw = dweight.shape
    oh, ow = dy.shape[2], dy.shape[3]
    doffs, xoffs, taps = _pv_tables(c, kh, kw, oh, ow, hp, wp, dh, dw)
    t = max(1, min(n, threads)) if n * f * c * kh * kw * oh * ow >= SERIAL_WORK else 1
    fb, ng = -(-f // O.RF), -(-(c * kh * kw) // O.MAX_RX)
    dper = fb * O.RF * oh * _pv_row(ow)
    per = fb * ng * _PV_BLOCK
    if xp_buf.size < n * c * hp * wp or dy_buf.size < t * dper or part_buf.size < t * per:
        raise ValueError("direct conv: scratch smaller than wgrad_scratch_len()")
    # the pixel-vector tile has no bounds checks: the farthest elements it reads and writes
    plane, P = hp * wp, dper // (fb * O.RF)
    if (n - 1) * c * plane + xoffs[-1] + taps.max() + O.LANES > n * c * plane or doffs[-1] + O.LANES > P \
            or P < oh or per < fb * ng * _PV_BLOCK:
        raise IndexError("direct conv: a pixel-vector weight-gradient tile would reach past its buffers")
    i64 = np.int64
    _wgrad_parallel(True, x, dy, i64(pt), i64(pl), xp_buf[:n * c * hp * wp].reshape(n, c, hp, wp),
                    dy_buf[:t * dper], doffs, xoffs, taps, i64(0), i64(O.LANES), i64(fb), i64(t), part_buf[:t * per])
    pv_wgrad_sum(part_buf[:t * per], i64(t), dweight)
