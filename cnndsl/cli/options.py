"""Options shared by every command that reads a model file."""
from __future__ import annotations

import contextvars
import functools
from pathlib import Path

import click

from cnndsl.diagnostics import CnnError, Diagnostic


SEED_MAX = 2**32 - 1  # the train section's `seed` takes the same range (cnndsl/frontend/training.py)
SEED = click.IntRange(0, SEED_MAX)  # a --seed: NumPy's generators refuse a negative one, Numba one over 64 bits
EPOCHS = click.IntRange(1, 1_000_000)  # an --epochs: the train section's `epochs` takes the same range


class FiniteFloatRange(click.FloatRange):
    """A click.FloatRange that also refuses inf and nan (click's range admits `--lr inf` and
    `--lr nan`, which failed much later, in the schedule, as an internal error)."""

    def convert(self, value, param, ctx):
        import math

        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return v


def check_png_output(output: str, what: str, code: str, bare: bool = False) -> None:
    """-o of a command that writes a PNG, checked before any work: another extension would get
    PNG bytes (a .jpg that is no JPEG), a folder would fail only at the end. `bare`: a name
    without an extension is accepted too."""
    from cnndsl.diagnostics import file_error

    p = Path(output)
    if p.suffix.lower() != ".png" and (p.suffix or not bare):
        raise file_error(output, f"{what} is written as PNG", expected="an output name ending in .png",
                         found=f"'{p.name}'", help=f"-o {p.with_suffix('.png')}", code=code)
    if p.is_dir():
        raise file_error(output, "-o names a folder", expected="the name of a PNG file to write",
                         found="a folder", help=f"-o {p / 'out.png'}", code=code)


def parse_defines(values: tuple[str, ...]) -> dict[str, str]:
    """`-D classes=5 -D width=8` -> {"classes": "5", "width": "8"}."""
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CnnError([Diagnostic("error", f"-D takes NAME=VALUE, got '{item}'",
                                       help="for example -D classes=5", code="cli-define")])
        out[name.strip()] = value.strip()
    return out


def context_option(var: contextvars.ContextVar, name: str, *decls, **attrs):
    """A click option `name` (declared by `decls` and `attrs`) that the command does not take as
    an argument: its value is set in the context variable `var` for the command's duration, where
    the code that compiles a model reads it (`-O`, `--device`)."""
    def decorate(fn):
        @click.option(*decls, name, **attrs)
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            token = var.set(kwargs.pop(name))
            try:
                return fn(*args, **kwargs)
            finally:
                var.reset(token)

        return wrapper

    return decorate


def data_help(generated: bool = True) -> str:
    """The --data help: the formats of the registry (cnndsl/data/formats/registry.py), and, where
    the command goes through the trainer's data, the generated task data sets."""
    from cnndsl.data.formats.registry import FORMATS_TEXT

    tasks = "; localization_digits, detection_digits or segmentation_digits (generated)" if generated else ""
    return f"Dataset: {FORMATS_TEXT}{tasks}. Default: the file's dataset, else digits."


def model_options(fn):
    """-D NAME=VALUE, --profile and --network; passes `load_kwargs` to the command."""

    @click.option("-D", "--define", "defines", multiple=True, metavar="NAME=VALUE",
                  help="Override a network parameter (repeatable).")
    @click.option("--profile", default=None, help="Use the named profile of the training section.")
    @click.option("--network", default=None, help="Which network, when the file defines several.")
    @functools.wraps(fn)
    def wrapper(*args, defines, profile, network, **kwargs):
        load_kwargs = {"defines": parse_defines(defines), "profile": profile, "network": network}
        return fn(*args, load_kwargs=load_kwargs, **kwargs)

    return wrapper


def load_model(path: str, load_kwargs: dict):
    """Load a model and print its warnings; errors propagate as CnnError."""
    from cnndsl.cli.main import print_diagnostics
    from cnndsl.frontend import load

    program = load(path, **load_kwargs)
    print_diagnostics(program.diagnostics)
    return program
