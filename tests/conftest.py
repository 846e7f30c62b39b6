"""Marks the tests that .ci/run runs a second time under NUMBA_BOUNDSCHECK=1 (`-m boundscheck`):
together they call every CPU kernel, the augmentation kernels and the optimizer steps, directly
and through the launchers of whole training runs, so an out-of-bounds index in any of them
raises IndexError there instead of corrupting memory silently (issue 13)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
BOUNDSCHECK_TESTS = (
    "kernels/",                           # every CPU kernel against its reference
    "passes/test_resnet_kernels.py",      # the fused kernels of the optimization passes
    "passes/test_equivalence.py",         # every example, optimized and not, through the launchers
    "test_autodiff.py",                   # every example's backward pass through the executor
    "test_optim.py",                      # the optimizer steps (cnndsl/train/optim.py)
    "test_augment.py",                    # the augmentation kernels
    "test_training.py",                   # whole training runs: the launchers and their buffers
    "test_tasks_yolo.py",                 # the detection loss
    "test_tasks_data.py",                 # segmentation and detection targets through evaluate
    "test_transfer.py",                   # frozen layers, partial gradients
    "test_activations.py",                # every activation's kernels, through the launchers too
    "test_new_layers.py",                 # global_maxpool, multiply, lrn, softmax_axis, bilinear via launchers
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            rel = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if rel.startswith(BOUNDSCHECK_TESTS):
            item.add_marker(pytest.mark.boundscheck)


# -- running the suite on every core (pytest-xdist, in the test extra) ----------------------------
# The suite is mostly independent tests, each a few kernel calls or a CLI subprocess: serial, it
# kept one of this machine's two cores busy (a cold cache, 2026-12-03: 376 s of wall for 414 CPU s);
# on two workers it took 4 min 11 s cold and 3 min 9 s warm (docs/performance.md, "Compile time").
# So `python -m pytest` runs on every core when pytest-xdist is installed, serially without it (the
# GPU machine's offline install, a plain `pip install pytest`); `-n 0` (or -p no:xdist) asks for a
# serial run (--pdb, one test), `-n N` for N workers.
MAX_WORKERS = 8


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`-n auto` unless the command line says how many workers (-n), xdist is absent or disabled
    (no `numprocesses` option), or this process is one of xdist's workers. Runs before xdist's own
    pytest_cmdline_main (a conftest's hooks are called before those of plugins registered earlier),
    which turns "auto" into pytest_xdist_auto_num_workers' count."""
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if getattr(config.option, "numprocesses", False) is None:
        config.option.numprocesses = "auto"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core this process may run on (the compile pool's count), at most
    MAX_WORKERS. xdist's own count is the physical cores (through psutil, when it is installed) or
    os.cpu_count(), which ignores a CPU affinity mask (a container's, taskset's). Each worker runs
    its kernels on every core (Numba's threads) and holds its own Numba and LLVM, so more workers
    than that only add memory. PYTEST_XDIST_AUTO_NUM_WORKERS, when set, wins as in xdist."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "").strip()
    if env.isdigit():
        return int(env)
    from cnndsl.backend.compile_pool import available_cores

    return max(1, min(available_cores(), MAX_WORKERS))
