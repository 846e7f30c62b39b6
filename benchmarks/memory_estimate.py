"""How close the memory estimate (cnndsl/analysis/memory.py) is to what a training run allocates.

    python benchmarks/memory_estimate.py examples/lenet5.cnn examples/vgg_small.cnn --batch 64

For each file: the estimate of a training run at --batch (parameter store, optimizer state,
training activations and work buffers, held-out evaluation at the trainer's batch of 256),
then the real allocation after one training step and one evaluation: the nbytes of every array
of the ParamStore (data, grad, lr_mult, wd_mult, buffers), of the optimizer's state, and of
every cached Executable's buffer slots and run-context workspaces. Prints both, part by part.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def measure(path: str, batch: int) -> dict:
    import cnndsl
    from cnndsl.analysis.memory import EVAL_BATCH, estimate
    from cnndsl.model import Model
    from cnndsl.train.trainer import optimizer_for

    program = cnndsl.load(path)
    est = estimate(program)
    model = Model(program)
    model.set_optimizer(optimizer_for(model.config, model.store.params))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    real = {}

    def count_executables():
        for (kind, b), exe in model._executables.items():
            real[f"{kind} slots @{b}"] = sum(s.nbytes for s in exe._slots)
            real[f"{kind} workspace @{b}"] = sum(a.nbytes for a in exe.rc.workspace.values())

    model.train_step(x, model.example_targets(batch, rng), 0)
    count_executables()  # now: the first evaluation's compile phase drops the training executable
    xe = rng.standard_normal((EVAL_BATCH,) + model.input_shape).astype(np.float32)
    model.evaluate(xe, model.example_targets(EVAL_BATCH, rng), EVAL_BATCH)
    count_executables()

    p = model.store.params
    real.update({"store": sum(a.nbytes for a in (p.data, p.grad, p.lr_mult, p.wd_mult))
                 + sum(b.nbytes for b in model.store.buffers.values()),
                 "optimizer": sum(a.nbytes for a in model.optimizer.state.values())})
    guess = {"store": est.store_bytes, "optimizer": est.optimizer_bytes,
             "train slots @%d" % batch: batch * est.training.per_sample,
             "train workspace @%d" % batch: est.training.workspace(batch),
             "eval slots @%d" % EVAL_BATCH: EVAL_BATCH * est.evaluation.per_sample,
             "eval workspace @%d" % EVAL_BATCH: est.evaluation.workspace(EVAL_BATCH)}
    return {"file": path, "real": real, "estimate": guess, "total_real": sum(real.values()),
            "total_estimate": est.training_step(batch, EVAL_BATCH)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    for path in args.files:
        r = measure(path, args.batch)
        print(f"{r['file']} at batch {args.batch}")
        for key in sorted(set(r["real"]) | set(r["estimate"])):
            real, guess = r["real"].get(key), r["estimate"].get(key)
            print(f"  {key:<24} real {real if real is not None else '-':>12}  estimate "
                  f"{guess if guess is not None else '-':>12}")
        ratio = r["total_estimate"] / r["total_real"]
        print(f"  {'total':<24} real {r['total_real']:>12}  estimate {r['total_estimate']:>12}  "
              f"(estimate / real = {ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
