"""Throughput of typical augmentation pipelines (warm, i.e. after compilation).

    python -m cnndsl.augment.bench [--batch 64] [--seconds 2]

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


def measure(pipe: Pipeline, shape, batch: int, seconds: float) -> float:
    """Images per second of `pipe.apply` on batches of `batch` images, warm."""
    x = np.random.default_rng(0).random((batch,) + tuple(shape), dtype=np.float32)
    out = np.empty((batch,) + pipe.output_shape(shape), np.float32)
    for e in range(3):  # compile / load the cache, fill the buffers
        pipe.apply(x, np.arange(batch) + e * batch, e, out=out)
    n, step = 0, 0
    t0 = time.perf_counter()
    while True:
        for _ in range(20):
            pipe.apply(x, np.arange(batch) + step * batch, step, out=out)
            step += 1
        n += 20
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n * batch / dt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    import numba
    print(f"numba {numba.__version__}, {numba.get_num_threads()} threads, "
          f"threading layer {numba.config.THREADING_LAYER}; batch {args.batch}")
    for name, (shape, ops) in PIPELINES.items():
        rate = measure(Pipeline(ops, seed=0), shape, args.batch, args.seconds)
        print(f"{name:16s} {' + '.join(op.name for op in ops):40s} {rate:12,.0f} images/s "
              f"({1e6 * args.batch / rate:8.1f} us/batch)")
        for op in ops:
            r = measure(Pipeline([op], seed=0), shape, args.batch, args.seconds / 2)
            print(f"{'':16s}   {op!r:37s} {r:12,.0f} images/s ({1e6 * args.batch / r:8.1f} us/batch)")


if __name__ == "__main__":
    main()
