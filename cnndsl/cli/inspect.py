"""check, shapes, graph: commands that read a model and never run it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click

from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.cli.options import load_model, model_options
from cnndsl.diagnostics import CnnError, file_error


@cli.command()
@click.argument("files", nargs=-1, required=True)
@model_options
def check(files, load_kwargs):
    """Check model files: exit 0 when all are valid, 1 with diagnostics otherwise.

    Beyond the language and the shapes, a model must fit in memory: parameters (or one sample
    of inference) larger than this machine's memory are an error; a training step at the file's
    batch that will not fit is a warning with the figures (cnndsl/analysis/memory.py)."""
    from cnndsl.analysis.memory import check_model, training_warning
    from cnndsl.analysis.summary import summary_rows, totals

    from cnndsl.sweep.check import check_space_file

    failed = 0
    for path in files:
        space_ok = check_space_file(path, load_kwargs, click.echo)  # a search space: every point (issue 19)
        if space_ok is not None:
            failed += not space_ok
            continue
        try:
            program = load_model(path, load_kwargs)
            check_model(program)  # what Model refuses: parameters or one inference sample too large
        except CnnError as e:
            print_diagnostics(e.diagnostics)
            failed += 1
            continue
        warning = training_warning(program)
        if warning is not None:
            print_diagnostics([warning])
        t = totals(summary_rows(program.graph))
        click.echo(f"{path}: ok ({len(program.graph)} nodes, {t['params']:,} parameters)")
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable records instead of the table.")
@click.option("--optimized", is_flag=True, help="The inference graph after the optimization passes (-O level), "
              "with the pass that rewrote each layer.")
@model_options
@opt_level_option
def shapes(file, as_json, optimized, load_kwargs):
    """Every layer's output shape, parameters, FLOPs and receptive field."""
    from cnndsl.analysis.summary import format_table, summary_rows
    from cnndsl.sweep.check import check_space_file

    space_ok = check_space_file(file, load_kwargs, click.echo, table=True)  # a search space: every point
    if space_ok is not None:
        sys.exit(0 if space_ok else 1)
    program = load_model(file, load_kwargs)
    shown = _optimized(program.graph) if optimized else program.graph
    rows = summary_rows(shown)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        from cnndsl.analysis.memory import memory_lines

        click.echo(format_table(rows, shown))
        click.echo("\n".join(memory_lines(program)))


@cli.command()
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png", "pdf"]), default=None,
              help="Output format (default: from the -o file's extension, else dot).")
@click.option("-o", "--output", default=None,
              help="Write here instead of stdout; the format follows the extension (.dot/.gv, .svg, .png, .pdf).")
@click.option("--optimized", is_flag=True, help="Draw the inference graph after the optimization passes (-O level).")
@model_options
@opt_level_option
def graph(file, fmt, output, optimized, load_kwargs):
    """Draw the network (Graphviz DOT; SVG/PNG through Graphviz's `dot` when installed)."""
    from cnndsl.ir.dot import to_dot
    from cnndsl.io.atomic import atomic_write_bytes

    fmt = _graph_format(fmt, output)
    program = load_model(file, load_kwargs)
    text = to_dot(_optimized(program.graph) if optimized else program.graph)
    if fmt == "dot":
        if output:
            atomic_write_bytes(output, text.encode())
        else:
            click.echo(text)
        return
    dot = shutil.which("dot")
    if dot is None:
        dot_name = str(Path(output or Path(file).name).with_suffix(".dot"))
        raise file_error(output or file, f"drawing {fmt.upper()} needs Graphviz's `dot` program, which is not installed",
                         expected="Graphviz's `dot` on the PATH", found="no `dot` program; nothing was written",
                         help=f"install Graphviz (e.g. `apt install graphviz`), or write the DOT text with "
                              f"-o {dot_name} and render it elsewhere (`dot -T{fmt} {dot_name}`)",
                         code="graphviz-missing")
    if not output:
        output = str(Path(file).with_suffix(f".{fmt}").name)
    result = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise file_error(output, "Graphviz failed to draw the graph", found=result.stderr.decode(errors="replace"))
    atomic_write_bytes(output, result.stdout)
    click.echo(f"wrote {output}")


GRAPH_FORMATS = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf"}


def _graph_format(fmt: str | None, output: str | None) -> str:
    """The drawing's format: --format, else the -o file's extension, else DOT; an extension
    that contradicts --format, or that no format has, is an error (DOT text in net.png exited 0)."""
    ext = Path(output).suffix.lower() if output else ""
    by_ext = GRAPH_FORMATS.get(ext)
    if output and ext and by_ext is None:
        raise file_error(output, f"cannot tell the drawing's format from the extension '{ext}'",
                         expected=f"one of {', '.join(GRAPH_FORMATS)}", found=ext,
                         help="name the file .dot, .svg, .png or .pdf, or give --format", code="graph-format")
    if fmt is not None and by_ext is not None and by_ext != fmt:
        raise file_error(output, f"--format {fmt} does not match the extension '{ext}'",
                         expected=f"a .{fmt} file with --format {fmt}", found=f"{Path(output).name}",
                         help=f"leave --format out (the extension says {by_ext}), or name the file .{fmt}",
                         code="graph-format")
    return fmt or by_ext or "dot"


def _optimized(graph):
    """The inference graph after the pass pipeline at the -O level (node.meta["rewritten_by"] set)."""
    from cnndsl.passes.pipeline import optimize

    return optimize(graph, "inference", selected_opt_level())
