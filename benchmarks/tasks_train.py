"""Train the localization, detection and segmentation examples and summarize their metrics.

    python benchmarks/tasks_train.py                       # all three, the files' settings
    python benchmarks/tasks_train.py localizer --epochs 2  # one of them, shorter
    python benchmarks/tasks_train.py --summary-only        # re-read runs/tasks/*/metrics.json

Each example is trained with `cnndsl train examples/NAME.cnn --out runs/tasks/NAME`
(its `dataset localization_digits | detection_digits | segmentation_digits`); then the
script prints the minutes and the last epoch's held-out metrics, and draws
runs/tasks/NAME/task_curves.png: loss and the task metrics (test_box_iou, test_map50,
test_mean_iou, ...) per epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"localizer": ("test_accuracy", "test_box_iou"), "detector": ("test_map50",),
            "unet_tiny": ("test_mean_iou", "test_pixel_accuracy")}


def train(name: str, out: Path, epochs: int | None) -> float:
    cmd = [sys.executable, "-m", "cnndsl", "train", str(ROOT / "examples" / f"{name}.cnn"), "--out", str(out),
           "--no-progress"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def curves(out: Path, records: list[dict], keys) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cnndsl.io.atomic import atomic_writer

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_m = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in records]
    ax_loss.plot(epochs, [r["train_loss"] for r in records], "-o", ms=3, label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in records], "--o", ms=3, label="held-out")
    ax_loss.set_title("loss")
    for k in keys:
        ys = [r.get(k) for r in records]
        if any(y is not None for y in ys):
            ax_m.plot(epochs, ys, "-o", ms=3, label=k)
    ax_m.set_title("held-out metrics")
    for ax in (ax_loss, ax_m):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "task_curves.png"
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png")
    return path


def summarize(name: str, out: Path, seconds: float | None) -> dict:
    records = json.loads((out / "metrics.json").read_text())
    last = records[-1]
    keys = EXAMPLES[name]
    total = seconds if seconds is not None else sum(r["seconds"] for r in records)
    best = {k: max((r[k] for r in records if r.get(k) is not None), default=None) for k in keys}
    print(f"{name}: {len(records)} epochs, {total / 60:.1f} min; last epoch: "
          + "  ".join(f"{k} {last.get(k):.4f}" for k in keys if last.get(k) is not None)
          + f"  ({last['images_per_s']:.0f} images/s)")
    curves(out, records, [k for k in keys if not k.endswith("mae")])
    return {"name": name, "epochs": len(records), "minutes": total / 60, "last": {k: last.get(k) for k in keys},
            "best": best}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"some of {', '.join(EXAMPLES)} (default: all)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default="runs/tasks")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    bad = [n for n in args.names if n not in EXAMPLES]
    if bad:
        ap.error(f"unknown example {bad[0]!r}; choose from {', '.join(EXAMPLES)}")
    rows = []
    for name in args.names or list(EXAMPLES):
        out = Path(args.out) / name
        seconds = None if args.summary_only else train(name, out, args.epochs)
        rows.append(summarize(name, out, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
