"""The CUDA backend on a real GPU: correctness against the CPU backend, then training speed next
to PyTorch + cuDNN in the same process. For a session on a GPU machine (benchmarks/gpu_session.sh
runs it with the rest); the figures of the last such run are in docs/cuda.md.

    python benchmarks/cuda_check.py                 # both checks, prints a table
    python benchmarks/cuda_check.py --quick         # batch 64 only, fewer steps
    python benchmarks/cuda_check.py --no-torch      # skip PyTorch
    python benchmarks/cuda_check.py --correctness-only

1. Correctness, lenet5 and vgg_small: one training step (the file's optimizer) on the same
   random batch with device="cpu" and device="cuda" from the same initial weights; the loss,
   every gradient, every updated weight and the predictions after the step must agree within
   float32 tolerance (each tensor against 1e-3 of the largest value of its kind, see _rel_err).
2. Speed: training images/s at batch 64 and 256 for both networks (Model.train_step as the
   trainer calls it: batch in, loss and logits out, one optimizer step; warm-up excluded),
   next to the same network in PyTorch (eager, cuDNN, torch.optim.SGD) with TF32 off (the fair
   fp32 comparison: Numba has no tensor cores) and TF32 on.

Writes benchmarks/results/cuda_check.json with the device name next to every figure.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NETS = {"lenet5": ROOT / "examples" / "lenet5.cnn", "vgg_small": ROOT / "examples" / "vgg_small.cnn"}


def _batch(model, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + model.input_shape).astype(np.float32)
    classes = model.graph.node(model.graph.heads[model.losses[0].head]).type.shape[0]
    return x, rng.integers(0, classes, n)


def _model(name: str, device: str):
    import cnndsl
    from cnndsl.train.trainer import optimizer_for

    model = cnndsl.compile(NETS[name], device=device)
    model.set_optimizer(optimizer_for(model.config, model.store.params))
    return model


def _rel_err(a, b, floor: float) -> float:
    """max|a - b| relative to max|b|, or to `floor` when b is smaller than that. The floor is 1e-3
    of the largest value of the same kind (gradients, weights): a conv bias followed by batchnorm
    has a gradient that is exactly zero in exact arithmetic, so both backends return round-off
    (about 1e-7 against gradients of order 1), and its relative error alone would mean nothing."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor, 1e-30))


def _floor(arrays) -> float:
    return 1e-3 * max(float(np.abs(np.asarray(v)).max()) for v in arrays)


def check_correctness(name: str, batch: int = 32) -> dict:
    cpu, gpu = _model(name, "cpu"), _model(name, "cuda")
    x, y = _batch(cpu, batch)
    loss_c, _ = cpu.train_step(x, y, 0)
    loss_g, _ = gpu.train_step(x, y, 0)
    errors = {"loss": abs(loss_c - loss_g) / max(abs(loss_c), 1e-12)}
    grads = {k: cpu.store.grad_view(k) for k in cpu.store.segments}
    floor = _floor(grads.values())
    for k, g in grads.items():
        errors[f"grad {k}"] = _rel_err(gpu.store.grad_view(k), g, floor)
    sc, sg = cpu.store.state_dict(), gpu.store.state_dict()
    floor = _floor(sc.values())
    for k in sc:
        errors[f"weight {k}"] = _rel_err(sg[k], sc[k], floor)
    errors["predict"] = _rel_err(gpu.predict(x[:16])["logits"], cpu.predict(x[:16])["logits"], 0.0)
    ranked = sorted(errors, key=errors.get, reverse=True)
    ok = all(math.isfinite(v) for v in errors.values()) and errors[ranked[0]] < 1e-3
    return {"ok": ok, "loss_cpu": loss_c, "loss_cuda": loss_g, "worst": ranked[0], "worst_rel_err": errors[ranked[0]],
            "largest_errors": {k: errors[k] for k in ranked[:5]}}


def _time_steps(step, warmup: int, steps: int, sync) -> float:
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def cnndsl_speed(name: str, batch: int, steps: int) -> float:
    from cnndsl.backend.cuda.shim import cuda

    model = _model(name, "cuda")
    x, y = _batch(model, batch)
    counter = iter(range(10**9))
    sec = _time_steps(lambda: model.train_step(x, y, next(counter)), 5, steps, cuda.synchronize)
    return batch / sec


# -- the same networks in PyTorch, built from the cnndsl graph ---------------------------------

