"""The GPU session's benchmark scripts (benchmarks/cuda_conv.py, benchmarks/cuda_check.py), run
under the simulator at their --smoke sizes: their logic, both GEMM variants, their JSON, so a
lent GPU's few minutes are not lost to a script's own bug. On a device (CNNDSL_CUDA_ON_DEVICE=1)
these are skipped: benchmarks/gpu_session.sh runs the scripts there for real. And the PyTorch twin
cuda_check compares with, against the cnndsl CPU model of each example it is used for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM", "") != "1",
    reason="the scripts' smoke runs are for the simulator; on a device gpu_session.sh runs them for real")]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str, timeout: int = 240, cache=None) -> subprocess.CompletedProcess:
    """The script under the simulator; `cache`: its XDG_CACHE_HOME (where +tune variants write
    their choices), Numba's cache folder kept."""
    from cnndsl.kernel_cache import default_cache_dir

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    for name in ("CNNDSL_CUDA_GEMM", "CNNDSL_CUDA_LAUNCH", "CNNDSL_CUDA_TUNE"):
        env.pop(name, None)
    if cache is not None:
        env.setdefault("NUMBA_CACHE_DIR", str(default_cache_dir()))
        env["XDG_CACHE_HOME"] = str(cache)
    return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cuda_conv_smoke(tmp_path):
    out = tmp_path / "cuda_conv.json"
    proc = _run("cuda_conv.py", "--smoke", "--variants", "tiled:dispatch,pipelined,pipelined+tune", "--out", str(out),
                cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = json.loads(out.read_text())
    assert {"device", "device_info", "fp32_peak", "shape", "gflop_per_pass", "reference", "torch", "cnndsl",
            "ratio_fp32", "errors"} <= d.keys()
    assert d["errors"] == []
    assert set(d["cnndsl"]) == {"tiled:dispatch", "pipelined", "pipelined+tune"}
    # the tuned variant measured each pass's candidates (the weight gradient: tiles x splits)
    assert {k.split()[0] for k in d["cnndsl"]["pipelined+tune"]["tune"]} == {"fwd", "bwd_data", "bwd_weight"}
    assert all(len(e["us"]) >= 2 for e in d["cnndsl"]["pipelined+tune"]["tune"].values())
    assert "tuned fwd pipelined" in proc.stdout
    for variant, r in d["cnndsl"].items():
        assert r["family"].startswith(variant.split(":")[0].split("+")[0]) or "ignores CNNDSL_CUDA_GEMM" in r["family"], r["family"]
        for name in ("forward", "backward_data", "backward_weight"):
            p = r[name]
            assert p["ok"] and p["rel_err"] <= d["tolerance"], (variant, name, p)
            assert p["ms"] > 0 and p["gflops"] > 0 and p["launches"] and "kernel" in p["launches"][0]
    if d["torch"]:  # PyTorch installed (on the CPU here): its figures and the ratios
        assert set(d["torch"]) == {"fp32", "tf32"}
        assert set(d["ratio_fp32"]["tiled:dispatch"]) == {"forward", "backward_data", "backward_weight", "backward"}
    assert "FP32 peak" in proc.stdout and "backward_weight" in proc.stdout


def test_cuda_check_smoke(tmp_path):
    out = tmp_path / "cuda_check.json"
    r = _run("cuda_check.py", "--smoke", "--no-torch", "--out", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    assert {"device", "device_info", "versions", "variants", "settings", "correctness", "speed",
            "twin_check"} <= d.keys()
    # before, after, after with measured tiles, the kernels alone
    variants = {"tiled:dispatch", "pipelined", "pipelined+tune", "pipelined:dispatch"}
    assert set(d["variants"]) == variants
    for variant in variants:
        assert d["correctness"][variant]["smoke"]["verdict"] == "PASS", d["correctness"][variant]
    [row] = d["speed"]
    assert (row["net"], row["batch"]) == ("smoke", 2) and not row["errors"]
    assert set(row["cnndsl"]) == variants and min(row["cnndsl"].values()) > 0
    assert "training images/s" in r.stdout
    assert {k.split()[0] for k in d["tuned"]} == {"fwd", "bwd_data", "bwd_weight"}  # the +tune variant's choices


def test_scripts_refuse_real_runs_under_the_simulator():
    for script in ("cuda_check.py", "cuda_conv.py"):
        r = _run(script, timeout=120)
        assert r.returncode == 2 and "--smoke" in r.stderr, (script, r.stdout, r.stderr)


@pytest.mark.parametrize("net", ["lenet5", "vgg_small", "resnet_tiny"])
def test_pytorch_twin_matches_the_cpu_model(net):
    """The twin with the cnndsl model's weights: the same inference outputs, and (no dropout) the
    same training-mode loss on batch statistics."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH))
    try:
        from cuda_check import _batch, _model, twin_check
    finally:
        sys.path.remove(str(BENCH))
    model = _model(net, "cpu")
    x, y = _batch(model, 8)
    r = twin_check(model, x, y)
    assert r["ok"], r
    assert r["predict_rel_err"] < 1e-4
    if net == "resnet_tiny":
        assert r["train_loss_rel_err"] < 1e-4
