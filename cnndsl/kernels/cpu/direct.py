"""Register-blocked direct convolution: the launcher-facing side of the generated kernels in
direct_conv.py (generator and design: direct_gen.py).

    plan(...)            which generated variant (RB pixels x VF channels) a conv runs, and its
                         scratch sizes; None when the conv is not one this path serves
    forward(...)         y = act(conv(x, w) + b (+ res)), any stride, padding and dilation, groups = 1
    backward_data(...)   dx = dL/dx for stride 1 (the forward kernel run on dy padded by the flipped
                         window, with the weights transposed and flipped)

Per call, three small copies come before the kernel: the input into a zero-padded buffer wide
enough for the last tile of every row (so the generated loops have no bounds checks and no
remainder code), the weights into (F/VF, C, KH, KW, VF) blocks, and the bias into a padded
vector. For the 3x3 64->64 56x56 batch-32 benchmark conv the padding copy is 26 MB of the
conv's 7.4 GFLOP.

The generated kernels need LLVM's SLP vectorizer, which Numba leaves off (numba.core.config.
SLP_VECTORIZE, read at each compilation), and do better without its loop vectorizer, which
turned the tap loop into gathers: `_run` sets both for the compilations the first call of each
signature triggers. Numba's cache does not key on these settings; only these functions are
ever compiled with them, so their cached code is always the vectorized one.
"""
from __future__ import annotations

import os
import threading

import numpy as np
from numba import prange
from numba.core import config as _numba_config

from cnndsl.kernels.cpu import direct_conv as G
from cnndsl.kernels.cpu.common import PAR_MIN_WORK, kernel, parallel_kernel

_NO_RES = np.zeros((1, 1, 1, 1), np.float32)
_LOCK = threading.Lock()


def allowed() -> bool:
    """False when CNNDSL_CPU_CONV=im2col: every conv takes the im2col + BLAS path (A/B measurements,
    and the equivalence tests); read at each launch."""
    return os.environ.get("CNNDSL_CPU_CONV", "auto") != "im2col"


def _lanes(f: int) -> int:
    """VF for F output channels: the fewest lanes that hold F, 8 (one ymm register), 16 or 32."""
    return 8 if f <= 8 else 16 if f <= 16 else 32


