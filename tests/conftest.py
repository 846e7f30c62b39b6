"""Marks the tests that .ci/run runs a second time under NUMBA_BOUNDSCHECK=1 (`-m boundscheck`):
together they call every CPU kernel, the augmentation kernels and the optimizer steps, directly
and through the launchers of whole training runs, so an out-of-bounds index in any of them
raises IndexError there instead of corrupting memory silently (issue 13)."""
from __future__ import annotations

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
