"""cnndsl against PyTorch (CPU) on the same workloads, side by side, in one run.

    pip install torch==2.13.0                     # only for this benchmark; cnndsl never needs it
    python benchmarks/vs_pytorch.py               # full run: prints a table, writes results/vs_pytorch.json
    python benchmarks/vs_pytorch.py --quick       # fewer repeats (a smoke test)
    python benchmarks/vs_pytorch.py --threads 2 --markdown
    python benchmarks/vs_pytorch.py --show --markdown   # the tables of the last run, nothing measured

Each framework runs in a process of its own (PyTorch bundles its own OpenMP runtime), with the
same thread count, shapes and batches; warm-up is excluded and every figure is the median of
repeats. What each figure measures: docs/performance.md.
"""
from __future__ import annotations

import os

BASE_ENV = dict(os.environ)  # before anything below changes os.environ (cnndsl caps OpenBLAS threads)

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import _vs_common as C  # noqa: E402
from lenet_cpu import FIRST_STEP as CNNDSL_FIRST_STEP  # noqa: E402  the cold/warm compile-time snippet

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "vs_pytorch.json"
BUSY_LOAD = 1.5  # a load average above this on the machine means the figures are noisy
INSTALL_TORCH = "pip install torch==2.13.0"

TORCH_FIRST_STEP = """
import time; t0 = time.perf_counter()
import sys; sys.path[:0] = [{root!r}, {here!r}]
import torch
torch.set_num_threads({threads})
from cnndsl.data.digits import load_digits
from _vs_torch import lenet5, normalizer_from, trainer
step = trainer(lenet5(), normalizer_from({mean!r}, {std!r}))
x, y = load_digits("train")
step(x[:64], torch.from_numpy(y[:64]))
print(time.perf_counter() - t0)
"""


@dataclass(frozen=True)
class Target:
    of: str  # "ratio": cnndsl/PyTorch; "cnndsl": cnndsl's own figure
    op: str  # ">=" or "<="
    value: float
    unit: str = ""

    def text(self) -> str:
        return f"{self.op} {self.value:g}{'x' if self.of == 'ratio' else ' ' + self.unit}"

    def status(self, cnndsl: float | None, ratio: float | None) -> str:
        value = ratio if self.of == "ratio" else cnndsl
        if value is None:
            return "no PyTorch"
        if (value >= self.value) if self.op == ">=" else (value <= self.value):
            return "met"
        if self.of == "ratio":  # how many times better cnndsl has to get
            factor = self.value / value if self.op == ">=" else value / self.value
            return f"missed by {factor:.2f}x"
        return f"missed by {abs(value - self.value):.1f} {self.unit}"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: Target | None = None


FIGURES = (
    Figure("lenet_train_images_per_s", "LeNet-5 training, batch 64", "images/s", True, Target("ratio", ">=", 1.5)),
    Figure("lenet_latency_us_batch1", "LeNet-5 inference latency, batch 1", "us", False, Target("ratio", "<=", 0.25)),
    Figure("lenet_infer_images_per_s_batch256", "LeNet-5 inference, batch 256", "images/s", True,
           Target("ratio", ">=", 1.2)),
    Figure("vgg_train_images_per_s", "vgg_small training, batch 64", "images/s", True, Target("ratio", ">=", 1.0)),
    Figure("resnet_train_images_per_s", "resnet_tiny training, batch 64", "images/s", True,
           Target("ratio", ">=", 1.0)),
    Figure("conv_fwd_gflops", "conv 3x3 64->64 56x56 b32, forward", "GFLOP/s", True, Target("ratio", ">=", 0.9)),
    Figure("conv_fwd_bwd_gflops", "conv 3x3 64->64 56x56 b32, fwd+bwd", "GFLOP/s", True,
           Target("ratio", ">=", 0.9)),
    Figure("first_step_cold_s", "LeNet-5 to 1st train step, cold cache", "s", False, Target("cnndsl", "<=", 15, "s")),
    Figure("first_step_warm_s", "LeNet-5 to 1st train step, warm cache", "s", False, Target("cnndsl", "<=", 1, "s")),
)


