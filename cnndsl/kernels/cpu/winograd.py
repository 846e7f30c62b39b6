"""Winograd F(2x2, 3x3) convolution for stride-1 3x3 convs (groups 1, dilation 1): the forward,
and the input gradient as the forward of dy with the flipped, transposed window.

Each 2x2 block of outputs (a "tile") comes from the 4x4 input patch d under it:

    Y = A^T [ U (.) V ] A,   V = B^T d B (per input channel),  U = G g G^T (per channel pair),
    summed over the input channels: M[xi, f, t] = sum_c U[xi, f, c] * V[xi, c, t], xi < 16

so the 9 x 4 = 36 multiply-adds of a tile's four outputs per channel pair become 16: 2.25x fewer
(Lavin and Gray, arXiv:1509.09308). The 16 sums over channels are GEMMs, run by the direct
convolution's register tile (microkernel.py): RB output channels x VF tiles, the reduction over
the C input channels, U broadcast and V read as vectors of VF neighbouring tiles.

Work is cut into groups of VF consecutive tiles of the whole batch (tile t: image t // T, tile row
and column of the TH x TW tiles of an image), each group one item of the shared parallel loop:

    1. V[xi, c, l] for the group's tiles l, every input channel, read from x itself (the padding
       in the loads' masks: rows and columns outside x read as zeros): 16 x C x VF floats, 128 KB
       for C = 64
    2. M[xi, f, l]: 16 calls of the tile, each over every output channel of one xi, with U[xi]
       (F x C) and V[xi] (C x VF) in L1
    3. y = act(A^T M A + b (+ res)) written into y's rows, two per tile row

PyTorch's CPU convolution (oneDNN) runs the direct algorithm; its Winograd is opt-in
(shared notes, numba-performance.md). Numerics: the transforms add and subtract up to 4 (input),
9 (output) terms, and U holds halves and quarters of the weights, so the result differs from the
direct sum by a few float32 roundings of the magnitudes involved; the tests state the tolerance
(tests/kernels/test_kernels_winograd.py).
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from cnndsl.kernels.cpu import microkernel as M
from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import I0, I1, ONE, ZERO, kernel
from cnndsl.kernels.cpu.direct import _tile
from cnndsl.kernels.cpu.epilogue import NONE, RELU, activate_affine
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

HALF = np.float32(0.5)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
# Tiles per register tile: two of the CPU's vectors (32 on AVX-512, 16 on AVX2), and at most as many
# channels per register tile as its registers hold (microkernel.fit_rb: 9 on AVX-512, 6 on AVX2).
VF = M.VF_MAX
MAX_RB = M.fit_rb(VF)
# Floats between the 16 blocks of V and of M (xi = 0..15), one cache line: without it the blocks
# (C x VF floats, 8 KB for C = 64) start at the same offset in every 4 KB, and the 16 stores of
# one run's transform (the 16 loads of the output transform) all fall in one L1 set. The input
# transform of the 3x3 64->64 56x56 b32 conv, one thread, three alternated runs: 9.4 to 12.4 ms
# without the skew, 4.3 to 5.0 with it (Intel Xeon, AVX-512, 2026-12-03 16:40, quiet).
SKEW = 16


class Plan(NamedTuple):
    """A Winograd conv: rb output channels x vf tiles per register tile; th x tw tiles per image."""

    rb: int
    vf: int
    th: int
    tw: int


def allowed() -> bool:
    """False when CNNDSL_CPU_CONV is `direct` or `im2col` (A/B measurements, the equivalence
    tests); read when a layer's algorithm is chosen."""
    return os.environ.get("CNNDSL_CPU_CONV", "auto") in ("auto", "winograd")


def forced() -> bool:
    """CNNDSL_CPU_CONV=winograd: every conv Winograd can serve takes it, whatever its size (the
    equivalence tests run whole networks so)."""
    return os.environ.get("CNNDSL_CPU_CONV", "auto") == "winograd"


