"""CNNDSL_CUDA_CACHE (cnndsl/kernels/cuda/shim.py, common.Kernel, igemm.generated_function): with
"on", every kernel asks numba-cuda for its on-disk cache, and the generated (pipelined) kernels
are defined from files in the kernel cache's folder, since numba-cuda caches only functions with
a source file, keyed on its path and stamp. What the simulator can show: the files are written
once, left alone while they match (so their stamp, and what numba filed under it, stays valid),
rewritten whole when damaged, and the kernels defined from them compute what the NumPy
references do (assert_close's float32 bound); with "off" nothing is written. Whether numba-cuda
then loads the compiled kernels instead of compiling them is a GPU's to show
(benchmarks/gpu_session.sh times LeNet-5's first step with a cold and a warm cache)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]

# one conv's three passes through the pipelined p32x16 kernels, against the references; prints the
# generated files the kernels came from
SCRIPT = r"""
import json, sys
sys.path.insert(0, "tests/cuda")
import numpy as np
from cuda_testutil import assert_close, dev, empty, host
from cnndsl.kernels.cuda import common, gemm as G, igemm
from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.kernels.reference import conv as R

rng = np.random.default_rng(3)
x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
y = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
geo = ConvGeometry(N=2, C=3, H=6, W=6, F=4, OH=6, OW=6, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
out = empty(y.size)
G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, "p32x16")()
assert_close(host(out, y.shape), y, what="forward")
dy = rng.standard_normal(y.shape)
dx, dw, _ = R.conv2d_backward(x, w, dy, (1, 1), (1, 1, 1, 1), (1, 1), 1)
out = empty(x.size)
G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo, "p32x16")()
assert_close(host(out, x.shape), dx, what="backward data")
out, part = empty(w.size), empty(G.weight_workspace(geo, "p32x16", 2))
G.conv_backward_weight(dev(x), dev(dy), out, part, geo, "p32x16", 2)()
assert_close(host(out, w.shape), dw, what="backward weight")
made = [k for k in common.KERNELS if k.name.startswith("igemm_")]
print(json.dumps({"files": sorted({k.py_func.__code__.co_filename for k in made}),
                  "requested": sorted({k.cache_requested for k in common.KERNELS}),
                  "notes": sorted({k.cache_note for k in common.KERNELS})}))
"""


def _run(tmp_path, policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CNNDSL_CUDA_CACHE", "NUMBA_CACHE_DIR")}
    env.update(NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               CNNDSL_CUDA_GEMM="pipelined", CNNDSL_CUDA_TUNE="off", PYTHONWARNINGS="ignore")
    if policy is not None:
        env["CNNDSL_CUDA_CACHE"] = policy
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_generated_kernels_come_from_files_written_once(tmp_path):
    first = _run(tmp_path, "on")
    files = [Path(f) for f in first["files"]]
    assert len(files) == 3 and all(f.is_file() for f in files), first  # forward, input and weight gradient
    folder = files[0].parent
    assert folder.name == "cuda_generated" and folder.is_relative_to(tmp_path / "xdg" / "cnndsl")
    assert first["requested"] == [True] and first["notes"] == [""]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    texts = {f: f.read_text() for f in files}

    # a second process finds them and leaves them alone: their stamp is numba's cache key
    second = _run(tmp_path, "on")
    assert second["files"] == first["files"]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps

    # a damaged file is written again, whole, and the kernel from it still computes the pass
    damaged = files[0]
    damaged.write_text("def nothing():\n    pass\n")
    third = _run(tmp_path, "on")
    assert third["files"] == first["files"] and damaged.read_text() == texts[damaged]
    assert {f: f.stat().st_mtime_ns for f in files[1:]} == {f: stamps[f] for f in files[1:]}
    assert not list(folder.glob("*.tmp"))  # written through a temporary file, then renamed


@pytest.mark.parametrize("policy", [None, "off"])
def test_without_the_cache_nothing_is_written(tmp_path, policy):
    got = _run(tmp_path, policy)
    assert got["requested"] == [False]
    assert all(f.startswith("<cnndsl generated igemm_") for f in got["files"]), got
    assert not list((tmp_path / "xdg").rglob("cuda_generated"))


def test_cache_policy_values(monkeypatch):
    from cnndsl.kernels.cuda.shim import CACHE_ENV, cache_policy

    for value, want in (("on", "on"), ("ON ", "on"), ("1", "on"), ("true", "on"), ("off", "off"), ("0", "off"),
                        ("", "off")):
        monkeypatch.setenv(CACHE_ENV, value)
        assert cache_policy() == want, value
    monkeypatch.delenv(CACHE_ENV)
    assert cache_policy() == "off"
    monkeypatch.setenv(CACHE_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"CNNDSL_CUDA_CACHE='sometimes': expected one of on, off"):
        cache_policy()