# -- running the two sides ------------------------------------------------------------------
def worker_env(threads: int, **extra: str) -> dict[str, str]:
    """The parent's environment with the thread count both runtimes read (Numba, OpenMP)."""
    path = os.pathsep.join(filter(None, [str(C.ROOT), BASE_ENV.get("PYTHONPATH")]))
    return dict(BASE_ENV, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONPATH=path, **extra)


def run_python(args: list[str], env: dict[str, str]) -> str:
    """Run a Python process and return its last line of stdout. Its stderr (progress, and Numba's
    warnings, one per kernel it cannot cache) is shown only when it fails."""
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        say(done.stderr[-4000:])
        raise SystemExit(f"vs_pytorch: `python {' '.join(args)}` failed with exit status {done.returncode}")
    return done.stdout.strip().splitlines()[-1]


def run_worker(name: str, threads: int, quick: bool) -> dict:
    args = [str(HERE / name)] + (["--quick"] if quick else [])
    if name == "_vs_torch.py":
        args += ["--threads", str(threads)]
    return json.loads(run_python(args, worker_env(threads)))


# Warm starts measured per side, the figure their median: one warm start of LeNet-5 took 0.76 to
# 0.99 s in six processes a minute apart on the quiet 2-core EPYC (2026-12-03 12:12), and a single
# one read 1.13 s in the run before; the cold start is measured once (each needs an empty cache).
WARM_RUNS = 5


