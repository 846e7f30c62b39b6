"""The weight gradient's tile on pixel vectors (direct.py's `pv` weight gradient), in LLVM IR
through Numba intrinsics like microkernel.py's tile.

For a stride-1 conv, dW[f, c, i, j] = sum over images and output pixels (oh, ow) of
dy[n, f, oh, ow] * xp[n, c, oh + i*dh, ow + j*dw]. With the lanes over 16 neighbouring output
pixels of a row, both factors are plain vector loads of rows that are contiguous in NCHW: dy's
row and the padded input's row shifted by the tap. One tile keeps RF x RX vector accumulators
(RF output channels x RX taps (c, i, j)) for the whole reduction over one image's rows,

    acc[a][b] += dy[dbase + doffs[k] + a*dstride : +16] * x[xbase + xoffs[k] + xro[b] : +16]

loaded from and stored back to `acc` (at aoff + (a*RX + b)*16), so the partial sums carry from
one image to the next in memory and are summed over the lanes once, at the end. Per step: RF + RX
loads for RF x RX FMAs (4 + 6 for 24). The channel-vector weight gradient instead needs dy
transposed into (pixels, 16 or 32 channels) blocks first, a strided gather that took 23 to 60% of
its time on 32x32 maps (channel planes 4 KB apart: the same L1 set for every channel).

RF is 4 (the caller pads dy's channels to a multiple of 4 with zero rows); RX is 1 to MAX_RX
(`code`), the taps of the last group of a layer being fewer. No bounds checks inside (an
intrinsic): the caller checks the farthest element before the first tile.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from cnndsl.kernels.cpu.common import kernel

LANES = 16
RF = 4
MAX_RX = 4
_I64 = ir.IntType(64)
_F32 = ir.FloatType()


def _make_outer(rx: int):
    vty = ir.VectorType(_F32, LANES)

    @intrinsic
    def outer(typingctx, dyf, dbase, doffs, dstride, xf, xbase, xoffs, xro, K, acc, aoff):
        sig = types.void(dyf, dbase, doffs, dstride, xf, xbase, xoffs, xro, K, acc, aoff)

        def codegen(context, builder, signature, args):
            dyf_, dbase_, doffs_, dstride_, xf_, xbase_, xoffs_, xro_, k_, acc_, aoff_ = args
            ta = signature.args

            def data(i, v):
                return context.make_array(ta[i])(context, builder, v).data

            dp, dop, xp, xop, rp, ap = (data(0, dyf_), data(2, doffs_), data(4, xf_), data(6, xoffs_),
                                        data(7, xro_), data(9, acc_))
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fma.v{LANES}f32")

            def c64(v):
                return ir.Constant(_I64, v)

            def vec_at(base, off):
                return builder.bitcast(builder.gep(base, [off]), vty.as_pointer())

            ro = [builder.add(xbase_, builder.load(builder.gep(rp, [c64(b)]))) for b in range(rx)]
            drow = [builder.add(dbase_, builder.mul(dstride_, c64(a))) for a in range(RF)]
            acc = [[cgutils.alloca_once(builder, vty) for _ in range(rx)] for _ in range(RF)]
            for a in range(RF):
                for b in range(rx):
                    off = builder.add(aoff_, c64((a * rx + b) * LANES))
                    builder.store(builder.load(vec_at(ap, off), align=4), acc[a][b])
            with cgutils.for_range(builder, k_) as loop:
                k = loop.index
                do = builder.load(builder.gep(dop, [k]))
                xo = builder.load(builder.gep(xop, [k]))
                d = [builder.load(vec_at(dp, builder.add(drow[a], do)), align=4) for a in range(RF)]
                for b in range(rx):
                    x = builder.load(vec_at(xp, builder.add(ro[b], xo)), align=4)
                    for a in range(RF):
                        builder.store(builder.call(fma, [d[a], x, builder.load(acc[a][b])]), acc[a][b])
            for a in range(RF):
                for b in range(rx):
                    off = builder.add(aoff_, c64((a * rx + b) * LANES))
                    builder.store(builder.load(acc[a][b]), vec_at(ap, off), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return outer


for _rx in range(1, MAX_RX + 1):
    globals()[f"_o{_rx}"] = _make_outer(_rx)


# Written out, not generated: Numba's on-disk cache needs the function's source file
# (tests/kernels/test_kernels_direct_conv.py checks each line calls the tile of its RX).
@kernel
def outer_tile(rx, dyf, dbase, doffs, dstride, xf, xbase, xoffs, xro, K, acc, aoff):
    """RF x rx accumulators of 16 lanes over K steps (see the module's docstring)."""
    a = (dyf, dbase, doffs, dstride, xf, xbase, xoffs, xro, K, acc, aoff)
    if rx == 1: _o1(*a)  # noqa: E701 (one line per tile keeps the table readable)
    elif rx == 2: _o2(*a)  # noqa: E701
    elif rx == 3: _o3(*a)  # noqa: E701
    elif rx == 4: _o4(*a)  # noqa: E701


def reference_outer(rx, dyf, dbase, doffs, dstride, xf, xbase, xoffs, xro, K, acc, aoff):
    """NumPy statement of one call (the tests compare outer_tile with it)."""
    for a in range(RF):
        for b in range(rx):
            o = aoff + (a * rx + b) * LANES
            s = acc[o:o + LANES].astype(np.float64)
            for k in range(K):
                d0 = dbase + doffs[k] + a * dstride
                x0 = xbase + xoffs[k] + xro[b]
                s += dyf[d0:d0 + LANES].astype(np.float64) * xf[x0:x0 + LANES]
            acc[o:o + LANES] = s
