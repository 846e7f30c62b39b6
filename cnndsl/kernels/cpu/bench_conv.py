"""Conv2d kernel throughput: `python -m cnndsl.kernels.cpu.bench_conv [--reps R]`.

Prints GFLOP/s of conv2d_forward and of forward + backward_data + backward_weight
(counted as 3x the forward FLOPs) for a ResNet-style 3x3 layer and LeNet-like
layers. Not a test; numbers depend on the machine and on NUMBA_NUM_THREADS /
OPENBLAS_NUM_THREADS.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from cnndsl.kernels.cpu import conv as K

CASES = [
    # name, N, C, F, H, W, KH, KW, stride, pad
    ("resnet 3x3 64->64 56x56", 32, 64, 64, 56, 56, 3, 3, 1, 1),
    ("lenet conv1 1->6 5x5 28x28 pad2", 64, 1, 6, 28, 28, 5, 5, 1, 2),
    ("lenet conv2 6->16 5x5 14x14", 64, 6, 16, 14, 14, 5, 5, 1, 0),
]


def _best(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def bench(name, n, c, f, h, w, kh, kw, s, p, reps, nb=None):
    rng = np.random.default_rng(0)
    oh = (h + 2 * p - kh) // s + 1
    ow = (w + 2 * p - kw) // s + 1
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((f, c, kh, kw), dtype=np.float32)
    b = rng.standard_normal(f, dtype=np.float32)
    y = np.empty((n, f, oh, ow), np.float32)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx = np.empty_like(x)
    dw = np.empty_like(wt)
    db = np.empty_like(b)
    nb_auto, cl, tl = K.conv2d_workspace(n, c, f, kh, kw, 1, oh, ow)
    nb = nb_auto if nb is None else nb
    k = c * kh * kw
    col = np.zeros(max(cl, k * max(nb, 1) * oh * ow), np.float32)
    tmp = np.zeros(max(tl, f * max(nb, 1) * oh * ow + f * k), np.float32)
    geo = (s, s, p, p, 1, 1, 1, nb)

    def fwd():
        K.conv2d_forward(x, wt, b, True, *geo, col, tmp, y)

    def fwd_bwd():
        K.conv2d_forward(x, wt, b, True, *geo, col, tmp, y)
        K.conv2d_backward_data(dy, wt, *geo, col, tmp, dx)
        K.conv2d_backward_weight(x, dy, True, *geo, col, tmp, dw, db)

    flops = 2.0 * n * f * oh * ow * c * kh * kw
    tf, tfm = _best(fwd, reps)
    tb, tbm = _best(fwd_bwd, reps)
    print(f"{name:34s} N={n:3d} nb={nb:3d}  fwd {tf * 1e3:8.3f} ms {flops / tf / 1e9:7.1f} GFLOP/s "
          f"(median {flops / tfm / 1e9:6.1f})   fwd+bwd {tb * 1e3:8.3f} ms {3 * flops / tb / 1e9:7.1f} GFLOP/s "
          f"(median {3 * flops / tbm / 1e9:6.1f})")


def sgemm_baseline(reps):
    """GFLOP/s of a plain 64x576 @ 576x9408 sgemm through the same BLAS, to judge machine load."""
    from numba import njit

    @njit
    def mm(a, b, c):
        np.dot(a, b, c)
    a = np.random.rand(64, 576).astype(np.float32)
    b = np.random.rand(576, 9408).astype(np.float32)
    c = np.empty((64, 9408), np.float32)
    t, _ = _best(lambda: mm(a, b, c), reps)
    return 2.0 * 64 * 576 * 9408 / t / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--nb", type=int, action="append",
                    help="force a chunk size (0 = direct loops); repeatable; default: conv2d_workspace's choice")
    args = ap.parse_args()
    print(f"sgemm baseline 64x576x9408: {sgemm_baseline(args.reps):.1f} GFLOP/s")
    for case in CASES:
        for nb in (args.nb or [None]):
            bench(*case, reps=args.reps, nb=nb)


if __name__ == "__main__":
    main()
