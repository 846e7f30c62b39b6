"""Does the model file's augmentation help? LeNet-5 on a small digits subset, with and without it.

    python benchmarks/augment_effect.py                       # the numbers in docs/augmentation.md
    python benchmarks/augment_effect.py --epochs 20 --seeds 0 1
    python benchmarks/augment_effect.py --augment "rotate 10 p=0.5" --augment "translate 0.1 p=0.5"
    python benchmarks/augment_effect.py --throughput-only      # images/s and share of a training step

Accuracy: LeNet-5 (examples/lenet5.cnn, its train settings: optimizer, schedule,
normalization, batch) trained on 50 images per digit of the bundled digits'
train split (500 images, the same subset for every run), evaluated on the full
held-out split (1,000 images), once with the file's `augment { ... }` list and
once without, for each seed (the seed sets initialization, data order, dropout
and the augmentation draws). Prints the held-out accuracy of the last epoch,
mean ± standard deviation (ddof=1) over the seeds.

Throughput: the file's augmentation pipeline alone (warm, batch 64, 1x28x28)
in images/s, and a warm LeNet-5 training step at batch 64, both timed call by
call with time.perf_counter (median and best of many calls); the share is
aug / (aug + step).

With --json PATH the results (every run, the summary, the machine) are also written as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "examples" / "lenet5.cnn"

import cnndsl  # noqa: E402  (before NumPy: one OpenBLAS thread under Numba)
import numpy as np  # noqa: E402

from cnndsl.augment import Pipeline  # noqa: E402
from cnndsl.data.digits import digits_dataset  # noqa: E402
from cnndsl.train import trainer as trainer_module  # noqa: E402
from cnndsl.train.trainer import Trainer, optimizer_for, with_overrides  # noqa: E402


def model_text(augment: list[str] | None) -> str:
    """examples/lenet5.cnn, with its augment block replaced by `augment` lines when given."""
    text = MODEL.read_text(encoding="utf-8")
    if augment is None:
        return text
    block = "augment {\n" + "".join(f"    {line}\n" for line in augment) + "  }"
    new, n = re.subn(r"augment \{.*?\n  \}", lambda _: block, text, count=1, flags=re.S)
    if n != 1:
        raise SystemExit(f"{MODEL}: no augment block to replace")
    return new


def subset(per_class: int, seed: int = 0):
    """`per_class` images of each digit from the train split, chosen once by `seed`."""
    train = digits_dataset("train")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(train.y == k), per_class, replace=False) for k in range(10)]
    return train.subset(np.sort(np.concatenate(picks)))


def _no_plot(out_dir) -> None:
    """The trainer redraws curves.png after every epoch (about 1 s); the runs here write to a
    temporary folder, so the picture is skipped. Nothing else about the run changes."""


def run_once(text: str, train_set, test_set, seed: int, epochs: int, augment: bool) -> dict:
    trainer_module.plot = _no_plot
    program = cnndsl.loads(text, str(MODEL))
    model = cnndsl.compile(program, seed=seed)
    config = with_overrides(model.config, epochs=epochs, seed=seed)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trainer = Trainer(model, train_set, test_set, config, out, progress=False, augment=augment)
        records = trainer.fit()
        seconds = time.perf_counter() - start
    return {"seed": seed, "augment": augment, "accuracy": records[-1]["test_accuracy"],
            "best_accuracy": max(r["test_accuracy"] for r in records), "seconds": seconds}


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def accuracy_effect(text: str, per_class: int, epochs: int, seeds: list[int]) -> dict:
    train_set, test_set = subset(per_class), digits_dataset("test")
    config = cnndsl.loads(text, str(MODEL)).training
    steps = [f"{a.kind}({', '.join(f'{k}={v}' for k, v in a.params.items())}, p={a.p})" for a in config.augment]
    print(f"LeNet-5, {len(train_set)} training images ({per_class} per digit), {len(test_set)} held out, "
          f"{epochs} epochs of batch {config.batch}, {config.optimizer.name} lr={config.optimizer.lr:g}, "
          f"schedule {config.schedule.kind}; seeds {seeds}")
    print(f"augmentation: {' -> '.join(steps) or '(none)'}")
    runs = []
    for seed in seeds:
        for augment in (False, True):
            r = run_once(text, train_set, test_set, seed, epochs, augment)
            runs.append(r)
            print(f"  seed {seed}  {'with   ' if augment else 'without'} augmentation: held-out accuracy "
                  f"{r['accuracy']:.4f} (best epoch {r['best_accuracy']:.4f})  {r['seconds']:.1f} s", flush=True)
    summary = {}
    for augment in (False, True):
        m, s = mean_std(r["accuracy"] for r in runs if r["augment"] == augment)
        summary["with" if augment else "without"] = {"mean": m, "std": s}
        print(f"{'with' if augment else 'without'} augmentation: {100 * m:.2f} ± {100 * s:.2f} % held-out accuracy")
    gain = [a["accuracy"] - b["accuracy"] for a, b in zip(runs[1::2], runs[0::2])]
    m, s = mean_std(gain)
    summary["gain"] = {"mean": m, "std": s, "per_seed": gain}
    print(f"gain: {100 * m:+.2f} ± {100 * s:.2f} points (paired by seed)")
    return {"per_class": per_class, "train_images": len(train_set), "held_out": len(test_set), "epochs": epochs,
            "seeds": seeds, "augmentation": steps, "runs": runs, "summary": summary}


def _seconds(fn, calls: int) -> tuple[float, float]:
    """(median, best) seconds of one call: the best approximates an idle machine, the median
    what the current load allows."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def throughput(text: str, batch: int = 64, calls: int = 200) -> dict:
    program = cnndsl.loads(text, str(MODEL))
    model = cnndsl.compile(program, seed=0)
    config = model.config
    model.set_optimizer(optimizer_for(config, model.store.params))
    pipe = Pipeline.from_config(config.augment, config.seed)
    train = digits_dataset("train")
    x, y = train.x[:batch], train.y[:batch]
    idx = np.arange(batch, dtype=np.int64)
    out = np.empty_like(x)
    counter = iter(range(10**9))

    def augment():
        pipe.apply(x, idx, next(counter), out=out)

    def step():
        model.train_step(x, y, next(counter))

    for _ in range(10):  # warm: compiled, buffers allocated
        augment()
        step()
    aug = _seconds(augment, calls)
    step_ = _seconds(step, calls // 2)
    aug2 = _seconds(augment, calls)  # again after the steps; keep the quieter measurement
    aug = (min(aug[0], aug2[0]), min(aug[1], aug2[1]))
    result = {"batch": batch}
    for name, k in (("median", 0), ("best", 1)):
        t_aug, t_step = aug[k], step_[k]
        result[name] = {"augment_ms": 1e3 * t_aug, "augment_images_per_s": batch / t_aug,
                        "train_step_ms": 1e3 * t_step, "train_images_per_s": batch / t_step,
                        "augment_share": t_aug / (t_aug + t_step)}
        r = result[name]
        print(f"{name:6s}: augmentation {' -> '.join(op.name for op in pipe.ops)} on {batch}x1x28x28 "
              f"{r['augment_ms']:.3f} ms = {r['augment_images_per_s']:,.0f} images/s; LeNet-5 training step "
              f"{r['train_step_ms']:.2f} ms = {r['train_images_per_s']:,.0f} images/s; augmentation share of an "
              f"augmented step {100 * r['augment_share']:.2f} %")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=50, help="training images per digit (default 50)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--augment", action="append", default=None, metavar="STEP",
                    help="replace the file's augment list (repeatable), e.g. --augment 'rotate 10 p=0.5'")
    ap.add_argument("--throughput-only", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    import numba
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = model_text(args.augment)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
              "numba_threads": numba.get_num_threads(), "load_average_at_start": load,
              "command": " ".join(["python", "benchmarks/augment_effect.py"] + list(sys.argv[1:] if argv is None
                                                                                     else argv))}
    print(f"{result['machine']}, numba {numba.__version__} with {result['numba_threads']} threads, "
          f"load average {load:.2f}")
    if not args.throughput_only:
        result["accuracy"] = accuracy_effect(text, args.per_class, args.epochs, args.seeds)
    if not args.no_throughput:
        result["throughput"] = throughput(text)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
