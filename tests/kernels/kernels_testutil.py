"""Helpers shared by the kernel tests (imported by file name; tests/kernels has no __init__.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

SETTINGS = settings(max_examples=30, deadline=None, derandomize=False)
FAST = settings(max_examples=15, deadline=None)


VECTOR_FILES = {"avx512": (16, 32), "avx2": (8, 16)}  # float lanes per register, registers


@pytest.fixture
def vector_file(monkeypatch):
    """use(kind): plan as on a CPU with the named vector registers (microkernel.VECTOR_LANES and
    friends are read when a plan is made: the direct convolution's and Winograd's); the plans made
    before are forgotten, then and at the end. The kernels themselves are this machine's, correct
    for any plan."""
    from cnndsl.kernels.cpu import direct as DR
    from cnndsl.kernels.cpu import microkernel as M
    from cnndsl.kernels.cpu import winograd as WG

    def forget():
        DR.clear_plans()
        WG.plan.cache_clear()
        WG.input_grad_plan.cache_clear()

    def use(kind):
        lanes, regs = VECTOR_FILES[kind]
        monkeypatch.setattr(M, "VECTOR_LANES", lanes)
        monkeypatch.setattr(M, "VECTOR_REGISTERS", regs)
        monkeypatch.setattr(M, "VF_MAX", M.widest_block(lanes))
        forget()

    yield use
    monkeypatch.undo()
    forget()


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what=""):
    """Max abs error within atol + rtol * max|expected| (float32 kernels vs float64 references)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    scale = float(np.abs(expected).max())
    err = float(np.abs(actual - expected).max())
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def check_grad_fd(loss, inputs, grads, rng, eps=1e-3, rtol=1e-3, ndir=2, what="", gscale=None):
    """Compare analytic grads with central finite differences of `loss` (float64) along random directions.

    loss(*inputs) -> float; grads[i] is dloss/dinputs[i] (or None to skip). Tolerance is relative to
    |fd| + 0.1 * |g| |u|, the size float32 rounding can reach; gscale (per input, or None) replaces |g|
    where the gradient is a small difference of large terms (batchnorm).
    """
    inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
    for i, g in enumerate(grads):
        if g is None:
            continue
        g = np.asarray(g, dtype=np.float64)
        assert g.shape == inputs[i].shape, f"{what}: grad {i} shape {g.shape} != {inputs[i].shape}"
        for _ in range(ndir):
            u = rng.standard_normal(inputs[i].shape)
            plus = list(inputs)
            minus = list(inputs)
            plus[i] = inputs[i] + eps * u
            minus[i] = inputs[i] - eps * u
            fd = (loss(*plus) - loss(*minus)) / (2 * eps)
            an = float((g * u).sum())
            gs = np.linalg.norm(g) if gscale is None or gscale[i] is None else max(gscale[i], np.linalg.norm(g))
            tol = rtol * (abs(fd) + 0.1 * gs * np.linalg.norm(u)) + 1e-7
            assert abs(fd - an) <= tol, f"{what}: input {i}: fd {fd:.6g} vs analytic {an:.6g} (tol {tol:.2g})"


def away_from_zero(a, margin=0.05):
    """Push values out of (-margin, margin) so finite differences do not straddle kinks."""
    return np.where(a >= 0, a + margin, a - margin)