def _variant(f: int, ow: int) -> tuple[int, int]:
    """(RB, VF) for F output channels and rows of OW pixels. VF: the fewest lanes that hold F, 8
    (one ymm register), 16 (one zmm) or 32; channels past F are computed and dropped, so LeNet's
    first conv (F = 6) ran 2.5x slower with VF = 16 than im2col (0.077 against 0.031 ms, batch 1,
    1 thread). RB: the larger tile unless it wastes more of the last tile of each row (OW not a
    multiple) than the smaller one does."""
    vf = _lanes(f)
    sizes = sorted(rb for rb, v in G.VARIANTS if v == vf)
    small, big = sizes[0], sizes[-1]

    def waste(rb):
        return (-(-ow // rb) * rb - ow) / ow

    return (big if waste(big) <= waste(small) + 0.05 else small), vf


def plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int,
         dw: int, groups: int, oh: int, ow: int):
    """(rb, vf, hp, wp) of the forward, or None when the direct path does not serve this conv:
    grouped convs (the depthwise loops and im2col serve them) and plain 1x1 convs (one GEMM with
    no unfolding already)."""
    if groups != 1:
        return None
    if kh == kw == 1 and sh == sw == 1 and pt == pl == 0 and (oh, ow) == (h, w):
        return None
    rb, vf = _variant(f, ow)
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = (-(-ow // rb) * rb - 1) * sw + (kw - 1) * dw + 1
    return rb, vf, hp, wp


def scratch_len(n: int, c: int, f: int, kh: int, kw: int, p) -> tuple[int, int]:
    """(padded-input elements, weight-block + padded-bias elements) for a plan p = (rb, vf, hp, wp)."""
    rb, vf, hp, wp = p
    fb = -(-f // vf)
    return n * c * hp * wp, fb * vf * (c * kh * kw + 1)


@kernel
def _pad_plane(x, n, c, top, left, xp):
    H = x.shape[2]
    W = x.shape[3]
    Hp = xp.shape[2]
    Wp = xp.shape[3]
    for i in range(Hp):
        si = i - top
        if si < 0 or si >= H:
            for j in range(Wp):
                xp[n, c, i, j] = 0.0
            continue
        for j in range(Wp):
            sj = j - left
            xp[n, c, i, j] = x[n, c, si, sj] if 0 <= sj < W else 0.0


@parallel_kernel
def pad_input(x, top, left, xp):
    """xp[n, c, i, j] = x[n, c, i - top, j - left] inside x, 0 outside (top, left >= 0)."""
    N, C = x.shape[0], x.shape[1]
    if N * C * xp.shape[2] * xp.shape[3] >= PAR_MIN_WORK:
        for t in prange(N * C):
            t64 = np.int64(t)
            _pad_plane(x, t64 // C, t64 % C, top, left, xp)
    else:
        for t in range(N * C):
            _pad_plane(x, t // C, t % C, top, left, xp)


@kernel
def reorder_weights(w, flip, wb):
    """wb[fb, c, kh, kw, j] = w[fb*VF + j, c, kh, kw], zero past F. flip: the backward-data form,
    wb[cb, f, kh, kw, j] = w[f, cb*VF + j, KH-1-kh, KW-1-kw] (channels and window swapped)."""
    F, C, KH, KW = w.shape
    FB, CI, _, _, VF = wb.shape
    wb[:] = 0.0
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


_CALLED: set = set()  # generated kernels called once already: compiled (or loaded) for our signature


def _run(fn, *args):
    """Call a generated kernel; the compilation its first call triggers runs with the SLP
    vectorizer on and the loop vectorizer off (module docstring). Later calls go straight to the
    kernel: every caller passes the same argument types, so nothing compiles again."""
    if fn in _CALLED:
        fn(*args)
        return
    with _LOCK:
        slp, loop = _numba_config.SLP_VECTORIZE, _numba_config.LOOP_VECTORIZE
        _numba_config.SLP_VECTORIZE, _numba_config.LOOP_VECTORIZE = True, False
        try:
            fn(*args)
        finally:
            _numba_config.SLP_VECTORIZE, _numba_config.LOOP_VECTORIZE = slp, loop
    _CALLED.add(fn)


def _blocks(buf, shape):
    size = 1
    for d in shape:
        size *= d
    if buf.size < size:
        raise ValueError(f"direct conv: scratch of {buf.size} elements, {size} needed")
    return buf[:size].reshape(shape)


def forward(x, w, b, has_bias, res, has_res, act, alpha, sh, sw, pt, pl, dh, dw, y, xp_buf, wb_buf, p=None):
    """y = act(conv(x, w) + b (+ res)); x (N, C, H, W), w (F, C, KH, KW), y (N, F, OH, OW); pt/pl:
    top/left padding (the output size is y's); xp_buf/wb_buf: 1-D float32 scratch of at least
    scratch_len(...) elements (wb_buf also holds the padded bias after the weights); p: the plan
    (computed here when not given)."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    rb, vf, hp, wp = p or plan(c, f, h, wd, kh, kw, sh, sw, pt, pl, dh, dw, 1, oh, ow)
    xp = _blocks(xp_buf, (n, c, hp, wp))
    pad_input(x, pt, pl, xp)
    fb = -(-f // vf)
    nw = fb * c * kh * kw * vf
    wb = _blocks(wb_buf, (fb, c, kh, kw, vf))
    reorder_weights(w, False, wb)
    bp = _blocks(wb_buf[nw:], (fb * vf,))
    bp[:] = 0.0
    if has_bias:
        bp[:f] = b[:f]
    _run(getattr(G, f"fwd_r{rb}_v{vf}"), xp, wb, bp, res if has_res else _NO_RES, bool(has_res), np.int64(act),
         np.float32(alpha), np.int64(sh), np.int64(sw), np.int64(dh), np.int64(dw), np.int64(f), y)


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
    rb, vf, hp, wp = backward_data_plan(c, f, h, wd, kh, kw, 1, 1, pt, pl, dh, dw, 1, oh, ow)
    top, left = (kh - 1) * dh - pt, (kw - 1) * dw - pl
    dyp = _blocks(xp_buf, (n, f, hp, wp))
    pad_input(dy, top, left, dyp)
    cb = -(-c // vf)
    wb = _blocks(wb_buf, (cb, f, kh, kw, vf))
    reorder_weights(w, True, wb)
    _run(getattr(G, f"fwd_r{rb}_v{vf}"), dyp, wb, np.zeros(cb * vf, np.float32), _NO_RES, False, np.int64(0),
         np.float32(0.0), np.int64(1), np.int64(1), np.int64(dh), np.int64(dw), np.int64(c), dx)


# ----------------------------------------------------------------------------
# weight gradient: dW[f, c, kh, kw] = sum over images and output pixels of dy[n, f, oh, ow] *
# x[n, c, oh*sh + kh*dh - pt, ow*sw + kw*dw - pl]. dy is first copied into channel blocks
# (N, F/VF, OH, OW, VF) so that the VF channels of one pixel are one vector; each thread sums its
# share of the images into its own partial gradient (no races, and the thread's images stay in
# its cache while every (channel, kernel row) pass reads them); the partials are added at the end.

def wgrad_plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int,
               dw: int, groups: int, oh: int, ow: int):
    """(tk, vf, hp, wp) of the direct weight gradient, or None (grouped convs, plain 1x1 convs)."""
    p = plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, groups, oh, ow)
    if p is None:
        return None
    vf = _lanes(f)
    tk = kw if kw in (3, 5) else 1
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = (ow - 1) * sw + (kw - 1) * dw + 1
    return tk, vf, hp, wp


def wgrad_scratch_len(n: int, c: int, f: int, kh: int, kw: int, oh: int, ow: int, q, threads: int):
    """(padded input, blocked dy, partial sums) elements for a plan q = (tk, vf, hp, wp)."""
    tk, vf, hp, wp = q
    fb = -(-f // vf)
    t = max(1, min(n, threads))
    return n * c * hp * wp, n * fb * oh * ow * vf, t * fb * c * kh * kw * vf


@kernel
def _block_image(dy, n, dyt):
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    FB, VF = dyt.shape[1], dyt.shape[4]
    for fb in range(FB):
        for i in range(OH):
            for j in range(OW):
                for v in range(VF):
                    f = fb * VF + v
                    dyt[n, fb, i, j, v] = dy[n, f, i, j] if f < F else 0.0


@parallel_kernel
def block_channels(dy, dyt):
    """dyt[n, fb, i, j, v] = dy[n, fb*VF + v, i, j], zero past F."""
    for t in prange(dy.shape[0]):
        _block_image(dy, np.int64(t), dyt)


@parallel_kernel
def sum_partials(part, dweight):
    """dweight[f, c, kh, kw] = sum over t of part[t, f // VF, c, kh, kw, f % VF]. Flat indexing: the
    6-D form took 10.7 s to compile (the slowest function of LeNet-5's cold start), this one less."""
    T, FB, C, KH, KW, VF = part.shape
    F = dweight.shape[0]
    K = C * KH * KW
    pf = part.reshape(part.size)
    dwf = dweight.reshape(dweight.size)
    per = FB * K * VF
    for f in prange(F):
        f64 = np.int64(f)
        fb = f64 // VF
        base = fb * K * VF + (f64 - fb * VF)
        for k in range(K):
            s = np.float32(0.0)
            for t in range(T):
                s += pf[t * per + base + k * VF]
            dwf[f64 * K + k] = s


def backward_weight(x, dy, pt, pl, sh, sw, dh, dw, dweight, xp_buf, dy_buf, part_buf, threads):
    """dweight (F, C, KH, KW) overwritten with the batch-summed weight gradient (no bias: the
    caller adds conv.py's bias_grad). threads: how many partial sums (numba.get_num_threads())."""
    n, c, h, wd = x.shape
    f, _, kh, kw = dweight.shape
    oh, ow = dy.shape[2], dy.shape[3]
    tk, vf, hp, wp = wgrad_plan(c, f, h, wd, kh, kw, sh, sw, pt, pl, dh, dw, 1, oh, ow)
    xp = _blocks(xp_buf, (n, c, hp, wp))
    pad_input(x, pt, pl, xp)
    fb = -(-f // vf)
    dyt = _blocks(dy_buf, (n, fb, oh, ow, vf))
    block_channels(dy, dyt)
    t = max(1, min(n, threads))
    part = _blocks(part_buf, (t, fb, c, kh, kw, vf))
    _run(getattr(G, f"wgrad_t{tk}_v{vf}"), xp, dyt, np.int64(kh), np.int64(kw), np.int64(sh), np.int64(sw),
         np.int64(dh), np.int64(dw), part)
    sum_partials(part, dweight)
