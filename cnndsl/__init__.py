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
# Numba's OpenMP threads spin for GOMP_SPINCOUNT iterations (300,000 by default) before sleeping
# after each parallel region. On a machine shared with other busy processes a spinning thread
# holds a core the others need, and a LeNet-5 training step fell from 7,200 to 160 images/s
# with two busy loops beside it; 10,000 spins kept 7,250 images/s quiet and 3,040 busy
# (docs/performance.md, "Threads"). Set GOMP_SPINCOUNT or OMP_WAIT_POLICY yourself to override.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from cnndsl import kernel_cache  # noqa: E402  (after the BLAS setting: it imports Numba)

kernel_cache.configure()

from cnndsl.version import __version__  # noqa: E402

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
