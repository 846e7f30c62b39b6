"""The measured tile choice (cnndsl/kernels/cuda/tune.py) under a fake timer: the fastest
candidate is chosen, written to the cache file and read back by a later process without
measuring; trials leave the launch's real output untouched; the tuned launches compute what the
NumPy references compute (assert_close's float32 bound); the policies and a damaged file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.kernels.reference import conv as R

pytestmark = pytest.mark.cuda


def kernel_name(launch) -> str:
    """The kernel of a gemm.Launch's first step (a tile's kernels are named after it; a cuBLAS
    launch's first step is a gather kernel, or the GEMM itself: "cublas_sgemm")."""
    c = getattr(launch.steps[0], "configured", launch.steps[0])
    return getattr(c, "name", None) or c.dispatcher.py_func.__name__


class FakeTimer:
    """seconds_per_call's stand-in: runs the trial once (so a trial writing the wrong buffer
    shows) and answers fast for the launches whose label (kernel name, "/2" for a split
    weight gradient's two launches) holds each of the strings `prefer`."""

    def __init__(self, *prefer: str, run: bool = True):
        self.prefer, self.seen, self.run = prefer, [], run

    def __call__(self, run) -> float:
        if self.run:  # (the network tests skip it: simulated trials are slow, and the unit tests run them)
            run()
        label = kernel_name(run) + (f"/{len(run.steps)}" if len(run.steps) > 1 else "")
        self.seen.append(label)
        return 1e-5 if all(p in label for p in self.prefer) else 1e-3


@pytest.fixture
def tuning(monkeypatch, tmp_path):
    """A fresh choice memory and cache folder; returns a function setting the policy."""
    from cnndsl.kernels.cuda import tune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CNNDSL_CUDA_GEMM", "pipelined")
    monkeypatch.setattr(tune, "MEMORY", tune._Memory())

    def set_policy(value: str, timer=None):
        monkeypatch.setenv("CNNDSL_CUDA_TUNE", value)
        monkeypatch.setattr(tune, "MEMORY", tune._Memory())  # as a new process would
        monkeypatch.setattr(tune, "measure", timer or _no_timing)
    return set_policy


def _no_timing(run):
    raise AssertionError("measured, but the policy or the remembered choice should have prevented it")


def _conv():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    y = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    geo = ConvGeometry(N=2, C=3, H=7, W=7, F=5, OH=7, OW=7, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    return rng, x, w, b, y, geo


def test_the_fastest_tile_is_chosen_remembered_and_read_back(tuning):
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import tune

    _, x, w, b, y, geo = _conv()
    rows, cols = 2 * 7 * 7, 5
    default = G.choose_tile(rows, cols, 1, "pipelined")
    other = next(t for t in G._orders(cols, "pipelined") if t != default)
    timer = FakeTimer(other)
    tuning("on", timer)
    out = empty(y.size)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, out, geo)
    assert len(timer.seen) == len(G._orders(cols, "pipelined")) + 1, timer.seen  # every candidate, once
    assert "im2col/3" in timer.seen  # the cuBLAS candidate: im2col, the GEMM, the bias epilogue
    assert np.isnan(out.copy_to_host()).all(), "a trial wrote the launch's own output"
    assert other in kernel_name(launch)
    launch()
    assert_close(host(out, y.shape), y, what=f"tuned forward ({other})")

    entries = json.loads(tune.path().read_text())["devices"][tune.device_key()]
    (key, entry), = entries.items()
    assert key.startswith("fwd pipelined mk ") and "N2 C3 H7 W7 F5" in key
    assert entry["choice"] == other and entry["default"] == default
    assert set(entry["us"]) == {*G._orders(cols, "pipelined"), G.CUBLAS}

    tuning("cached")  # a later process: the remembered choice, nothing measured
    assert other in kernel_name(G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo))
    tuning("off")  # the shape rule alone
    assert default in kernel_name(G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo))


def test_the_cublas_candidate_is_chosen_where_fastest(tuning, monkeypatch):
    """Measured fastest, "cublas" is remembered and read back like a tile; without cuBLAS (here:
    CNNDSL_CUDA_BLAS=off) it is no candidate, and the remembered choice is ignored for the rule's."""
    from cnndsl.kernels.cuda import blas
    from cnndsl.kernels.cuda import gemm as G

    _, x, w, b, y, geo = _conv()
    tuning("on", FakeTimer("im2col"))
    out = empty(y.size)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, act=G.TANH)
    assert kernel_name(launch) == "im2col" and np.isnan(out.copy_to_host()).all()
    launch()
    assert_close(host(out, y.shape), np.tanh(y), what="tuned forward (cublas)")
    tuning("cached")
    assert kernel_name(G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo)) == "im2col"
    monkeypatch.setenv(blas.ENV, "off")
    default = G.choose_tile(98, 5, 1, "pipelined")
    assert default in kernel_name(G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo))