# Where Winograd pays. Direct / Winograd forward ms (the direct one's padding copy included),
# batch 64, 2 threads, 3x3 stride-1 convs C -> F at HxH (`python -m cnndsl.kernels.cpu.bench_conv
# --winograd-rule --reps 7`; Intel Xeon, AVX-512, quiet, 2026-12-03 17:05, a second run right after
# in brackets where a cell moved across 1):
#   16 -> 16: 8x8 0.15/0.18, 16x16 0.43/0.42, 32x32 1.44/1.29 (1.46/1.70): a tie, left direct
#   16 -> 32: 8x8 0.21/0.26, 16x16 0.81/0.62, 32x32 3.3/2.0
#   32 -> 32: 8x8 0.38/0.42, 16x16 1.33/1.02, 32x32 6.5/3.3
#   32 -> 64: 8x8 0.72/0.73 (0.75/0.72), 16x16 2.8/1.7, 32x32 13.2/7.6
#   64 -> 64: 8x8 1.41/1.22 (1.43/1.19), 16x16 5.9/3.2, 32x32 23.6/13.3
#   64 -> 128 and 128 -> 128 at 8x8: 2.9/2.1 and 5.4/4.0; at 16x16 and 32x32 1.9 to 2.1x faster
# and fewer than 16 input channels lose at every size (3 -> 16: 0.55 to 0.64x, 8 -> 16: 0.72 to
# 0.80x). Small maps have few tiles per image and a quarter of the 4x4 patches' inputs in the
# padding; there it pays only with many channels, and only from a few images on: with the
# weight transform of every launch (U for 128 x 128 channels: 0.10 ms) and few tile groups to
# share among the threads, direct / Winograd ms by batch (2 threads, best of 15, timed as
# bench_conv's winograd_rule times them, at batches 1 to 32; 2026-12-03 17:58, quiet):
#   128 -> 128 at 8x8: n1 0.22/0.32, n2 0.33/0.35, n4 0.45/0.44, n8 0.79/0.60
#   64 -> 64 at 8x8:   n1 0.080/0.093, n2 0.100/0.101, n4 0.151/0.122
#   96 -> 96 at 7x7:   n1 0.13/0.17, n2 0.16/0.19, n4 0.25/0.25, n8 0.41/0.35
# and from 16x16 maps on it wins at batch 1 too (32 -> 32 at 16x16: 0.058/0.043; 64 -> 64:
# 0.145/0.115; 64 -> 64 at 56x56: 1.10/0.64).
MIN_IN_CHANNELS = 16
MIN_OUT_CHANNELS = 32
MIN_PIXELS = 256  # output pixels per image, unless
MIN_CHANNEL_PRODUCT = 64 * 64  # C x F reaches this, and
MIN_TILES = 128  # the batch has this many tiles (4 groups)
# On AVX2 the direct tiles are narrower (microkernel.fit_rb) and Winograd's transforms cost more
# beside them; the same grid (`bench_conv --winograd-rule --reps 7`, batch 64, 2 threads, direct
# ms / Winograd ms; AMD EPYC, Zen 3, 2026-12-04 14:25, quiet) had Winograd ahead only at
#   32x32 from 32 input channels: 32 -> 32 1.28x, 32 -> 64 1.43x, 64 -> 64 1.77x, 128 -> 128 2.00x
#          (16 -> 32 1.03x, 16 -> 16 0.84x);
#   16x16 from C x F = 64 x 64: 64 -> 64 1.11x, 64 -> 128 1.32x, 128 -> 128 1.29x (32 -> 64 0.91x,
#          32 -> 32 0.71x, 16 -> 32 0.61x);
#   8x8 at 128 -> 128 only, 1.07x (64 -> 128 0.93x, 64 -> 64 0.70x): left direct.
AVX2_MIN_IN_CHANNELS = 32
AVX2_MIN_PIXELS = 1024  # output pixels per image, unless C x F reaches MIN_CHANNEL_PRODUCT and
# the maps have MIN_PIXELS


