"""Throughput of typical augmentation pipelines (warm, i.e. after compilation).

    python -m cnndsl.augment.bench [--batch 64] [--seconds 2] [--threads N]

Prints images/s for a digits pipeline (random_crop 28 padding=2 p=0.5 + rotate
10 p=0.5 on 1x28x28) and a CIFAR-style one (hflip + random_crop 32 padding=4 +
color_jitter 0.4/0.4/0.4/0.1 on 3x32x32), and for each op alone.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from cnndsl.augment import ColorJitter, HFlip, Pipeline, RandomCrop, Rotate

PIPELINES = {
    "digits 1x28x28": ((1, 28, 28), [RandomCrop(size=28, padding=2, p=0.5), Rotate(degrees=10, p=0.5)]),
    "cifar 3x32x32": ((3, 32, 32), [HFlip(p=0.5), RandomCrop(size=32, padding=4, p=1.0),
                                    ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=1.0)]),
}


def measure(pipe: Pipeline, shape, batch: int, seconds: float) -> tuple[float, float]:
    """(median, best) images per second of `pipe.apply` on batches of `batch` images, warm.

    Each call is timed on its own; the best call approximates an idle machine,
    the median what the current load allows."""
    x = np.random.default_rng(0).random((batch,) + tuple(shape), dtype=np.float32)
    out = np.empty((batch,) + pipe.output_shape(shape), np.float32)
    for e in range(3):  # compile / load the cache, fill the buffers
        pipe.apply(x, np.arange(batch) + e * batch, e, out=out)
    times = []
    step = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 20:
        idx = np.arange(batch) + step * batch
        t0 = time.perf_counter()
        pipe.apply(x, idx, step, out=out)
        times.append(time.perf_counter() - t0)
        step += 1
    return batch / float(np.median(times)), batch / min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0, help="Numba threads (default: all)")
    args = ap.parse_args(argv)
    import numba
    if args.threads:
        numba.set_num_threads(args.threads)
    import os
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"numba {numba.__version__}, {numba.get_num_threads()} of {os.cpu_count()} CPUs, batch {args.batch}, "
          f"load average {load:.2f}")
    for name, (shape, ops) in PIPELINES.items():
        med, best = measure(Pipeline(ops, seed=0), shape, args.batch, args.seconds)
        print(f"{name}: {' + '.join(map(repr, ops))}")
        print(f"    pipeline   median {med:9,.0f} images/s ({1e6 * args.batch / med:7.1f} us/batch)   "
              f"best {best:9,.0f} images/s ({1e6 * args.batch / best:7.1f} us/batch)")
        for op in ops:
            med, best = measure(Pipeline([op], seed=0), shape, args.batch, args.seconds / 2)
            print(f"    {op.name:12s}   median {med:9,.0f} images/s ({1e6 * args.batch / med:7.1f} us/batch)   "
                  f"best {best:9,.0f} images/s ({1e6 * args.batch / best:7.1f} us/batch)")


if __name__ == "__main__":
    main()
