"""compile: run the optimization pipeline on a model and show what it did.

    cnndsl compile examples/resnet_tiny.cnn                  # summary: passes, kernels before/after
    cnndsl compile FILE -O1 --train --print-ir               # the optimized training graph as .cnn text
    cnndsl compile FILE --dump-after fold_batchnorm          # the graph after one pass
    cnndsl compile FILE --disable-pass fuse_residual --pass-stats --verify-passes

Also the `-O` option that train / eval / predict share (`opt_level_option`).
"""
from __future__ import annotations

import contextvars

import click

from cnndsl.cli.main import cli
from cnndsl.cli.options import context_option, load_model, model_options
from cnndsl.passes.base import MAX_LEVEL
from cnndsl.passes.pipeline import DEFAULT_LEVEL

_OPT_LEVEL = contextvars.ContextVar("opt_level", default=DEFAULT_LEVEL)


# `-O0` ... `-O3` (default -O2) for commands that compile a Model; read it with selected_opt_level().
opt_level_option = context_option(_OPT_LEVEL, "opt_level", "-O", type=click.IntRange(0, MAX_LEVEL),
                                  default=DEFAULT_LEVEL, show_default=True,
                                  help="Optimization level of the pass pipeline (0: none; see docs/passes.md).")


def selected_opt_level() -> int:
    return _OPT_LEVEL.get()


def _pass_choice():
    from cnndsl.passes.pipeline import pass_names

    return click.Choice(pass_names())


@cli.command(name="compile")
@click.argument("file")
@click.option("-O", "opt_level", type=click.IntRange(0, MAX_LEVEL), default=DEFAULT_LEVEL, show_default=True,
              help="Optimization level.")
@click.option("--train", "training", is_flag=True, help="Compile the training graph (autodiff, training-valid passes).")
@click.option("--print-ir", is_flag=True, help="Print the final graph as .cnn text.")
@click.option("--dump-after", multiple=True, type=_pass_choice(), metavar="PASS",
              help="Print the graph after this pass (repeatable).")
@click.option("--disable-pass", multiple=True, type=_pass_choice(), metavar="NAME", help="Skip this pass (repeatable).")
@click.option("--verify-passes", is_flag=True, help="Verify the IR and re-check shapes after every pass.")
@click.option("--pass-stats", is_flag=True,
              help="Per pass: what fired and how many times, and each match it declined with the reason.")
@model_options
def compile_(file, opt_level, training, print_ir, dump_after, disable_pass, verify_passes, pass_stats, load_kwargs):
    """Optimize a model's inference (or --train: training) graph and report what the passes did."""
    from cnndsl.ir.dump import dump
    from cnndsl.passes.base import PassContext
    from cnndsl.passes.pipeline import kernel_count, optimize

    mode = "training" if training else "inference"
    _check_dumps(dump_after, mode, opt_level, disable_pass)
    program = load_model(file, load_kwargs)
    graph = program.graph
    ctx = PassContext()
    extra = {}
    if training:
        from cnndsl.frontend.training import TrainingConfig
        from cnndsl.ir.graph import layers_matching
        from cnndsl.model import optimizer_attrs
        from cnndsl.training_graph import loss_specs

        config = program.training or TrainingConfig()
        # shown on the optimizer_step node: the optimizer, its hyperparameters and the per-layer
        # learning-rate factors (lr_mult; the autodiff pass adds the frozen layers' 0)
        extra = {"losses": loss_specs(program),
                 "frozen": set(layers_matching(graph, config.freeze)),
                 "optimizer": {**optimizer_attrs(config), "lr_mult": config.lr_mults(graph) or None}}
    on_dump = (lambda name, text: click.echo(f"# after {name}\n{text}"))
    out = optimize(graph, mode, opt_level, disabled=disable_pass, verify=verify_passes or None,
                   dump_after=dump_after, on_dump=on_dump, ctx=ctx, **extra)
    if print_ir:
        from cnndsl.backend.cpu.conv import algorithms

        click.echo(dump(out), nl=False)
        for line in algorithms(out):
            click.echo(f"# cpu: {line}")
    baseline = optimize(graph, mode, 0, **extra) if opt_level else out
    click.echo(f"{graph.name}: {mode} -O{opt_level}: {kernel_count(baseline)} kernels at -O0, "
               f"{kernel_count(out)} after; planned activations "
               f"{ctx.notes.get('planned_bytes_per_sample', 0):,} bytes per sample", err=print_ir)
    if pass_stats:
        click.echo(format_pass_stats(ctx), err=print_ir)


def _check_dumps(dump_after, mode: str, opt_level: int, disabled) -> None:
    """A --dump-after pass that this compile does not run is an error: it printed nothing, with no
    word why (compile FILE --dump-after autodiff: autodiff runs only with --train)."""
    from cnndsl.diagnostics import CnnError, Diagnostic, Span
    from cnndsl.passes.base import PassContext
    from cnndsl.passes.pipeline import default_pipeline

    ctx = PassContext(mode=mode, level=opt_level, disabled=frozenset(disabled))
    passes = {p.name: p for p in default_pipeline().passes()}
    errors = []
    for name in dict.fromkeys(dump_after):
        p = passes[name]
        if ctx.enabled(p):
            continue
        if name in ctx.disabled:
            why, fix = "it is disabled with --disable-pass", f"leave out --disable-pass {name}"
        elif mode not in p.modes:
            other = "training" if mode == "inference" else "inference"
            why = f"it runs only when compiling for {other}, this compile is for {mode}"
            fix = "add --train" if other == "training" else "leave out --train"
        else:
            why, fix = f"it runs from -O{p.level}, this compile is -O{opt_level}", f"compile with -O{p.level}"
        errors.append(Diagnostic("error", f"--dump-after {name}: the pass does not run in this compile: {why}",
                                 Span("<command line>", 0, 0), help=fix, code="cli-dump-after"))
    if errors:
        raise CnnError(errors)


def format_pass_stats(ctx) -> str:
    lines = ["passes run: " + " -> ".join(ctx.ran)]
    if not ctx.stats:
        lines.append("nothing fired")
    for name, counter in ctx.stats.items():
        for what, n in counter.items():
            lines.append(f"  {name:24} {what:40} x{n}")
    declined = [(name, where, why) for name, d in ctx.declines.items() for where, why in d.items()]
    if declined:
        lines.append("declined:")
    for name, where, why in declined:
        lines.append(f"  {name:24} {where}: {why}")
    return "\n".join(lines)
