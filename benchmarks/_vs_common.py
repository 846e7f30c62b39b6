"""What the two workers of vs_pytorch.py share: the workload definitions and the timer.

Both workers import this module, so the shapes, batch sizes, repeat counts and the timing
rule are written once and cannot drift apart between cnndsl and PyTorch.
The timer is not cnndsl.cli.bench.median_seconds on purpose: importing cnndsl sets
OPENBLAS_NUM_THREADS and GOMP_SPINCOUNT (cnndsl/__init__.py), which would change the PyTorch
worker's own thread pools; this module imports nothing of cnndsl.
"""
from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "examples" / "lenet5.cnn"
VGG = ROOT / "examples" / "vgg_small.cnn"
RESNET = ROOT / "examples" / "resnet_tiny.cnn"

TRAIN_BATCH = 64
LENET_TRAIN_BATCHES = 20  # distinct batches of real digits, cycled through in every repeat
INFER_BATCH = 256
VGG_INPUT = (3, 32, 32)
VGG_CLASSES = 10
LR, MOMENTUM = 0.01, 0.9

# The single-convolution figure: 3x3, 64 -> 64 channels, 56x56, batch 32, padding 1, with bias.
CONV_N, CONV_C, CONV_F, CONV_HW, CONV_K = 32, 64, 64, 56, 3


def normalization(path) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of a model file's `normalize` line. cnndsl normalizes inside
    predict/train_step, so the PyTorch side does the same arithmetic in its timed steps."""
    import cnndsl  # the front end only: no kernels are compiled

    normalize = cnndsl.load(path).training.normalize
    return list(normalize.mean), list(normalize.std)


def conv_flops_per_pass() -> float:
    """2*N*F*C*KH*KW*OH*OW: one multiply-add counts 2; stride 1 and padding 1 keep OH=OW=56."""
    return 2.0 * CONV_N * CONV_F * CONV_C * CONV_K * CONV_K * CONV_HW * CONV_HW


def repeats(quick: bool) -> dict[str, int]:
    """How many timed repeats each figure takes (the median is reported)."""
    if quick:
        return {"lenet_train": 2, "latency": 3, "throughput": 3, "vgg_train": 2, "resnet_train": 2, "conv": 2}
    return {"lenet_train": 5, "latency": 7, "throughput": 7, "vgg_train": 5, "resnet_train": 5, "conv": 5}


def batch_starts(n: int, batch: int, limit: int = 256):
    """Endless start offsets of consecutive batches of `batch` out of n items (at most `limit`
    distinct ones, then again from 0): a timed training loop sees new data each step."""
    return itertools.cycle(range(0, max(1, n - batch + 1), batch)[:limit])


def median_seconds(fn, repeats: int, min_repeat_s: float = 0.05) -> float:
    """Median seconds of one call of fn, over `repeats` timed repeats.

    The caller has already warmed fn up (compilation and allocation excluded). Each repeat
    calls fn as many times as fills about `min_repeat_s`, so microsecond calls are not
    measured at the resolution of the clock and the overhead of the loop is amortized."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    inner = max(1, min(10_000, int(min_repeat_s / max(once, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)
