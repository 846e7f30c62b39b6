"""The pipelined implicit-GEMM kernels: the same three modes and arguments as gemm.py's
`gemm_kernel`, generated as straight-line source per (mode, tile, operand orders).

What differs from the tiled kernels (gemm.py), and why (static SASS of sm_90 from ptxas,
`python benchmarks/cuda_sass.py`; no GPU was at hand to time them):

* **No index division in the main loop.** The tiled kernels decompose every gathered
  element's row and reduction index with int64 divisions (n, oh, ow from m; c, kh, kw from k):
  2,300-2,900 SASS instructions per reduction step of 8, 32 of them FFMA (the 8 rank-1
  updates ran in a separate loop of 72-95 instructions per 32 FFMA). Here each load slot of a
  thread decomposes its row once, before the loop, and what the reduction index k adds to the
  operands' indices is read from a per-layer table (`k_table`, built on the host: k ->
  offsets). The first version kept k as digits (c, kh, kw) or (n, oh, ow) advanced by BK
  with two carries per slot; with the table (three broadcast loads per distinct k, their
  offsets folded into the loads) a 128x64 forward step went from 1,057 instructions to 945
  (figures in docs/cuda.md).
* **Register accumulators, unrolled.** The TM x TN accumulators, the operand registers and the
  loads are scalar variables of the generated source, not `cuda.local.array`s (which ptxas
  kept in a 128-byte stack frame for the 8x4 tile).
* **Software pipelining.** The next reduction step's operands are loaded from global memory
  into registers before the current step's rank-1 updates run from shared memory, then
  stored into the other half of a double shared buffer: one barrier per step, and the global
  loads' latency hidden behind the FFMAs.
* **8x8 register tiles** for the large tiles, read with 128-bit shared loads (64 FFMA per 4
  `LDS.128`: see `source`).
* **One test per gathered tap**: an unsigned compare per coordinate, which also rejects rows past
  the output and k past the reduction (they are given the coordinate OUTSIDE): 880 -> 856
  instructions per 128x64 forward step.

Edge tiles, groups, split-K (BWD_WEIGHT over grid z into a partial-sum workspace, reduced in a
fixed order by gemm.splitk_reduce) and the fused epilogue are as in gemm.py. FWD and BWD_DATA
also have a split-K variant (`_sk`, tune.py's candidates): partial sums, finished by
gemm.splitk_epilogue.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import linecache
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cnndsl.kernels.cuda.common import F32, I32, activate, boolean, cuda, float32, int32, int64, kernel, uint32, uint64
from cnndsl.kernels.cuda.shim import SIMULATOR, cache_policy

FWD, BWD_DATA, BWD_WEIGHT = 0, 1, 2
# The k table's columns: what the reduction index k adds to operand A's flat index and to its
# two spatial coordinates, and to operand B's flat index
TAB_O, TAB_H, TAB_W, TAB_B = range(4)
TAB_WIDTH = 4
UNROLL = 2  # rank-1 updates per iteration of the inner loop (the source's copies)
# The row coordinate given to operand A's taps that no tap can bring into range: an A row past the
# output's end starts there, and the k table's rows past the reduction's end add it, so the bounds
# test of the tap alone (one unsigned compare per coordinate) also rejects both, with no test of
# the row or of k per load. gemm._sizes keeps every real coordinate and table offset below 2**28
# in magnitude, so a sum with the sentinel stays negative and no sum overflows int32.
OUTSIDE = -(1 << 29)
MAX_EXTENT = 1 << 28


def _shared_alignment() -> bool:
    """Whether this CUDA target's shared arrays take `alignment=`: numba-cuda's do; numba's
    built-in target and the simulator's do not, and there the 128-bit shared loads become four
    scalar ones (the same results)."""
    if SIMULATOR:
        return False
    try:
        return "alignment" in inspect.signature(cuda.shared.array).parameters
    except (AttributeError, TypeError, ValueError):
        return False


_SHARED_ALIGNMENT = _shared_alignment()


def k_table(mode: int, geo, unit_stride: bool) -> np.ndarray:
    """The kernels' k table for `geo` (a ConvGeometry with its batch): row k = (A offset, A row
    offset, A column offset, B offset) of reduction index k, flat int32, MAX_BK rows past the end
    (read ahead: their A row offset is OUTSIDE, their B entries are guarded by k < kend). Per
    mode, k is
    FWD (c, kh, kw): x[(n, c, i + kh*dh, j + kw*dw)], w[f, k];
    BWD_DATA (f, kh, kw): dy[(n, f, (i - kh*dh) / sh, ...)], w[(f, c, kh, kw)];
    BWD_WEIGHT (n, oh, ow): x[(n, c, i + oh*sh, j + ow*sw)], dy[(n, f, oh, ow)]."""
    g = geo
    Cg, Fg, KHW, So, Si = g.C // g.G, g.F // g.G, g.KH * g.KW, g.OH * g.OW, g.H * g.W
    if mode == FWD:
        k1, r = np.divmod(np.arange(Cg * KHW, dtype=np.int64), KHW)
        h, w = r // g.KW * g.dh, r % g.KW * g.dw
        o, b = k1 * Si + h * g.W + w, np.zeros_like(k1)
    elif mode == BWD_DATA:
        k1, r = np.divmod(np.arange(Fg * KHW, dtype=np.int64), KHW)
        h, w = -(r // g.KW) * g.dh, -(r % g.KW) * g.dw
        o = k1 * So + (h * g.OW + w if unit_stride else 0)
        b = k1 * Cg * KHW + r
    else:
        k1, r = np.divmod(np.arange(g.N * So, dtype=np.int64), So)
        h, w = r // g.OW * g.sh, r % g.OW * g.sw
        o, b = k1 * g.C * Si + h * g.W + w, k1 * g.F * So + r
    tab = np.zeros((len(k1) + MAX_BK, TAB_WIDTH), np.int64)
    tab[:len(k1), TAB_O], tab[:len(k1), TAB_H], tab[:len(k1), TAB_W], tab[:len(k1), TAB_B] = o, h, w, b
    tab[len(k1):, TAB_H] = OUTSIDE  # loads run ahead into these rows: their A taps fail the bounds test
    return tab.astype(np.int32).ravel()


@dataclass(frozen=True)
class Tile:
    BM: int
    BN: int
    BK: int
    TM: int
    TN: int

    @property
    def threads(self) -> int:
        return (self.BM // self.TM) * (self.BN // self.TN)


TILES = {
    "p32x16": Tile(32, 16, 8, 4, 4),      # 32 threads: small problems
    "p128x16": Tile(128, 16, 8, 8, 2),    # 128 threads: few columns
    "p64x32": Tile(64, 32, 8, 4, 4),      # 128 threads
    "p128x32": Tile(128, 32, 8, 8, 4),    # 128 threads
    "p64x64": Tile(64, 64, 8, 8, 8),      # 64 threads, 64 accumulators each
    "p128x64": Tile(128, 64, 8, 8, 8),    # 128 threads
    "p128x128": Tile(128, 128, 8, 8, 8),  # 256 threads
}
MAX_BK = max(t.BK for t in TILES.values())  # the k table's rows past the reduction's end (loads run ahead)


class _Src:
    def __init__(self):
        self.lines: list[str] = []
        self.depth = 1

    def __call__(self, line: str = "") -> None:
        self.lines.append("    " * self.depth + line if line else "")

    @contextlib.contextmanager
    def indent(self):
        self.depth += 1
        yield
        self.depth -= 1


def _slots(t: Tile, rows: int, kfast: bool):
    """(row expr, k expr, guard) of each load slot of one operand: slot r of thread tid loads
    element e = tid + r * T of the BK x rows tile, k fastest or rows fastest."""
    T = t.threads
    out = []
    for r in range(-(-(rows * t.BK) // T)):
        e = f"(tid + {r * T})"
        guard = f"{e} < {rows * t.BK}" if (r + 1) * T > rows * t.BK else ""
        if kfast:
            row = f"{e} // {t.BK}"
            k = f"tid % {t.BK}" if T % t.BK == 0 else f"{e} % {t.BK}"
        else:
            row = f"tid % {rows}" if T % rows == 0 else f"{e} % {rows}"
            k = f"{e} // {rows}"
        out.append((row, k, guard))
    return out


def source(mode: int, t: Tile, a_kfast: bool, b_kfast: bool, unit_stride: bool, name: str,
           split: bool = False) -> str:
    """The kernel's Python source (see the module docstring). `split` (FWD and BWD_DATA; BWD_WEIGHT
    always splits): the reduction is split over grid z, kchunk per split, and the kernel writes raw
    partial sums out[(split * F + f) * Mdim + m] (BWD_DATA: C for F) for gemm.splitk_epilogue to
    add up and finish (bias, residual, activation). Integer arithmetic is int32:
    every integer assignment is wrapped in I(...) (numba types int32 arithmetic as int64; LLVM
    narrows the truncated result back to 32-bit instructions), and array indices are U(...)
    (uint32: no negative-index wraparound code). The host checks that every buffer has fewer
    than 2**31 elements."""
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    T, TXM, TYN = t.threads, BM // TM, BN // TN
    # Fragments: a thread's TM rows are VM runs of VM consecutive rows (tx * VM + i % VM in
    # run i // VM, the runs BM // (TM // VM) apart), likewise its TN columns, so each k step
    # reads its operands from shared memory with 128-bit loads (LDS.128, from LLVM's
    # load/store vectorizer: the buffers are 16-byte aligned and every row offset a multiple
    # of 4). Rows of the buffers are padded by 4, not 1, to keep that alignment; the k-fast
    # operand stores (8 k x 4 rows per warp) then fall in 32 different banks.
    VM, VN = min(4, TM), min(4, TN)
    RM, RN = BM // (TM // VM), BN // (TN // VN)  # the distance between a thread's runs

    def row(i: int) -> int:
        return (i // VM) * RM + i % VM

    def col(j: int) -> int:
        return (j // VN) * RN + j % VN

    BMP, BNP = BM + 4, BN + 4
    s = _Src()

    def let(var: str, expr: str) -> None:
        s(f"{var} = I({expr})")

    s.lines.append(f"def {name}(a, b, tab, bias, has_bias, res, has_res, act, alpha, out,"
                   " N, C, H, W, F, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G, kchunk):")
    aligned = ", alignment=16" if _SHARED_ALIGNMENT else ""
    s(f"As = cuda.shared.array({2 * BK * BMP}, float32{aligned})")
    s(f"Bs = cuda.shared.array({2 * BK * BNP}, float32{aligned})")
    let("tid", "cuda.threadIdx.x")
    let("tx", f"tid % {TXM}")
    let("ty", f"tid // {TXM}")
    let("m0", f"cuda.blockIdx.x * {BM}")
    let("n0", f"cuda.blockIdx.y * {BN}")
    let("Cg", "C // G")
    let("Fg", "F // G")
    let("KHW", "KH * KW")
    let("So", "OH * OW")
    let("Si", "H * W")
    if mode == BWD_WEIGHT:
        let("g", "cuda.blockIdx.z % G")
        let("split", "cuda.blockIdx.z // G")
        let("Mdim", "Cg * KHW")
        let("Ndim", "Fg")
        let("kbeg", "split * kchunk")
        let("kend", "kbeg + kchunk")
        s("if kend > N * So:")
        s("    kend = I(N * So)")
    else:
        if split:
            let("g", "cuda.blockIdx.z % G")
            let("split", "cuda.blockIdx.z // G")
        else:
            let("g", "cuda.blockIdx.z")
        if mode == FWD:
            let("Mdim", "N * So")
            let("Ndim", "Fg")
            let("ktotal", "Cg * KHW")
        else:
            let("Mdim", "N * Si")
            let("Ndim", "Cg")
            let("ktotal", "Fg * KHW")
        if split:  # kchunk is a multiple of BK: only the last split reads the table's end
            let("kbeg", "split * kchunk")
            let("kend", "kbeg + kchunk")
            s("if kend > ktotal:")
            s("    kend = ktotal")
        else:
            let("kbeg", "0")
            let("kend", "ktotal")

    # -- load slots: rows decomposed once; the reduction index k of a slot advances by BK, and
    # what k contributes to an operand's index comes from the k table (k_table): no division
    kstates: dict[str, str] = {}
    entries: dict[str, set[int]] = {}  # k-state -> the table columns its slots read

    def kstate(kexpr: str, columns: tuple[int, ...]) -> str:
        if kexpr not in kstates:
            kstates[kexpr] = f"k{len(kstates)}"
            let(kstates[kexpr], f"kbeg + {kexpr}")
        v = kstates[kexpr]
        entries.setdefault(v, set()).update(columns)
        return v

    rows: dict[tuple[str, str], str] = {}

    def row_state(op: str, rexpr: str, guard: str) -> str:
        """The names' prefix of the row state (decomposed once) of operand op's row rexpr."""
        key = (op, rexpr + guard)
        if key in rows:
            return rows[key]
        p = rows[key] = f"{op.lower()}{len(rows)}"
        if op == "A":
            # a row outside the output (or a slot outside the tile) gets the row coordinate
            # OUTSIDE: its taps fail the bounds test, which is then the loads' only test
            let(f"{p}m", f"m0 + {rexpr}")
            s(f"{p}v = {p}m < Mdim" + (f" and {guard}" if guard else ""))
            if mode == FWD:          # m = (n, oh, ow); a[o + tab_o] at (i + tab_h, j + tab_w)
                let(f"{p}n", f"{p}m // So")
                let(f"{p}q", f"{p}m - {p}n * So")
                let(f"{p}h", f"{p}q // OW")
                let(f"{p}i", f"{p}h * sh - ph")
                let(f"{p}j", f"({p}q - {p}h * OW) * sw - pw")
                let(f"{p}o", f"({p}n * C + g * Cg) * Si + {p}i * W + {p}j")
            elif mode == BWD_DATA:   # m = (n, h, w); dy taps at (i + tab_h, j + tab_w)
                let(f"{p}n", f"{p}m // Si")
                let(f"{p}q", f"{p}m - {p}n * Si")
                let(f"{p}h", f"{p}q // W")
                let(f"{p}i", f"{p}h + ph")
                let(f"{p}j", f"{p}q - {p}h * W + pw")
                let(f"{p}o", f"({p}n * F + g * Fg) * So" + (f" + {p}i * OW + {p}j" if unit_stride else ""))
            else:                    # m = (c, kh, kw)
                let(f"{p}c", f"{p}m // KHW")
                let(f"{p}q", f"{p}m - {p}c * KHW")
                let(f"{p}h", f"{p}q // KW")
                let(f"{p}i", f"{p}h * dh - ph")
                let(f"{p}j", f"({p}q - {p}h * KW) * dw - pw")
                let(f"{p}o", f"(g * Cg + {p}c) * Si + {p}i * W + {p}j")
            let(f"{p}i", f"{p}i if {p}v else {OUTSIDE}")
        else:
            let(f"{p}m", f"n0 + {rexpr}")
            s(f"{p}v = {p}m < Ndim" + (f" and {guard}" if guard else ""))
            if mode == FWD:
                let(f"{p}o", f"(g * Fg + {p}m) * (Cg * KHW)")
            elif mode == BWD_DATA:
                let(f"{p}o", f"g * Fg * Cg * KHW + {p}m * KHW")
            else:
                let(f"{p}o", f"(g * Fg + {p}m) * So")
        return p

    a_slots = _slots(t, BM, a_kfast)
    b_slots = _slots(t, BN, b_kfast)
    loads = []  # (operand, slot, row-state prefix, k-state, guard)
    for op, slots, rows_p in (("A", a_slots, BMP), ("B", b_slots, BNP)):
        for r, (rexpr, kexpr, guard) in enumerate(slots):
            ks = kstate(kexpr, (TAB_O, TAB_H, TAB_W) if op == "A" else () if mode == FWD else (TAB_B,))
            p = row_state(op, rexpr, guard)
            let(f"s{op}{r}", f"({kexpr}) * {rows_p} + {rexpr}")
            loads.append((op, r, p, ks, guard))

    def load_value(op: str, r: int, p: str, ks: str) -> None:
        """v{op}{r} = the operand element of slot r at the reduction index of state ks, whose
        table entry is in {ks}_0.. {ks}_3 (see k_table)."""
        v = f"v{op}{r}"
        s(f"{v} = float32(0.0)")
        if op == "A":
            let(f"ih{r}", f"{p}i + {ks}_{TAB_H}")
            let(f"iw{r}", f"{p}j + {ks}_{TAB_W}")
            if mode == BWD_DATA and not unit_stride:
                s(f"if ih{r} >= 0 and iw{r} >= 0:")
                with s.indent():
                    let(f"oh{r}", f"ih{r} // sh")
                    let(f"ow{r}", f"iw{r} // sw")
                    s(f"if oh{r} * sh == ih{r} and ow{r} * sw == iw{r} and oh{r} < OH and ow{r} < OW:")
                    s(f"    {v} = a[U({p}o + {ks}_{TAB_O} + oh{r} * OW + ow{r})]")
            else:
                hi, wi = ("OH", "OW") if mode == BWD_DATA else ("H", "W")
                # one unsigned compare per coordinate: a negative tap wraps past the bound
                s(f"if U(ih{r}) < U({hi}) and U(iw{r}) < U({wi}):")
                s(f"    {v} = a[U({p}o + {ks}_{TAB_O})]")
        else:
            s(f"if {p}v and {ks} < kend:")
            s(f"    {v} = b[U({p}o + {ks if mode == FWD else f'{ks}_{TAB_B}'})]")

    def load_all() -> None:
        for ks, columns in entries.items():
            if columns:  # one 64-bit base per entry: the columns' offsets fold into the loads
                s(f"{ks}_e = U64({ks} * {TAB_WIDTH})")
            for c in sorted(columns):
                let(f"{ks}_{c}", f"tab[{ks}_e + U64({c})]")
        for op, r, p, ks, _ in loads:
            load_value(op, r, p, ks)

    def store_all(buf: str) -> None:
        """Slot values into shared buffer `buf` (0 or 1, a constant or a variable's name)."""
        for op, r, _, _, guard in loads:
            arr, size = ("As", BK * BMP) if op == "A" else ("Bs", BK * BNP)
            line = f"{arr}[U({buf} * {size} + s{op}{r})] = v{op}{r}"
            s(f"if {guard}:" if guard else line)
            if guard:
                s("    " + line)

    def advance() -> None:
        for ks in kstates.values():
            let(ks, f"{ks} + {BK}")

    for i in range(TM):
        for j in range(TN):
            s(f"c{i}_{j} = float32(0.0)")
    # The pipeline, with one copy of the load and update code (numba's compile time grows with
    # the source): iteration kt loads step kt + BK into registers, runs the rank-1 updates of
    # step kt from shared buffer `buf` (from the second iteration on), then stores the
    # registers into the other buffer. One barrier per step: a buffer is written one
    # iteration after it was last read, with that iteration's barrier in between.
    let("buf", "1")
    let("kt", f"kbeg - {BK}")  # (the k-states are k0, k1, ...)
    s("while True:")
    with s.indent():
        s(f"if kt + {BK} < kend:")
        with s.indent():
            load_all()
        s("if kt >= kbeg:")
        with s.indent():
            # 64-bit unsigned shared indices: base + constant folds into the loads' offsets
            s(f"ao = U64(buf * {BK * BMP} + tx * {VM})")
            s(f"bo = U64(buf * {BK * BNP} + ty * {VN})")
            # the rank-1 updates, two per iteration in the source: the loop's overhead per 64 FFMA
            # fell from 17 instructions to 10 (p128x64 forward: 54% -> 58% FFMA per step), at
            # 0.6 s more compile time; four per iteration gave 59.5% (+1.4 s), all eight 61% (+3.3 s)
            assert BK % UNROLL == 0
            s(f"for kk in range(0, {BK}, {UNROLL}):")
            with s.indent():
                s(f"ak = ao + U64(kk * {BMP})")
                s(f"bk = bo + U64(kk * {BNP})")
                for u in range(UNROLL):
                    for i in range(TM):
                        s(f"x{i} = As[ak + U64({u * BMP + row(i)})]")
                    for j in range(TN):
                        s(f"y{j} = Bs[bk + U64({u * BNP + col(j)})]")
                    for i in range(TM):
                        for j in range(TN):
                            s(f"c{i}_{j} += x{i} * y{j}")
        s(f"if kt + {BK} >= kend:")
        s("    break")
        let("buf", "1 - buf")
        store_all("buf")
        advance()
        s("cuda.syncthreads()")
        let("kt", f"kt + {BK}")

    # -- epilogue: TM rounds; in round i every thread stages its row row(i) of the tile in
    # shared memory (As, free after the last barrier), then the block writes those TXM x BN
    # outputs with neighbouring threads on rows VM apart (4-float strides in y), through one
    # copy of the epilogue code (bias, residual, activation): unrolled per accumulator, that
    # code made 7 of the 11.6 s the 128x64 kernel took to compile.
    BNS = BN + 1
    assert TXM * BNS <= 2 * BK * BMP, "the staging rows must fit in As"
    s("cuda.syncthreads()")  # the last step's updates read As
    let("st", f"tx * {BNS} + ty * {VN}")
    s(f"for i in range({TM}):")
    with s.indent():
        for i in range(TM):
            s(f"{'if' if i == 0 else 'elif'} i == {i}:")
            with s.indent():
                for j in range(TN):
                    s(f"As[U(st + {col(j)})] = c{i}_{j}")
        s("cuda.syncthreads()")
        let("mi", f"m0 + (i // {VM}) * {RM} + i % {VM}")  # row(i) of thread tx = 0
        s(f"for e in range(tid, {TXM * BN}, {T}):")
        with s.indent():
            let("r", f"e % {TXM}")
            let("m", f"mi + r * {VM}")
            let("jn", f"n0 + e // {TXM}")
            s("if m < Mdim and jn < Ndim:")
            with s.indent():
                s(f"v = As[U(r * {BNS} + e // {TXM})]")
                if split:
                    s(f"out[U((split * {'F' if mode == FWD else 'C'} + g * Ndim + jn) * Mdim + m)] = v")
                elif mode == FWD:
                    let("n", "m // So")
                    let("o", "(n * F + g * Fg + jn) * So + m - n * So")
                    s("if has_bias:")
                    s("    v += bias[U(g * Fg + jn)]")
                    s("if has_res:")
                    s("    v += res[U(o)]")
                    s("out[U(o)] = activate(v, act, alpha)")
                elif mode == BWD_DATA:
                    let("n", "m // Si")
                    s("if has_bias:")
                    s("    v += bias[U(g * Cg + jn)]")
                    s("out[U((n * C + g * Cg + jn) * Si + m - n * Si)] = v")
                else:
                    s("out[U((split * F + g * Fg + jn) * Mdim + m)] = v")
        s("cuda.syncthreads()")
    return "\n".join(s.lines) + "\n"


@lru_cache(maxsize=None)
def pipelined_kernel(mode: int, tile: str, a_kfast: bool, b_kfast: bool, unit_stride: bool = False,
                     split: bool = False):
    """The generated kernel for one mode, tile, pair of operand orders (and, for BWD_DATA,
    whether both strides are 1: then the dy taps need no division; for FWD and BWD_DATA, whether
    it writes split-K partial sums)."""
    t = TILES[tile]
    split = split and mode != BWD_WEIGHT
    name = (f"igemm_{('fwd', 'bwd_data', 'bwd_weight')[mode]}_{tile}_{'k' if a_kfast else 'm'}"
            f"{'k' if b_kfast else 'n'}{'_s1' if unit_stride and mode == BWD_DATA else ''}{'_sk' if split else ''}")
    text = source(mode, t, a_kfast, b_kfast, unit_stride and mode == BWD_DATA, name, split)
    scope = {"cuda": cuda, "float32": float32, "activate": activate, "I": int32, "U": uint32, "U64": uint64}
    return kernel(F32, F32, I32, F32, boolean, F32, boolean, int64, float32, F32, *([int32] * 17),
                  name=name)(generated_function(name, text, scope))


def generated_function(name: str, text: str, scope: dict):
    """The function `name` that the source `text` defines, with the names of `scope` as its
    globals. In memory; with CNNDSL_CUDA_CACHE=on, from a file in the kernel cache's folder
    instead, as numba-cuda caches only functions that have a source file (its locators key the
    cache on the file's path and stamp): the file is named after a hash of `text`, written once
    (atomically) and not again while its contents match, so that its stamp, and the compiled
    kernels filed under it, stay valid. Where that folder cannot be written, in memory."""
    if cache_policy() == "on":
        with contextlib.suppress(OSError):
            return _function_from_file(name, text, scope)
    filename = f"<cnndsl generated {name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # tracebacks show the source
    exec(compile(text, filename, "exec"), scope)
    return scope[name]


def generated_path(name: str, text: str):
    """Where generated_function keeps `text` under CNNDSL_CUDA_CACHE=on."""
    from cnndsl.kernel_cache import default_cache_dir

    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return default_cache_dir() / "cuda_generated" / f"{name}_{digest}.py"


def _function_from_file(name: str, text: str, scope: dict):
    path = generated_path(name, text)
    try:
        current = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        current = None
    if current != text:  # absent, or damaged: (re)written whole
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # gone already once renamed; a half-written one is not left
    module_name = f"cnndsl_generated_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(scope)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return getattr(module, name)
