"""CUDA kernel tests under numba's simulator. They need NUMBA_ENABLE_CUDASIM=1 set before numba
is first imported, so they run in their own pytest invocation (see .ci/run):

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cuda tests/cuda

or, on a machine with a GPU, CNNDSL_CUDA_ON_DEVICE=1 instead. Without either every test here is
skipped (the main run deselects the `cuda` marker anyway).
"""
from __future__ import annotations

import os

import pytest

import cnndsl.kernels.cuda.shim  # noqa: F401  (its NumPy compatibility alias, before any kernel compiles)

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
# On a machine with a GPU the same tests run on the device itself (benchmarks/gpu_session.sh):
#     CNNDSL_CUDA_ON_DEVICE=1 python -m pytest -q -m cuda tests/cuda
ON_DEVICE = os.environ.get("CNNDSL_CUDA_ON_DEVICE", "") == "1" and not SIMULATED


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    skip = pytest.mark.skip(reason="CUDA simulator tests: run with NUMBA_ENABLE_CUDASIM=1 -m cuda tests/cuda")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.cuda)
            # the dropout hash's uint64 products wrap on purpose; under the simulator they are NumPy
            # scalars, which warn on wrap-around
            item.add_marker(pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"))
            if not (SIMULATED or ON_DEVICE):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _shape_rule_tiles(monkeypatch):
    """The GEMM tiles of the shape rules in every test (CNNDSL_CUDA_TUNE=off), whatever choices a
    run with CNNDSL_CUDA_TUNE=on remembered on this machine; test_tune.py sets its own policy."""
    monkeypatch.setenv("CNNDSL_CUDA_TUNE", "off")
