"""The pipelined implicit-GEMM kernels: the same three modes and arguments as gemm.py's
`gemm_kernel`, generated as straight-line source per (mode, tile, operand orders).

What differs from the tiled kernels (gemm.py), and why (static SASS of sm_90 from ptxas,
`python benchmarks/cuda_sass.py`; no GPU was at hand to time them):

* **No index division in the main loop.** The tiled kernels decompose every gathered
  element's row and reduction index with int64 divisions (n, oh, ow from m; c, kh, kw from k):
  2,300-2,900 SASS instructions per reduction step of 8, 32 of them FFMA (the 8 rank-1
  updates ran in a separate loop of 72-95 instructions per 32 FFMA). Here each load slot of a
  thread decomposes its row once, before the loop, and keeps its reduction index as digits
  (c, kh, kw) or (n, oh, ow) that advance by BK with two carries: no division after the
  prologue.
* **Register accumulators, unrolled.** The TM x TN accumulators, the operand registers and the
  loads are scalar variables of the generated source, not `cuda.local.array`s (which ptxas
  kept in a 128-byte stack frame for the 8x4 tile).
* **Software pipelining.** The next reduction step's operands are loaded from global memory
  into registers before the current step's rank-1 updates run from shared memory, then
  stored into the other half of a double shared buffer: one barrier per step, and the global
  loads' latency hidden behind the FFMAs.
* **8x8 register tiles** for the large tiles (64 FFMA per 16 shared loads).

Edge tiles, groups, split-K (BWD_WEIGHT over grid z into a partial-sum workspace, reduced in a
fixed order by gemm.splitk_reduce) and the fused epilogue are as in gemm.py.
"""
from __future__ import annotations

import contextlib
import linecache
from dataclasses import dataclass
from functools import lru_cache

from cnndsl.kernels.cuda.common import F32, activate, boolean, cuda, float32, int32, int64, kernel, uint32, uint64
from cnndsl.kernels.cuda.shim import SIMULATOR

FWD, BWD_DATA, BWD_WEIGHT = 0, 1, 2


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


