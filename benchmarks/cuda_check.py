"""The CUDA backend on a real GPU: training speed next to PyTorch + cuDNN in the same process, for
each GEMM kernel family, and correctness against the CPU backend. For a session on a GPU machine
(benchmarks/gpu_session.sh runs it with the rest); the figures of the last such run are in
docs/cuda.md.

    python benchmarks/cuda_check.py                        # everything, prints a table
    python benchmarks/cuda_check.py --variants tiled       # one GEMM family only
    python benchmarks/cuda_check.py --quick                # one batch per network, fewer steps
    python benchmarks/cuda_check.py --no-torch             # skip PyTorch
    python benchmarks/cuda_check.py --correctness-only
    python benchmarks/cuda_check.py --save-reference DIR   # CPU only: the CPU backend's reference steps
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_check.py --smoke   # the logic, under the simulator

GEMM variants: the conv and dense launches use the kernel family named by CNNDSL_CUDA_GEMM
(`tiled` or `pipelined`, cnndsl/kernels/cuda/gemm.py), read when a launch is prepared; the
variable is set before each model is built, so one process measures both.

1. Speed: training images/s (Model.train_step as the trainer calls it: batch in, loss and logits
   out, one optimizer step; the mean of --steps steps after the warm-up) for lenet5 at batch 64 and
   256, vgg_small at 64 and 256, resnet_tiny at 128, once per variant, next to the same network in
   PyTorch (eager, cuDNN with cudnn.benchmark, torch.optim.SGD), measured once per network and
   batch, with TF32 off (the fair fp32 baseline: Numba has no tensor cores) and on. The table gives
   cnndsl / PyTorch fp32 per variant. PyTorch runs first, then the known-good variant, then the
   new one, then the correctness checks, and the JSON is rewritten after every figure, so a crash
   (a CUDA error ends the process's context) or a time limit keeps what was measured before it.
2. Correctness, per variant and network: one training step (the file's optimizer) on the same
   random batch with device="cpu" and device="cuda" from the same initial weights; the loss, every
   gradient, every updated weight and the predictions after the step must agree within float32
   tolerance (each tensor against 1e-3 of the largest value of its kind, see _rel_err). A network
   that fails on data seed 0 is checked again on seed 1: a ReLU or max-pool mask flipped by
   round-off (docs/cuda.md, the Xeon host's vgg_small) fails one seed, a wrong kernel both.
   Then three steps with numba's dispatcher on every launch (CNNDSL_CUDA_LAUNCH=dispatch) against
   the same three with the prepared launches' fast path, which the speeds run on and one step
   never reaches (it starts at a launch's third call): they must agree to 1e-6.
   The CPU steps can come from an earlier CPU-only run (--save-reference DIR, then --reference
   DIR), which keeps the CPU backend's kernel compilation off the GPU's time.
3. The PyTorch twin is checked against the cnndsl CPU model, with the same weights, on the CPU:
   inference outputs, and the training-mode loss where the network has no dropout (batchnorm on
   batch statistics). A twin that disagrees would make the comparison meaningless.

Writes benchmarks/results/cuda_check.json (--smoke: $TMPDIR/cnndsl_smoke/cuda_check.json; --out)
with the device beside every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SMOKE_RESULTS = Path(tempfile.gettempdir()) / "cnndsl_smoke"  # --smoke's figures mean nothing: not in results/
NETS = {name: ROOT / "examples" / f"{name}.cnn" for name in ("lenet5", "vgg_small", "resnet_tiny")}
GOALS = (("lenet5", 64), ("lenet5", 256), ("vgg_small", 64), ("vgg_small", 256), ("resnet_tiny", 128))
QUICK_GOALS = (("lenet5", 64), ("vgg_small", 64), ("resnet_tiny", 128))
GEMM_ENV = "CNNDSL_CUDA_GEMM"
# the code before issue 20's work first (known good), then the new kernels with prepared launches
# (the default), then with every conv's and dense's tile measured on the GPU (CNNDSL_CUDA_TUNE=on),
# then the new kernels on numba's dispatcher (the kernels' effect alone; last, as the least needed
# should the time limit cut the run short)
VARIANTS = ("tiled:dispatch", "pipelined", "pipelined+tune", "pipelined:dispatch")
CHECK_BATCH = 32
TOLERANCE = 1e-3

# --smoke: a network small enough for the simulator (about a second a step there) with most ops
# of the three examples: conv, batchnorm + relu, add, maxpool, flatten, dense.
SMOKE_NETS = {"smoke": """
network Smoke(classes = 3) {
  input image: 1x4x4
  c1 = conv 2 kernel=3 padding=same
  y = batchnorm relu
  add(c1, y)
  maxpool 2
  flatten
  dense classes -> logits
}
train {
  batch 2
  optimizer sgd lr=0.1 momentum=0.9
  loss logits cross_entropy
}
"""}
SMOKE_GOALS = (("smoke", 2),)


@contextlib.contextmanager
def environ(name: str, value: str | None):
    """The environment variable `name` set to `value` while the block runs (None: left as it is)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def gemm_variant(variant: str | None):
    """A variant is FAMILY[:LAUNCH][+tune] ("tiled:dispatch" is the code before issue 20's work:
    the tiled kernels, numba's dispatcher on every launch; "pipelined+tune" the pipelined kernels
    with each launch's tile measured, cnndsl/kernels/cuda/tune.py): CNNDSL_CUDA_GEMM=FAMILY,
    with a launch path CNNDSL_CUDA_LAUNCH=LAUNCH, and CNNDSL_CUDA_TUNE=on with +tune, else off
    (the shape rules alone, whatever an earlier variant remembered), while the block runs (None:
    leave all three as they are)."""
    if variant is None:
        yield
        return
    name, plus, _ = variant.partition("+tune")
    family, _, path = name.partition(":")
    with environ(GEMM_ENV, family), environ("CNNDSL_CUDA_LAUNCH", path or None), \
            environ("CNNDSL_CUDA_TUNE", "on" if plus else "off"):
        yield


