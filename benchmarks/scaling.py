"""How cost grows with work, cnndsl against PyTorch (CPU), side by side: training images/s of
LeNet-5 against the batch (1, 8, 64, 256) and of vgg_small against its width (x1, x2, x4 at batch
64, through `-D width=`), each framework in a process of its own, the same thread count.

    pip install torch==2.13.0            # only for this benchmark
    python benchmarks/scaling.py         # writes results/scaling.json and results/scaling.png
    python benchmarks/scaling.py --show  # reprint the last run's table; measure nothing

Timing rule and networks: the ones of vs_pytorch.py (benchmarks/_vs_common.py, _vs_torch.py).
LeNet-5's batches are consecutive slices of the bundled digits, a new one each step (_vs_common.batch_starts):
trained again and again on one batch (as this script did until 2026-12-03), the loss fell from 4.2
to 0.0002 in 600 steps, each step got slower (1.40 -> 2.07 ms at batch 64; tiny gradients, most
likely denormal), and cnndsl's batch-64 figure read 39,778 and then 21,732 images/s in two runs
13 minutes apart (49,296 with fresh batches right after).
"""
from __future__ import annotations

import os

BASE_ENV = dict(os.environ)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "scaling.json"
BATCHES = (1, 8, 64, 256)
WIDTHS = (32, 64, 128)  # vgg_small's width parameter: x1, x2, x4

CNNDSL = """
import sys, json; sys.path[:0] = [{root!r}, {here!r}]
import cnndsl, numpy as np
import _vs_common as C
from cnndsl.data.digits import load_digits
from cnndsl.train.optim import SGD
out = {{}}
def sgd(m):
    m.set_optimizer(SGD(m.store.params, lr=C.LR, momentum=C.MOMENTUM)); return m
x, y = load_digits("train")
model = sgd(cnndsl.compile(C.LENET))
for b in {batches!r}:
    step, starts = iter(range(10**9)), C.batch_starts(len(x), b)
    def fn(b=b):
        i = next(starts)
        model.train_step(x[i:i + b], y[i:i + b], next(step))
    fn()
    out["lenet_b%d" % b] = b / C.median_seconds(fn, {reps})
rng = np.random.default_rng(0)
for w in {widths!r}:
    m = sgd(cnndsl.compile(C.VGG, defines={{"width": w}}))
    xb = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    t = rng.integers(0, 10, 64)  # random labels: all-zero targets made later steps denormal (slow)
    step = iter(range(10**9))
    fn = lambda: m.train_step(xb, t, next(step))
    fn()
    out["vgg_w%d" % w] = 64 / C.median_seconds(fn, {reps})
print(json.dumps(out))
"""

TORCH = """
import sys, json; sys.path[:0] = [{root!r}, {here!r}]
import numpy as np, torch
torch.set_num_threads({threads})
import _vs_common as C
from _vs_torch import lenet5, vgg_small, normalizer, trainer
from cnndsl.data.digits import load_digits
out = {{}}
torch.manual_seed(0)
x, y = load_digits("train")
step = trainer(lenet5(), normalizer(C.LENET))
yt = torch.from_numpy(y)
for b in {batches!r}:
    starts = C.batch_starts(len(x), b)
    def fn(b=b):
        i = next(starts)
        step(x[i:i + b], yt[i:i + b])
    fn()
    out["lenet_b%d" % b] = b / C.median_seconds(fn, {reps})
rng = np.random.default_rng(0)
for w in {widths!r}:
    s = trainer(vgg_small(10, w), normalizer(C.VGG))
    xb = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    t = torch.from_numpy(rng.integers(0, 10, 64))
    fn = lambda: s(xb, t)
    fn()
    out["vgg_w%d" % w] = 64 / C.median_seconds(fn, {reps})
print(json.dumps(out))
"""


def run(code: str, threads: int) -> dict:
    env = dict(BASE_ENV, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"scaling: a worker failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = ["| workload | cnndsl images/s | PyTorch images/s | ratio |", "|---|---:|---:|---:|"]
    for key, label in [(f"lenet_b{b}", f"LeNet-5 training, batch {b}") for b in BATCHES] + \
                      [(f"vgg_w{w}", f"vgg_small training, width {w} (x{w // 32}), batch 64") for w in WIDTHS]:
        ours, theirs = results["cnndsl"][key], (results.get("pytorch") or {}).get(key)
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        lines.append(f"| {label} | {ours:,.0f} | {f'{theirs:,.0f}' if theirs else '-'} | {ratio} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("cnndsl", "o-"), ("pytorch", "s--")):
        r = results.get(name)
        if not r:
            continue
        a.plot(BATCHES, [r[f"lenet_b{x}"] for x in BATCHES], style, label=name)
        b.plot([w // 32 for w in WIDTHS], [r[f"vgg_w{w}"] for w in WIDTHS], style, label=name)
    a.set(xscale="log", yscale="log", xlabel="batch", ylabel="training images/s", title="LeNet-5 against batch")
    b.set(xscale="log", yscale="log", xlabel="width multiplier", ylabel="training images/s",
          title="vgg_small (batch 64) against width")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(results["context"], fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--show", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.show:
        results = json.loads(args.out.read_text())
        print(table(results) + "\n\n" + results["context"])
        return
    load0 = os.getloadavg()[0]
    fmt = dict(root=str(ROOT), here=str(HERE), batches=BATCHES, widths=WIDTHS, reps=args.repeats,
               threads=args.threads)
    results = {"cnndsl": run(CNNDSL.format(**fmt), args.threads)}
    try:
        import torch  # noqa: F401
        results["pytorch"] = run(TORCH.format(**fmt), args.threads)
    except ImportError:
        print("PyTorch not installed: cnndsl's figures only (pip install torch==2.13.0)", file=sys.stderr)
    results["context"] = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {args.threads} threads, "
                          f"load average {load0:.2f} at start / {os.getloadavg()[0]:.2f} at end"
                          f"{' (machine busy: PyTorch collapses under load, these ratios flatter cnndsl)' if max(load0, os.getloadavg()[0]) > 1.5 else ''}; "
                          f"`python benchmarks/scaling.py --threads {args.threads}`")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, args.out)
    plot(results, args.out.with_suffix(".png"))
    print(table(results) + "\n\n" + results["context"])


if __name__ == "__main__":
    main()
