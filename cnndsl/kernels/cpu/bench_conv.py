"""Conv2d kernel throughput, per algorithm and pass: `python -m cnndsl.kernels.cpu.bench_conv [--reps R] [--cpu]
[--winograd-rule]`.

For a ResNet-style 3x3 layer, LeNet-5's and vgg_small's convs and a strided one, prints GFLOP/s
of the im2col + BLAS kernels (conv.py: forward, input gradient, weight gradient from the kept
columns), of the register-blocked direct kernels (direct.py) and of Winograd F(2x2, 3x3)
(winograd.py: forward and input gradient of the 3x3 stride-1 convs), each pass counted as
2*N*F*C*KH*KW*OH*OW FLOPs (Winograd's too: the direct algorithm's count, so that the figures
compare times). Best of R repeats. --winograd-rule: direct against Winograd forward times over
the grid of channels and sizes that winograd.plan's rule was read from. --cpu times CPU seconds of
the process instead of wall seconds: on a machine shared with other jobs, with NUMBA_NUM_THREADS=1,
that compares the algorithms fairly (wall seconds there mostly measure the other jobs). Not a test;
numbers depend on the machine and on NUMBA_NUM_THREADS.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from cnndsl.kernels.cpu import conv as K
from cnndsl.kernels.cpu import direct as DR
from cnndsl.kernels.cpu import winograd as WG
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE

CASES = [
    # name, N, C, F, H, W, KH, KW, stride, pad
    ("resnet 3x3 64->64 56x56 b32", 32, 64, 64, 56, 56, 3, 3, 1, 1),
    ("lenet conv1 1->6 5x5 28x28 b64", 64, 1, 6, 28, 28, 5, 5, 1, 2),
    ("lenet conv2 6->16 5x5 14x14 b64", 64, 6, 16, 14, 14, 5, 5, 1, 0),
    ("vgg 32->32 3x3 32x32 b64", 64, 32, 32, 32, 32, 3, 3, 1, 1),
    ("vgg 64->64 3x3 16x16 b64", 64, 64, 64, 16, 16, 3, 3, 1, 1),
    ("vgg 128->128 3x3 8x8 b64", 64, 128, 128, 8, 8, 3, 3, 1, 1),
    ("resnet down 16->32 s2 32x32 b64", 64, 16, 32, 32, 32, 3, 3, 2, 1),
]


def _best(fn, reps, clock):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def bench(name, n, c, f, h, w, kh, kw, s, p, reps, clock):
    rng = np.random.default_rng(0)
    oh = (h + 2 * p - kh) // s + 1
    ow = (w + 2 * p - kw) // s + 1
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((f, c, kh, kw), dtype=np.float32)
    b = rng.standard_normal(f, dtype=np.float32)
    y = np.empty((n, f, oh, ow), np.float32)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx, dwt, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    nb, cl, tl = K.conv2d_workspace(n, c, f, kh, kw, 1, oh, ow)
    col = np.empty(max(cl, K.saved_col_len(n, c, kh, kw, oh, ow)), np.float32)
    tmp = np.empty(tl, np.float32)
    geo = (s, s, p, p, 1, 1, 1, nb)
    r = {"im2col fwd": _best(lambda: K.conv2d_forward(x, wt, b, True, *geo, col, tmp, y, True), reps, clock)}
    if c > 1:  # a first layer's input gradient is never computed
        r["im2col dx"] = _best(lambda: K.conv2d_backward_data(dy, wt, *geo, col[:cl], tmp, dx), reps, clock)
    K.conv2d_forward(x, wt, b, True, *geo, col, tmp, y, True)
    r["im2col dw"] = _best(lambda: K.conv2d_backward_weight(x, dy, True, *geo, col, tmp, dwt, db, True), reps, clock)
    plan = DR.plan(c, f, h, w, kh, kw, s, s, p, p, 1, 1, 1, oh, ow)
    if plan is not None:
        xb, wb = (np.empty(m, np.float32) for m in DR.scratch_len(n, c, f, kh, kw, plan))
        r["direct fwd"] = _best(lambda: DR.forward(x, wt, b, True, y, False, 0, 0.0, s, s, p, p, 1, 1, y, xb, wb),
                                reps, clock)
        q = DR.backward_data_plan(c, f, h, w, kh, kw, s, s, p, p, 1, 1, 1, oh, ow)
        if q is not None and c > 1:
            xb2, wb2 = (np.empty(m, np.float32) for m in DR.scratch_len(n, f, c, kh, kw, q))
            r["direct dx"] = _best(lambda: DR.backward_data(dy, wt, p, p, 1, 1, dx, xb2, wb2), reps, clock)
        qw = DR.wgrad_plan(c, f, h, w, kh, kw, s, s, p, p, 1, 1, 1, oh, ow)
        t = numba.get_num_threads()
        bufs = [np.empty(m, np.float32) for m in DR.wgrad_scratch_len(n, c, f, kh, kw, oh, ow, qw, t)]
        r["direct dw"] = _best(lambda: DR.backward_weight(x, dy, p, p, s, s, 1, 1, dwt, *bufs, t), reps, clock)
    r.update(_winograd(x, wt, b, y, dy, dx, s, p, reps, clock))
    flops = 2.0 * n * f * oh * ow * c * kh * kw
    print(f"{name:32s} " + "  ".join(f"{k} {flops / v / 1e9:6.1f}" for k, v in r.items()), flush=True)


def _winograd(x, wt, b, y, dy, dx, s, p, reps, clock) -> dict:
    """Winograd's forward and input gradient times where it applies (forced: whatever the rule)."""
    (n, c, h, w), (f, _, kh, kw), (oh, ow) = x.shape, wt.shape, y.shape[2:]
    args = (c, f, h, w, kh, kw, s, s, p, p, 1, 1, 1, oh, ow, True)
    wp = WG.plan(*args)
    if wp is None:
        return {}
    none, zero = KERNEL_CODE["none"], np.float32(0)
    ub = np.empty(WG.scratch_len(f, c), np.float32)
    r = {"winograd fwd": _best(lambda: WG.run(wp, x, wt, b, True, y, False, none, zero, False, p, p, ub, y), reps,
                               clock)}
    q = WG.input_grad_plan(*args)
    if q is not None and c > 1:
        ub2 = np.empty(WG.scratch_len(c, f), np.float32)
        r["winograd dx"] = _best(lambda: WG.run(q, dy, wt, b, False, dx, False, none, zero, True, 2 - p, 2 - p, ub2,
                                                dx), reps, clock)
    return r