def first_steps(snippet: str, threads: int, warm_runs: int = WARM_RUNS) -> dict:
    """Seconds from the top of a fresh process to the end of its first training step: once
    with an empty Numba cache (cold), then in `warm_runs` new processes with the cache the first
    one filled (warm: their median; each run in first_step_warm_runs_s).

    Python's bytecode is cached, as on a user's machine (`pip install` compiles it, and Python
    writes it beside the sources of a checkout): a machine that sets PYTHONDONTWRITEBYTECODE (this
    project's does) otherwise recompiled cnndsl's sources in every process, 0.2 s of a 1.3 s warm
    start (Xeon, 2026-12-03), while PyTorch's and Numba's, installed with their bytecode, did not."""
    with tempfile.TemporaryDirectory(prefix="vs_pytorch_cache-") as cache:
        env = worker_env(threads, NUMBA_CACHE_DIR=cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cold = float(run_python(["-c", snippet], env))
        warm = [float(run_python(["-c", snippet], env)) for _ in range(warm_runs)]
    return {"first_step_cold_s": cold, "first_step_warm_s": statistics.median(warm), "first_step_warm_runs_s": warm}


def torch_first_step_snippet(threads: int) -> str:
    mean, std = C.normalization(C.LENET)
    return TORCH_FIRST_STEP.format(root=str(C.ROOT), here=str(HERE), threads=threads, mean=mean, std=std)


SPEED_KEYS = tuple(f.key for f in FIGURES if not f.key.startswith("first_step"))


def measure(threads: int, quick: bool, with_torch: bool, rounds: int) -> tuple[dict, dict | None, list]:
    """Both sides' figures: the speed workers `rounds` times, alternating cnndsl and PyTorch in
    the order ABBA ABBA ... (a machine whose speed drifts during the run then favours neither:
    on the 2-core EPYC the same worker's figures moved by tens of percent from one run to the
    next), each side's figure the median of its rounds; then the first-step times once each.
    Returns (ours, theirs, the rounds' figures)."""
    per_round = []
    for i in range(rounds):
        order = ["cnndsl", "pytorch"] if with_torch else ["cnndsl"]
        if i % 2:
            order.reverse()
        got = {}
        for side in order:
            say(f"{side}: speed (own process), round {i + 1} of {rounds} ...")
            got[side] = run_worker("_vs_cnndsl.py" if side == "cnndsl" else "_vs_torch.py", threads, quick)
        per_round.append(got)
    ours = median_of([r["cnndsl"] for r in per_round])
    say(f"cnndsl: time to the first training step, cold then warm Numba cache ({WARM_RUNS} runs) ...")
    ours.update(first_steps(CNNDSL_FIRST_STEP, threads))
    if not with_torch:
        return ours, None, per_round
    theirs = median_of([r["pytorch"] for r in per_round])
    say(f"pytorch: time to the first training step (1 + {WARM_RUNS} runs, for the same cold/warm pairing) ...")
    theirs.update(first_steps(torch_first_step_snippet(threads), threads))
    return ours, theirs, per_round


def median_of(runs: list[dict]) -> dict:
    """The first run's record with each speed figure replaced by its median over the runs."""
    out = dict(runs[0])
    for key in SPEED_KEYS:
        out[key] = statistics.median(r[key] for r in runs)
    return out


def round_ratios(per_round: list, key: str) -> list[float]:
    return [r["cnndsl"][key] / r["pytorch"][key] for r in per_round if "pytorch" in r]


# -- the report -------------------------------------------------------------------------------
def rows(ours: dict, theirs: dict | None, per_round: list) -> list[dict]:
    """One row per figure. A speed figure's ratio is the median of the rounds' ratios (each
    round's two runs back to back), with every round's ratio beside it."""
    out = []
    for f in FIGURES:
        mine = ours[f.key]
        other = theirs[f.key] if theirs else None
        ratios = round_ratios(per_round, f.key) if other and f.key in SPEED_KEYS else []
        ratio = statistics.median(ratios) if ratios else mine / other if other else None
        out.append({"key": f.key, "figure": f.label, "unit": f.unit, "cnndsl": mine, "pytorch": other,
                    "ratio": ratio, "round_ratios": ratios,
                    "ratio_meaning": "cnndsl/PyTorch, " + ("higher is better" if f.higher_is_better
                                                           else "lower is better"),
                    "target": f.target.text() if f.target else None,
                    "target_of": f.target.of if f.target else None,
                    "status": f.target.status(mine, ratio) if f.target else ""})
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "vector_extensions": vector_extensions(),
            "openblas": openblas(),
            "OPENBLAS_CORETYPE": BASE_ENV.get("OPENBLAS_CORETYPE"), "OPENBLAS_L2_SIZE": BASE_ENV.get("OPENBLAS_L2_SIZE")}


