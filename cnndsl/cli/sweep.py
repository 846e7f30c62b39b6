"""cnndsl sweep: search a file's search space with Optuna (docs/sweep.md)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.cli.options import EPOCHS, SEED, data_help, model_options
from cnndsl.diagnostics import CnnError, Diagnostic


@cli.command()
@click.argument("file")
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Trials to train in the study, all processes together (invalid points do not count).")
@click.option("--epochs", type=EPOCHS, default=None, help="Epochs per trial (default: the file's).")
@click.option("--objective", type=click.Choice(["accuracy", "loss"]), default="accuracy", show_default=True,
              help="Held-out accuracy (maximized) or held-out loss (minimized).")
@click.option("--minimize", type=click.Choice(["flops", "params", "latency"]), default=None,
              help="A second objective: FLOPs, parameters or the measured milliseconds of a single-image "
                   "prediction (a multi-objective study: the Pareto front; no pruning).")
@click.option("--space", "spaces", multiple=True, metavar="NAME=SPEC",
              help="Sweep a parameter (or lr, batch, weight_decay, momentum): 8,16,32 | choice(...) | int(1,4) | "
                   "float(0.1,0.5) | log(1e-4,1e-1). Repeatable.")
@click.option("--out", "out_dir", default=None, help="Folder of the study (default runs/<file name>-sweep).")
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default="median", show_default=True,
              help="Stops trials after an epoch: below the median of earlier trials, or successive halving.")
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--seed", type=SEED, default=None, help="Seed of the sampler.")
@click.option("--data", default=None, help=data_help())
@click.option("--no-augment", is_flag=True, help="Switch the file's augmentation off in every trial.")
@click.option("--storage", default=None,
              help="A database URL shared by several machines (default: sqlite in --out).")
@click.option("--study", "study_name", default="sweep", show_default=True, help="The study's name in the storage.")
@click.option("--max-invalid", type=click.IntRange(min=1), default=None,
              help="Stop after this many invalid points (default max(100, 10 x trials)).")
@model_options
@opt_level_option
def sweep(file, trials, epochs, objective, minimize, spaces, out_dir, pruner, sampler, seed, data, no_augment,
          storage, study_name, max_invalid, load_kwargs):
    """Search the file's search space: each trial trains a point the shape checker accepts.

    Writes sweep.json, sweep.csv, sweep.png (accuracy against FLOPs, with the Pareto front),
    best.cnn (the best point as a plain file) and best.safetensors (its weights) to --out,
    beside the study (study.db). Run the same command again to resume an interrupted sweep, or
    in several processes at once to share the work."""
    from cnndsl.sweep.space import read_space
    from cnndsl.sweep.study import SweepConfig, open_study, recover, require_optuna, Runner

    require_optuna()
    found = read_space(file, load_kwargs["defines"], load_kwargs["network"], tuple(spaces))
    if found is None:
        from cnndsl.cli.options import load_model

        load_model(file, load_kwargs)  # a file that does not load says why
        raise CnnError([Diagnostic("error", f"{file} has no search space: nothing to sweep", None,
                                   help="give a parameter a space in the network's header "
                                        "(width = choice(8, 16, 32)) or on the command line "
                                        "(--space width=8,16,32); see docs/sweep.md", code="no-space")])
    space, text, module, net = found
    out = Path(out_dir or Path("runs") / f"{Path(file).stem}-sweep")
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    cfg = SweepConfig(file=file, space=space, text=text, out=out, trials=trials, epochs=epochs, objective=objective,
                      minimize=minimize, pruner=pruner, sampler=sampler, seed=seed, data=data,
                      augment=not no_augment, profile=load_kwargs["profile"], network=load_kwargs["network"],
                      storage=storage, study_name=study_name, max_invalid=max_invalid,
                      opt_level=selected_opt_level(), echo=echo)
    study = open_study(cfg)
    echo(f"sweep of {file}: {space.describe()}")
    echo(f"study {study_name} in {cfg.storage or out / 'study.db'}: {len(study.trials)} trials so far; "
         f"target {trials} trained trials")
    recover(study, echo, [d.name for d in space.dims])
    runner = Runner(cfg, study)
    # matplotlib (the trials' curves and sweep.png) imported before any trial: a Ctrl-C that lands
    # while a trial imports it leaves it half-initialized, and the final plot then failed with
    # "internal error: KeyError: 'Rectangle:kwdoc'" (seen once in CI's slow run)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg  # noqa: F401  (the curves' canvas: a pybind11 module, see trainer.fit)
    import matplotlib.pyplot  # noqa: F401
    interrupted = False
    try:
        runner.run(after_trial=lambda: _write(cfg, study, module, net, final=False))
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted = True
    _write(cfg, study, module, net, final=True)
    if interrupted:
        echo(f"\nstopped; run the same command again to continue the study in {out}")
        sys.exit(130)


def _write(cfg, study, module, net, final: bool) -> None:
    from cnndsl.sweep import results as R

    rows = R.rows_of(study, cfg.space)
    R.write_tables(cfg.out, rows, cfg.space, cfg.objective,
                   extra={"file": cfg.file, "epochs": cfg.epochs, "minimize": cfg.minimize})
    if not final:
        return
    best = R.best_of(rows, cfg.objective)
    for line in R.table_lines(rows, cfg.space, best):
        click.echo(line)
    counts = R.counts_of(rows)
    click.echo(R.summary_line(counts))
    x = {"latency": "latency_ms", None: "flops"}.get(cfg.minimize, cfg.minimize)
    what = {"flops": "FLOPs", "params": "parameters", "latency_ms": "latency"}[x]
    if R.write_plot(cfg.out, rows, x, title=f"{Path(cfg.file).name}: held-out accuracy against {what}"):
        click.echo(f"plot: {cfg.out / R.PLOT_FILE}")
    if best is None:
        click.echo("no trial has completed yet: no best point")
        return
    from cnndsl.sweep.space import show_point

    shown = f"held-out accuracy {best.accuracy:.4f}" if best.accuracy is not None else f"held-out loss {best.loss:.4f}"
    header = (f"The best point of `cnndsl sweep {cfg.file}` (trial {best.number} of {cfg.out / R.JSON_FILE}):\n"
              f"{show_point(best.point)}: {shown} after {best.epochs} epoch{'s' if best.epochs != 1 else ''}.")
    try:
        path, weights = R.write_best(cfg.out, best, cfg.space, cfg.text, module, net, cfg.profile, cfg.network,
                                     header)
    except CnnError as e:  # pragma: no cover
        print_diagnostics(e.diagnostics)
        return
    click.echo(f"best: trial {best.number}, {show_point(best.point)}, {shown} ({best.params:,} parameters, "
               f"{best.flops:,} FLOPs)")
    click.echo(f"wrote {path}" + (f" and {weights}" if weights else "") +
               f"; table: {cfg.out / R.JSON_FILE}, {cfg.out / R.CSV_FILE}")
