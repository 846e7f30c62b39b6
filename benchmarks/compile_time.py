"""Compile time per model: cold and warm seconds to the first training step, functions compiled,
whether the compile pool was used, and where the cold compile's seconds go (per function,
grouped by kernel family).

    python benchmarks/compile_time.py                       # lenet5, vgg_small, resnet_tiny
    python benchmarks/compile_time.py --models lenet5 --top 15
    python benchmarks/compile_time.py --models mobilenet_tiny unet_tiny    # any examples/NAME.cnn
    python benchmarks/compile_time.py --processes 2         # the pool's size (default: the cores)
    python benchmarks/compile_time.py --show                # reprint the last run's tables

Each model runs three times, each time in a fresh process: cold with the compile pool
(cnndsl.backend.compile_pool; NUMBA_CACHE_DIR set to an empty folder), cold in one process
(CNNDSL_COMPILE_WORKERS=1, another empty folder), then warm, with the folder the pooled cold run
filled. A run measures, from the process's first statement: the compile phase `cnndsl train` runs
before its first step (cnndsl.train.trainer.compile_kernels: a training step, an evaluation step
and the file's augmentation, compiled or loaded), then the first real training step (the file's
batch and optimizer, random normal images, random valid targets): "s to the 1st step" is the end
of that step. Random targets, not example_targets' zeros: with every label 0, one SGD step made
the next step's gradients denormal, and vgg_small's next step took 18.8 s instead of 0.5.

Every Numba compilation is recorded as it happens (cnndsl.backend.compile_events), in the main
process and in the pool's workers: its function, signature, wall seconds and CPU seconds
(time.process_time of the process that compiled it), inclusive and "self" (without the callees
compiled inside it), and the pool's unit of work. CPU seconds hardly depend on what else the
machine runs, wall seconds do: on a shared machine compare the CPU columns and the counts.

The 16-process figure is an estimate, not a measurement (`estimate`): the pooled run's CPU
seconds per unit of work, scheduled costliest first onto 16 processes, the workers joining after
their start-up's CPU seconds, after the main process's CPU seconds before its first compilation;
then the warm run's seconds from its model built to its first step done (loading the kernels).
It assumes cores as fast as these, nothing else running, and the same duplicated compilations.
The same model for the measured number of processes is printed beside it as a check.

Writes benchmarks/results/compile_time.json (the machine, the load average before and after, the
date, every record).
"""
from __future__ import annotations

import argparse
import datetime
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "compile_time.json"
MODELS = ("lenet5", "vgg_small", "resnet_tiny")  # the default: the three of benchmarks/vs_pytorch.py
EXAMPLES = tuple(sorted(p.stem for p in (ROOT / "examples").glob("*.cnn")))  # any of them on request
ESTIMATE_PROCESSES = 16

CHILD = """
import time; t0 = time.perf_counter()
import json, sys; sys.path.insert(0, {root!r})
import numpy as np
import cnndsl
from cnndsl.augment.pipeline import Pipeline
from cnndsl.backend.compile_events import counting
from cnndsl.train.trainer import compile_kernels, optimizer_for

model = cnndsl.compile({path!r})
config = model.config
augment = Pipeline.from_config(config.augment, config.seed) if config.augment else None
model_s = time.perf_counter() - t0
phase = compile_kernels(model, config, augment=augment)
phase_s = time.perf_counter() - t0
model.set_optimizer(optimizer_for(config, model.store.params))
rng = np.random.default_rng(0)
x = rng.standard_normal((config.batch,) + model.input_shape).astype(np.float32)
with counting() as step_counter:
    model.train_step(x, model.example_targets(config.batch, rng), step=0)
first_step_s = time.perf_counter() - t0
records = [dict(phase=ph, module=r.module, name=r.name, family=r.family, signature=r.signature, depth=r.depth,
                seconds=r.seconds, self_seconds=r.self_seconds, cpu_seconds=r.cpu_seconds,
                self_cpu_seconds=r.self_cpu_seconds, worker=r.worker, unit=r.unit, start=r.start - t0,
                cpu_start=r.cpu_start)
           for ph, rs in (("compile_phase", phase.records), ("first_step", step_counter.records)) for r in rs]
print("RESULT " + json.dumps(dict(
    network=model.graph.name, batch=config.batch, model_s=model_s, phase_s=phase_s, first_step_s=first_step_s,
    workers=phase.workers, after_pool=len(phase.after_pool) if phase.workers else None, units=phase.units,
    ready_s=phase.ready_s, ready_cpu_s=phase.ready_cpu_s, final_pass_s=phase.final_pass_s, wall_pool=phase.wall_pool, failed=phase.failed,
    records=records)))
"""