def variant_in_effect(variant: str) -> str:
    """The kernel family the launches use with CNNDSL_CUDA_GEMM=variant, as gemm.py reports it;
    a checkout whose gemm.py has one family ignores the variable."""
    from cnndsl.kernels.cuda import gemm

    with gemm_variant(variant):
        family = getattr(gemm, "family", None)
        if family is None:
            return "tiled (this checkout has one GEMM family and ignores CNNDSL_CUDA_GEMM)"
        try:
            return str(family())
        except Exception as e:  # noqa: BLE001  (an unknown name: reported, not fatal)
            return f"error: {e}"


def device_ready(script: str, smoke: bool) -> bool:
    """Whether `script` may run here: on a CUDA device, or under the simulator with --smoke
    (the simulator's timings mean nothing); says why not on stderr."""
    from cnndsl.kernels.cuda.shim import SIMULATOR, device_available

    if SIMULATOR and not smoke:
        print(f"{script}: under NUMBA_ENABLE_CUDASIM=1 only --smoke runs (the simulator's timings mean nothing)",
              file=sys.stderr)
        return False
    if not device_available():
        print(f"{script}: needs a CUDA device (or NUMBA_ENABLE_CUDASIM=1 with --smoke)", file=sys.stderr)
        return False
    return True


def current_device(cuda):
    """numba's device object (the simulator has no get_current_device)."""
    get = getattr(cuda, "get_current_device", None)
    return get() if get is not None else cuda.current_context().device