def source(mode: int, t: Tile, a_kfast: bool, b_kfast: bool, unit_stride: bool, name: str) -> str:
    """The kernel's Python source (see the module docstring). Integer arithmetic is int32:
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

    s.lines.append(f"def {name}(a, b, bias, has_bias, res, has_res, act, alpha, out,"
                   " N, C, H, W, F, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G, kchunk):")
    aligned = "" if SIMULATOR else ", alignment=16"  # (the simulator's arrays take no alignment)
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
        let("R2", "OH")
        let("R3", "OW")
    else:
        let("g", "cuda.blockIdx.z")
        let("kbeg", "0")
        if mode == FWD:
            let("Mdim", "N * So")
            let("Ndim", "Fg")
            let("kend", "Cg * KHW")
        else:
            let("Mdim", "N * Si")
            let("Ndim", "Cg")
            let("kend", "Fg * KHW")
        let("R2", "KH")
        let("R3", "KW")
    # the reduction index k as digits (d1, d2, d3) of radices (-, R2, R3); one step of BK is
    # (s1, s2, s3) in those digits
    let("s3", f"{BK} % R3")
    let("s2", f"({BK} // R3) % R2")
    let("s1", f"{BK} // (R2 * R3)")

    # -- load slots: rows decomposed once, reduction states shared where the k index is --
    kstates: dict[str, str] = {}
    digits: set[str] = set()

    def kstate(kexpr: str, need_digits: bool) -> str:
        if kexpr in kstates:
            v = kstates[kexpr]
        else:
            v = kstates[kexpr] = f"k{len(kstates)}"
            let(v, f"kbeg + {kexpr}")
        if need_digits and v not in digits:
            digits.add(v)
            let(f"{v}_1", f"{v} // (R2 * R3)")
            let(f"{v}_r", f"{v} - {v}_1 * (R2 * R3)")
            let(f"{v}_2", f"{v}_r // R3")
            let(f"{v}_3", f"{v}_r - {v}_2 * R3")
        return v

    rows: dict[tuple[str, str], str] = {}

    def row_state(op: str, rexpr: str, guard: str) -> str:
        """The names' prefix of the row state (decomposed once) of operand op's row rexpr."""
        key = (op, rexpr + guard)
        if key in rows:
            return rows[key]
        p = rows[key] = f"{op.lower()}{len(rows)}"
        if op == "A":
            let(f"{p}m", f"m0 + {rexpr}")
            s(f"{p}v = {p}m < Mdim" + (f" and {guard}" if guard else ""))
            if mode == FWD:          # m = (n, oh, ow)
                let(f"{p}n", f"{p}m // So")
                let(f"{p}q", f"{p}m - {p}n * So")
                let(f"{p}h", f"{p}q // OW")
                let(f"{p}b", f"({p}n * C + g * Cg) * Si")
                let(f"{p}i", f"{p}h * sh - ph")
                let(f"{p}j", f"({p}q - {p}h * OW) * sw - pw")
            elif mode == BWD_DATA:   # m = (n, h, w)
                let(f"{p}n", f"{p}m // Si")
                let(f"{p}q", f"{p}m - {p}n * Si")
                let(f"{p}h", f"{p}q // W")
                let(f"{p}b", f"({p}n * F + g * Fg) * So")
                let(f"{p}i", f"{p}h + ph")
                let(f"{p}j", f"{p}q - {p}h * W + pw")
            else:                    # m = (c, kh, kw)
                let(f"{p}c", f"{p}m // KHW")
                let(f"{p}q", f"{p}m - {p}c * KHW")
                let(f"{p}h", f"{p}q // KW")
                let(f"{p}b", f"(g * Cg + {p}c) * Si")
                let(f"{p}i", f"{p}h * dh - ph")
                let(f"{p}j", f"({p}q - {p}h * KW) * dw - pw")
        else:
            let(f"{p}m", f"n0 + {rexpr}")
            s(f"{p}v = {p}m < Ndim" + (f" and {guard}" if guard else ""))
            if mode == FWD:
                let(f"{p}b", f"(g * Fg + {p}m) * (Cg * KHW)")
            elif mode == BWD_DATA:
                let(f"{p}b", f"{p}m * KHW")
            else:
                let(f"{p}b", f"(g * Fg + {p}m) * So")
        return p

    a_slots = _slots(t, BM, a_kfast)
    b_slots = _slots(t, BN, b_kfast)
    loads = []  # (operand, slot, row-state prefix, k-state, shared index expression, guard)
    for op, slots, rows_p in (("A", a_slots, BMP), ("B", b_slots, BNP)):
        for r, (rexpr, kexpr, guard) in enumerate(slots):
            ks = kstate(kexpr, op == "A" or mode != FWD)
            p = row_state(op, rexpr, guard)
            let(f"s{op}{r}", f"({kexpr}) * {rows_p} + {rexpr}")
            loads.append((op, r, p, ks, guard))

    def load_value(op: str, r: int, p: str, ks: str) -> None:
        """v{op}{r} = the operand element of slot r at the reduction index of state ks."""
        d1, d2, d3 = f"{ks}_1", f"{ks}_2", f"{ks}_3"
        v = f"v{op}{r}"
        s(f"{v} = float32(0.0)")
        if op == "A":
            if mode == FWD:
                let(f"ih{r}", f"{p}i + {d2} * dh")
                let(f"iw{r}", f"{p}j + {d3} * dw")
                s(f"if {p}v and {ks} < kend and ih{r} >= 0 and ih{r} < H and iw{r} >= 0 and iw{r} < W:")
                s(f"    {v} = a[U({p}b + {d1} * Si + ih{r} * W + iw{r})]")
            elif mode == BWD_DATA:
                let(f"th{r}", f"{p}i - {d2} * dh")
                let(f"tw{r}", f"{p}j - {d3} * dw")
                if unit_stride:
                    s(f"if {p}v and {ks} < kend and th{r} >= 0 and th{r} < OH and tw{r} >= 0 and tw{r} < OW:")
                    s(f"    {v} = a[U({p}b + {d1} * So + th{r} * OW + tw{r})]")
                else:
                    s(f"if {p}v and {ks} < kend and th{r} >= 0 and tw{r} >= 0:")
                    with s.indent():
                        let(f"oh{r}", f"th{r} // sh")
                        let(f"ow{r}", f"tw{r} // sw")
                        s(f"if oh{r} * sh == th{r} and ow{r} * sw == tw{r} and oh{r} < OH and ow{r} < OW:")
                        s(f"    {v} = a[U({p}b + {d1} * So + oh{r} * OW + ow{r})]")
            else:
                let(f"ih{r}", f"{p}i + {d2} * sh")
                let(f"iw{r}", f"{p}j + {d3} * sw")
                s(f"if {p}v and {ks} < kend and ih{r} >= 0 and ih{r} < H and iw{r} >= 0 and iw{r} < W:")
                s(f"    {v} = a[U({d1} * C * Si + {p}b + ih{r} * W + iw{r})]")
        else:
            s(f"if {p}v and {ks} < kend:")
            if mode == FWD:
                s(f"    {v} = b[U({p}b + {ks})]")
            elif mode == BWD_DATA:
                s(f"    {v} = b[U((g * Fg + {d1}) * Cg * KHW + {p}b + {d2} * KW + {d3})]")
            else:
                s(f"    {v} = b[U({d1} * F * So + {p}b + {d2} * OW + {d3})]")

    def load_all() -> None:
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
            if ks in digits:
                let(f"{ks}_3", f"{ks}_3 + s3")
                let(f"{ks}_2", f"{ks}_2 + s2")
                s(f"if {ks}_3 >= R3:")
                s(f"    {ks}_3 = I({ks}_3 - R3)")
                s(f"    {ks}_2 = I({ks}_2 + 1)")
                let(f"{ks}_1", f"{ks}_1 + s1")
                s(f"if {ks}_2 >= R2:")
                s(f"    {ks}_2 = I({ks}_2 - R2)")
                s(f"    {ks}_1 = I({ks}_1 + 1)")

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
            s(f"for kk in range({BK}):")
            with s.indent():
                s(f"ak = ao + U64(kk * {BMP})")
                s(f"bk = bo + U64(kk * {BNP})")
                for i in range(TM):
                    s(f"x{i} = As[ak + U64({row(i)})]")
                for j in range(TN):
                    s(f"y{j} = Bs[bk + U64({col(j)})]")
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
                if mode == FWD:
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
def pipelined_kernel(mode: int, tile: str, a_kfast: bool, b_kfast: bool, unit_stride: bool = False):
    """The generated kernel for one mode, tile, pair of operand orders (and, for BWD_DATA,
    whether both strides are 1: then the dy taps need no division)."""
    t = TILES[tile]
    name = (f"igemm_{('fwd', 'bwd_data', 'bwd_weight')[mode]}_{tile}_{'k' if a_kfast else 'm'}"
            f"{'k' if b_kfast else 'n'}{'_s1' if unit_stride and mode == BWD_DATA else ''}")
    text = source(mode, t, a_kfast, b_kfast, unit_stride and mode == BWD_DATA, name)
    filename = f"<cnndsl generated {name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # tracebacks show the source
    scope = {"cuda": cuda, "float32": float32, "activate": activate, "I": int32, "U": uint32, "U64": uint64}
    exec(compile(text, filename, "exec"), scope)
    return kernel(F32, F32, F32, boolean, F32, boolean, int64, float32, F32, *([int32] * 17), name=name)(scope[name])