def run_child(model: str, cache: Path, processes: int | None) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_BOUNDSCHECK", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached as on a user's machine (vs_pytorch.first_steps)
    env.pop("CNNDSL_COMPILE_WORKERS", None)
    if processes is not None:
        env["CNNDSL_COMPILE_WORKERS"] = str(processes)
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


def measure(models, out: Path, processes: int | None) -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "cores_available": cores, "processes": processes,
              "load_before": os.getloadavg(), "models": {}}
    for model in models:
        runs = {}
        with tempfile.TemporaryDirectory(prefix=f"cnndsl-compile-{model}-") as cache, \
                tempfile.TemporaryDirectory(prefix=f"cnndsl-compile-{model}-serial-") as serial_cache:
            say = lambda text: print(f"{model}: {text}", file=sys.stderr, flush=True)  # noqa: E731
            say(f"cold, one process (load {os.getloadavg()[0]:.2f}) ...")
            runs["cold_serial"] = run_child(model, Path(serial_cache), 1)
            say(f"{runs['cold_serial']['first_step_s']:.1f} s; cold, pool (load {os.getloadavg()[0]:.2f}) ...")
            runs["cold"] = run_child(model, Path(cache), processes)
            say(f"{runs['cold']['first_step_s']:.1f} s with {runs['cold']['workers']} workers; warm ...")
            runs["warm"] = run_child(model, Path(cache), processes)
        runs["load_after"] = os.getloadavg()
        result["models"][model] = runs
    result["load_after"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return result


def estimate(run: dict, warm: dict, processes: int) -> float | None:
    """Seconds to the first step with `processes` compiling at once, from a pooled cold run and the
    warm run after it (see the module docstring): the main process's CPU seconds before its first
    compilation; the units' CPU seconds scheduled costliest first onto the processes, the workers
    joining after their start-up's CPU seconds; then the warm run's seconds from its model built to
    the end of its first step (loading every kernel from the cache, the phase's steps, the first
    step). None without unit records."""
    units: dict[str, float] = {}
    for r in run["records"]:
        if r["phase"] == "compile_phase" and r["unit"]:
            units[r["unit"]] = units.get(r["unit"], 0.0) + r["self_cpu_seconds"]
    main = [r for r in run["records"] if r["phase"] == "compile_phase" and r["worker"] == 0]
    if not units or not main:
        return None
    begin = min(r["cpu_start"] for r in main)
    ready_cpu = run.get("ready_cpu_s") or []
    ready = sum(ready_cpu) / len(ready_cpu) if ready_cpu else 0.0
    free = [begin] + [begin + ready] * (processes - 1)  # when each process can take a unit
    heapq.heapify(free)
    end = begin
    for cost in sorted(units.values(), reverse=True):
        t = heapq.heappop(free)
        heapq.heappush(free, t + cost)
        end = max(end, t + cost)
    return end + warm["first_step_s"] - warm["model_s"]


def _count(run: dict, phase: str | None = None, worker: int | None = None) -> int:
    return sum(1 for r in run["records"] if (phase is None or r["phase"] == phase)
               and (worker is None or r["worker"] == worker))


def _cpu_s(run: dict) -> float:
    return sum(r["self_cpu_seconds"] for r in run["records"])


def summary_table(result: dict) -> str:
    rows = ["| model | batch | cold, one process: s to 1st step | functions | compile CPU s "
            "| cold, pool: processes | s to 1st step | functions (all processes) | compiled by the main process "
            "after the pool | compile CPU s | warm: s to 1st step | functions compiled warm "
            f"| estimate, {ESTIMATE_PROCESSES} processes: s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, m in result["models"].items():
        serial, cold, warm = m["cold_serial"], m["cold"], m["warm"]
        est = estimate(cold, warm, ESTIMATE_PROCESSES)
        check = estimate(cold, warm, cold["workers"] + 1)
        rows.append(f"| {model} | {cold['batch']} | {serial['first_step_s']:.1f} | {_count(serial)} | "
                    f"{_cpu_s(serial):.1f} | {cold['workers'] + 1} | {cold['first_step_s']:.1f} | {_count(cold)} | "
                    f"{cold['after_pool'] if cold['after_pool'] is not None else '-'} | {_cpu_s(cold):.1f} | "
                    f"{warm['first_step_s']:.2f} | {_count(warm)} | "
                    + (f"{est:.1f} (model at {cold['workers'] + 1}: {check:.1f}) |" if est is not None else "- |"))
    return "\n".join(rows)


def unit_table(run: dict) -> str:
    units: dict[str, list] = {}
    for r in run["records"]:
        if r["phase"] == "compile_phase" and r["unit"]:
            u = units.setdefault(r["unit"], [0, 0.0, set()])
            u[0] += 1
            u[1] += r["self_cpu_seconds"]
            u[2].add(r["worker"])
    rows = ["| unit of work | functions | CPU s | process |", "|---|---:|---:|---|"]
    for name, (n, cpu, workers) in sorted(units.items(), key=lambda kv: -kv[1][1]):
        rows.append(f"| {name} | {n} | {cpu:.1f} | {', '.join(map(str, sorted(workers)))} |")
    return "\n".join(rows)


def family_table(run: dict) -> str:
    families: dict[str, list] = {}
    for r in run["records"]:
        f = families.setdefault(r["family"], [0, 0.0])
        f[0] += 1
        f[1] += r["self_cpu_seconds"]
    total = sum(s for _, s in families.values()) or 1.0
    rows = ["| family | functions | CPU s (self) | share |", "|---|---:|---:|---:|"]
    for name, (n, s) in sorted(families.items(), key=lambda kv: -kv[1][1]):
        rows.append(f"| {name} | {n} | {s:.1f} | {100 * s / total:.0f}% |")
    return "\n".join(rows)


def top_table(run: dict, top: int) -> str:
    records = sorted(run["records"], key=lambda r: -r["self_cpu_seconds"])
    total = sum(r["self_cpu_seconds"] for r in records) or 1.0
    rows = ["| function | signature (abridged) | CPU s (self) | CPU s (with callees) | cumulative share |",
            "|---|---|---:|---:|---:|"]
    cumulative = 0.0
    for r in records[:top]:
        cumulative += r["self_cpu_seconds"]
        sig = r["signature"] if len(r["signature"]) <= 60 else r["signature"][:57] + "..."
        rows.append(f"| {r['family']}.{r['name']} | `{sig}` | {r['self_cpu_seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                    f"{100 * cumulative / total:.0f}% |")
    half, n = 0.0, 0
    for r in records:
        half += r["self_cpu_seconds"]
        n += 1
        if half >= total / 2:
            break
    rows.append(f"\n{n} of {len(records)} compilations take half of the {total:.1f} CPU s.")
    return "\n".join(rows)


def report(result: dict, top: int) -> str:
    m = result["machine"]
    load = result["load_before"]
    parts = [f"{result['date']}, {m.get('cpu', '?')} ({m.get('simd', '?')}, {m['cores']} cores, "
             f"{result.get('cores_available', '?')} available), Numba {m['numba']}, load average {load[0]:.2f} "
             f"before and {result['load_after'][0]:.2f} after", "",
             summary_table(result)]
    for model, mr in result["models"].items():
        cold = mr["cold"]
        parts += ["", f"### {model}, cold, pool: units of work (pool used: {'yes' if cold['workers'] else 'no'}, "
                  f"{cold['workers'] + 1} processes, workers ready after {', '.join(f'{t:.1f}' for t in cold['ready_s'])}"
                  f" s ({', '.join(f'{t:.1f}' for t in cold.get('ready_cpu_s', []))} CPU s), final pass "
                  f"{cold['final_pass_s']:.2f} s)", "", unit_table(cold)]
        if cold.get("failed"):
            parts += ["", "units a worker could not run: " + "; ".join(cold["failed"])]
        parts += ["", f"### {model}, cold, one process: CPU seconds per kernel family", "",
                  family_table(mr["cold_serial"]), "",
                  f"### {model}, cold, one process: the {top} slowest compilations", "",
                  top_table(mr["cold_serial"], top)]
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=EXAMPLES,
                        help="examples/NAME.cnn to measure (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest functions to list")
    parser.add_argument("--show", action="store_true", help="reprint the last run's tables; measure nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--processes", type=int, default=None,
                        help="the pool's size for the pooled runs (default: CNNDSL_COMPILE_WORKERS, else the cores)")
    args = parser.parse_args(argv)
    if args.show:
        if not args.out.exists():
            raise SystemExit(f"no results in {args.out}: run without --show first")
        result = json.loads(args.out.read_text())
    else:
        result = measure(args.models, args.out, args.processes)
    print(report(result, args.top))


if __name__ == "__main__":
    main()