@functools.lru_cache(maxsize=4096)
def plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
         groups: int, oh: int, ow: int, force: bool = False, n: int | None = None):
    """The Plan of a conv from C to F channels at batch n, or None where Winograd F(2x2, 3x3) does
    not apply (not 3x3, stride 1, dilation 1, groups 1) or does not pay (the rule above; force:
    wherever it applies). n None: the plan wherever some batch takes it (from_batch says from which)."""
    if groups != 1 or (kh, kw, sh, sw, dh, dw) != (3, 3, 1, 1, 1, 1) or oh < 1 or ow < 1:
        return None
    nb = -(-f // MAX_RB)
    p = Plan(-(-f // nb), VF, -(-oh // 2), -(-ow // 2))
    if not force:
        if c < MIN_IN_CHANNELS or f < MIN_OUT_CHANNELS:
            return None
        if M.VECTOR_LANES < 16:  # AVX2's rule (above)
            small = oh * ow < AVX2_MIN_PIXELS and (c * f < MIN_CHANNEL_PRODUCT or oh * ow < MIN_PIXELS)
            return None if c < AVX2_MIN_IN_CHANNELS or small else p
        if oh * ow < MIN_PIXELS and (c * f < MIN_CHANNEL_PRODUCT or (n is not None and n < from_batch(p, oh, ow))):
            return None
    return p


@functools.lru_cache(maxsize=4096)
def input_grad_plan(c: int, f: int, h: int, w: int, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int,
                    dw: int, groups: int, oh: int, ow: int, force: bool = False, n: int | None = None):
    """The Plan of the conv that computes a conv's input gradient at batch n (dy's F channels ->
    dx's C, an (h, w) output; the window flipped, padded by 2 - pt and 2 - pl), or None."""
    if pt > 2 or pl > 2:
        return None
    return plan(f, c, oh, ow, kh, kw, sh, sw, 2 - pt, 2 - pl, dh, dw, groups, h, w, force, n)


def from_batch(p: Plan, oh: int, ow: int) -> int:
    """The smallest batch at which the rule takes plan p for an (oh, ow) output (MIN_TILES)."""
    return 1 if oh * ow >= MIN_PIXELS else max(1, -(-MIN_TILES // (p.th * p.tw)))


def describe(p: Plan) -> str:
    """A plan in words, for `cnndsl compile --print-ir`."""
    return f"winograd F(2x2,3x3) ({p.rb} channels x {p.vf} tiles)"


def u_stride(f: int, c: int) -> int:
    """The row stride of U for F x C channels (see weight_transform)."""
    return f * c + SKEW


def scratch_len(f: int, c: int) -> int:
    """Elements of the transformed weights U (16 rows of F x C, u_stride apart)."""
    return 16 * u_stride(f, c)


@kernel
def weight_transform(w, flip, u):
    """u[xi, fo*Ci + ci] = (G g G^T)[xi // 4, xi % 4] of the 3x3 window g: w[fo, ci] (w is (F, C, 3,
    3): Fo = F, Ci = C); flip: the input gradient's, g[i, j] = w[ci, fo, 2 - i, 2 - j] (Fo = C, Ci =
    F). u is (16, US), US >= Fo*Ci: the rows SKEW apart more than Fo*Ci (u_stride). Without that
    skew the 16 rows of 64 x 64 channels start 16 KB apart, each window's 16 stores fall in one L1
    set, and the transform took 55 ns per channel pair (0.90 ms for 128 x 128 channels, more than
    the conv itself at batch 1; Intel Xeon, 2026-12-03)."""
    F, C = w.shape[0], w.shape[1]
    Fo, Ci = (C, F) if flip else (F, C)
    if u.ndim != 2 or u.shape[0] != 16 or u.shape[1] < Fo * Ci or w.shape[2] != 3 or w.shape[3] != 3:
        raise ValueError("winograd weight transform: u must be (16, >= Fo*Ci), w (F, C, 3, 3)")
    for fo in range(Fo):
        for ci in range(Ci):
            if flip:
                g00, g01, g02 = w[ci, fo, 2, 2], w[ci, fo, 2, 1], w[ci, fo, 2, 0]
                g10, g11, g12 = w[ci, fo, 1, 2], w[ci, fo, 1, 1], w[ci, fo, 1, 0]
                g20, g21, g22 = w[ci, fo, 0, 2], w[ci, fo, 0, 1], w[ci, fo, 0, 0]
            else:
                g00, g01, g02 = w[fo, ci, 0, 0], w[fo, ci, 0, 1], w[fo, ci, 0, 2]
                g10, g11, g12 = w[fo, ci, 1, 0], w[fo, ci, 1, 1], w[fo, ci, 1, 2]
                g20, g21, g22 = w[fo, ci, 2, 0], w[fo, ci, 2, 1], w[fo, ci, 2, 2]
            # t = G g: rows g0, (g0 + g1 + g2)/2, (g0 - g1 + g2)/2, g2
            t10, t11, t12 = (g00 + g10 + g20) * HALF, (g01 + g11 + g21) * HALF, (g02 + g12 + g22) * HALF
            t20, t21, t22 = (g00 - g10 + g20) * HALF, (g01 - g11 + g21) * HALF, (g02 - g12 + g22) * HALF
            # u = t G^T: the same across each row's 3 columns
            k = fo * Ci + ci
            u[0, k], u[1, k], u[2, k], u[3, k] = g00, (g00 + g01 + g02) * HALF, (g00 - g01 + g02) * HALF, g02
            u[4, k], u[5, k], u[6, k], u[7, k] = t10, (t10 + t11 + t12) * HALF, (t10 - t11 + t12) * HALF, t12
            u[8, k], u[9, k], u[10, k], u[11, k] = t20, (t20 + t21 + t22) * HALF, (t20 - t21 + t22) * HALF, t22
            u[12, k], u[13, k], u[14, k], u[15, k] = g20, (g20 + g21 + g22) * HALF, (g20 - g21 + g22) * HALF, g22


# ----------------------------------------------------------------------------
# The transforms of 16 neighbouring tiles at a time, in LLVM IR with explicit <16 x float> vectors
# (as microkernel.py's tile). Written as Python loops over tiles, LLVM left them mostly scalar (the
# stride-2 reads of the tiles' columns, and five arrays it could not prove apart): 18.7 and 20.7 ms
# for the input and output transforms of the 3x3 64->64 56x56 b32 conv on one thread, against 24
# for its 16 GEMMs (Intel Xeon, AVX-512, 2026-12-03). The run's last vector is cut by a mask
# (llvm.masked.store: AVX-512 masks, vmaskmovps on AVX2), so that no store reaches past the tiles a
# call owns: the next tiles may be another thread's; the input's loads are masked to its plane (the
# padding). Without AVX-512, where every lane is in (most calls), plain loads and stores instead
# (_masked_store says why). No bounds checks inside (an intrinsic): what the masks leave are the buffers a launch
# allocates, sized for the farthest lane (SKEW).

_VTY = ir.VectorType(_F32, 16)
_MASK = ir.VectorType(ir.IntType(1), 16)
_EVEN = ir.Constant(ir.VectorType(_I32, 16), list(range(0, 32, 2)))
_ODD = ir.Constant(ir.VectorType(_I32, 16), list(range(1, 32, 2)))
_LO = ir.Constant(ir.VectorType(_I32, 16), [k for j in range(8) for k in (j, 16 + j)])
_HI = ir.Constant(ir.VectorType(_I32, 16), [k for j in range(8, 16) for k in (j, 16 + j)])
_IOTA = ir.Constant(ir.VectorType(_I64, 16), list(range(16)))


def _ptr(context, builder, ty, val):
    return context.make_array(ty)(context, builder, val).data


def _vec_at(builder, base, off):
    return builder.bitcast(builder.gep(base, [off]), _VTY.as_pointer())


def _splat(builder, val, ty):
    v = builder.insert_element(ir.Constant(ty, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(_I32, 16), [0] * 16))


def _lanes_below(builder, n, first=0):
    """The mask of lanes j with first + j < n."""
    return builder.icmp_signed("<", builder.add(_IOTA, ir.Constant(ir.VectorType(_I64, 16), [first] * 16)),
                               _splat(builder, n, ir.VectorType(_I64, 16)))


def _masked_store(builder, val, ptr, mask, full=None):
    """val's lanes in mask to ptr; full (an i1, where given): every lane is in the mask, and a plain
    store writes them. Without AVX-512 the masked store is vmaskmovps, slow on AMD's cores: with the
    plain store (and the plain load below) where a call's 16 tiles are whole, the Winograd forward
    of the 3x3 64->64 56x56 b32 conv took 72-90 ms on one thread against 86-111 (best of 25, three
    alternated runs each), vgg_small's 32 -> 32 at 32x32 14-20 against 25-28 (AMD EPYC, Zen 3,
    AVX2, 2026-12-04). On AVX-512, whose masks cost nothing, the masked store alone, as before."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_VTY, _VTY.as_pointer(), _I32, _MASK]),
        "llvm.masked.store.v16f32.p0")
    if full is None or M.VECTOR_LANES >= 16:
        builder.call(fn, [val, ptr, ir.Constant(_I32, 4), mask])
        return
    with builder.if_else(full, likely=True) as (whole, part):
        with whole:
            builder.store(val, ptr, align=4)
        with part:
            builder.call(fn, [val, ptr, ir.Constant(_I32, 4), mask])


def _masked_load(builder, ptr, mask, full=None):
    """ptr's lanes in mask, zeros elsewhere; full (an i1, where given): every lane is in the mask,
    and a plain load reads them (see _masked_store; AVX-512: the masked load alone)."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VTY, [_VTY.as_pointer(), _I32, _MASK, _VTY]), "llvm.masked.load.v16f32.p0")
    if full is None or M.VECTOR_LANES >= 16:
        return builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VTY, [0.0] * 16)])
    with builder.if_else(full, likely=True) as (whole, part):
        with whole:
            a = builder.load(ptr, align=4)
            ablock = builder.block
        with part:
            b = builder.call(fn, [ptr, ir.Constant(_I32, 4), mask, ir.Constant(_VTY, [0.0] * 16)])
            bblock = builder.block
    phi = builder.phi(_VTY)
    phi.add_incoming(a, ablock)
    phi.add_incoming(b, bblock)
    return phi


def _i64(context, builder, val, ty):
    return context.cast(builder, val, ty, types.int64)


_I32V = ir.VectorType(_I32, 16)
_IOTA32 = ir.Constant(_I32V, list(range(16)))


@intrinsic
def _input16(typingctx, x, base, w, h, ih0, iw0, v, vb, cv, nl):
    """v[vb + xi*cv + q] = (B^T d B)[xi // 4, xi % 4] for q < nl (<= 16) of the 16 tiles whose 4x4
    patches d are rows ih0..ih0+3 and columns iw0 + 2q .. iw0 + 2q + 3 of the (h, w) plane at
    x[base]: per row, 4 vector loads (columns from iw0, iw0 + 2, iw0 + 16, iw0 + 18), split into
    even and odd columns by 2-vector shuffles. Rows and columns outside the plane read as zeros
    (the padding): masked loads, so no element outside the plane is read."""
    sig = types.void(x, base, w, h, ih0, iw0, v, vb, cv, nl)

    def codegen(context, builder, signature, args):
        ta = signature.args
        xptr, vptr = _ptr(context, builder, ta[0], args[0]), _ptr(context, builder, ta[6], args[6])
        ints = (1, 2, 3, 4, 5, 7, 8, 9)
        base_, w_, h_, ih0_, iw0_, vb_, cv_, nl_ = (_i64(context, builder, args[i], ta[i]) for i in ints)
        # lane j of the load at column offset o is column iw0 + o + j: inside when 0 <= . < w
        w32, iw32 = builder.trunc(w_, _I32), builder.trunc(iw0_, _I32)
        colmask, colfull = {}, {}
        for o in (0, 2, 16, 18):
            col = builder.add(_IOTA32, _splat(builder, builder.add(iw32, ir.Constant(_I32, o)), _I32V))
            colmask[o] = builder.and_(builder.icmp_signed(">=", col, ir.Constant(_I32V, [0] * 16)),
                                      builder.icmp_signed("<", col, _splat(builder, w32, _I32V)))
            first = builder.add(iw0_, ir.Constant(_I64, o))
            colfull[o] = builder.and_(builder.icmp_signed(">=", first, ir.Constant(_I64, 0)),
                                      builder.icmp_signed("<=", builder.add(first, ir.Constant(_I64, 16)), w_))
        none = ir.Constant(_MASK, [0] * 16)
        col = []
        for i in range(4):
            ih = builder.add(ih0_, ir.Constant(_I64, i))
            inside = builder.and_(builder.icmp_signed(">=", ih, ir.Constant(_I64, 0)), builder.icmp_signed("<", ih, h_))
            row = builder.add(base_, builder.add(builder.mul(ih, w_), iw0_))

            def load(o):
                ptr = _vec_at(builder, xptr, builder.add(row, ir.Constant(_I64, o)))
                return _masked_load(builder, ptr, builder.select(inside, colmask[o], none),
                                    builder.and_(inside, colfull[o]))

            a, b, c, d = load(0), load(16), load(2), load(18)
            e0, o0 = builder.shuffle_vector(a, b, _EVEN), builder.shuffle_vector(a, b, _ODD)
            e1, o1 = builder.shuffle_vector(c, d, _EVEN), builder.shuffle_vector(c, d, _ODD)
            col.append([builder.fsub(e0, e1), builder.fadd(o0, e1), builder.fsub(e1, o0), builder.fsub(o0, o1)])
        mask = _lanes_below(builder, nl_)
        full = builder.icmp_signed(">=", nl_, ir.Constant(_I64, 16))
        for j in range(4):
            out = (builder.fsub(col[0][j], col[2][j]), builder.fadd(col[1][j], col[2][j]),
                   builder.fsub(col[2][j], col[1][j]), builder.fsub(col[1][j], col[3][j]))
            for i, o in enumerate(out):
                off = builder.add(vb_, builder.mul(cv_, ir.Constant(_I64, 4 * i + j)))
                _masked_store(builder, o, _vec_at(builder, vptr, off), mask, full)
        return context.get_dummy_value()

    return sig, codegen


@kernel
def _input_tiles(xf, C, H, W, pt, pl, runs, nr, v, VF, XS):
    """v[xi*XS + c*VF + lane] = (B^T d B)[xi // 4, xi % 4] for the tiles of runs[:nr] (_runs) and
    every channel c, d read from x ((N, C, H, W), flat) padded by pt rows on top and pl columns on
    the left (and whatever the tiles reach past the other edges), 16 tiles at a time. Channel by
    channel, every run of it, so that a channel's 16 rows of V (VF lanes) are written while in L1:
    run by run, each run's part of the 16 x C rows (128 KB for C = 64) went back to L2 between the
    parts (the benchmark conv's input transform, one thread: 6.4 to 6.8 ms against 4.3 to 5.0,
    alternated; Intel Xeon, 2026-12-03). The padding in the masks of the loads, not a padded copy
    of x first: that copy (direct.pad_input) and the transform from it took 9.1 to 9.8 ms on one
    thread, 7.5 on two, the transform from x 4.8 to 4.9 and 4.8 to 5.6 (the same conv, alternated,
    17:35, quiet)."""
    for c in range(C):
        for r in range(nr):
            n, tr, tc0, ns, l0 = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3], runs[r, 4]
            base = (n * C + c) * H * W
            for q in range(0, ns, 16):
                _input16(xf, base, W, H, 2 * tr - pt, 2 * (tc0 + q) - pl, v, c * VF + l0 + q, XS, min(16, ns - q))


@intrinsic
def _output16(typingctx, m, mb, fv, bias, y, yb, ow, nrows, nc, res, has_res, relu):
    """The 2 x 2 outputs of 16 tiles, A^T M A + bias (+ res) (relu: then max(., 0)), M[xi][q] =
    m[mb + xi*fv + q], written to y's rows yb and yb + ow (nrows of them, 1 or 2), nc <= 32 columns
    each; reads m[mb .. mb + 15*fv + 15]."""
    sig = types.void(m, mb, fv, bias, y, yb, ow, nrows, nc, res, has_res, relu)

    def codegen(context, builder, signature, args):
        ta = signature.args
        mptr, yptr, rptr = (_ptr(context, builder, ta[i], args[i]) for i in (0, 4, 9))
        mb_, fv_, yb_, ow_, nr_, nc_ = (_i64(context, builder, args[i], ta[i]) for i in (1, 2, 5, 6, 7, 8))
        has_res_ = context.cast(builder, args[10], ta[10], types.boolean)
        relu_ = context.cast(builder, args[11], ta[11], types.boolean)
        bv = _splat(builder, context.cast(builder, args[3], ta[3], types.float32), _VTY)
        mv = [builder.load(_vec_at(builder, mptr, builder.add(mb_, builder.mul(fv_, ir.Constant(_I64, k)))), align=4)
              for k in range(16)]
        add, sub = builder.fadd, builder.fsub
        s0 = [add(add(mv[j], mv[4 + j]), mv[8 + j]) for j in range(4)]  # A^T M: rows 0+1+2, 1-2-3
        s1 = [sub(sub(mv[4 + j], mv[8 + j]), mv[12 + j]) for j in range(4)]
        rows = []
        for s in (s0, s1):  # (A^T M) A: columns 0+1+2, 1-2-3
            rows.append((add(add(add(s[0], s[1]), s[2]), bv), add(sub(sub(s[1], s[2]), s[3]), bv)))
        zero = ir.Constant(_VTY, [0.0] * 16)
        for i, (c0, c1) in enumerate(rows):
            with builder.if_then(builder.icmp_signed(">", nr_, ir.Constant(_I64, i)), likely=True):
                for h, sel in enumerate((_LO, _HI)):  # the row's columns, tile by tile: 2q, 2q+1
                    val = builder.shuffle_vector(c0, c1, sel)
                    mask = _lanes_below(builder, nc_, 16 * h)
                    off = builder.add(builder.add(yb_, builder.mul(ow_, ir.Constant(_I64, i))),
                                      ir.Constant(_I64, 16 * h))
                    # no lane of res read without a residual (res may then be a 1-element array)
                    rmask = builder.select(has_res_, mask, ir.Constant(_MASK, [0] * 16))
                    val = add(val, _masked_load(builder, _vec_at(builder, rptr, off), rmask))
                    val = builder.select(relu_, builder.select(builder.fcmp_ordered("<", val, zero), zero, val), val)
                    _masked_store(builder, val, _vec_at(builder, yptr, off), mask,
                                  builder.icmp_signed(">=", nc_, ir.Constant(_I64, 16 * h + 16)))
        return context.get_dummy_value()

    return sig, codegen


@kernel
def _runs(T, TW, t0, t1, runs):
    """The runs of tiles t0..t1-1 (a tile row's tiles each): runs[r] = (image, tile row, first tile
    column, tiles, lane of the first tile); returns their number (runs has a row per tile at most)."""
    nr = 0
    t = t0
    while t < t1:
        n = t // T
        rem = t - n * T
        tr = rem // TW
        tc0 = rem - tr * TW
        ns = min(t1 - t, TW - tc0)
        runs[nr, 0], runs[nr, 1], runs[nr, 2], runs[nr, 3], runs[nr, 4] = n, tr, tc0, ns, t - t0
        nr += 1
        t += ns
    return nr


@kernel
def _output_tiles(m, F, b, has_bias, resf, has_res, act, alpha, yf, OH, OW, runs, nr, VF, MS):
    """y's outputs of the tiles of runs[:nr] (_runs), every channel f: act(A^T M A + b (+ res)),
    M[xi, f, lane] = m[xi*MS + f*VF + lane]; relu (and none) in the vector code, any other
    activation after it over the rows written."""
    relu = act == RELU
    for f in range(F):
        bias = b[f] if has_bias else ZERO
        for r in range(nr):
            n, tr, tc0, ns, l0 = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3], runs[r, 4]
            nrows = min(2, OH - 2 * tr)
            yb = ((n * F + f) * OH + 2 * tr) * OW
            for q in range(0, ns, 16):
                ow0 = 2 * (tc0 + q)
                _output16(m, f * VF + l0 + q, MS, bias, yf, yb + ow0, OW, nrows, min(2 * min(16, ns - q), OW - ow0),
                          resf, has_res, relu)
            if act != NONE and not relu:
                for i in range(nrows):
                    seg = yf[yb + i * OW + 2 * tc0:yb + i * OW + min(2 * (tc0 + ns), OW)]
                    activate_affine(seg, seg, ONE, ZERO, act, alpha)