def test_without_a_remembered_choice_cached_measures_nothing(tuning):
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import tune

    _, x, w, b, y, geo = _conv()
    tuning("cached")
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo)
    assert G.choose_tile(98, 5, 1, "pipelined") in kernel_name(launch)
    assert not tune.path().exists()


def test_a_residual_in_place_is_not_disturbed_by_the_trials(tuning):
    from cnndsl.kernels.cuda import gemm as G

    rng, x, w, b, y, geo = _conv()
    r = rng.standard_normal(y.shape)
    tuning("on", FakeTimer("p128x16"))
    buf = dev(r)  # the residual and the output are one buffer, as an in-place add would make them
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, buf, geo, res=buf, act=G.RELU)
    assert_close(host(buf, y.shape), r, what="the residual after the trials")
    launch()
    assert_close(host(buf, y.shape), np.maximum(y + r, 0), what="tuned forward with an in-place residual")


def test_tuned_input_and_weight_gradients(tuning):
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import tune

    rng, x, w, b, y, geo = _conv()
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = R.conv2d_backward(x, w, dy, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    timer = FakeTimer("p128x16")
    tuning("on", timer)
    out = empty(x.size)
    launch = G.conv_backward_data(dev(dy), dev(w), dev(b), False, out, geo)
    assert np.isnan(out.copy_to_host()).all()
    launch()
    assert_close(host(out, x.shape), dx, what="tuned backward data")

    # the weight gradient: tiles and reduction splits; a split launch is two steps (gemm + reduce)
    timer.seen.clear()
    timer.prefer = ("p128x16", "/2")
    xd, dyd = dev(x), dev(dy)
    tile, splits = G.weight_plan(xd, dyd, geo)
    assert (tile, splits != 1) == ("p128x16", True), (tile, splits, timer.seen)
    assert any("p32x16" in s for s in timer.seen) and any("/" not in s for s in timer.seen)
    out, part = empty(w.size), empty(G.weight_workspace(geo, tile, splits))
    G.conv_backward_weight(xd, dyd, out, part, geo, tile, splits)()
    assert_close(host(out, w.shape), dw, what=f"tuned backward weight ({tile}, {splits} splits)")
    entries = json.loads(tune.path().read_text())["devices"][tune.device_key()]
    assert {k.split()[0] for k in entries} == {"bwd_data", "bwd_weight"}
    tuning("cached")
    assert G.weight_plan(xd, dyd, geo) == (tile, splits)


def test_a_damaged_file_counts_as_empty_and_is_replaced(tuning):
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import tune

    _, x, w, b, y, geo = _conv()
    tune.path().parent.mkdir(parents=True)
    tune.path().write_bytes(b"\x00{not json")
    tuning("cached")
    G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo)  # the shape rule, no error
    tuning("on", FakeTimer("p128x16"))
    G.conv_forward(dev(x), dev(w), dev(b), True, empty(y.size), geo)
    assert json.loads(tune.path().read_text())["version"] == tune.VERSION


def test_a_bad_policy_is_named(monkeypatch):
    from cnndsl.kernels.cuda import tune

    monkeypatch.setenv("CNNDSL_CUDA_TUNE", "fast")
    with pytest.raises(ValueError, match=r"CNNDSL_CUDA_TUNE='fast': expected one of cached, on, off"):
        tune.policy()


TINY = """
network Tiny(classes = 2) {
  input image: 2x4x4
  c1 = conv 3 kernel=3 padding=same relu
  c2 = conv 3 kernel=3 padding=same
  add(c1, c2) relu
  flatten
  dense classes -> logits
}
train {
  batch 2
  loss logits cross_entropy
}
"""