def vector_extensions() -> list[str]:
    """The SIMD extensions /proc/cpuinfo lists (avx2, avx512f, ...), [] where it cannot be read."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")
    return [f for f in flags.split(":", 1)[1].split() if f in wanted]


def openblas() -> list[dict]:
    """Which OpenBLAS kernels NumPy loads in this environment (threadpoolctl), in a fresh process so
    that the parent's own imports change nothing."""
    code = ("import json, numpy, threadpoolctl; print(json.dumps([{k: i.get(k) for k in "
            "('internal_api', 'version', 'architecture', 'filepath')} for i in threadpoolctl.threadpool_info() "
            "if i.get('internal_api') == 'openblas']))")
    done = subprocess.run([sys.executable, "-c", code], env=BASE_ENV, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else [{"error": "threadpoolctl not installed"}]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("images/s", "us"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


def table_cells(results: dict) -> list[list[str]]:
    cells = []
    for r in results["figures"]:
        arrow = "up" if "higher" in r["ratio_meaning"] else "down"
        ratio = f"{r['ratio']:.2f}x ({arrow})" if r["ratio"] is not None else "-"
        rr = r.get("round_ratios") or []
        if len(rr) > 1:  # the rounds' spread
            ratio += f" [{min(rr):.2f}-{max(rr):.2f}]"
        target = (("ratio " if r["target_of"] == "ratio" else "cnndsl ") + r["target"]) if r["target"] else "-"
        cells.append([f"{r['figure']} ({r['unit']})", number(r["cnndsl"], r["unit"]),
                      number(r["pytorch"], r["unit"]), ratio, target, r["status"] or "-"])
    return cells


HEADER = ["figure", "cnndsl", "PyTorch", "ratio cnndsl/PyTorch [rounds' range]", "target", "status"]


def plain_table(results: dict) -> str:
    cells = [HEADER] + table_cells(results)
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_cells(results)]
    return "\n".join(lines)


def context_line(results: dict) -> str:
    m, load = results["machine"], results["load_average"]
    busy = max(load["start"][0], load["end"][0]) > BUSY_LOAD
    v = results["versions"]
    return (f"{results['date']}, {m['cpu_model']} ({m['cores']} cores), {results['threads']} threads, "
            f"load average {load['start'][0]:.2f} at start / {load['end'][0]:.2f} at end"
            f"{' (machine busy: figures are noisy)' if busy else ''}; "
            f"numpy {v.get('numpy')}, numba {v.get('numba')}, torch {v.get('torch') or 'not installed'}; "
            f"{' '.join(m.get('vector_extensions') or []) or 'vector extensions unknown'}; OpenBLAS "
            f"{', '.join(str(b.get('architecture')) for b in m.get('openblas') or []) or 'unknown'} "
            f"(OPENBLAS_CORETYPE={m.get('OPENBLAS_CORETYPE')}, OPENBLAS_L2_SIZE={m.get('OPENBLAS_L2_SIZE')}); "
            f"`{results['command']}`")


def versions(ours: dict, theirs: dict | None) -> dict:
    v = dict(ours.pop("versions"))
    if theirs:
        t = theirs.pop("versions")
        v.update(torch=t["torch"], torch_threads=t["torch_threads"], torch_mkldnn=t["mkldnn"])
    return v


def write_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def show(results: dict, markdown: bool) -> None:
    print(plain_table(results))
    print(context_line(results))
    if markdown:
        print()
        print(markdown_table(results))
        print()
        print(context_line(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both (default: all cores)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--show", action="store_true", help=f"print the tables of {RESULTS.name}; measure nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--rounds", type=int, default=3,
                        help="speed runs of each side, alternated; figures are medians (default 3)")
    args = parser.parse_args()
    if args.show:
        if not args.out.exists():
            raise SystemExit(f"vs_pytorch: no results in {args.out} yet: run without --show first")
        show(json.loads(args.out.read_text()), args.markdown)
        return
    with_torch = importlib.util.find_spec("torch") is not None
    if not with_torch:
        say(f"PyTorch is not installed: measuring cnndsl only (`{INSTALL_TORCH}` to compare)")
    load_start = os.getloadavg()
    if args.rounds < 1:
        raise SystemExit(f"vs_pytorch: --rounds must be 1 or more, got {args.rounds}")
    ours, theirs, per_round = measure(args.threads, args.quick, with_torch, args.rounds)
    results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "command": " ".join(["python", "benchmarks/vs_pytorch.py", *sys.argv[1:]]),
               "quick": args.quick, "threads": args.threads, "rounds": args.rounds, "machine": machine(),
               "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
               "versions": versions(ours, theirs),
               "cnndsl_conv_ops_timed": ours.pop("conv_ops_timed"),
               "figures": rows(ours, theirs, per_round),
               "per_round": [{side: {k: v for k, v in r.items() if k in SPEED_KEYS} for side, r in got.items()}
                             for got in per_round],
               # every warm start behind the first-step figures (their median), per side
               "first_step_warm_runs_s": {side: r.get("first_step_warm_runs_s")
                                          for side, r in (("cnndsl", ours), ("pytorch", theirs)) if r}}
    write_atomically(args.out, results)
    show(results, args.markdown)
    if not with_torch:
        print(f"PyTorch columns are empty: `{INSTALL_TORCH}` and run again to compare.")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