RULE_CHANNELS = [(3, 16), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
RULE_SIZES = [8, 16, 32]


def winograd_rule(reps, clock, n=64):
    """Direct and Winograd forward ms (the padding included: the direct one's copy) of 3x3 stride-1 convs, batch
    n, over RULE_CHANNELS x RULE_SIZES, and whether winograd.plan picks Winograd there."""
    none, zero = KERNEL_CODE["none"], np.float32(0)
    print(f"3x3 stride-1 forward, batch {n}: direct ms, winograd ms, direct/winograd, chosen by the rule")
    for c, f in RULE_CHANNELS:
        for hw in RULE_SIZES:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
            wt = rng.standard_normal((f, c, 3, 3), dtype=np.float32)
            b = rng.standard_normal(f, dtype=np.float32)
            y = np.empty((n, f, hw, hw), np.float32)
            args = (c, f, hw, hw, 3, 3, 1, 1, 1, 1, 1, 1, 1, hw, hw)
            dp, wp = DR.plan(*args), WG.plan(*args, True)
            xb, wb = (np.empty(m, np.float32) for m in DR.scratch_len(n, c, f, 3, 3, dp))
            uw = np.empty(WG.scratch_len(f, c), np.float32)
            td = _best(lambda: DR.forward(x, wt, b, True, y, False, none, zero, 1, 1, 1, 1, 1, 1, y, xb, wb, dp),
                       reps, clock)
            tw = _best(lambda: WG.run(wp, x, wt, b, True, y, False, none, zero, False, 1, 1, uw, y), reps, clock)
            chosen = "winograd" if WG.plan(*args) is not None else "direct"
            print(f"{c:4d} -> {f:<4d} {hw:3d}x{hw:<3d} {td * 1e3:8.3f} {tw * 1e3:8.3f} {td / tw:6.2f}  {chosen}",
                  flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu", action="store_true", help="time CPU seconds of the process, not wall seconds")
    ap.add_argument("--winograd-rule", action="store_true",
                    help="direct against Winograd forward over the grid winograd.plan's rule was read from")
    args = ap.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    if args.winograd_rule:
        winograd_rule(args.reps, clock)
        return
    print(f"GFLOP/s ({'CPU' if args.cpu else 'wall'} seconds, best of {args.reps}), "
          f"{numba.get_num_threads()} Numba threads")
    for case in CASES:
        bench(*case, reps=args.reps, clock=clock)


if __name__ == "__main__":
    main()
