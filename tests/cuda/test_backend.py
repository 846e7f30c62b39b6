"""The CUDA backend as a whole: every op has a CUDA kernel, a missing one is a compile-time
error naming the op, no float64 in any kernel (compiled for the real target, and a source
lint), and `--device cuda` without a GPU exits cleanly."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "cnndsl" / "kernels" / "cuda"
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def _env_without_simulator():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


FORBIDDEN_CALLS = {"max", "min", "abs", "float", "round", "pow", "sum"}
FLOAT64_NAMES = {"float64", "double", "float_"}
FLOAT64_ATTRIBUTES = {f"{m}.{c}" for m in ("math", "np", "numpy") for c in ("e", "pi", "tau", "inf", "nan")} | {
    "np.float64", "numpy.float64", "np.double", "types.float64", "numba.float64"}


def _kernel_functions(tree):
    """Functions decorated @kernel(...) / @device, and the GEMM template's nested `gemm`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names = {ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list}
            if names & {"kernel", "device"} or node.name == "gemm":
                yield node


def test_kernel_source_lint():
    """In kernel bodies: float literals only inside float32(...), no float64 names, no Python
    builtins that go through generic (float64 or varargs) overloads on the CUDA target."""
    problems = []
    for path in sorted(KERNELS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in _kernel_functions(tree):
            wrapped = set()
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "float32":
                    wrapped.update(id(a) for a in node.args)
            for node in ast.walk(fn):
                where = f"{path.name}:{getattr(node, 'lineno', '?')} in {fn.name}"
                if isinstance(node, ast.Constant) and isinstance(node.value, float) and id(node) not in wrapped:
                    problems.append(f"{where}: float literal {node.value!r} (write float32({node.value!r}))")
                # float32(math.nan) is a float32 constant
                if (isinstance(node, ast.Name) and node.id in FLOAT64_NAMES) or (
                        isinstance(node, ast.Attribute) and ast.unparse(node) in FLOAT64_ATTRIBUTES
                        and id(node) not in wrapped):
                    problems.append(f"{where}: {ast.unparse(node)} is float64")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                    problems.append(f"{where}: {node.func.id}() (write the comparison out, or math.fabs)")
    assert not problems, "\n".join(problems)


def test_every_op_with_a_cpu_kernel_has_a_cuda_kernel():
    from cnndsl.backend.executor import load_backend
    from cnndsl.ops.registry import all_ops

    load_backend("cpu")
    load_backend("cuda")
    missing = sorted(op.name for op in all_ops().values() if "cpu" in op.kernels and "cuda" not in op.kernels)
    assert not missing, missing


def test_a_missing_kernel_is_a_compile_time_error_naming_the_op():
    import cnndsl
    from cnndsl.diagnostics import CnnError
    from cnndsl.model import Model
    from cnndsl.ops.registry import get_op

    model = Model(cnndsl.loads("network N { input x: 4\n dense 3 tanh -> out }"), device="cuda", opt_level=0)
    op = get_op("tanh")
    saved = op.kernels.pop("cuda")
    try:
        with pytest.raises(CnnError) as err:
            model.predict(__import__("numpy").zeros((1, 4), "float32"))
    finally:
        op.kernels["cuda"] = saved
    assert "cuda backend has no kernel for op 'tanh'" in str(err.value.diagnostics[0].message)


def test_device_cuda_without_a_gpu_is_a_clean_error(tmp_path):
    """Without the simulator (and without a GPU, as on CI machines): exit 1, a message, no traceback."""
    probe = subprocess.run([sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
                           env=_env_without_simulator(), capture_output=True, text=True)
    if probe.stdout.strip() != "False":
        pytest.skip("this machine has a CUDA device")
    for args in (["train", "examples/lenet5.cnn", "--epochs", "1", "--out", str(tmp_path)],
                 ["eval", "examples/lenet5.cnn", "--weights", str(tmp_path / "w.safetensors")],
                 ["predict", "examples/lenet5.cnn", "x.png", "--weights", str(tmp_path / "w.safetensors")]):
        r = subprocess.run([sys.executable, "-m", "cnndsl", *args, "--device", "cuda"], cwd=ROOT,
                           env=_env_without_simulator(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "no CUDA device found" in r.stderr and "--device cpu" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr + r.stdout


def test_low_occupancy_warnings_are_silenced_and_others_are_not():
    """numba warns on every launch of under 128 blocks; small layers launch small grids by design
    (31 such warnings in one LeNet-5 training run on an H200), so the shim filters exactly those.
    In a subprocess: pytest replaces the warning filters around each test."""
    script = ("import warnings, cnndsl.kernels.cuda.shim\n"
              "from numba.core.errors import NumbaPerformanceWarning as W\n"
              "warnings.warn(W('Grid size 7 will likely result in GPU under-utilization due to low occupancy.'))\n"
              "warnings.warn(W('Host array used in CUDA kernel will incur copy overhead'))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env_without_simulator(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Grid size" not in r.stderr and "copy overhead" in r.stderr, r.stderr
