"""Kernel counts and speed of every example at -O0 and at the default level, in one run.

    python benchmarks/passes_speed.py [--batch 32] [--reps 5] [--examples lenet5 resnet_tiny]

Per example: kernels launched per inference / per training step, inference throughput
(images/s, model.predict's executable) and training throughput (images/s, one optimizer
step per batch). -O0 and -O2 are timed alternately, rep by rep, so that a change of the
machine's load hits both; the best rep counts. Random inputs and targets; the first
runs (Numba compilation or cache loading) are not timed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import cnndsl  # noqa: E402
from cnndsl.diagnostics import CnnError  # noqa: E402
from cnndsl.model import Model  # noqa: E402
from cnndsl.passes.pipeline import DEFAULT_LEVEL, kernel_count  # noqa: E402
from cnndsl.train.optim import make_optimizer  # noqa: E402


def make_model(program, level: int) -> Model:
    model = Model(program, seed=0, opt_level=level)
    model.set_optimizer(make_optimizer("sgd", model.store.params, lr=1e-3, momentum=0.9))
    return model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(path: Path, batch: int, reps: int) -> dict:
    program = cnndsl.load(path)
    rng = np.random.default_rng(0)
    models = {level: make_model(program, level) for level in (0, DEFAULT_LEVEL)}
    x = rng.random((batch,) + models[0].input_shape).astype(np.float32)
    y = models[0].example_targets(batch, rng)
    row = {"example": path.stem}
    for level, model in models.items():
        row[f"infer_kernels_O{level}"] = kernel_count(model._graph("infer"))
        row[f"train_kernels_O{level}"] = kernel_count(model._graph("train"))
        exe = model.executable("infer", batch)
        model.train_step(x, y, step=0)  # compile / load kernels
        exe.run({model.input_name: x})
    best = {(kind, level): float("inf") for kind in ("infer", "train") for level in models}
    for rep in range(reps):
        for level, model in models.items():
            exe = model.executable("infer", batch)
            best["infer", level] = min(best["infer", level], timed(lambda: exe.run({model.input_name: x})))
            best["train", level] = min(best["train", level], timed(lambda: model.train_step(x, y, step=rep + 1)))
    for (kind, level), seconds in best.items():
        row[f"{kind}_ips_O{level}"] = batch / seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--examples", nargs="*", default=None)
    args = parser.parse_args()
    paths = sorted((ROOT / "examples").glob("*.cnn"))
    if args.examples:
        paths = [p for p in paths if p.stem in args.examples]
    d = DEFAULT_LEVEL
    print(f"batch {args.batch}, best of {args.reps} reps; images/s (higher is better); kernels = launches")
    print(f"| example | infer kernels O0 → O{d} | train kernels O0 → O{d} | infer img/s O0 | O{d} | speed-up "
          f"| train img/s O0 | O{d} | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        try:
            r = measure(path, args.batch, args.reps)
        except CnnError as e:  # e.g. an example that starts from another run's weights
            print(f"| {path.stem} | skipped: {e.diagnostics[0].message} |||||||")
            continue
        print(f"| {r['example']} | {r['infer_kernels_O0']} → {r[f'infer_kernels_O{d}']} "
              f"| {r['train_kernels_O0']} → {r[f'train_kernels_O{d}']} "
              f"| {r['infer_ips_O0']:.0f} | {r[f'infer_ips_O{d}']:.0f} | {r[f'infer_ips_O{d}'] / r['infer_ips_O0']:.2f}x "
              f"| {r['train_ips_O0']:.0f} | {r[f'train_ips_O{d}']:.0f} | {r[f'train_ips_O{d}'] / r['train_ips_O0']:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
