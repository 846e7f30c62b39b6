"""Few-shot transfer on the bundled digits: pretrain on 0-4, fine-tune a new head on 5-9.

    python benchmarks/transfer_fewshot.py                     # 10 images per class, seeds 0 1 2
    python benchmarks/transfer_fewshot.py --shots 5 --seeds 0 1 2 3 4 --json out.json

1. Pretrain examples/transfer_pretrain.cnn (LeNet-5, 5 classes) on the training digits 0-4
   (2,000 images) and save runs/transfer_pretrain/weights.safetensors, the file that
   examples/transfer_finetune.cnn starts from (`init from`).
2. For each seed: draw `shots` training images of each digit 5-9 (labels 0-4), then train
   * transfer: examples/transfer_finetune.cnn (pretrained convolutions frozen, dense layers
     from the pretrained weights at lr x 0.1, new head `digits59`), and
   * scratch: the same network and settings without `init from` and without freezing,
   on exactly those images, and evaluate both on all 500 held-out digits 5-9.
3. Print the accuracies per seed and their means (and write them as JSON with --json).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnndsl.data.digits import load_digits  # noqa: E402
from cnndsl.frontend import load  # noqa: E402
from cnndsl.model import Model  # noqa: E402

PRETRAIN = ROOT / "examples" / "transfer_pretrain.cnn"
FINETUNE = ROOT / "examples" / "transfer_finetune.cnn"


def subset(split: str, digits):
    x, y = load_digits(split)
    keep = np.isin(y, digits)
    return x[keep], (y[keep] - min(digits)).astype(np.int64)


def pretrain(out: Path, epochs: int | None, quiet: bool) -> dict:
    x, y = subset("train", range(5))
    xt, yt = subset("test", range(5))
    model = Model(load(PRETRAIN), seed=0)
    start = time.perf_counter()
    with _quiet(quiet):
        records = model.fit(x, y, validation=(xt, yt), epochs=epochs, out_dir=out)
    return {"images": len(x), "epochs": len(records), "seconds": time.perf_counter() - start,
            "held_out_accuracy_0_4": records[-1]["test_accuracy"]}


def few_shot(seed: int, shots: int):
    x, y = subset("train", range(5, 10))
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == k), shots, replace=False) for k in range(5)])
    return x[idx], y[idx]


def run(program, x, y, xt, yt, seed: int, quiet: bool) -> tuple[float, float]:
    model = Model(program, seed=seed)
    start = time.perf_counter()
    with _quiet(quiet):
        model.fit(x, y, validation=(xt[:10], yt[:10]))
    return model.evaluate(xt, yt)["accuracy"], time.perf_counter() - start


@contextlib.contextmanager
def _quiet(quiet: bool):
    if not quiet:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, default=10, help="training images per class of 5-9")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, default=None, help="default: the file's")
    ap.add_argument("--out", default="runs/transfer_pretrain",
                    help="where the pretrained weights go (the path transfer_finetune.cnn names)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    out = Path(args.out)
    pre = pretrain(out, args.pretrain_epochs, not args.verbose)
    print(f"pretrained on {pre['images']} digits 0-4 for {pre['epochs']} epochs ({pre['seconds']:.0f} s): "
          f"held-out accuracy on 0-4 {pre['held_out_accuracy_0_4']:.4f}")
    program = load(FINETUNE)
    if out != Path("runs/transfer_pretrain"):
        program = replace(program, training=replace(program.training, init_from=str(out / "weights.safetensors")))
    scratch = replace(program, training=replace(program.training, init_from=None, freeze=(), freeze_up_to=(),
                                                lr_mult={}))
    xt, yt = subset("test", range(5, 10))
    rows = []
    for seed in args.seeds:
        x, y = few_shot(seed, args.shots)
        t_acc, t_s = run(program, x, y, xt, yt, seed, not args.verbose)
        s_acc, s_s = run(scratch, x, y, xt, yt, seed, not args.verbose)
        rows.append({"seed": seed, "transfer": t_acc, "scratch": s_acc, "seconds": t_s + s_s})
        print(f"seed {seed}: {len(x)} images; held-out accuracy on 5-9 ({len(xt)} images): "
              f"transfer {t_acc:.4f}  scratch {s_acc:.4f}  ({t_s + s_s:.0f} s)")
    mean_t = float(np.mean([r["transfer"] for r in rows]))
    mean_s = float(np.mean([r["scratch"] for r in rows]))
    std_t = float(np.std([r["transfer"] for r in rows]))
    std_s = float(np.std([r["scratch"] for r in rows]))
    print(f"mean over {len(rows)} seeds ({args.shots} images per class): transfer {mean_t:.4f} (sd {std_t:.4f})  "
          f"scratch {mean_s:.4f} (sd {std_s:.4f})")
    result = {"shots": args.shots, "pretrain": pre, "runs": rows, "transfer_mean": mean_t, "scratch_mean": mean_s,
              "transfer_sd": std_t, "scratch_sd": std_s, "epochs": program.training.epochs,
              "batch": program.training.batch}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