_input_tiles_at = by_address(_input_tiles)
_output_tiles_at = by_address(_output_tiles)


@kernel
def _groups_chunk(t, per, x, pt, pl, uf, US, b, has_bias, resf, has_res, act, alpha, y, TH, TW, rb, vf, koffs, kro,
                  zinit):
    """Groups t*per .. of vf tiles: input transform, the 16 GEMMs, output transform (see the module
    docstring); an item of parallel.parallel_items."""
    N, C, H, W = x.shape
    F, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    T = TH * TW
    ng = (N * T + vf - 1) // vf
    xs, ms = C * vf + SKEW, F * vf + SKEW  # the blocks' strides in V and M (US: in U)
    v = np.zeros(16 * xs, np.float32)  # lanes past a short last group: zeros or stale, computed, not stored
    m = np.empty(16 * ms, np.float32)  # (SKEW: the 16 lanes the last vector read may pass)
    runs = np.empty((vf, 5), np.int64)
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    nfull = F // rb
    rest = F - nfull * rb
    for g in range(t * per, min((t + 1) * per, ng)):
        t0 = g * vf
        t1 = min(t0 + vf, N * T)
        nr = _runs(T, TW, t0, t1, runs)
        _input_tiles_at(xf, C, H, W, pt, pl, runs, nr, v, vf, xs)
        for xi in range(16):
            ub = xi * US
            if nfull > 0:
                _tile(vf, rb, uf, ub, koffs, kro, v, xi * xs, koffs, C, zinit, I0, I0, m, xi * ms, vf,
                      nfull, rb * C, I0, I0, rb * vf)
            if rest > 0:
                _tile(vf, rest, uf, ub + nfull * rb * C, koffs, kro, v, xi * xs, koffs, C, zinit, I0, I0, m,
                      xi * ms + nfull * rb * vf, vf, I1, I0, I0, I0, I0)
        _output_tiles_at(m, F, b, has_bias, resf, has_res, act, alpha, yf, OH, OW, runs, nr, vf, ms)


