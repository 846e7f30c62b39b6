"""Compile time per model: cold and warm seconds to the first training step, functions compiled,
and where the cold compile's seconds go (per function, grouped by kernel family).

    python benchmarks/compile_time.py                       # lenet5, vgg_small, resnet_tiny
    python benchmarks/compile_time.py --models lenet5 --top 15
    python benchmarks/compile_time.py --show                # reprint the last run's tables

Each model runs twice, each time in a fresh process: cold, with NUMBA_CACHE_DIR set to an empty
folder, then warm, with the folder the cold run filled. A run measures, from the process's
first statement, the seconds to the end of its first training step (imports, parsing, the pass
pipeline, memory planning and Numba compiling or loading every kernel of the step; the file's
batch and optimizer, random normal images, random valid targets), then runs the rest of the
compile phase `cnndsl train` runs before its first step (an evaluation step and the file's
augmentation: cnndsl.train.trainer.compile_kernels). Random targets, not example_targets' zeros:
with every label 0, one SGD step made the next step's gradients denormal, and vgg_small's next
step took 18.8 s instead of 0.5 (the conv weight gradients ran 60 times slower). Every Numba
compilation is recorded as it happens (cnndsl.backend.compile_events): its function, signature,
and seconds, inclusive and "self" (without the callees compiled inside it). Writes
benchmarks/results/compile_time.json (the machine, the load average before and after, the date,
every record).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compile_time.json"
MODELS = ("lenet5", "vgg_small", "resnet_tiny")

CHILD = """
import time; t0 = time.perf_counter()
import json, sys; sys.path.insert(0, {root!r})
import numpy as np
import cnndsl
from cnndsl.augment.pipeline import Pipeline
from cnndsl.backend.compile_events import counting
from cnndsl.train.trainer import compile_kernels, optimizer_for

with counting() as step_counter:
    model = cnndsl.compile({path!r})
    config = model.config
    model.set_optimizer(optimizer_for(config, model.store.params))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((config.batch,) + model.input_shape).astype(np.float32)
    model.train_step(x, model.example_targets(config.batch, rng), step=0)
first_step_s = time.perf_counter() - t0
t1 = time.perf_counter()
augment = Pipeline.from_config(config.augment, config.seed) if config.augment else None
with counting() as rest_counter:
    compile_kernels(model, config, augment=augment)
rest_s = time.perf_counter() - t1
records = [dict(phase=phase, module=r.module, name=r.name, family=r.family, signature=r.signature,
                depth=r.depth, seconds=r.seconds, self_seconds=r.self_seconds)
           for phase, c in (("first_step", step_counter), ("rest", rest_counter)) for r in c.records]
print("RESULT " + json.dumps(dict(network=model.graph.name, batch=config.batch, first_step_s=first_step_s,
                                  rest_s=rest_s, records=records)))
"""


def run_child(model: str, cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_BOUNDSCHECK", None)
    code = CHILD.format(root=str(ROOT), path=str(ROOT / "examples" / f"{model}.cnn"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{model}: the child process failed:\n{done.stderr[-3000:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = line.split(":", 1)[1].split()
                info["simd"] = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    except OSError:
        pass
    import numba
    import numpy

    info["numba"], info["numpy"] = numba.__version__, numpy.__version__
    return info


def measure(models, out: Path) -> dict:
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "load_before": os.getloadavg(), "models": {}}
    for model in models:
        with tempfile.TemporaryDirectory(prefix=f"cnndsl-compile-{model}-") as cache:
            print(f"{model}: cold ...", file=sys.stderr, flush=True)
            cold = run_child(model, Path(cache))
            print(f"{model}: cold {cold['first_step_s']:.1f} s to the first step; warm ...", file=sys.stderr,
                  flush=True)
            warm = run_child(model, Path(cache))
        result["models"][model] = {"cold": cold, "warm": warm, "load_after": os.getloadavg()}
    result["load_after"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return result


def _count(run: dict, phase: str | None = None) -> int:
    return sum(1 for r in run["records"] if phase is None or r["phase"] == phase)


def _compile_s(run: dict) -> float:
    return sum(r["self_seconds"] for r in run["records"])


def summary_table(result: dict) -> str:
    rows = ["| model | batch | cold: s to 1st step | functions compiled for it | + eval and augment: functions, s "
            "| s compiling (all) | warm: s to 1st step | functions compiled warm |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, m in result["models"].items():
        cold, warm = m["cold"], m["warm"]
        rows.append(f"| {model} | {cold['batch']} | {cold['first_step_s']:.1f} | {_count(cold, 'first_step')} | "
                    f"{_count(cold, 'rest')}, {cold['rest_s']:.1f} | {_compile_s(cold):.1f} | "
                    f"{warm['first_step_s']:.2f} | {_count(warm)} |")
    return "\n".join(rows)


def family_table(run: dict) -> str:
    families: dict[str, list] = {}
    for r in run["records"]:
        f = families.setdefault(r["family"], [0, 0.0])
        f[0] += 1
        f[1] += r["self_seconds"]
    total = sum(s for _, s in families.values()) or 1.0
    rows = ["| family | functions | s (self) | share |", "|---|---:|---:|---:|"]
    for name, (n, s) in sorted(families.items(), key=lambda kv: -kv[1][1]):
        rows.append(f"| {name} | {n} | {s:.1f} | {100 * s / total:.0f}% |")
    return "\n".join(rows)


def top_table(run: dict, top: int) -> str:
    records = sorted(run["records"], key=lambda r: -r["self_seconds"])
    total = sum(r["self_seconds"] for r in records) or 1.0
    rows = ["| function | signature (abridged) | s (self) | s (with callees) | cumulative share |",
            "|---|---|---:|---:|---:|"]
    cumulative = 0.0
    for r in records[:top]:
        cumulative += r["self_seconds"]
        sig = r["signature"] if len(r["signature"]) <= 60 else r["signature"][:57] + "..."
        rows.append(f"| {r['family']}.{r['name']} | `{sig}` | {r['self_seconds']:.2f} | {r['seconds']:.2f} | "
                    f"{100 * cumulative / total:.0f}% |")
    half, n = 0.0, 0
    for r in records:
        half += r["self_seconds"]
        n += 1
        if half >= total / 2:
            break
    rows.append(f"\n{n} of {len(records)} functions take half of the {total:.1f} s.")
    return "\n".join(rows)


def report(result: dict, top: int) -> str:
    m = result["machine"]
    load = result["load_before"]
    parts = [f"{result['date']}, {m.get('cpu', '?')} ({m.get('simd', '?')}, {m['cores']} cores), Numba {m['numba']}, "
             f"load average {load[0]:.2f} before and {result['load_after'][0]:.2f} after", "",
             summary_table(result)]
    for model, mr in result["models"].items():
        parts += ["", f"### {model}, cold: seconds per kernel family", "", family_table(mr["cold"]), "",
                  f"### {model}, cold: the {top} slowest functions", "", top_table(mr["cold"], top)]
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest functions to list")
    parser.add_argument("--show", action="store_true", help="reprint the last run's tables; measure nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.show:
        if not args.out.exists():
            raise SystemExit(f"no results in {args.out}: run without --show first")
        result = json.loads(args.out.read_text())
    else:
        result = measure(args.models, args.out)
    print(report(result, args.top))


if __name__ == "__main__":
    main()