def device_info() -> dict:
    """Name, compute capability, SM count and max SM clock of the current device (None where the
    module does not say: the simulator)."""
    from cnndsl.kernels.cuda.shim import SIMULATOR, cuda

    info = {"name": "numba CUDA simulator" if SIMULATOR else None, "simulator": SIMULATOR,
            "cuda_module": cuda.__name__, "compute_capability": None, "sm_count": None, "max_sm_clock_khz": None}
    try:
        dev = current_device(cuda)
        if not SIMULATOR:
            name = dev.name
            info["name"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = tuple(dev.compute_capability)
        if not SIMULATOR:
            info["sm_count"] = int(getattr(dev, "MULTIPROCESSOR_COUNT"))
            info["max_sm_clock_khz"] = int(getattr(dev, "CLOCK_RATE"))
    except Exception as e:  # noqa: BLE001  (another `cuda` module: fall back below)
        info["device_query_error"] = f"{type(e).__name__}: {e}"
    if not SIMULATOR and (info["sm_count"] is None or info["name"] is None):
        try:
            import torch

            p = torch.cuda.get_device_properties(0)
            info["name"] = info["name"] or p.name
            info["sm_count"] = info["sm_count"] or p.multi_processor_count
            info["compute_capability"] = info["compute_capability"] or (p.major, p.minor)
            info["max_sm_clock_khz"] = info["max_sm_clock_khz"] or getattr(p, "clock_rate", None)
        except Exception:  # noqa: BLE001
            pass
    return info


def versions() -> dict:
    import numba

    out = {"python": sys.version.split()[0], "numba": numba.__version__, "numpy": np.__version__}
    with contextlib.suppress(Exception):
        import torch

        out["torch"] = torch.__version__
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def write_json(path: Path, data: dict) -> None:
    """Atomically (cnndsl.io.atomic), so a kill mid-write leaves the previous version."""
    from cnndsl.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


# -- cnndsl models ---------------------------------------------------------------------------

def _program(name: str):
    import cnndsl

    return cnndsl.loads(SMOKE_NETS[name], filename=f"<{name}>") if name in SMOKE_NETS else cnndsl.load(NETS[name])


def _model(name: str, device: str):
    import cnndsl
    from cnndsl.train.trainer import optimizer_for

    model = cnndsl.compile(_program(name), device=device)
    model.set_optimizer(optimizer_for(model.config, model.store.params))
    return model


def _batch(model, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + model.input_shape).astype(np.float32)
    classes = model.graph.node(model.graph.heads[model.losses[0].head]).type.shape[0]
    return x, rng.integers(0, classes, n)


def _head(model) -> str:
    return model.losses[0].head


def _rel_err(a, b, floor: float) -> float:
    """max|a - b| relative to max|b|, or to `floor` when b is smaller than that. The floor is 1e-3
    of the largest value of the same kind (gradients, weights): a conv bias followed by batchnorm
    has a gradient that is exactly zero in exact arithmetic, so both backends return round-off
    (about 1e-7 against gradients of order 1), and its relative error alone would mean nothing."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor, 1e-30))


def _floor(arrays) -> float:
    return 1e-3 * max(float(np.abs(np.asarray(v)).max()) for v in arrays)


# -- correctness: the CPU backend's step, then each variant's -----------------------------------

def cpu_reference(name: str, batch: int = CHECK_BATCH, seeds=(0, 1), twin: bool = True) -> dict:
    """One training step per data seed on the CPU backend from the model's initial weights: what
    the GPU step must reproduce. With `twin`, also the PyTorch twin against this model (CPU)."""
    out = {"net": name, "batch": batch, "seeds": {}}
    for seed in seeds:
        cpu = _model(name, "cpu")
        x, y = _batch(cpu, batch, seed)
        init = {k: v.copy() for k, v in cpu.store.state_dict().items()}
        if twin and seed == seeds[0]:
            out["twin"] = twin_check(cpu, x, y)
        loss, _ = cpu.train_step(x, y, 0)
        out["seeds"][seed] = {
            "x": x, "y": y, "init": init, "loss": float(loss),
            "grads": {k: cpu.store.grad_view(k).copy() for k in cpu.store.segments},
            "weights": {k: v.copy() for k, v in cpu.store.state_dict().items()},
            "predict": cpu.predict(x[:16])[_head(cpu)].copy(),
        }
    return out


def _compare(gpu, loss_g: float, ref: dict) -> dict:
    errors = {"loss": abs(ref["loss"] - loss_g) / max(abs(ref["loss"]), 1e-12)}
    floor = _floor(ref["grads"].values())
    for k, g in ref["grads"].items():
        errors[f"grad {k}"] = _rel_err(gpu.store.grad_view(k), g, floor)
    sg = gpu.store.state_dict()
    floor = _floor(ref["weights"].values())
    for k, w in ref["weights"].items():
        errors[f"weight {k}"] = _rel_err(sg[k], w, floor)
    errors["predict"] = _rel_err(gpu.predict(ref["x"][:16])[_head(gpu)], ref["predict"], 0.0)
    ranked = sorted(errors, key=errors.get, reverse=True)
    ok = all(math.isfinite(v) for v in errors.values()) and errors[ranked[0]] < TOLERANCE
    return {"ok": ok, "loss_cpu": ref["loss"], "loss_cuda": float(loss_g), "worst": ranked[0],
            "worst_rel_err": errors[ranked[0]], "largest_errors": {k: errors[k] for k in ranked[:5]}}


def check_variant(name: str, reference: dict, variant: str | None) -> dict:
    """The GPU step of each data seed against the CPU's, until one passes (see the docstring)."""
    result = {"seeds": {}}
    for seed, ref in reference["seeds"].items():
        with gemm_variant(variant):
            gpu = _model(name, "cuda")
            gpu.store.load_state_dict(ref["init"])
            loss, _ = gpu.train_step(ref["x"], ref["y"], 0)
            result["seeds"][seed] = r = _compare(gpu, loss, ref)
        if r["ok"]:
            break
    rs = list(result["seeds"].values())
    result.update(rs[-1])
    result["ok"] = rs[0]["ok"]
    result["verdict"] = ("PASS" if rs[0]["ok"] else
                         f"PASS on data seed {list(result['seeds'])[-1]} only (a mask flipped by round-off? "
                         "docs/cuda.md)" if rs[-1]["ok"] else "FAIL")
    return result


def check_launch_paths(name: str, reference: dict, variant: str | None, steps: int = 3) -> dict:
    """The same `steps` training steps from the reference's initial weights with numba's dispatcher
    on every launch (CNNDSL_CUDA_LAUNCH=dispatch) and with the prepared launches' fast path
    (common.PreparedLaunch: from a launch's third call on, the marshalled arguments straight to
    cuda.core), which check_variant's single step never reaches: the same losses and weights."""
    from cnndsl.kernels.cuda.shim import SIMULATOR

    if SIMULATOR:
        return {"ok": None, "skipped": "the simulator has no fast path"}
    ref = next(iter(reference["seeds"].values()))
    runs = {}
    for path in ("dispatch", "prepared"):
        with gemm_variant(variant), environ("CNNDSL_CUDA_LAUNCH", path):
            gpu = _model(name, "cuda")
            gpu.store.load_state_dict(ref["init"])
            losses = [gpu.train_step(ref["x"], ref["y"], i)[0] for i in range(steps)]
            runs[path] = (np.array(losses), gpu.store.state_dict())
    (la, wa), (lb, wb) = runs["dispatch"], runs["prepared"]
    diffs = {"loss": _rel_err(lb, la, 0.0)}
    floor = _floor(wa.values())
    diffs.update({f"weight {k}": _rel_err(wb[k], v, floor) for k, v in wa.items()})
    worst = max(diffs, key=diffs.get)
    return {"ok": math.isfinite(diffs[worst]) and diffs[worst] <= 1e-6, "steps": steps, "worst": worst,
            "max_rel_diff": diffs[worst]}


def save_reference(name: str, directory: Path, ref: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pkl"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(ref, f)
    tmp.replace(path)  # atomically: a reader waiting for the file sees all of it or nothing
    return path


def load_reference(name: str, directory: Path | None, wait_s: float, twin: bool, batch: int = CHECK_BATCH) -> dict:
    """The reference of --save-reference when it is there (waiting up to wait_s for a CPU-only run
    still at work, unless it has left DIR/.done behind), else computed here (and saved to
    `directory` for a later run)."""
    if directory is not None:
        path = directory / f"{name}.pkl"
        deadline = time.monotonic() + wait_s
        while not path.exists() and not (directory / ".done").exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if path.exists():
            with open(path, "rb") as f:
                ref = pickle.load(f)
            ref["source"] = str(path)
            return ref
        print(f"  (no {path}: the CPU reference is computed here)", flush=True)
    ref = cpu_reference(name, batch, twin=twin)
    if directory is not None:
        save_reference(name, directory, ref)
    ref["source"] = "computed in this process"
    return ref


# -- speed ----------------------------------------------------------------------------------

def _time_steps(step, warmup: int, steps: int, sync) -> float:
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def cnndsl_speed(name: str, batch: int, steps: int, warmup: int = 5, variant: str | None = None) -> float:
    from cnndsl.kernels.cuda.shim import cuda

    with gemm_variant(variant):  # set while the model is built and its launches prepared
        model = _model(name, "cuda")
        x, y = _batch(model, batch)
        counter = iter(range(10**9))
        sec = _time_steps(lambda: model.train_step(x, y, next(counter)), warmup, steps, cuda.synchronize)
    return batch / sec


# -- the same networks in PyTorch, built from the cnndsl graph ---------------------------------

def torch_model(model):
    """An nn.Module running the forward graph of a cnndsl Model (the ops of lenet5, vgg_small and
    resnet_tiny: conv, dense, batchnorm, relu, max/avg pooling, flatten, dropout, add, global
    average pooling); any other op raises NotImplementedError naming it. Fresh PyTorch weights:
    load_twin_weights copies the model's."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from cnndsl.ops.pool import pool_stride

    graph = model.graph
    order = graph.topo_order()
    head = graph.heads[model.losses[0].head]

    def same_pads(node):
        t, b, l, r = node.geometry.pads
        return (t, l) if (t, l) == (b, r) else None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleDict()
            self.node_of = {}  # layer key -> node name
            self.plan = []
            for name in order:
                node = graph.node(name)
                a, key = node.attrs, name.replace(".", "_")
                if node.op == "conv":
                    w = node.params["weight"]
                    pads = same_pads(node)
                    self.layers[key] = nn.Conv2d(w[1] * a["groups"], w[0], tuple(w[2:]), tuple(a["stride"]),
                                                 pads or 0, tuple(a["dilation"]), a["groups"],
                                                 bias="bias" in node.params)
                elif node.op == "dense":
                    w = node.params["weight"]
                    self.layers[key] = nn.Linear(w[1], w[0], bias="bias" in node.params)
                elif node.op == "batchnorm":
                    bn = nn.BatchNorm2d if len(node.type.shape) == 3 else nn.BatchNorm1d
                    self.layers[key] = bn(node.params["gamma"][0], eps=a["eps"], momentum=a["momentum"])
                elif node.op not in ("input", "maxpool", "avgpool", "relu", "flatten", "dropout", "add",
                                     "global_avgpool"):
                    raise NotImplementedError(f"op {node.op} ({name}) in the PyTorch twin")
                if key in self.layers:
                    self.node_of[key] = name
                self.plan.append((name, node, key, graph.inputs_of(name)))

        def forward(self, x):
            values = {}
            for name, node, key, inputs in self.plan:
                ins = [values[s] for s in inputs]
                a = node.attrs
                if node.op == "input":
                    v = x
                elif node.op == "conv":
                    v = ins[0]
                    if same_pads(node) is None:
                        t, b, l, r = node.geometry.pads
                        v = F.pad(v, (l, r, t, b))
                    v = self.layers[key](v)
                elif node.op in ("maxpool", "avgpool"):
                    t, b, l, r = node.geometry.pads
                    k, s, v = tuple(a["kernel"]), pool_stride(a), ins[0]
                    pads = same_pads(node)
                    if pads is not None and 2 * pads[0] <= k[0] and 2 * pads[1] <= k[1]:
                        v = (F.max_pool2d(v, k, s, pads) if node.op == "maxpool" else
                             F.avg_pool2d(v, k, s, pads, count_include_pad=True))
                    else:
                        v = F.pad(v, (l, r, t, b), value=-math.inf if node.op == "maxpool" else 0.0)
                        v = F.max_pool2d(v, k, s) if node.op == "maxpool" else F.avg_pool2d(v, k, s)
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
                else:  # global_avgpool
                    v = ins[0].mean(dim=(2, 3))
                values[name] = v
            return values[head]

    return Net()


def load_twin_weights(net, model) -> None:
    """The cnndsl model's weights (and batchnorm statistics) into its twin."""
    import torch

    sd = model.store.state_dict()
    names = {"gamma": "weight", "beta": "bias"}
    with torch.no_grad():
        for key, module in net.layers.items():
            node = net.node_of[key]
            for what in model.graph.node(node).params:
                value = torch.from_numpy(np.ascontiguousarray(sd[f"{node}.{what}"]))
                getattr(module, names.get(what, what)).copy_(value)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                for what in ("running_mean", "running_var"):
                    if f"{node}.{what}" in sd:
                        getattr(module, what).copy_(torch.from_numpy(np.ascontiguousarray(sd[f"{node}.{what}"])))


def twin_check(cpu_model, x, y) -> dict:
    """The twin (PyTorch, CPU, float32) against the cnndsl CPU model with the same weights:
    inference outputs, and the training-mode loss (batch statistics) unless dropout makes the two
    draw different masks. Call before the model's first training step."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {"ok": None, "skipped": "PyTorch not installed"}
    try:
        net = torch_model(cpu_model)
        load_twin_weights(net, cpu_model)
        xs = x[:16]
        want = cpu_model.predict(xs)[_head(cpu_model)]
        with torch.no_grad():
            got = net.eval()(torch.from_numpy(cpu_model.prepare(xs))).numpy()
        out = {"predict_rel_err": _rel_err(got, want, 0.0)}
        if not any(cpu_model.graph.node(n).op == "dropout" for n in cpu_model.graph.topo_order()):
            # the cnndsl loss of the step about to be taken, on the CPU: a throwaway model
            probe = _model_like(cpu_model)
            loss_c, _ = probe.train_step(x, y, 0)
            with torch.no_grad():
                loss_t = float(F.cross_entropy(net.train()(torch.from_numpy(cpu_model.prepare(x))),
                                               torch.from_numpy(np.asarray(y, np.int64))))
            out["train_loss_rel_err"] = abs(loss_t - loss_c) / max(abs(loss_c), 1e-12)
        else:
            out["train_loss_rel_err"] = None  # dropout: PyTorch's masks are not cnndsl's
        out["ok"] = all(v is None or v < 1e-4 for v in out.values())
        return out
    except Exception as e:  # noqa: BLE001  (reported in the JSON; the speeds still run)
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def _model_like(model):
    """A second CPU model of the same network with the same initial weights."""
    from cnndsl.model import Model
    from cnndsl.train.trainer import optimizer_for

    other = Model(model.program, device="cpu", seed=model.seed)
    other.store.load_state_dict(model.store.state_dict())
    other.set_optimizer(optimizer_for(other.config, other.store.params))
    return other


def torch_speed(name: str, batch: int, steps: int, tf32: bool, warmup: int = 5, device: str = "cuda") -> float:
    import torch

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    ref = _model(name, "cpu")
    net = torch_model(ref)
    load_twin_weights(net, ref)
    net = net.to(device).train()
    o = ref.config.optimizer
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    x, y = _batch(ref, batch)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        xb = torch.from_numpy(x).to(device, non_blocking=True)
        yb = torch.from_numpy(y).to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss = torch.nn.functional.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        loss.item()  # the loss comes back every step, as in cnndsl's trainer
        out.detach().cpu()

    return batch / _time_steps(step, warmup, steps, sync)


# -- the run --------------------------------------------------------------------------------

def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()[:500]


def _fmt(v, width: int, digits: int = 0) -> str:
    """v right-aligned in `width` with thousands separators, small values with 2 decimals; '-' for none."""
    if not isinstance(v, (int, float)):
        return f"{'-':>{width}s}"
    return f"{v:{width},.{digits}f}" if abs(v) >= 10 or digits else f"{v:{width}.2f}"


def render_table(rows: list[dict], variants) -> str:
    head = f"{'network':11s} {'batch':>5s} {'torch fp32':>11s} {'torch tf32':>11s}"
    for v in variants:
        head += f" {v:>11s} {'/fp32':>6s}"
    lines = [head + "   (images/s)"]
    for r in rows:
        line = f"{r['net']:11s} {r['batch']:5d} {_fmt(r.get('torch_fp32'), 11)} {_fmt(r.get('torch_tf32'), 11)}"
        for v in variants:
            ratio = r["ratio_fp32"].get(v)
            line += f" {_fmt(r['cnndsl'].get(v), 11)} {_fmt(ratio, 5, 3) + 'x' if ratio else _fmt(None, 6)}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="GEMM families to measure, comma-separated (CNNDSL_CUDA_GEMM values; default %(default)s)")
    ap.add_argument("--nets", default=None, help="restrict to these networks, comma-separated")
    ap.add_argument("--quick", action="store_true", help="one batch per network, 10 timed steps")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per figure (default 30; --quick 10)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch (the speed baseline and the twin check)")
    ap.add_argument("--correctness-only", action="store_true", help="only the comparison with the CPU backend")
    ap.add_argument("--speed-only", action="store_true", help="skip the comparison with the CPU backend")
    ap.add_argument("--reference", type=Path, default=None,
                    help="folder of CPU reference steps (--save-reference's); one missing is computed and saved there")
    ap.add_argument("--wait-reference", type=float, default=0.0,
                    help="seconds to wait for a reference a CPU-only run is still writing (default 0)")
    ap.add_argument("--save-reference", type=Path, default=None, metavar="DIR",
                    help="CPU only: compute the CPU backend's reference steps (and the twin check) into DIR, then exit")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny network at batch 2, 1 warm-up and 1 timed step, PyTorch on the CPU when there is "
                         "no CUDA: the script's logic, runnable under NUMBA_ENABLE_CUDASIM=1")
    ap.add_argument("--out", type=Path, default=None, help="the JSON to write (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    goals = SMOKE_GOALS if args.smoke else QUICK_GOALS if args.quick else GOALS
    if args.nets:
        wanted = {n.strip() for n in args.nets.split(",")}
        unknown = wanted - {n for n, _ in goals}
        if unknown:
            print(f"cuda_check: unknown network(s) {', '.join(sorted(unknown))}; "
                  f"known: {', '.join(dict(goals))}", file=sys.stderr)
            return 2
        goals = tuple(g for g in goals if g[0] in wanted)
    nets = list(dict.fromkeys(n for n, _ in goals))
    steps = args.steps or (1 if args.smoke else 10 if args.quick else 30)
    warmup = 1 if args.smoke else 5
    check_batch = 2 if args.smoke else CHECK_BATCH

    if args.save_reference is not None:  # CPU only: no CUDA import at all
        for name in nets:
            t0 = time.perf_counter()
            ref = cpu_reference(name, check_batch, twin=not args.no_torch)
            path = save_reference(name, args.save_reference, ref)
            print(f"reference {name}: loss {ref['seeds'][0]['loss']:.6f}, twin {ref.get('twin')}  -> {path} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return 0

    if not device_ready("cuda_check", args.smoke):
        return 2
    info = device_info()
    device = info["name"]
    print(f"device: {device}, compute capability {info['compute_capability']}, {info['sm_count']} SMs, "
          f"cuda module {info['cuda_module']}", flush=True)
    effect = {v: variant_in_effect(v) for v in variants}
    for v, e in effect.items():
        print(f"variant {v}: {GEMM_ENV}={v} -> {e}")
    out = args.out or (SMOKE_RESULTS if args.smoke else RESULTS) / (
        "cuda_correctness.json" if args.correctness_only else "cuda_check.json")
    results = {"device": device, "device_info": info, "versions": versions(), "variants": effect,
               "settings": {"steps": steps, "warmup": warmup, "smoke": args.smoke, "check_batch": check_batch,
                            "launch_path": os.environ.get("CNNDSL_CUDA_LAUNCH", "prepared"),
                            "tolerance": TOLERANCE},
               "twin_check": {}, "correctness": {v: {} for v in variants}, "speed": [], "errors": []}

    def save():
        tune = sys.modules.get("cnndsl.kernels.cuda.tune")  # the tile choices measured (+tune variants)
        if tune is not None and tune.MEMORY.used:
            results["tuned"] = dict(tune.MEMORY.used)
        write_json(out, results)

    torch_device = None
    if not args.no_torch and not args.correctness_only:
        try:
            import torch

            torch_device = "cuda" if torch.cuda.is_available() else "cpu" if args.smoke else None
            if torch_device is None:
                print("(PyTorch has no CUDA here: the PyTorch figures are skipped)")
        except ImportError:
            print("(PyTorch not installed: pip install cnndsl[bench])")
    results["torch_device"] = torch_device

    rows = {}
    for name, batch in goals if not args.correctness_only else ():
        rows[name, batch] = {"net": name, "batch": batch, "device": device, "cnndsl": {}, "ratio_fp32": {},
                             "errors": {}}
    results["speed"] = list(rows.values())

    # 1. PyTorch first: the baseline, on code that does not change
    if torch_device is not None:
        for (name, batch), row in rows.items():
            for key, tf32 in (("torch_fp32", False), ("torch_tf32", True)):
                t0 = time.perf_counter()
                try:
                    row[key] = torch_speed(name, batch, steps, tf32, warmup, torch_device)
                except Exception as e:  # noqa: BLE001
                    row["errors"][key] = _error(e)
                    traceback.print_exc()
                print(f"{key:10s} {name:11s} batch {batch:3d}: {_fmt(row.get(key), 10)} images/s "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
                save()

    # 2. cnndsl's speeds, per variant (the known-good one first)
    for variant in variants:
        for (name, batch), row in rows.items():
            t0 = time.perf_counter()
            try:
                row["cnndsl"][variant] = ips = cnndsl_speed(name, batch, steps, warmup, variant)
                if row.get("torch_fp32"):
                    row["ratio_fp32"][variant] = ips / row["torch_fp32"]
            except Exception as e:  # noqa: BLE001  (a crash of one variant leaves the others' figures)
                row["errors"][variant] = _error(e)
                traceback.print_exc()
            ratio = row["ratio_fp32"].get(variant)
            print(f"cnndsl {variant:9s} {name:11s} batch {batch:3d}: {_fmt(row['cnndsl'].get(variant), 10)} "
                  f"images/s{f'  {ratio:.3f}x torch fp32' if ratio else ''} ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
            save()

    # 3. then each variant's step against the CPU backend's: after every speed, as waiting for the
    # CPU reference (--wait-reference) must not cost a speed figure its time limit
    references = {}
    for variant in variants if not args.speed_only else ():
        for name in nets:
            t0 = time.perf_counter()
            try:
                if name not in references:
                    references[name] = load_reference(name, args.reference, args.wait_reference,
                                                      not args.no_torch, check_batch)
                    if "twin" in references[name]:
                        results["twin_check"][name] = references[name]["twin"]
                r = check_variant(name, references[name], variant)
                r["launch_paths"] = lp = check_launch_paths(name, references[name], variant)
                if lp["ok"] is False:
                    r["verdict"] += (f"; FAST LAUNCH PATH DIFFERS from the dispatcher "
                                     f"({lp['worst']} {lp['max_rel_diff']:.1e})")
                paths = (lp.get("skipped") or f"{'same' if lp['ok'] else 'DIFFER'}, largest difference "
                         f"{lp['max_rel_diff']:.1e} over {lp['steps']} steps")
                print(f"correctness {variant:9s} {name}: {r['verdict']}  loss cpu {r['loss_cpu']:.6f} cuda "
                      f"{r['loss_cuda']:.6f}  worst relative error {r['worst_rel_err']:.2e} ({r['worst']}); "
                      f"dispatcher vs fast launch path: {paths}  ({time.perf_counter() - t0:.0f} s)", flush=True)
                if r["verdict"] != "PASS":
                    for seed, s in r["seeds"].items():
                        print(f"  seed {seed}, largest: " + ", ".join(f"{k} {v:.1e}"
                                                                     for k, v in s["largest_errors"].items()))
            except Exception as e:  # noqa: BLE001
                r = {"ok": False, "verdict": "ERROR", "error": _error(e)}
                traceback.print_exc()
                print(f"correctness {variant:9s} {name}: ERROR {r['error']}", flush=True)
            results["correctness"][variant][name] = r
            save()

    for name, t in results["twin_check"].items():
        verdict = "PASS" if t.get("ok") else "skipped" if t.get("ok") is None else "FAIL"
        print(f"PyTorch twin vs cnndsl CPU, {name}: {verdict}  {json.dumps({k: v for k, v in t.items() if k != 'ok'})}")
    if rows:
        print(f"\ntraining images/s on {device} (mean of {steps} steps after {warmup} warm-up; "
              f"/fp32 = cnndsl / PyTorch fp32)")
        print(render_table(list(rows.values()), variants))
    save()
    print(f"written {out}")
    verdicts = [r.get("verdict", "") for per in results["correctness"].values() for r in per.values()]
    failed = any(v.startswith(("FAIL", "ERROR")) or "DIFFERS" in v for v in verdicts)
    failed |= any(r["errors"] for r in rows.values())
    failed |= any(t.get("ok") is False for t in results["twin_check"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
