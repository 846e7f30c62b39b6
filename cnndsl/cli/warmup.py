"""`cnndsl warmup FILE...`: compile ahead of time everything training these models needs.

Numba compiles each kernel the first time this machine uses it and keeps it in its on-disk cache
(cnndsl/kernel_cache.py); `cnndsl train` does the same compile phase before its first step
(Trainer.compile_kernels). `warmup` runs that phase alone, for several files, so that a first
`train` (or a CI job, or a shared machine's users) starts warm. Kernels take shapes and options
as run-time arguments, so other widths, class counts and batch sizes reuse what it compiled.

When something has to compile, worker processes compile a share of it at once
(cnndsl/backend/compile_pool.py): `--workers N` processes in all (1: this one only), else
CNNDSL_COMPILE_WORKERS, else one per core.
"""
from __future__ import annotations

import sys
import time

import click

from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.cli.main import cli
from cnndsl.cli.options import load_model, model_options


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--no-progress", is_flag=True, help="No live status line (one line per file instead).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes compiling at once, this one included (1: no worker processes). "
                   "Default: CNNDSL_COMPILE_WORKERS, else one per core.")
@model_options
@opt_level_option
def warmup(files, no_progress, workers, load_kwargs):
    """Compile (or load from the cache) the kernels that training FILES needs, with progress."""
    from cnndsl.augment.pipeline import Pipeline
    from cnndsl.model import Model
    from cnndsl.train.trainer import compile_kernels

    report = "live" if not no_progress and sys.stderr.isatty() else "lines"
    total, start = 0, time.perf_counter()
    for path in files:
        program = load_model(path, load_kwargs)
        model = Model(program, opt_level=selected_opt_level(), init_from_file=False)
        config = model.config
        augment = Pipeline.from_config(config.augment, config.seed) if config.augment else None
        counter = compile_kernels(model, config, augment=augment, report=report, processes=workers)
        n = counter.count if counter is not None else 0
        total += n
        click.echo(f"{path}: {n} kernel function{'s' if n != 1 else ''} compiled"
                   + ("" if n else " (all in the cache already)"))
    click.echo(f"warm: {total} function{'s' if total != 1 else ''} compiled in {time.perf_counter() - start:.1f} s "
               f"for {len(files)} file{'s' if len(files) != 1 else ''}")
