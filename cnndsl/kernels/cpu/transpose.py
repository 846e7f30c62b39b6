"""An 8 x 16 float32 block transpose in registers (LLVM IR through a Numba intrinsic), for the
direct convolution's channel-vector tiles: they leave each output pixel's 16 or 32 channels as one
vector, and NCHW wants each channel's pixels in a row. The scalar copy that did it (a strided load
and a store per element) ran at 0.6 ns per element on the Zen 5 machine: about a sixth of the
3x3 64 -> 64 56x56 forward. Here 8 rows of 16 lanes go through three stages of two-vector
shuffles (24 vpermt2ps-class shuffles for 128 elements) and leave as 16 stores of 8 floats.

    transpose_8x16(src, soff, sstride, dst, doff, dstride):
        dst[doff + l*dstride + r] = src[soff + r*sstride + l]    for r < 8, l < 16
    transpose_16x8: the same for r < 16, l < 8 (the weight gradient's dy into channel vectors)

No bounds checks inside (an intrinsic): its caller keeps both blocks inside their arrays.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_V16 = ir.VectorType(_F32, 16)
_V8 = ir.VectorType(_F32, 8)


def _mask(values):
    values = list(values)
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


def _columns(builder, rows):
    """The 16 columns (vectors of 8) of 8 rows of 16 lanes: column l = (rows[0][l], ..., rows[7][l])."""
    # stage 1: pairs of rows interleaved, lanes 0-7 (lo) and 8-15 (hi): element (lane l, row r
    # of the pair) at 2*l + r (lanes relative to the half)
    lo = [builder.shuffle_vector(rows[2 * p], rows[2 * p + 1], _mask(j for l in range(8) for j in (l, 16 + l)))
          for p in range(4)]
    hi = [builder.shuffle_vector(rows[2 * p], rows[2 * p + 1], _mask(j for l in range(8, 16) for j in (l, 16 + l)))
          for p in range(4)]

    def stage2(a, b):
        # rows 0-1 (a) and 2-3 (b) of a quad: lanes 0-3 of the half -> q0, 4-7 -> q1, 4 rows each
        q0 = builder.shuffle_vector(a, b, _mask(j for l in range(4) for j in (2 * l, 2 * l + 1, 16 + 2 * l,
                                                                                17 + 2 * l)))
        q1 = builder.shuffle_vector(a, b, _mask(j for l in range(4, 8) for j in (2 * l, 2 * l + 1, 16 + 2 * l,
                                                                                   17 + 2 * l)))
        return q0, q1

    cols = [None] * 16
    for half, pairs in ((0, lo), (1, hi)):
        a0, a1 = stage2(pairs[0], pairs[1])  # rows 0-3: lanes 0-3, 4-7 of this half
        b0, b1 = stage2(pairs[2], pairs[3])  # rows 4-7
        for quarter, (qa, qb) in enumerate(((a0, b0), (a1, b1))):
            # stage 3: each lane's 4 rows from qa and 4 from qb: two lanes per 16-vector
            for pair in range(2):
                s = builder.shuffle_vector(qa, qb, _mask(
                    j for l in (2 * pair, 2 * pair + 1) for j in (4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3,
                                                                  16 + 4 * l, 17 + 4 * l, 18 + 4 * l, 19 + 4 * l)))
                for k in range(2):
                    cols[half * 8 + quarter * 4 + pair * 2 + k] = builder.shuffle_vector(
                        s, s, _mask(range(8 * k, 8 * k + 8)))
    return cols


def _pointers(context, builder, signature, args):
    ta = signature.args
    sp = context.make_array(ta[0])(context, builder, args[0]).data
    dp = context.make_array(ta[3])(context, builder, args[3]).data

    def at(base, off, mul, i, vty):
        off = builder.add(off, builder.mul(mul, ir.Constant(_I64, i)))
        return builder.bitcast(builder.gep(base, [off]), vty.as_pointer())
    return sp, dp, at


@intrinsic
def transpose_8x16(typingctx, src, soff, sstride, dst, doff, dstride):
    sig = types.void(src, soff, sstride, dst, doff, dstride)

    def codegen(context, builder, signature, args):
        _, soff_, sstride_, _, doff_, dstride_ = args
        sp, dp, at = _pointers(context, builder, signature, args)
        rows = [builder.load(at(sp, soff_, sstride_, r, _V16), align=4) for r in range(8)]
        for lane, col in enumerate(_columns(builder, rows)):
            builder.store(col, at(dp, doff_, dstride_, lane, _V8), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose_16x8(typingctx, src, soff, sstride, dst, doff, dstride):
    """dst[doff + l*dstride + r] = src[soff + r*sstride + l] for r < 16, l < 8: 16 rows of 8 (a
    block of 16 channels' rows of 8 pixels) into 8 vectors of 16 (each pixel's 16 channels)."""
    sig = types.void(src, soff, sstride, dst, doff, dstride)

    def codegen(context, builder, signature, args):
        _, soff_, sstride_, _, doff_, dstride_ = args
        sp, dp, at = _pointers(context, builder, signature, args)
        half = [builder.load(at(sp, soff_, sstride_, r, _V8), align=4) for r in range(16)]
        # rows r and r + 8 side by side: column l < 8 of these is pixel l's channels 0-7, column
        # 8 + l its channels 8-15
        rows = [builder.shuffle_vector(half[r], half[r + 8], _mask(range(16))) for r in range(8)]
        cols = _columns(builder, rows)
        for px in range(8):
            v = builder.shuffle_vector(cols[px], cols[px + 8], _mask(range(16)))
            builder.store(v, at(dp, doff_, dstride_, px, _V16), align=4)
        return context.get_dummy_value()

    return sig, codegen


def reference_transpose(src, soff, sstride, dst, doff, dstride, rows=8, lanes=16):
    """NumPy statement of one call (the tests compare transpose_8x16 and _16x8 with it)."""
    for r in range(rows):
        for lane in range(lanes):
            dst[doff + lane * dstride + r] = src[soff + r * sstride + lane]


