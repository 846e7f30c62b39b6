"""The `cnndsl` command line: one click group, commands in sibling modules.

Every command turns a CnnError into rendered diagnostics on stderr and exit
status 1; anything else escaping is an internal error, reported in one line
(set CNNDSL_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import click

from cnndsl.diagnostics import CnnError, file_error, interrupted


class _Command(click.Command):
    """Every cnndsl command: a text option or argument given as "" (an unset shell variable,
    `--out "$OUT"`) is a usage error. It was taken as not given (train --out "" wrote to
    runs/NAME, --data "" trained on the file's dataset) or as the current folder ('.: error: weights
    path is a directory'; check "": ': error:  is a directory')."""

    def parse_args(self, ctx, args):
        rest = super().parse_args(ctx, args)
        for param in self.params:
            if not isinstance(param.type, click.types.StringParamType):
                continue
            value = ctx.params.get(param.name)
            if value == "" or (isinstance(value, tuple) and "" in value):
                raise click.BadParameter("the value is empty (an unset shell variable?)", ctx=ctx, param=param)
        return rest


class _Group(click.Group):
    command_class = _Command

    def invoke(self, ctx):
        # `train` and `sweep` ignore Ctrl-C once they are stopping (the checkpoint is saved, a second
        # Ctrl-C would only cut the message short). A process that runs a command in-process (click's
        # CliRunner, a notebook) gets its own handler back afterwards, not an ignored Ctrl-C.
        main_thread = threading.current_thread() is threading.main_thread()
        sigint = signal.getsignal(signal.SIGINT) if main_thread else None
        try:
            return self._invoke(ctx)
        finally:
            if sigint is not None and signal.getsignal(signal.SIGINT) is not sigint:
                signal.signal(signal.SIGINT, sigint)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnError as e:
            print_diagnostics(e.diagnostics)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as e:  # the file system refused: a path too long, a folder in the way, /proc
            if os.environ.get("CNNDSL_DEBUG"):
                raise
            where = e.filename if e.filename is not None else "<file>"
            print_diagnostics(file_error(where, f"cannot access this file: {e.strerror or e}",
                                         help="check the path: its folders must exist and be writable, "
                                              "and each name at most 255 bytes", code="os-error").diagnostics)
            ctx.exit(1)
        except Exception as e:  # a bug in cnndsl, not in the user's input
            if interrupted(e):  # a Ctrl-C that became an extension's ImportError (diagnostics.interrupted)
                click.echo("interrupted", err=True)
                ctx.exit(130)
            if os.environ.get("CNNDSL_DEBUG"):
                raise
            click.echo(f"cnndsl: internal error: {type(e).__name__}: {e} "
                       "(set CNNDSL_DEBUG=1 for a traceback, and please report it)", err=True)
            ctx.exit(2)


def print_diagnostics(diagnostics) -> None:
    for d in diagnostics:
        click.echo(d.render(), err=True)
    errors = sum(d.severity == "error" for d in diagnostics)
    if errors:
        click.echo(f"{errors} error{'s' if errors != 1 else ''}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnndsl")
def cli():
    """cnndsl: check, inspect, compile and train CNNs written as .cnn files."""


def main() -> None:
    # Importing the command modules registers their commands on `cli`.
    from cnndsl.cli import augment, bench, compile, inspect, sweep, train, warmup  # noqa: F401,A004
    from cnndsl.cli import export, import_cmd  # noqa: F401  (interop: docs/interop.md)

    cli(prog_name="cnndsl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
