"""Convolution and dense layers as tiled implicit GEMMs (one kernel template, three modes).

A convolution from x (N, C, H, W) to y (N, F, OH, OW) with weight (F, C/G, KH, KW) is,
per group g, three GEMMs whose operands are gathered on the fly (no im2col buffer):

  mode        rows m of the output tile   columns j   reduction k          A[m, k]      B[k, j]
  FWD         (n, oh, ow)   N*OH*OW       f < F/G     (c, kh, kw) Cg*KH*KW  x tap        weight
  BWD_DATA    (n, h, w)     N*H*W         c < C/G     (f, kh, kw) Fg*KH*KW  dy tap (*)   weight
  BWD_WEIGHT  (c, kh, kw)   Cg*KH*KW      f < F/G     (n, oh, ow) N*OH*OW   x tap        dy

  (*) dy[n, f, (h + pt - kh*dh) / sh, ...] where the division is exact and in range, else 0.

Each block computes a BM x BN tile of the output with BM/TM * BN/TN threads; a thread keeps a
TM x TN register tile (`cuda.local.array` with constant shape), its rows strided by BM/TM so
that neighbouring threads write neighbouring outputs. Per reduction step of BK the block
gathers A (BK x BM) and B (BK x BN) into shared memory with neighbouring threads reading
neighbouring global addresses (which operand index runs fastest is chosen per layout:
`a_kfast` / `b_kfast`), synchronizes, and does BK rank-1 updates of the register tile from
shared memory. Edge tiles read zeros and skip their stores, so no shape has to be a
multiple of a tile. BWD_WEIGHT reduces over N*OH*OW, which is long while its output is
small: the reduction is split over grid z (`splits`) into a partial-sum workspace, then
summed by `splitk_reduce` in a fixed order (deterministic, no atomics).

conv_transpose is the adjoint of conv (its forward is conv's BWD_DATA, its input gradient
conv's FWD, its weight gradient conv's BWD_WEIGHT with x and dy exchanged), and dense is a
1x1 conv on 1x1 maps (with the dense operand orders). Bias gradients are channel sums
(cnndsl/kernels/cuda/reduce.py).

These are the "tiled" kernels. The "pipelined" ones (cnndsl/kernels/cuda/igemm.py: no index
division in the main loop, register accumulators, double-buffered shared tiles) take the same
arguments; the host functions below launch either, `CNNDSL_CUDA_GEMM=tiled|pipelined` choosing
(pipelined by default; tiled for tensors of 2**31 elements or more, where int32 indices would
overflow). The tile name "cublas" (CUBLAS) runs a pass as cuBLAS SGEMMs around gather kernels
instead (cnndsl/kernels/cuda/im2col.py), where tune.py measured it fastest.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from cnndsl.kernels.cuda.common import (  # noqa: F401  (the activation codes: tests use them as G.RELU, ...)
    F32, LEAKY_RELU, NONE, RELU, SIGMOID, TANH, TARGET_BLOCKS, PreparedLaunch, activate, boolean, cuda, device,
    div_mod, float32, grid1d, int64, kernel)
from cnndsl.kernels.cuda import igemm, im2col, tune
from cnndsl.kernels.cuda.igemm import BWD_DATA, BWD_WEIGHT, FWD, Tile  # noqa: F401  (one definition, both families)
from cnndsl.kernels.geometry import ConvGeometry

FAMILIES = ("pipelined", "tiled")
# The tile name of the cuBLAS candidate (im2col.py): measured against the tiles, never a rule's choice
CUBLAS = "cublas"

TILES = {
    "s32x16": Tile(32, 16, 8, 4, 4),      # 32 threads: small problems
    "n128x16": Tile(128, 16, 8, 8, 2),    # 128 threads: few output channels, many rows
    "m64x32": Tile(64, 32, 8, 4, 4),      # 128 threads
    "l64x64": Tile(64, 64, 8, 4, 4),      # 256 threads
    "l128x64": Tile(128, 64, 8, 8, 4),    # 256 threads, 32 accumulators each: large layers
}


def family(geo: ConvGeometry | None = None) -> str:
    """The kernel family conv/dense launches use: CNNDSL_CUDA_GEMM (default pipelined), or
    tiled where a tensor of `geo` has 2**31 elements or more (the pipelined kernels index in int32)."""
    name = os.environ.get("CNNDSL_CUDA_GEMM", "pipelined").strip() or "pipelined"
    if name not in FAMILIES:
        raise ValueError(f"CNNDSL_CUDA_GEMM={name!r}: expected one of {', '.join(FAMILIES)}")
    if name == "pipelined" and geo is not None and max(_sizes(geo)) >= 2**31:
        return "tiled"
    return name


def _sizes(geo: ConvGeometry) -> tuple[int, ...]:
    k = (geo.C // geo.G) * geo.KH * geo.KW
    # the split-K workspace (at most TARGET_BLOCKS splits, weight_splits) bounds the partial sums'
    # indices; the k tables (igemm.k_table: a row per reduction index) their own
    red = max(geo.N * geo.OH * geo.OW, k, (geo.F // geo.G) * geo.KH * geo.KW)
    # and the taps' coordinates stay below igemm.MAX_EXTENT in magnitude (igemm.OUTSIDE's margin)
    extent = max(geo.H + geo.pt + geo.pb, geo.W + geo.pl + geo.pr, geo.OH * geo.sh, geo.OW * geo.sw,
                 geo.KH * geo.dh, geo.KW * geo.dw)
    return (geo.N * geo.C * geo.H * geo.W, geo.N * geo.F * geo.OH * geo.OW, TARGET_BLOCKS * geo.F * k,
            igemm.TAB_WIDTH * (red + igemm.MAX_BK), extent * (2**31 // igemm.MAX_EXTENT))


def tile_spec(tile: str):
    """The Tile of a tile name of either family."""
    return TILES[tile] if tile in TILES else igemm.TILES[tile]


def _orders(cols: int, fam: str) -> tuple[str, ...]:
    """Candidate tiles for `cols` output columns, largest first, the smallest last."""
    if fam == "tiled":
        if cols <= 16:
            return ("n128x16", "s32x16")
        if cols <= 32:
            return ("m64x32", "s32x16")
        return ("l128x64", "l64x64", "m64x32", "s32x16")
    if cols <= 16:
        return ("p128x16", "p32x16")
    if cols <= 32:
        return ("p128x32", "p64x32", "p32x16")
    if cols <= 64:
        return ("p128x64", "p64x64", "p64x32", "p32x16")
    return ("p128x128", "p128x64", "p64x64", "p64x32", "p32x16")


def choose_tile(rows: int, cols: int, groups: int = 1, fam: str = "tiled") -> str:
    """The largest tile of family `fam` that still gives enough blocks for this output shape."""
    order = _orders(cols, fam)

    def blocks(name):
        t = tile_spec(name)
        return -(-rows // t.BM) * -(-cols // t.BN) * groups

    for name in order[:-1]:
        if blocks(name) >= TARGET_BLOCKS:
            return name
    return order[-1]


def choose_weight_tile(rows: int, cols: int, fam: str = "tiled") -> str:
    """A weight gradient's tile: its grid is filled by splitting the long reduction (weight_splits),
    so the tile is chosen by the output's shape alone: the largest that pads the rows x cols
    result by at most a quarter, else the one that pads it least. (The tiled family's old rule,
    the largest tile with enough blocks *before* splitting, gave stage1.conv2 of vgg_small,
    288 x 32, the 32-thread tile: 270 blocks of 32 threads on an H200, 4.9 ms.)"""
    order = _orders(cols, fam)

    def waste(name):
        t = tile_spec(name)
        return (-(-rows // t.BM) * t.BM) * (-(-cols // t.BN) * t.BN) / (rows * cols) - 1

    for name in order:
        if waste(name) <= 0.25:
            return name
    return min(order, key=waste)


# -- operand gathers (device functions) --------------------------------------------------


@device
def _x_tap(x, n, c, C, H, W, ih, iw):
    if ih >= 0 and ih < H and iw >= 0 and iw < W:
        return x[((n * C + c) * H + ih) * W + iw]
    return float32(0.0)


@device
def _dy_tap(dy, n, f, F, OH, OW, th, tw, sh, sw):
    # dy[n, f, th / sh, tw / sw] when both divisions are exact and in range
    if th < 0 or tw < 0:
        return float32(0.0)
    oh = th // sh
    ow = tw // sw
    if oh * sh != th or ow * sw != tw or oh >= OH or ow >= OW:
        return float32(0.0)
    return dy[((n * F + f) * OH + oh) * OW + ow]


@lru_cache(maxsize=None)
def gemm_kernel(mode: int, tile: str, a_kfast: bool, b_kfast: bool):
    """The tiled kernel for one mode, tile and pair of operand load orders."""
    t = TILES[tile]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    BMP = BM + 1  # padded rows: k-fastest shared stores avoid bank conflicts
    BNP = BN + 1
    TXM = BM // TM
    T = t.threads
    LA = -(-(BM * BK) // T)
    LB = -(-(BN * BK) // T)
    MODE = mode
    AK = a_kfast
    BKF = b_kfast

    def gemm(a, b, bias, has_bias, res, has_res, act, alpha, out,
             N, C, H, W, F, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G, kchunk):
        As = cuda.shared.array((BK, BMP), float32)
        Bs = cuda.shared.array((BK, BNP), float32)
        acc = cuda.local.array((TM, TN), float32)
        ra = cuda.local.array(TM, float32)
        rb = cuda.local.array(TN, float32)
        tid = cuda.threadIdx.x
        tx = tid % TXM
        ty = tid // TXM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        Cg = C // G
        Fg = F // G
        KHW = KH * KW
        So = OH * OW
        Si = H * W
        if MODE == BWD_WEIGHT:
            g = cuda.blockIdx.z % G
            split = cuda.blockIdx.z // G
            Mdim = Cg * KHW
            Ndim = Fg
            kbeg = split * kchunk
            kend = kbeg + kchunk
            if kend > N * So:
                kend = N * So
        elif MODE == BWD_DATA:
            g = cuda.blockIdx.z
            split = 0
            Mdim = N * Si
            Ndim = Cg
            kbeg = 0
            kend = Fg * KHW
        else:
            g = cuda.blockIdx.z
            split = 0
            Mdim = N * So
            Ndim = Fg
            kbeg = 0
            kend = Cg * KHW
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = float32(0.0)

        for k0 in range(kbeg, kend, BK):
            # -- gather the A tile (BK x BM) --
            for r in range(LA):
                e = tid + r * T
                if e < BM * BK:
                    if AK:
                        ki = e % BK
                        mi = e // BK
                    else:
                        mi = e % BM
                        ki = e // BM
                    m = m0 + mi
                    k = k0 + ki
                    v = float32(0.0)
                    if m < Mdim and k < kend:
                        if MODE == FWD:
                            n = m // So
                            s = m - n * So
                            oh = s // OW
                            c = k // KHW
                            q = k - c * KHW
                            kh = q // KW
                            v = _x_tap(a, n, g * Cg + c, C, H, W, oh * sh - ph + kh * dh,
                                       (s - oh * OW) * sw - pw + (q - kh * KW) * dw)
                        elif MODE == BWD_DATA:
                            n = m // Si
                            s = m - n * Si
                            h = s // W
                            f = k // KHW
                            q = k - f * KHW
                            kh = q // KW
                            v = _dy_tap(a, n, g * Fg + f, F, OH, OW, h + ph - kh * dh,
                                        (s - h * W) + pw - (q - kh * KW) * dw, sh, sw)
                        else:
                            c = m // KHW
                            q = m - c * KHW
                            kh = q // KW
                            n = k // So
                            s = k - n * So
                            oh = s // OW
                            v = _x_tap(a, n, g * Cg + c, C, H, W, oh * sh - ph + kh * dh,
                                       (s - oh * OW) * sw - pw + (q - kh * KW) * dw)
                    As[ki, mi] = v
            # -- gather the B tile (BK x BN) --
            for r in range(LB):
                e = tid + r * T
                if e < BN * BK:
                    if BKF:
                        ki = e % BK
                        ni = e // BK
                    else:
                        ni = e % BN
                        ki = e // BN
                    jn = n0 + ni
                    k = k0 + ki
                    v = float32(0.0)
                    if jn < Ndim and k < kend:
                        if MODE == FWD:
                            v = b[(g * Fg + jn) * (Cg * KHW) + k]
                        elif MODE == BWD_DATA:
                            f = k // KHW
                            v = b[((g * Fg + f) * Cg + jn) * KHW + (k - f * KHW)]
                        else:
                            n = k // So
                            v = b[(n * F + g * Fg + jn) * So + (k - n * So)]
                    Bs[ki, ni] = v
            cuda.syncthreads()
            # -- BK rank-1 updates of the register tile --
            for kk in range(BK):
                for i in range(TM):
                    ra[i] = As[kk, tx + i * TXM]
                for j in range(TN):
                    rb[j] = Bs[kk, ty + j * (BN // TN)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ra[i] * rb[j]
            cuda.syncthreads()

        # -- epilogue: bias and coalesced stores --
        for i in range(TM):
            m = m0 + tx + i * TXM
            if m < Mdim:
                for j in range(TN):
                    jn = n0 + ty + j * (BN // TN)
                    if jn < Ndim:
                        if MODE == FWD:
                            n = m // So
                            o = (n * F + g * Fg + jn) * So + (m - n * So)
                            v = acc[i, j]
                            if has_bias:
                                v += bias[g * Fg + jn]
                            if has_res:
                                v += res[o]
                            out[o] = activate(v, act, alpha)
                        elif MODE == BWD_DATA:
                            n = m // Si
                            v = acc[i, j]
                            if has_bias:
                                v += bias[g * Cg + jn]
                            out[(n * C + g * Cg + jn) * Si + (m - n * Si)] = v
                        else:
                            out[split * (F * Mdim) + (g * Fg + jn) * Mdim + m] = acc[i, j]

    name = f"gemm_{('fwd', 'bwd_data', 'bwd_weight')[mode]}_{tile}_{'k' if a_kfast else 'm'}{'k' if b_kfast else 'n'}"
    gemm.__name__ = name
    return kernel(F32, F32, F32, boolean, F32, boolean, int64, float32, F32, *([int64] * 17), name=name)(gemm)


@kernel(F32, F32, int64, int64)
def splitk_reduce(part, out, total, splits):
    """out[i] = sum over s of part[s * total + i], s in order."""
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        v = float32(0.0)
        for s in range(splits):
            v += part[s * total + i]
        out[i] = v


@kernel(F32, F32, boolean, F32, boolean, int64, float32, F32, int64, int64, int64, int64)
def splitk_epilogue(part, bias, has_bias, res, has_res, act, alpha, out, N, Fc, S, splits):
    """A split FWD or BWD_DATA GEMM's result: out[n, f, s] = act(the splits' partial sums
    part[(split * Fc + f) * N*S + n*S + s] added in split order (+ bias[f]) (+ res[n, f, s]))."""
    total = N * Fc * S
    M = N * S
    for o in range(cuda.grid(1), total, cuda.gridsize(1)):
        n, r = div_mod(o, Fc * S, total)
        f, q = div_mod(r, S, total)
        m = n * S + q
        v = float32(0.0)
        for sp in range(splits):
            v += part[(sp * Fc + f) * M + m]
        if has_bias:
            v += bias[f]
        if has_res:
            v += res[o]
        out[o] = activate(v, act, alpha)


# -- host side: bind a conv or dense to its buffers --------------------------------------


def _kernel(mode: int, tile: str, a_kfast: bool, b_kfast: bool, geo: ConvGeometry, split: bool = False):
    """(kernel, its arguments before `bias`: the pipelined kernels' k table)."""
    if tile in TILES:
        return gemm_kernel(mode, tile, a_kfast, b_kfast), ()
    unit = geo.sh == 1 and geo.sw == 1
    return (igemm.pipelined_kernel(mode, tile, a_kfast, b_kfast, unit, split),
            (cuda.to_device(igemm.k_table(mode, geo, unit)),))


def _chunking(red: int, bk: int, splits: int) -> tuple[int, int]:
    """(splits, kchunk) for a reduction of `red` split `splits` ways in whole steps of bk: some
    requests round to fewer splits."""
    kchunk = -(-(-(-red // max(1, splits))) // bk) * bk
    return -(-red // kchunk), kchunk


def data_splits(mode: int, geo: ConvGeometry, tile: str) -> list[int]:
    """The reduction splits worth trying for a FWD or BWD_DATA launch of `tile` (tune.py's
    candidates; the shape rules never split these): where the tile leaves the GPU short of
    TARGET_BLOCKS blocks and the reduction is at least 16 steps long, enough splits to fill it
    (each at least 8 steps) and half as many. Only the pipelined family splits them."""
    if tile not in igemm.TILES:
        return []
    t = igemm.TILES[tile]
    rows, cols, red = ((geo.N * geo.OH * geo.OW, geo.F // geo.G, (geo.C // geo.G) * geo.KH * geo.KW) if mode == FWD
                       else (geo.N * geo.H * geo.W, geo.C // geo.G, (geo.F // geo.G) * geo.KH * geo.KW))
    blocks = -(-rows // t.BM) * -(-cols // t.BN) * geo.G
    steps = -(-red // t.BK)
    if blocks >= TARGET_BLOCKS or steps < 16:
        return []
    s0 = min(-(-TARGET_BLOCKS // blocks), steps // 8)
    return sorted({_chunking(red, t.BK, s)[0] for s in (s0, s0 // 2) if s >= 2})


def _split_launch(mode: int, k, tab, geo: ConvGeometry, tile: str, rows: int, cols: int, splits: int, a, b,
                  bias, has_bias, res, act, alpha, out, workspace) -> Launch:
    """The split-K form of a FWD or BWD_DATA launch: partial sums into a workspace, then
    splitk_epilogue adds them up and applies the epilogue."""
    red = (geo.C // geo.G if mode == FWD else geo.F // geo.G) * geo.KH * geo.KW
    splits, kchunk = _chunking(red, tile_spec(tile).BK, splits)
    fc = geo.F if mode == FWD else geo.C
    part = (workspace or _device_array)(splits * fc * rows)
    epi = (out if res is None else res, res is not None, int(act), np.float32(alpha))
    return Launch([(k[_grid(geo, rows, cols, geo.G * splits, tile)], (a, b) + tab + (bias, has_bias) + epi + (part,)
                    + geo.args(kchunk)),
                   (splitk_epilogue[grid1d(out.size)], (part, bias, has_bias) + epi + (out, geo.N, fc, rows // geo.N,
                                                                                      splits))])


def _splits_ok(splits: int, tile: str, out_size: int) -> bool:
    """Whether a FWD or BWD_DATA launch runs split: asked for, a pipelined tile, and partial sums
    the kernel's int32 indices reach (data_splits' candidates always are)."""
    return splits > 1 and tile in igemm.TILES and splits * out_size < 2**31


def _device_array(n: int):
    return cuda.device_array(max(1, n), np.float32)


class Launch:
    """A list of kernel launches with fixed arguments, run by calling it: each step is
    (kernel[config], args), run as a common.PreparedLaunch, or a no-argument callable (a cuBLAS
    GEMM of im2col.py)."""

    def __init__(self, steps):
        self.steps = [s if callable(s) else PreparedLaunch(s[0], tuple(s[1])) for s in steps]

    def __call__(self) -> None:
        for step in self.steps:
            step()


def _problem(mode: int, geo: ConvGeometry, orders, fam: str, residual: bool) -> str:
    """The key of a launch's tile choice (tune.pick): everything its speed depends on but the data."""
    unit = mode == BWD_DATA and geo.sh == 1 and geo.sw == 1
    return (f"{('fwd', 'bwd_data', 'bwd_weight')[mode]} {fam} {''.join('k' if o else 'm' for o in orders)}"
            f"{' s1' if unit else ''}{' res' if residual else ''} N{geo.N} C{geo.C} H{geo.H} W{geo.W} F{geo.F}"
            f" OH{geo.OH} OW{geo.OW} K{geo.KH}x{geo.KW} S{geo.sh}x{geo.sw} P{geo.pt},{geo.pb},{geo.pl},{geo.pr}"
            f" D{geo.dh}x{geo.dw} G{geo.G}")


def _offer_cublas(geo: ConvGeometry, key: str) -> bool:
    """Whether the launch `key` gets the "cublas" candidate: groups of 1 with cuBLAS loadable, and
    under the default "cached" policy only where it is the remembered choice (so that a process
    that will not use it neither loads cuBLAS, a library of hundreds of MB, nor makes a handle)."""
    if geo.G != 1 or (tune.policy() == "cached" and tune.remembered(key) != CUBLAS):
        return False
    return im2col.usable(geo)[0]


def _planned(mode: int, geo: ConvGeometry, orders, rows: int, cols: int, residual: bool, build,
             out_size: int) -> tuple[str, int]:
    """(tile, splits) of a FWD or BWD_DATA launch: tune.pick over the family's tiles for `cols`
    columns, unsplit, and the two largest also split (data_splits), and cuBLAS (_offer_cublas);
    the shape rule's choose_tile, unsplit, the default. Each trial `build(choice, scratch)` writes a scratch output of
    out_size elements."""
    fam = family(geo)
    default = tune.Choice(choose_tile(rows, cols, geo.G, fam))
    if tune.policy() == "off":
        return default.tile, 1
    tiles = _orders(cols, fam)
    candidates = [tune.Choice(t) for t in tiles]
    candidates += [tune.Choice(t, s) for t in tiles[:2] for s in data_splits(mode, geo, t)]
    key = _problem(mode, geo, orders, fam, residual)
    if _offer_cublas(geo, key):
        candidates.append(tune.Choice(CUBLAS))
    scratch = []

    def trial(c: tune.Choice):
        if not scratch:
            scratch.append(_device_array(out_size))
        return build(c, scratch[0])

    got = tune.pick(key, candidates, default, trial)
    return got.tile, got.splits


def _grid(geo: ConvGeometry, rows: int, cols: int, z: int, tile: str):
    t = tile_spec(tile)
    return (-(-rows // t.BM), -(-cols // t.BN), z), t.threads


def conv_forward(x, w, bias, has_bias, y, geo: ConvGeometry, tile: str | None = None,
                 res=None, act: int = NONE, alpha: float = 0.0, splits: int = 1, workspace=None) -> Launch:
    """y = activation(conv(x, w) (+ bias) (+ res)): the epilogue of fused_conv / fused_dense.
    splits > 1 (the pipelined family only) splits the reduction, its partial sums in
    workspace(n) (a device array of n elements; default: allocated)."""
    rows, cols = geo.N * geo.OH * geo.OW, geo.F // geo.G
    orders = (True, True) if geo.dense_like else (False, True)
    if tile is None:
        tile, splits = _planned(FWD, geo, orders, rows, cols, res is not None, lambda c, scratch: conv_forward(
            x, w, bias, has_bias, scratch, geo, c.tile, res, act, alpha, c.splits), y.size)
    if tile == CUBLAS:
        ws = (workspace or _device_array)(im2col.workspace(geo, FWD))
        return Launch(im2col.forward(x, w, bias, has_bias, y, geo, res, act, alpha, ws))
    if _splits_ok(splits, tile, geo.F * rows):
        k, tab = _kernel(FWD, tile, *orders, geo, split=True)
        return _split_launch(FWD, k, tab, geo, tile, rows, cols, splits, x, w, bias, has_bias, res, act, alpha, y,
                             workspace)
    k, tab = _kernel(FWD, tile, *orders, geo)
    epi = (y if res is None else res, res is not None, int(act), np.float32(alpha))
    return Launch([(k[_grid(geo, rows, cols, geo.G, tile)], (x, w) + tab + (bias, has_bias) + epi + (y,) + geo.args())])


def conv_backward_data(dy, w, bias, has_bias, dx, geo: ConvGeometry, tile: str | None = None, splits: int = 1,
                       workspace=None) -> Launch:
    """dx = conv^T(dy, w) (+ bias over dx's channels: conv_transpose's forward); splits and
    workspace as for conv_forward."""
    rows, cols = geo.N * geo.H * geo.W, geo.C // geo.G
    orders = (True, False) if geo.dense_like else (False, True)
    if tile is None:
        tile, splits = _planned(BWD_DATA, geo, orders, rows, cols, False, lambda c, scratch: conv_backward_data(
            dy, w, bias, has_bias, scratch, geo, c.tile, c.splits), dx.size)
    if tile == CUBLAS:
        return Launch(im2col.backward_data(dy, w, bias, has_bias, dx, geo,
                                           (workspace or _device_array)(im2col.workspace(geo, BWD_DATA))))
    if _splits_ok(splits, tile, geo.C * rows):
        k, tab = _kernel(BWD_DATA, tile, *orders, geo, split=True)
        return _split_launch(BWD_DATA, k, tab, geo, tile, rows, cols, splits, dy, w, bias, has_bias, None, NONE, 0.0,
                             dx, workspace)
    k, tab = _kernel(BWD_DATA, tile, *orders, geo)
    epi = (dx, False, NONE, np.float32(0.0))
    return Launch([(k[_grid(geo, rows, cols, geo.G, tile)], (dy, w) + tab + (bias, has_bias) + epi + (dx,) + geo.args())])


def weight_tile(geo: ConvGeometry) -> str:
    """The tile conv_backward_weight uses for `geo` when none is given."""
    rows, cols = (geo.C // geo.G) * geo.KH * geo.KW, geo.F // geo.G
    fam = family(geo)
    if fam == "tiled":
        return choose_tile(rows, cols, geo.G)
    return choose_weight_tile(rows, cols, fam)


def weight_splits(geo: ConvGeometry, tile: str) -> tuple[int, int]:
    """(splits, kchunk) of the BWD_WEIGHT reduction over N*OH*OW."""
    t = tile_spec(tile)
    rows, cols = (geo.C // geo.G) * geo.KH * geo.KW, geo.F // geo.G
    blocks = -(-rows // t.BM) * -(-cols // t.BN) * geo.G
    red = geo.N * geo.OH * geo.OW
    most = max(1, -(-red // (8 * t.BK)))  # at least 8 reduction steps per split
    return _chunking(red, t.BK, max(1, min(-(-TARGET_BLOCKS // blocks), most)))


def _effective_splits(geo: ConvGeometry, tile: str, splits: int) -> int:
    """The splits conv_backward_weight runs when asked for `splits`."""
    return _chunking(geo.N * geo.OH * geo.OW, tile_spec(tile).BK, splits)[0]


def weight_plan(x, dy, geo: ConvGeometry) -> tuple[str, int]:
    """(tile, splits) of conv_backward_weight for `geo`, reading x and dy: tune.pick over the
    family's tiles for the result's columns, each with the shape rule's splits (weight_splits),
    a half, a quarter and twice as many, and cuBLAS (_offer_cublas); the default weight_tile with its weight_splits."""
    tile = weight_tile(geo)
    default = tune.Choice(tile, weight_splits(geo, tile)[0])
    if tune.policy() == "off":
        return default.tile, default.splits
    fam = family(geo)
    rows, cols = (geo.C // geo.G) * geo.KH * geo.KW, geo.F // geo.G
    candidates = []
    for t in _orders(cols, fam):
        s0 = weight_splits(geo, t)[0]
        for s in (s0, s0 // 2, s0 // 4, min(2 * s0, TARGET_BLOCKS)):  # (_sizes bounds the workspace)
            candidates.append(tune.Choice(t, _effective_splits(geo, t, max(1, s))))
    key = _problem(BWD_WEIGHT, geo, (False, False) if geo.dense_like else (True, True), fam, False)
    if _offer_cublas(geo, key):
        candidates += [tune.Choice(CUBLAS, s) for s in (1, *im2col.weight_splits(geo))]
    dw = []

    def trial(c: tune.Choice):
        if not dw:
            dw.append(_device_array(geo.F * rows))
        part = _device_array(weight_workspace(geo, c.tile, c.splits))
        return conv_backward_weight(x, dy, dw[0], part, geo, c.tile, c.splits)

    got = tune.pick(key, list(dict.fromkeys(candidates)), default, trial)
    return got.tile, got.splits


def weight_workspace(geo: ConvGeometry, tile: str | None = None, splits: int | None = None) -> int:
    """Elements of partial sums (cuBLAS: of columns) conv_backward_weight needs (0: none)."""
    tile = tile or weight_tile(geo)
    if tile == CUBLAS:
        return im2col.workspace(geo, BWD_WEIGHT, splits or 1)
    s = splits or weight_splits(geo, tile)[0]
    return 0 if s <= 1 else s * geo.F * (geo.C // geo.G) * geo.KH * geo.KW


def conv_backward_weight(x, dy, dw, part, geo: ConvGeometry, tile: str | None = None,
                         splits: int | None = None) -> Launch:
    """dw = dL/dweight (overwritten); `part` is a workspace of weight_workspace(...) elements
    (any buffer when that is 0)."""
    rows, cols = (geo.C // geo.G) * geo.KH * geo.KW, geo.F // geo.G
    tile = tile or weight_tile(geo)
    if tile == CUBLAS:
        need = im2col.workspace(geo, BWD_WEIGHT, splits or 1)
        if need and part.size < need:
            raise ValueError(f"weight-gradient workspace of {part.size} elements, {need} needed")
        return Launch(im2col.backward_weight(x, dy, dw, part, geo, splits or 1, splitk_reduce))
    red = geo.N * geo.OH * geo.OW
    splits, kchunk = weight_splits(geo, tile) if splits is None else _chunking(red, tile_spec(tile).BK, splits)
    orders = (False, False) if geo.dense_like else (True, True)
    k, tab = _kernel(BWD_WEIGHT, tile, *orders, geo)
    epi = (dw, False, NONE, np.float32(0.0))
    if splits <= 1:
        return Launch([(k[_grid(geo, rows, cols, geo.G, tile)], (x, dy) + tab + (dw, False) + epi + (dw,) + geo.args(red))])
    total = geo.F * rows
    if part.size < splits * total:
        raise ValueError(f"weight-gradient workspace of {part.size} elements, {splits * total} needed")
    return Launch([(k[_grid(geo, rows, cols, geo.G * splits, tile)], (x, dy) + tab + (dw, False) + epi + (part,)
                    + geo.args(kchunk)),
                   (splitk_reduce[grid1d(total)], (part, dw, total, splits))])
