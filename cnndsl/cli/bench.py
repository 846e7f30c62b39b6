"""bench: how fast a model compiles, infers and trains here, on synthetic inputs.

    cnndsl bench examples/lenet5.cnn                    # a small table
    cnndsl bench examples/vgg_small.cnn --batch 32 --no-train --json
    cnndsl bench examples/lenet5.cnn --per-kernel       # also: where a step's time goes, per kernel

Warm-up runs (kernel compilation, buffer allocation) are excluded from the speeds, and each
speed is the median of --repeats timed repeats. Numba's compilations are counted and timed as
they happen (cnndsl.backend.compile_events): how many functions compiled and the seconds spent
compiling them (0 functions: every kernel came from the on-disk cache). The comparison with PyTorch is
benchmarks/vs_pytorch.py (docs/performance.md).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import click
import numpy as np

from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.cli.main import cli
from cnndsl.cli.options import SEED, load_model, model_options
from cnndsl.cli.train import _DEVICE, device_option

MIN_REPEAT_S = 0.05  # a timed repeat loops a fast call until about this long, for clock resolution


def median_seconds(fn, repeats: int) -> float:
    """Median seconds of one call of an already warmed-up fn over `repeats` timed repeats."""
    t0 = time.perf_counter()
    fn()
    inner = max(1, min(10_000, int(MIN_REPEAT_S / max(time.perf_counter() - t0, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def seconds_of(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def default_batch(program) -> int:
    return program.training.batch if program.training is not None else 64


def why_no_training(program, model, wanted: bool) -> str | None:
    if not wanted:
        return "--no-train"
    if program.training is None:
        return "the file has no train section"
    if not model.losses:
        return "the model has no loss"
    return None


def measure_inference(model, batch: int, repeats: int, rng) -> dict:
    one = rng.standard_normal((1,) + model.input_shape).astype(np.float32)
    many = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    first = seconds_of(lambda: model.predict(one, batch=1))  # includes compiling the kernels
    model.predict(many, batch=batch)
    latency = median_seconds(lambda: model.predict(one, batch=1), repeats)
    per_batch = median_seconds(lambda: model.predict(many, batch=batch), repeats)
    return {"first_inference_s": first, "inference_latency_us_batch1": latency * 1e6,
            "inference_images_per_s": batch / per_batch}


def measure_training(model, batch: int, repeats: int, rng) -> dict:
    from cnndsl.train.trainer import optimizer_for

    model.set_optimizer(optimizer_for(model.config, model.store.params))  # the file's optimizer
    x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    targets = model.example_targets(batch, rng)
    step = iter(range(10**9))

    def train_step():
        model.train_step(x, targets, next(step))

    first = seconds_of(train_step)  # includes compiling the backward kernels
    return {"first_train_step_s": first, "train_images_per_s": batch / median_seconds(train_step, repeats)}


def threads_in_use(device: str) -> int | None:
    if device != "cpu":
        return None
    import numba

    return numba.get_num_threads()


ROWS = (  # (key, label, unit, format)
    ("compile_s", "compile (parse, check, optimize, plan)", "s", "{:.3f}"),
    ("kernels_compiled", "kernel functions compiled by Numba (0: all cached)", "", "{:,d}"),
    ("kernel_compile_s", "seconds compiling them", "s", "{:.2f}"),
    ("first_inference_s", "first inference, batch 1 (kernel JIT)", "s", "{:.2f}"),
    ("inference_latency_us_batch1", "inference latency, batch 1", "us", "{:,.0f}"),
    ("inference_images_per_s", "inference throughput, batch {batch}", "images/s", "{:,.0f}"),
    ("first_train_step_s", "first training step, batch {batch} (kernel JIT)", "s", "{:.2f}"),
    ("train_images_per_s", "training throughput, batch {batch}", "images/s", "{:,.0f}"),
)


def render_table(result: dict) -> str:
    threads = f", {result['threads']} threads" if result["threads"] else ""
    lines = [f"{result['network']} ({result['file']}) on {result['device']}, -O{result['opt_level']}{threads}, "
             f"median of {result['repeats']} repeats"]
    shown = [(label.format(batch=result["batch"]), fmt.format(result[key]), unit)
             for key, label, unit, fmt in ROWS if result.get(key) is not None]
    width = max(len(label) for label, _, _ in shown)
    value_width = max(len(value) for _, value, _ in shown)
    lines += [f"  {label:<{width}}  {value:>{value_width}} {unit}".rstrip() for label, value, unit in shown]
    if result.get("training_skipped"):
        lines.append(f"  training not measured: {result['training_skipped']}")
    return "\n".join(lines)


PROFILE_ROWS = 15


def profile_step(model, kind: str, batch: int, run, repeats: int) -> list[dict]:
    """Per-launch time of one step of the `kind` executable (run() runs that step), busiest first."""
    exe = model.executable(kind, batch)
    exe.timings = {}
    try:
        for _ in range(repeats):
            run()
    finally:
        timings, exe.timings = exe.timings, None
    total = sum(timings.values())
    rows = [{"node": name, "op": exe.graph.node(name).op,
             "ms": seconds / repeats * 1e3, "share": seconds / total if total else 0.0}
            for name, seconds in timings.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def render_profile(title: str, rows: list[dict]) -> str:
    lines = [f"{title}: {sum(r['ms'] for r in rows):.2f} ms in {len(rows)} launches"]
    width = max(len(r["node"]) for r in rows[:PROFILE_ROWS])
    lines += [f"  {r['ms']:8.3f} ms {100 * r['share']:5.1f}%  {r['node']:<{width}}  {r['op']}" for r in rows[:PROFILE_ROWS]]
    if len(rows) > PROFILE_ROWS:
        rest = rows[PROFILE_ROWS:]
        lines.append(f"  {sum(r['ms'] for r in rest):8.3f} ms {100 * sum(r['share'] for r in rest):5.1f}%  "
                     f"({len(rest)} more launches)")
    return "\n".join(lines)


@cli.command()
@click.argument("file")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch of the throughput figures (default: the file's train batch, else 64).")
@click.option("--train/--no-train", "train", default=True, show_default=True,
              help="Also measure training steps (needs a train section).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed repeats per figure; the median is reported.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the weights and synthetic inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--per-kernel", "per_kernel", is_flag=True,
              help="Also time every kernel launch of a training step (else an inference step) at --batch.")
@model_options
@opt_level_option
@device_option
def bench(file, batch, train, repeats, seed, as_json, per_kernel, load_kwargs):
    """Compile time, inference latency and throughput, and training speed on synthetic inputs."""
    from cnndsl.analysis.memory import require_fits
    from cnndsl.backend.compile_events import counting
    from cnndsl.model import Model
    from cnndsl.train.progress import CompileStatus, _is_tty

    device = _DEVICE.get()
    t0 = time.perf_counter()
    program = load_model(file, load_kwargs)
    batch = batch or default_batch(program)
    # Refuse before allocating: the inference executables at batch 1 and --batch, and the training
    # one at --batch, stay cached side by side (the estimate is not part of the compile time).
    t_check = time.perf_counter()
    require_fits(program, batch, training=train and program.training is not None, inference_batches=(1, batch),
                 eval_batch=0)
    checking_s = time.perf_counter() - t_check
    model = Model(program, seed=seed, opt_level=selected_opt_level(), device=device)
    # compile in this process, as the figures below count it (the compile pool's processes would
    # not be in `compiled`): kernels_compiled and kernel_compile_s stay one process's work
    model.compile_workers = 1
    model.executable("infer", 1)  # the pass pipeline and memory plan run here: part of compiling
    compile_s = time.perf_counter() - t0 - checking_s
    rng = np.random.default_rng(seed)
    result = {"file": file, "network": model.graph.name, "device": device, "opt_level": selected_opt_level(),
              "threads": threads_in_use(device), "batch": batch, "repeats": repeats, "compile_s": compile_s}
    skipped = why_no_training(program, model, train)
    # the figures' warm-ups are where Numba compiles (or loads) the kernels; on a terminal the
    # compile status line shows it happening (stderr; nothing when everything is cached)
    status = CompileStatus(model.graph.name, "live" if _is_tty(sys.stderr) else None)
    with counting(status.on_change) as compiled:
        try:
            result.update(measure_inference(model, batch, repeats, rng))
            if skipped is None:
                result.update(measure_training(model, batch, repeats, rng))
            else:
                result["training_skipped"] = skipped
            if per_kernel:
                result["profile_step"], result["profile"] = profiled_step(model, batch, repeats, skipped is None,
                                                                          rng)
        finally:
            status.finish(compiled)
    result["kernels_compiled"] = compiled.count
    result["kernel_compile_s"] = compiled.seconds
    text = json.dumps(result, indent=2) if as_json else render_table(result)
    if per_kernel and not as_json:
        text += "\n" + render_profile(f"{result['profile_step']} step at batch {batch}", result["profile"])
    click.echo(text)


def profiled_step(model, batch: int, repeats: int, training: bool, rng) -> tuple[str, list[dict]]:
    """(which step, its per-launch profile): a training step when training is measured, else inference."""
    x = rng.standard_normal((batch,) + model.input_shape).astype(np.float32)
    if training:
        targets = model.example_targets(batch, rng)
        steps = iter(range(10**9, 2 * 10**9))
        return "training", profile_step(model, "train", batch, lambda: model.train_step(x, targets, next(steps)),
                                        repeats)
    return "inference", profile_step(model, "infer", batch, lambda: model.predict(x, batch=batch), repeats)