_groups_items = parallel_items(_groups_chunk)


@kernel
def conv_winograd(x, w, b, has_bias, res, has_res, act, alpha, flip, pt, pl, rb, vf, TH, TW, ubuf, y):
    """y = act(conv(x, w) + b (+ res)) for a 3x3 stride-1 conv of x padded by pt rows on top and pl
    columns on the left (negative: x cropped), the output's size y's; flip: w is (C, F, 3, 3),
    used transposed and flipped (the input gradient: x is dy, y is dx). ubuf: scratch_len(F, C).
    The vector code reads only inside x's planes (masked loads) and writes only y's tiles (masked
    stores); its other reads and writes are inside the buffers this launch allocates."""
    N, F, OH, OW = y.shape
    C = w.shape[0] if flip else w.shape[1]
    if x.shape[0] != N or x.shape[1] != C:
        raise ValueError("winograd conv: input does not match the weights or the output")
    US = F * C + SKEW  # u_stride
    if ubuf.size < 16 * US:
        raise ValueError("winograd conv: scratch smaller than scratch_len()")
    if has_res and res.size < y.size:
        raise IndexError("winograd conv: residual smaller than the output")
    if (OH + 1) // 2 != TH or (OW + 1) // 2 != TW or rb < 1 or rb > MAX_RB or vf != VF:
        raise ValueError("winograd conv: plan does not match the output")
    weight_transform(w, flip, ubuf[:16 * US].reshape((16, US)))
    koffs = np.arange(C)  # the tile's k is the input channel: U[xi, f, c] broadcast, V[xi, c] a vector
    kro = np.arange(rb) * C
    zinit = np.zeros(vf, np.float32)
    items, per = chunks((N * TH * TW + vf - 1) // vf)
    _groups_items(items, per, x, pt, pl, ubuf, US, b, has_bias, res.reshape(res.size), has_res, act, alpha, y, TH, TW,
                  rb, vf, koffs, kro, zinit)


def run(p: Plan, x, w, b, has_bias, res, has_res, act, alpha, flip, pt, pl, u_buf, y):
    """conv_winograd by plan p (its int64 arguments made here). has_bias, has_res, flip bools;
    act a kernel code (direct.kernel_code), alpha an np.float32."""
    i64 = np.int64
    M.require(p.vf)
    conv_winograd(x, w, b, has_bias, res, has_res, act, alpha, flip, i64(pt), i64(pl), i64(p.rb), i64(p.vf),
                  i64(p.th), i64(p.tw), u_buf, y)
