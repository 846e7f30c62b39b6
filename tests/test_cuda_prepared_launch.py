"""PreparedLaunch and fast_launch (cnndsl/kernels/cuda/common.py) without a GPU: numba-cuda's
dispatcher objects are stood in for by fakes that record what would reach cuda.core.launch.

What this shows: the first two calls go through the dispatcher, later ones through one launch
with the arguments marshalled once, by numba's own `_prepare_args`, in its order; the fallbacks
(CNNDSL_CUDA_LAUNCH=dispatch, host arrays, several specializations, another launch path) keep
the dispatcher. What it cannot show: that numba-cuda's real objects behave like the fakes; that
is benchmarks/gpu_session.sh's work (the device tests and cuda_check run on this path)."""
from __future__ import annotations

import pytest

common = pytest.importorskip("cnndsl.kernels.cuda.common")
D = pytest.importorskip("numba.cuda.dispatcher")


class _Cufunc:
    kernel = "the cufunc's kernel"


class _Library:
    def get_cufunc(self):
        return _Cufunc()


class _Kernel:
    debug = cooperative = False
    argument_types = ("array", "int")

    def __init__(self, host_array=False):
        self._codelibrary = _Library()
        self.host_array = host_array

    def _prepare_args(self, ty, val, stream, retr, kernelargs):
        if ty == "array":
            kernelargs.extend([0, 0, len(val), 4, id(val), len(val), 4])
            if self.host_array:
                retr.append(lambda: None)
        else:
            kernelargs.append(val)


class _Dispatcher:
    def __init__(self, kernels):
        self.overloads = {i: k for i, k in enumerate(kernels)}


def _configured(kernels):
    calls = []

    class Configured:
        dispatcher = _Dispatcher(kernels)
        griddim, blockdim, stream, sharedmem = (3, 1, 1), (128, 1, 1), "stream 0", 0
        pre_launch_callbacks = []

        def __call__(self, *args):
            calls.append(args)
    Configured.__module__ = D.__name__
    return Configured(), calls


@pytest.fixture
def fake_cuda_core(monkeypatch):
    launched = []
    monkeypatch.setattr(D, "launch", lambda stream, cfg, fn, *a: launched.append((stream, cfg, fn, a)), raising=False)
    monkeypatch.setattr(D, "LaunchConfig", lambda **kw: kw, raising=False)
    monkeypatch.setattr(D, "CUDA_CORE_GE_1_0", True, raising=False)
    monkeypatch.setattr(common, "SIMULATOR", False)
    monkeypatch.delenv("CNNDSL_CUDA_LAUNCH", raising=False)
    return launched


def test_the_third_call_is_one_cuda_core_launch(fake_cuda_core):
    configured, calls = _configured([_Kernel()])
    buf = [1.0, 2.0]
    p = common.PreparedLaunch(configured, (buf, 7))
    p()
    p()
    assert len(calls) == 2 and not fake_cuda_core and p.fast is not None, p.fallback_reason
    p()
    p()
    assert len(calls) == 2 and len(fake_cuda_core) == 2
    stream, cfg, fn, args = fake_cuda_core[0]
    assert stream == "stream 0" and fn == "the cufunc's kernel"
    assert cfg == {"grid": (3, 1, 1), "block": (128, 1, 1), "shmem_size": 0, "is_cooperative": False}
    assert args == (0, 0, 2, 4, id(buf), 2, 4, 7)  # numba's marshalling, in the declared order


@pytest.mark.parametrize("case, reason", [
    ("dispatch", "CNNDSL_CUDA_LAUNCH=dispatch"),
    ("host array", "host array"),
    ("two specializations", "several specializations"),
    ("another module", "not numba-cuda's"),
])
def test_fallbacks_keep_the_dispatcher(fake_cuda_core, monkeypatch, case, reason):
    kernels = [_Kernel(host_array=case == "host array")]
    if case == "two specializations":
        kernels.append(_Kernel())
    configured, calls = _configured(kernels)
    if case == "dispatch":
        monkeypatch.setenv("CNNDSL_CUDA_LAUNCH", "dispatch")
    if case == "another module":
        type(configured).__module__ = "numba_cuda_mlir.dispatcher"
    p = common.PreparedLaunch(configured, ([1.0], 3))
    for _ in range(4):
        p()
    assert len(calls) == 4 and not fake_cuda_core and p.fast is None
    assert reason in p.fallback_reason


def test_a_failure_while_marshalling_falls_back(fake_cuda_core):
    class Broken(_Kernel):
        def _prepare_args(self, *a):
            raise AttributeError("no such thing in this numba-cuda")
    configured, calls = _configured([Broken()])
    p = common.PreparedLaunch(configured, ([1.0], 3))
    for _ in range(3):
        p()
    assert len(calls) == 3 and p.fast is None and "AttributeError" in p.fallback_reason


def test_varying_scalars_are_marshalled_per_call(fake_cuda_core):
    """A launch whose scalar at position 1 changes per call (a dropout seed, an optimizer's
    coefficient): the dispatcher sees each call's value; the fast path splices the value numba's
    `_prepare_args` marshals into the arguments kept, and changes nothing else."""
    configured, calls = _configured([_Kernel()])
    configured.dispatcher.overloads[0].argument_types = ("array", "int", "int")
    buf = [1.0, 2.0]
    p = common.PreparedLaunch(configured, (buf, 0, 9), varying=(1,))
    p(10)
    p(11)
    assert calls == [(buf, 10, 9), (buf, 11, 9)] and p.fast is not None, p.fallback_reason
    p(12)
    p(13)
    assert len(calls) == 2
    assert [a for *_, a in fake_cuda_core] == [(0, 0, 2, 4, id(buf), 2, 4, 12, 9), (0, 0, 2, 4, id(buf), 2, 4, 13, 9)]
    with pytest.raises(TypeError, match="1 varying argument"):
        p()


def test_a_varying_array_keeps_the_dispatcher(fake_cuda_core):
    configured, calls = _configured([_Kernel()])
    p = common.PreparedLaunch(configured, ([1.0], 3), varying=(0,))
    for v in ([2.0], [3.0], [4.0]):
        p(v)
    assert p.fast is None and "not one scalar" in p.fallback_reason
    assert [c[0] for c in calls] == [[2.0], [3.0], [4.0]]
