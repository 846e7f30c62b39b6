"""cnndsl: a compiler for convolutional neural networks written as text.

    import cnndsl
    program = cnndsl.load("examples/lenet5.cnn", defines={"classes": "5"})
    print(cnndsl.summary(program))
    model = cnndsl.compile("examples/lenet5.cnn")        # a Model: fit, predict, evaluate, weights
"""
from __future__ import annotations

import os

# Numba's parallel regions give the kernels their threads; OpenBLAS threads on top of them
# oversubscribe the cores (both spin while waiting) and made a LeNet-5 training step 5x slower
# on 2 cores (77 ms against 16 ms). This takes effect when cnndsl is imported before NumPy
# (always so for the `cnndsl` command); set OPENBLAS_NUM_THREADS yourself to choose otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cnndsl import kernel_cache  # noqa: E402  (after the BLAS setting: it imports Numba)

kernel_cache.configure()

__version__ = "0.1.0"

__all__ = ["load", "loads", "compile", "summary", "CnnError", "__version__"]

from cnndsl.diagnostics import CnnError


def load(path, defines=None, profile=None, network=None):
    """Parse, lower and shape-check a .cnn file; raises CnnError with every diagnostic."""
    from cnndsl.frontend import load as _load

    return _load(path, defines=defines, profile=profile, network=network)


def loads(text, filename="<string>", defines=None, profile=None, network=None):
    """Like load(), from a string."""
    from cnndsl.frontend import loads as _loads

    return _loads(text, filename=filename, defines=defines, profile=profile, network=network)


def summary(program) -> str:
    """The layer table that `cnndsl shapes` prints."""
    from cnndsl.analysis.summary import format_table, summary_rows

    return format_table(summary_rows(program.graph), program.graph)


def compile(path_or_program, defines=None, profile=None, device="cpu", seed=None):
    """A trainable, runnable Model for a .cnn file (or a loaded program)."""
    from cnndsl.model import compile as _compile

    return _compile(path_or_program, defines=defines, profile=profile, device=device, seed=seed)