def torch_model(model):
    """An nn.Module running the forward graph of a cnndsl Model (the ops lenet5 and vgg_small use)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    graph = model.graph
    order = graph.topo_order()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleDict()
            for name in order:
                node = graph.node(name)
                a, key = node.attrs, name.replace(".", "_")
                if node.op == "conv":
                    w = node.params["weight"]
                    self.layers[key] = nn.Conv2d(w[1] * a["groups"], w[0], tuple(w[2:]), tuple(a["stride"]), 0,
                                                 tuple(a["dilation"]), a["groups"], bias="bias" in node.params)
                elif node.op == "dense":
                    w = node.params["weight"]
                    self.layers[key] = nn.Linear(w[1], w[0], bias="bias" in node.params)
                elif node.op == "batchnorm":
                    self.layers[key] = nn.BatchNorm2d(node.params["gamma"][0], eps=a["eps"], momentum=a["momentum"]) \
                        if len(node.type.shape) == 3 else nn.BatchNorm1d(node.params["gamma"][0])

        def forward(self, x):
            values = {}
            for name in order:
                node = graph.node(name)
                ins = [values[s] for s in graph.inputs_of(name)]
                a, key = node.attrs, name.replace(".", "_")
                if node.op == "input":
                    v = x
                elif node.op in ("conv", "maxpool", "avgpool"):
                    t, b, l, r = node.geometry.pads
                    v = ins[0]
                    if node.op == "conv":
                        v = self.layers[key](F.pad(v, (l, r, t, b)) if (t, b, l, r) != (0, 0, 0, 0) else v)
                    else:
                        from cnndsl.ops.pool import pool_stride
                        pool = F.max_pool2d if node.op == "maxpool" else F.avg_pool2d
                        v = pool(F.pad(v, (l, r, t, b), value=-math.inf if node.op == "maxpool" else 0.0)
                                 if (t, b, l, r) != (0, 0, 0, 0) else v, tuple(a["kernel"]), pool_stride(a))
                elif node.op in ("dense", "batchnorm"):
                    v = self.layers[key](ins[0])
                elif node.op == "relu":
                    v = F.relu(ins[0])
                elif node.op == "flatten":
                    v = torch.flatten(ins[0], 1)
                elif node.op == "dropout":
                    v = F.dropout(ins[0], a["p"], self.training)
                elif node.op == "add":
                    v = sum(ins[1:], ins[0])
                elif node.op == "global_avgpool":
                    v = ins[0].mean(dim=(2, 3))
                else:
                    raise NotImplementedError(f"op {node.op} in the PyTorch twin")
                values[name] = v
            return values[graph.heads[model.losses[0].head]]

    return Net()


def torch_speed(name: str, batch: int, steps: int, tf32: bool) -> float:
    import torch

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    ref = _model(name, "cpu")
    net = torch_model(ref).cuda().train()
    o = ref.config.optimizer
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    x, y = _batch(ref, batch)

    def step():
        xb = torch.from_numpy(x).cuda(non_blocking=True)
        yb = torch.from_numpy(y).cuda(non_blocking=True)
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss = torch.nn.functional.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        loss.item()  # the loss comes back every step, as in cnndsl's trainer
        out.detach().cpu()

    return batch / _time_steps(step, 5, steps, torch.cuda.synchronize)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 64 only, 10 timed steps")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--correctness-only", action="store_true", help="only the comparison with the CPU backend")
    args = ap.parse_args()

    from cnndsl.backend.cuda.shim import SIMULATOR, cuda, device_available

    if SIMULATOR or not device_available():
        print("cuda_check: needs a real CUDA device (and NUMBA_ENABLE_CUDASIM unset)", file=sys.stderr)
        return 2
    dev = cuda.get_current_device()
    device = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    print(f"device: {device}, compute capability {dev.compute_capability}, cuda module {cuda.__name__}")
    results = {"device": device, "correctness": {}, "speed": []}

    for name in NETS:
        t0 = time.perf_counter()
        r = check_correctness(name)
        results["correctness"][name] = r
        print(f"correctness {name}: {'PASS' if r['ok'] else 'FAIL'}  loss cpu {r['loss_cpu']:.6f} cuda "
              f"{r['loss_cuda']:.6f}  worst relative error {r['worst_rel_err']:.2e} ({r['worst']})  "
              f"({time.perf_counter() - t0:.0f} s incl. kernel compilation)")
        if not r["ok"]:
            print("  largest: " + ", ".join(f"{k} {v:.1e}" for k, v in r["largest_errors"].items()))

    steps = 10 if args.quick else 30
    for name in NETS if not args.correctness_only else ():
        for batch in ((64,) if args.quick else (64, 256)):
            row = {"net": name, "batch": batch, "device": device,
                   "cnndsl_cuda": cnndsl_speed(name, batch, steps)}
            if not args.no_torch:
                try:
                    row["torch_fp32"] = torch_speed(name, batch, steps, tf32=False)
                    row["torch_tf32"] = torch_speed(name, batch, steps, tf32=True)
                except ImportError:
                    print("(PyTorch not installed: pip install cnndsl[bench])")
            results["speed"].append(row)
            cells = "  ".join(f"{k} {v:9.0f} img/s" for k, v in row.items() if isinstance(v, float))
            print(f"train {name:9s} batch {batch:3d}: {cells}")

    out = ROOT / "benchmarks" / "results" / ("cuda_correctness.json" if args.correctness_only else "cuda_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")
    return 0 if all(r["ok"] for r in results["correctness"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
