"""No float64 in any CUDA kernel, checked by compiling every kernel for the real CUDA target (the
simulator checks no types). This module sorts last, so its subprocess, started when the module
is collected, runs beside the simulator tests on another core."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
ON_DEVICE = os.environ.get("CNNDSL_CUDA_ON_DEVICE", "") == "1"


def _env_without_simulator():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


_TYPECHECK = subprocess.Popen([sys.executable, "-m", "cnndsl.kernels.cuda.typecheck"], cwd=ROOT,
                              env=_env_without_simulator(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) if SIMULATED or ON_DEVICE else None


def test_no_float64_in_any_kernel_for_the_real_target():
    """Every kernel (and GEMM variant) typed and lowered by numba's CUDA compiler for cc 8.0 with its
    declared argument types: no double in its LLVM IR (the script's self-test first shows that a
    float64 literal and a float64 argument ARE caught)."""
    out, _ = _TYPECHECK.communicate(timeout=600)
    assert _TYPECHECK.returncode == 0, out
    assert "self-test passed" in out and " 0 with float64" in out, out


