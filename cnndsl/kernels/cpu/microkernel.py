"""The multiply-accumulate tile at the core of the direct convolution (cnndsl/kernels/cpu/direct.py),
written in LLVM IR through Numba intrinsics, with explicit vector types.

One tile computes, for r < RB and the VF = NV x LANES lanes l of a channel block,

    out[ooff + r*ors + l] = init[ioff + r*irs + l] + sum over k < K of
                            xf[xbase + xoffs[k] + xro[r]] * wf[wbase + k*VF + l]           (code = RB)
                            ... * wf[wbase + woffs[k] + l]    (code = 100 + RB)

with the RB x NV accumulators held in vector registers for the whole reduction: per k, NV vector
loads of `wf`, RB broadcasts of `xf`, RB x NV fused multiply-adds. One call runs `nrep` such tiles,
tile q with every base moved by q steps (xbase + q*xstep, wbase + q*wstep, ioff + q*istep,
ooff + q*ostep): a row's tiles, or one tap group over every input channel. A call costs about
80 ns before its first FMA (its array arguments are passed as structs through two functions),
which was a third of a 16-channel 3x3 tile's time, one call per tile. The three offset tables make the
one tile serve every pass:
    forward        k = (input channel, kernel row, kernel column), r = output pixel of a row,
                   xf = the padded input, wf = the weights in (F/VF, C*KH*KW, VF) blocks;
    forward, pixel vectors (few output channels, stride 1): r = output channel, the lanes = VF
                   neighbouring output pixels, xf = the weights (F, C*KH*KW), wf = the padded input;
    input gradient the forward on dy padded by the flipped window, channels swapped;
    weight grad.   k = output pixel, r = kernel tap, wf = dy in (N, F/VF, OH*OW, VF) blocks.

Why IR and not Python loops: LLVM keeps accumulators in registers only when they are SSA values,
so the previous kernels were generated Python with RB x VF scalar locals, vectorized by LLVM's
SLP vectorizer (2,100 generated lines). That packing depended on the CPU's cost model: on this
project's Zen 5 machine (2026-12-02, quiet) the (6, 32) tile came out as a mix of scalar, xmm and
zmm FMAs and ran at 4.7 GFLOP/s, the (4, 32) one at 126, and the variants took 5 to 19 s each to
compile. Written as `<16 x float>` values and `llvm.fma` calls, the loop is the same zmm code on
every AVX-512 CPU (vbroadcastss from memory, vfmadd231ps; checked with inspect_asm) and compiles in
well under a second per variant. One (9, 32) tile call with K = 1024 runs at 228 GFLOP/s on one
core of the Zen 5 machine (18 FMAs per step, about two per cycle); a (14, 16) one at 160, bound by
its 15 loads per 14 FMAs (2026-12-02, other jobs paused; docs/performance.md has the convs).
On a CPU without AVX-512 LLVM splits each vector into what the CPU has (two ymm, or four xmm).

The accumulators are `alloca`s that LLVM's mem2reg turns into registers; the tile has no bounds
checks (NUMBA_BOUNDSCHECK cannot see inside an intrinsic), so its callers check the farthest
element any of their calls reads, once per launch (direct.py: conv_direct, wgrad_direct).

Variants: `tile_v{VF}(code, ...)` dispatches on a small integer `code` (RB, or TABLE + RB); each VF
has its own dispatch function, so a network compiles only the VF classes its layers use (each class
is one Numba compilation of a few seconds, cached on disk like every kernel).
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from cnndsl.kernels.cpu.common import kernel

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()

# VF -> (LANES, NV): VF = 8 is one 256-bit vector (8 channels or fewer would waste half of a 512-bit
# one), 16 one 512-bit vector, 32 two of them.
SHAPES = {8: (8, 1), 16: (16, 1), 32: (16, 2)}
# The tile sizes RB each VF offers: with NV vectors per pixel, RB x NV accumulators; a core keeps two
# 4-cycle FMAs in flight per cycle, so 8 or more independent accumulators keep it busy (fewer serve
# the smallest rows and the weight gradient's 1 x 1 windows). RB x NV stays at 18 or below, which
# with the NV weight vectors and one broadcast fits the 32 vector registers of AVX-512.
MAX_RB = {8: 14, 16: 14, 32: 9}
# The tiles with a table of wf offsets (code TABLE + RB): the pixel-vector forward (direct.py's pv
# mode) reads its vectors from the input at (channel, kernel row, column) offsets that are not
# affine in k. RB there is the output channel count, up to PV_MAX_RB.
TABLE = 100
PV_SHAPES = (16, 32)
PV_MAX_RB = 8


def _vector_file() -> tuple[int, int]:
    """(float lanes per vector register, vector registers) of the CPU Numba compiles for: AVX-512
    (16, 32), AVX/AVX2 (8, 16), else SSE's (4, 16). Numba's NUMBA_CPU_FEATURES, where set, names
    that CPU's features; NUMBA_CPU_NAME=generic (portable code) has SSE2's; otherwise the host's."""
    if config.CPU_FEATURES:
        on = {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    elif config.CPU_NAME == "generic":
        on = set()
    else:
        on = {name for name, flag in ll.get_host_cpu_features().items() if flag}
    if "avx512f" in on:
        return 16, 32
    return (8, 16) if "avx" in on else (4, 16)


def widest_block(lanes: int) -> int:
    """The widest channel block a planner takes on a CPU with vectors of this many floats: two of
    its vectors (32 channels on AVX-512, 16 on AVX2 and below), so that a tile has room for several
    pixels' accumulators."""
    return 32 if lanes >= 16 else 16


VECTOR_LANES, VECTOR_REGISTERS = _vector_file()
VF_MAX = widest_block(VECTOR_LANES)


def registers(vf: int) -> int:
    """The CPU's vector registers one VF-lane vector takes (LLVM splits a <16 x float> into two
    ymm registers on AVX2)."""
    return -(-vf // VECTOR_LANES)


def fit_rb(vf: int, cap: int | None = None) -> int:
    """The largest RB whose tile keeps its RB x registers(vf) accumulators, the weight vectors and
    one broadcast in the CPU's vector registers, at most cap (MAX_RB[vf] by default). On AVX-512 the
    caps bind (the same tiles as before); on AVX2 (16 ymm registers) a spilled tile ran at half
    speed: one core of the AMD EPYC (Zen 3), K = 256, GFLOP/s by RB, 2026-12-04 quiet:
        VF 8:  RB 8 69, 10 80-82, 12 65, 14 50
        VF 16: RB 4 97, 5 99, 6 100, 7 36, 8 54, 14 33     (6 is the last that fits: 12 + 2 + 1)
        VF 32: RB 2 85, 3 43, 8 39, 9 38                   (2 is the last that fits: 8 + 4 + 1)"""
    n = registers(vf)
    return max(1, min(MAX_RB[vf] if cap is None else cap, (VECTOR_REGISTERS - n - 1) // n))


def _make_tile(rb: int, lanes: int, nv: int, table: bool = False):
    vty = ir.VectorType(_F32, lanes)
    splat = ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes)
    undef = ir.Constant(vty, ir.Undefined)

    @intrinsic
    def tile(typingctx, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
             wstep, istep, ostep):
        sig = types.void(xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
                         wstep, istep, ostep)

        def codegen(context, builder, signature, args):
            (xf_, xbase_, xoffs_, xro_, wf_, wbase_, woffs_, k_, init_, ioff_, irs_, out_, ooff_, ors_, nrep_, xstep_,
             wstep_, istep_, ostep_) = args
            ta = signature.args

            def data(i, v):
                # an array (a caller compiled with arrays: the tests) or its data pointer (the
                # C entries below, ENTRY_SIG)
                if isinstance(ta[i], types.CPointer):
                    return v
                return context.make_array(ta[i])(context, builder, v).data

            xp, op, rp, wp, wop, ip, outp = (data(0, xf_), data(2, xoffs_), data(3, xro_), data(4, wf_),
                                             data(6, woffs_), data(8, init_), data(11, out_))
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fma.v{lanes}f32")

            def c64(v):
                return ir.Constant(_I64, v)

            def vec_at(base, off):
                return builder.bitcast(builder.gep(base, [off]), vty.as_pointer())

            ro = [builder.load(builder.gep(rp, [c64(r)])) for r in range(rb)]
            acc = [[cgutils.alloca_once(builder, vty) for _ in range(nv)] for _ in range(rb)]
            with cgutils.for_range(builder, nrep_) as rep:
                q = rep.index
                rofs = [builder.add(builder.add(xbase_, builder.mul(q, xstep_)), ro[r]) for r in range(rb)]
                wq = builder.add(wbase_, builder.mul(q, wstep_))
                iq = builder.add(ioff_, builder.mul(q, istep_))
                oq = builder.add(ooff_, builder.mul(q, ostep_))
                for r in range(rb):
                    row = builder.add(iq, builder.mul(irs_, c64(r)))
                    for v in range(nv):
                        builder.store(builder.load(vec_at(ip, builder.add(row, c64(v * lanes))), align=4),
                                      acc[r][v])
                with cgutils.for_range(builder, k_) as loop:
                    k = loop.index
                    xo = builder.load(builder.gep(op, [k]))
                    # an affine offset where it is one: the table's extra load per step cost the 3x3
                    # 64->64 56x56 forward 12% (280 -> 244 GFLOP/s). Its stride is the constant VF:
                    # as a run-time argument (as it was) the same loop ran 1.46x slower (a (9, 32)
                    # tile, K = 256, called through tile_v32: 935 against 639 ns; Zen 5, 2026-12-02)
                    wo = builder.add(wq, builder.load(builder.gep(wop, [k])) if table else
                                     builder.mul(k, c64(lanes * nv)))
                    w = [builder.load(vec_at(wp, builder.add(wo, c64(v * lanes))), align=4) for v in range(nv)]
                    for r in range(rb):
                        s = builder.load(builder.gep(xp, [builder.add(rofs[r], xo)]))
                        b = builder.shuffle_vector(builder.insert_element(undef, s, ir.Constant(_I32, 0)), undef,
                                                   splat)
                        for v in range(nv):
                            builder.store(builder.call(fma, [b, w[v], builder.load(acc[r][v])]), acc[r][v])
                for r in range(rb):
                    row = builder.add(oq, builder.mul(ors_, c64(r)))
                    for v in range(nv):
                        builder.store(builder.load(acc[r][v]), vec_at(outp, builder.add(row, c64(v * lanes))),
                                      align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# The intrinsics, as module globals the dispatch functions below name (Numba resolves globals at
# compile time; a table indexed at run time would not be a constant).
for _vf, (_lanes, _nv) in SHAPES.items():
    for _rb in range(1, MAX_RB[_vf] + 1):
        globals()[f"_t{_vf}_{_rb}"] = _make_tile(_rb, _lanes, _nv)
    if _vf in PV_SHAPES:
        for _rb in range(1, PV_MAX_RB + 1):
            globals()[f"_t{_vf}_{TABLE + _rb}"] = _make_tile(_rb, _lanes, _nv, table=True)


# One dispatch function per VF. Written out (not generated) so that Numba's on-disk cache, which
# needs a function's source file, works for them; tests/kernels/test_kernels_direct_conv.py checks
# that each calls every tile of its class with the matching RB.
@kernel
def tile_v8(code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
            wstep, istep, ostep):
    a = (xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep, istep, ostep)
    if code == 1: _t8_1(*a)  # noqa: E701 (one line per tile keeps the table readable)
    elif code == 2: _t8_2(*a)  # noqa: E701
    elif code == 3: _t8_3(*a)  # noqa: E701
    elif code == 4: _t8_4(*a)  # noqa: E701
    elif code == 5: _t8_5(*a)  # noqa: E701
    elif code == 6: _t8_6(*a)  # noqa: E701
    elif code == 7: _t8_7(*a)  # noqa: E701
    elif code == 8: _t8_8(*a)  # noqa: E701
    elif code == 9: _t8_9(*a)  # noqa: E701
    elif code == 10: _t8_10(*a)  # noqa: E701
    elif code == 11: _t8_11(*a)  # noqa: E701
    elif code == 12: _t8_12(*a)  # noqa: E701
    elif code == 13: _t8_13(*a)  # noqa: E701
    elif code == 14: _t8_14(*a)  # noqa: E701


@kernel
def tile_v16(code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
             wstep, istep, ostep):
    a = (xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep, istep, ostep)
    if code == 1: _t16_1(*a)  # noqa: E701
    elif code == 2: _t16_2(*a)  # noqa: E701
    elif code == 3: _t16_3(*a)  # noqa: E701
    elif code == 4: _t16_4(*a)  # noqa: E701
    elif code == 5: _t16_5(*a)  # noqa: E701
    elif code == 6: _t16_6(*a)  # noqa: E701
    elif code == 7: _t16_7(*a)  # noqa: E701
    elif code == 8: _t16_8(*a)  # noqa: E701
    elif code == 9: _t16_9(*a)  # noqa: E701
    elif code == 10: _t16_10(*a)  # noqa: E701
    elif code == 11: _t16_11(*a)  # noqa: E701
    elif code == 12: _t16_12(*a)  # noqa: E701
    elif code == 13: _t16_13(*a)  # noqa: E701
    elif code == 14: _t16_14(*a)  # noqa: E701
    elif code == 101: _t16_101(*a)  # noqa: E701
    elif code == 102: _t16_102(*a)  # noqa: E701
    elif code == 103: _t16_103(*a)  # noqa: E701
    elif code == 104: _t16_104(*a)  # noqa: E701
    elif code == 105: _t16_105(*a)  # noqa: E701
    elif code == 106: _t16_106(*a)  # noqa: E701
    elif code == 107: _t16_107(*a)  # noqa: E701
    elif code == 108: _t16_108(*a)  # noqa: E701


@kernel
def tile_v32(code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep,
             wstep, istep, ostep):
    a = (xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep, istep, ostep)
    if code == 1: _t32_1(*a)  # noqa: E701
    elif code == 2: _t32_2(*a)  # noqa: E701
    elif code == 3: _t32_3(*a)  # noqa: E701
    elif code == 4: _t32_4(*a)  # noqa: E701
    elif code == 5: _t32_5(*a)  # noqa: E701
    elif code == 6: _t32_6(*a)  # noqa: E701
    elif code == 7: _t32_7(*a)  # noqa: E701
    elif code == 8: _t32_8(*a)  # noqa: E701
    elif code == 9: _t32_9(*a)  # noqa: E701
    elif code == 101: _t32_101(*a)  # noqa: E701
    elif code == 102: _t32_102(*a)  # noqa: E701
    elif code == 103: _t32_103(*a)  # noqa: E701
    elif code == 104: _t32_104(*a)  # noqa: E701
    elif code == 105: _t32_105(*a)  # noqa: E701
    elif code == 106: _t32_106(*a)  # noqa: E701
    elif code == 107: _t32_107(*a)  # noqa: E701
    elif code == 108: _t32_108(*a)  # noqa: E701


TILES = {8: tile_v8, 16: tile_v16, 32: tile_v32}


def reference_tile(code, vf, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep=1,
                   xstep=0, wstep=0, istep=0, ostep=0):
    """NumPy statement of what one call computes (the tests compare the intrinsics with it)."""
    rb = code % TABLE
    for q in range(nrep):
        for r in range(rb):
            i0, o0 = ioff + q * istep + r * irs, ooff + q * ostep + r * ors
            acc = init[i0:i0 + vf].astype(np.float64)
            for k in range(K):
                wo = wbase + q * wstep + (woffs[k] if code > TABLE else k * vf)
                acc += float(xf[xbase + q * xstep + xoffs[k] + xro[r]]) * wf[wo:wo + vf]
            out[o0:o0 + vf] = acc


# ----------------------------------------------------------------------------
# The tile classes as C functions, called by address (call_tile), so that a caller does not
# compile them again. Numba links a callee's LLVM IR into every caller's module and optimizes and
# codegens it again there (CPUCodeLibrary.finalize): the three dispatch functions above are about
# 17,000 LLVM instructions (7,100 for VF 16), and the direct convolution's chains
# (_tile -> _conv_band -> conv_direct, the parallel driver's gufunc, its wrapper and the driver;
# _wgrad_image_block -> _wgrad_image -> wgrad_direct, _wgrad_parallel) carried them through eleven
# libraries of about 20,000 instructions each, 1.2 to 1.8 CPU s of LLVM each, about 16 of
# LeNet-5's 57 compile CPU s in one process (docs/performance.md, "Compile time", 2026-12-02).
#
# Each class is the dispatch function above compiled once more for raw pointers (ENTRY_SIG); its
# C wrapper's address (Numba makes one for every compiled function) goes into a table in this
# process's memory, whose address LLVM's symbol table knows by the name ENTRY_SYMBOL from this
# module's import on. A caller's machine code names the table, never an address, so it stays
# cacheable: each process fills the table before any such code runs, when a caller is compiled
# (call_tile's typing) or loaded from the cache (Numba runs a cached function's `reload_init`
# before loading it; kernel_cache.keep_reload_init makes callers compiled against a cached
# caller keep it).

_P32 = types.CPointer(types.float32)
_P64 = types.CPointer(types.int64)
_I = types.int64
# (code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep,
#  istep, ostep), the arrays as pointers to their first element
ENTRY_SIG = types.void(_I, _P32, _I, _P64, _P64, _P32, _I, _P64, _I, _P32, _I, _I, _P32, _I, _I, _I, _I, _I, _I, _I)
_POINTER_ARGS = {1: types.float32, 3: types.int64, 4: types.int64, 5: types.float32, 7: types.int64,
                 9: types.float32, 12: types.float32}  # ENTRY_SIG's positions, less the code
ENTRY_SYMBOL = "cnndsl_microkernel_tile_entries"
ENTRY_VFS = tuple(sorted(SHAPES))  # the table's order


def _entry_table():
    addr = ll.address_of_symbol(ENTRY_SYMBOL)
    if addr:  # this module imported again (importlib.reload): the machine code loaded already names that table
        return (ctypes.c_void_p * len(ENTRY_VFS)).from_address(addr)
    table = (ctypes.c_void_p * len(ENTRY_VFS))()
    ll.add_symbol(ENTRY_SYMBOL, ctypes.addressof(table))
    return table


_ENTRIES = _entry_table()


# The classes this CPU's plans use (VF <= VF_MAX): on AVX2 the VF 32 class never is, and its entry,
# 1.27 CPU s of LeNet-5's cold compile on the AMD EPYC (Zen 3), on the critical path of the compile
# pool (its conv unit, 12.7 CPU s; benchmarks/compile_time.py, 2026-12-04), is compiled only when
# something asks for it (require).
PLANNED_VFS = tuple(vf for vf in ENTRY_VFS if vf <= VF_MAX)


def install_entries(vfs: tuple = PLANNED_VFS) -> None:
    """Compile (or load from the cache) the C entries of the tile classes vfs (by default those
    this CPU's plans use) and put their addresses in the table. Idempotent: a check once done."""
    for vf in vfs:
        i = ENTRY_VFS.index(vf)
        if _ENTRIES[i]:
            continue
        d = TILES[vf]
        if ENTRY_SIG.args not in d.overloads:
            d.compile(ENTRY_SIG.args)
        cres = d.overloads[ENTRY_SIG.args]
        _ENTRIES[i] = cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)


def require(vf: int) -> None:
    """The entry of the class a plan with this VF calls, installed: every launcher that runs a
    plan calls this first, so a plan made for another CPU's registers (the tests make them) finds
    its class, not an empty slot (call_tile aborts on one). Costs an index and a test once done."""
    i = ENTRY_VFS.index(vf) if vf in ENTRY_VFS else len(ENTRY_VFS) - 1  # another value: the VF 32 class
    if not _ENTRIES[i]:
        install_entries((ENTRY_VFS[i],))


def entry_address(vf: int) -> int:
    """The C entry of class vf, installed (tests)."""
    require(vf)
    return _ENTRIES[ENTRY_VFS.index(vf)]


@intrinsic
def call_tile(typingctx, vf, code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep,
              xstep, wstep, istep, ostep):
    """tile_v{vf}(code, ...) through the table: the tile class vf (8, 16 or 32; another value is
    the VF 32 class, as the dispatch in direct._tile was) on arrays of float32 and int64 (the
    tile's arguments, 1-D, contiguous), the other arguments integers."""
    rest = (xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep, istep,
            ostep)
    for i, t in enumerate(rest, start=1):
        want = _POINTER_ARGS.get(i)
        if want is None:
            if not isinstance(t, types.Integer):
                return None
        elif not (isinstance(t, types.Array) and t.dtype == want and t.ndim == 1):
            return None
    if not (isinstance(vf, types.Integer) and isinstance(code, types.Integer)):
        return None
    install_entries()  # a caller compiled in this process runs at once, no reload_init in between
    sig = types.void(vf, code, *rest)

    def codegen(context, builder, signature, args):
        # a process that loads this caller (or one that links it) from the cache fills the table first
        context.active_code_library._reload_init.add(install_entries)
        argtys = signature.args
        cargs = [context.cast(builder, args[1], argtys[1], types.int64)]
        for i in range(1, len(ENTRY_SIG.args)):
            v, t = args[i + 1], argtys[i + 1]
            if i in _POINTER_ARGS:
                cargs.append(context.make_array(t)(context, builder, v).data)
            else:
                cargs.append(context.cast(builder, v, t, types.int64))
        fnty = ir.FunctionType(context.get_value_type(types.none),
                               [context.get_value_type(t) for t in ENTRY_SIG.args])
        mod = builder.module
        tty = ir.ArrayType(ir.IntType(8).as_pointer(), len(ENTRY_VFS))
        table = mod.globals.get(ENTRY_SYMBOL)
        if table is None:
            table = ir.GlobalVariable(mod, tty, ENTRY_SYMBOL)  # no initializer: external, resolved by name
        v64 = context.cast(builder, args[0], argtys[0], types.int64)
        idx = builder.select(builder.icmp_signed("==", v64, ir.Constant(_I64, 8)), ir.Constant(_I32, 0),
                             builder.select(builder.icmp_signed("==", v64, ir.Constant(_I64, 16)),
                                            ir.Constant(_I32, 1), ir.Constant(_I32, 2)))
        fp = builder.load(builder.gep(table, [ir.Constant(_I32, 0), idx]))
        with builder.if_then(cgutils.is_null(builder, fp), likely=False):
            # cannot happen when the process filled the table (see above); a clear death, not a jump to 0
            cgutils.printf(builder, "cnndsl: microkernel tile entries not installed "
                                    "(microkernel.install_entries, microkernel.require)\n")
            abort = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), []), "abort")
            builder.call(abort, [])
            builder.unreachable()
        builder.call(builder.bitcast(fp, fnty.as_pointer()), cargs)
        return context.get_dummy_value()

    return sig, codegen