def test_a_tuned_network_trains_as_on_the_cpu(tuning):
    """Every conv and dense launch of a small residual net tuned (a timer preferring the 128-row
    tiles, which the shape rule does not choose at these sizes): the same losses, gradients,
    weights and predictions as the CPU backend after a step."""
    from test_networks import _compare, _images

    from cnndsl.kernels.cuda import tune
    from cnndsl.train.optim import SGD

    timer = FakeTimer("p128", run=False)
    tuning("on", timer)
    _compare(TINY, lambda p: SGD(p, lr=0.1, momentum=0.9), _images((2, 4, 4), 4), np.array([1, 0]), steps=1)
    entries = json.loads(tune.path().read_text())["devices"][tune.device_key()]
    assert {k.split()[0] for k in entries} == {"fwd", "bwd_data", "bwd_weight"}
    assert any(" res " in k for k in entries)  # the residual add fused into c2's epilogue
    assert all(e["choice"].startswith("p128") for e in entries.values()), entries
    assert any(e["default"] != e["choice"] for e in entries.values())


def test_a_network_on_cublas_trains_as_on_the_cpu(tuning):
    """Every conv and dense launch of the small residual net tuned to "cublas" (im2col.py: the
    residual copied or added in place, the 1x1 shortcut without im2col, dense as one GEMM): the
    same losses, gradients, weights and predictions as the CPU backend after two steps."""
    from test_networks import _compare, _images

    from cnndsl.kernels.cuda import tune
    from cnndsl.train.optim import SGD

    def cublas_fastest(run) -> float:  # a cuBLAS launch has a GEMM step, which is a plain callable
        return 1e-5 if any(getattr(s, "name", "") == "cublas_sgemm" for s in run.steps) else 1e-3

    tuning("on", cublas_fastest)
    _compare(TINY, lambda p: SGD(p, lr=0.1, momentum=0.9), _images((2, 4, 4), 4), np.array([1, 0]), steps=2)
    entries = json.loads(tune.path().read_text())["devices"][tune.device_key()]
    assert {k.split()[0] for k in entries} == {"fwd", "bwd_data", "bwd_weight"}
    assert all(e["choice"] == "cublas" for e in entries.values()), "\n".join(f"{k}: {e}" for k, e in entries.items())
    assert any(" res " in k for k in entries)  # c2's residual add, fused: GEMM onto the copied residual


def test_a_split_forward_can_be_chosen(tuning):
    """A long reduction on few blocks: the split candidates (gemm.data_splits) are timed too, and
    a split choice runs as partial sums plus splitk_epilogue, with the residual and activation."""
    from cnndsl.kernels.cuda import gemm as G
    from cnndsl.kernels.cuda import tune

    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((1, 24, 4, 4)), rng.standard_normal((4, 24, 3, 3)), rng.standard_normal(4)
    y = R.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    r = rng.standard_normal(y.shape)
    geo = ConvGeometry(N=1, C=24, H=4, W=4, F=4, OH=4, OW=4, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
    assert G.data_splits(G.FWD, geo, "p128x16")  # (27 steps of 8 on one block)
    timer = FakeTimer("_sk")
    tuning("on", timer)
    out = empty(y.size)
    launch = G.conv_forward(dev(x), dev(w), dev(b), True, out, geo, res=dev(r), act=G.RELU)
    assert any("_sk" in s for s in timer.seen) and any("_sk" not in s for s in timer.seen)
    assert np.isnan(out.copy_to_host()).all()
    assert "_sk" in kernel_name(launch) and len(launch.steps) == 2
    launch()
    assert_close(host(out, y.shape), np.maximum(y + r, 0), what="tuned split forward")
    (entry,) = json.loads(tune.path().read_text())["devices"][tune.device_key()].values()
    assert "/" in entry["choice"] and "/" not in entry["default"]


WIDE_IN = """
network WideIn(classes = 2) {
  input image: 16x3x3
  conv 4 kernel=3 padding=same relu
  flatten
  dense classes -> logits
}
train {
  batch 2
  loss logits cross_entropy
}
"""


def test_a_network_with_a_split_forward_trains_as_on_the_cpu(tuning):
    """The conv's 144-long reduction on one block: its forward tuned to a split launch, whose
    partial sums go to the executor's shared split-K scratch; one step as on the CPU backend."""
    from test_networks import _compare, _images

    from cnndsl.kernels.cuda import tune
    from cnndsl.train.optim import SGD

    tuning("on", FakeTimer("_sk", run=False))
    _compare(WIDE_IN, lambda p: SGD(p, lr=0.1), _images((16, 3, 3), 7), np.array([0, 1]), steps=1)
    entries = json.loads(tune.path().read_text())["devices"][tune.device_key()]
    assert any(k.startswith("fwd ") and "/" in e["choice"] for k, e in entries.items()), entries
