"""Every registered activation, from its one declaration (cnndsl/kernels/activations.py): the CPU
kernels against the NumPy reference (forward) and the reference gradient and finite differences
(backward); the op usable from a .cnn file; -O0 and -O2 computing the same thing in inference
and in a training step, with the fusions each activation allows (and only those). The CUDA
simulator's agreement is tests/cuda/test_cuda_activations.py. Adding an activation adds its cases here
by itself.

Tolerances: float32 kernels vs float64 references within 1e-5 + 1e-4 * max|y| (forward and the
analytic gradient); finite differences of the reference (float64, step 1e-3, inputs kept 0.05
away from the kinks of relu/relu6/leaky/elu/hardswish/hardsigmoid) within 1e-3 relative;
-O0 vs -O2 within 2e-4 (inference) and 1e-3 (gradients) relative to max(1, max|value|).
"""
from __future__ import annotations

import numpy as np
import pytest

import cnndsl
from cnndsl.backend.executor import load_backend
from cnndsl.kernels.activations import ACTIVATIONS, INPUT
from cnndsl.kernels.cpu import activation as K
from cnndsl.kernels.reference import activation as R
from cnndsl.model import Model
from cnndsl.ops.registry import get_op
from cnndsl.train.optim import make_optimizer

EVERY = [a for a in ACTIVATIONS if a.code != 0]
ALPHA = {"leaky_relu": 0.2, "elu": 0.7}
KINKS = (-3.0, 0.0, 3.0, 6.0)  # relu, relu6, hardswish, hardsigmoid, leaky_relu, elu


def _inputs(rng, shape):
    x = rng.standard_normal(shape) * 3
    for k in KINKS:  # keep finite differences from straddling a kink
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] >= k, 0.05, -0.05)
    return x


def _close(actual, expected, what, rtol=1e-4, atol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max(initial=0.0))
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= atol + rtol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def _fd(f, x, dy, rng, eps=1e-3):
    """<d/dx sum(f(x) * dy), u> by central differences along a random direction u; (fd, u)."""
    u = rng.standard_normal(x.shape)
    return (float((f(x + eps * u) * dy).sum()) - float((f(x - eps * u) * dy).sum())) / (2 * eps), u


def test_every_activation_is_an_op_with_its_declaration():
    for a in EVERY:
        op = get_op(a.name)
        assert op is not None and op.category == "activation", a.name
        assert (op.attr("alpha") is not None) == (a.alpha is not None), a.name
        for alias in a.aliases:
            assert get_op(alias) is op


@pytest.mark.parametrize("act", EVERY, ids=lambda a: a.name)
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 4, 5), (4, 9000)])  # 36000 elements: the prange path
def test_kernels_match_reference_and_finite_differences(act, shape):
    rng = np.random.default_rng(act.code)
    alpha = ALPHA.get(act.name, 0.0)
    x = _inputs(rng, shape)
    x32 = x.astype(np.float32)
    y = np.full(shape, np.nan, np.float32)
    K.activation_forward(x32, act.code, np.float32(alpha), y)
    _close(y, R.activation(x, act.name, alpha), f"{act.name} forward")
    dy = rng.standard_normal(shape)
    dx = np.full(shape, np.nan, np.float32)
    saved = x32 if act.grad_from == INPUT else y  # what the op's gradient rule hands the kernel
    K.activation_backward(saved, dy.astype(np.float32), act.code, np.float32(alpha), dx)
    _close(dx, R.activation_backward(x, dy, act.name, alpha), f"{act.name} backward")
    fd, u = _fd(lambda v: R.activation(v, act.name, alpha), x, dy, rng)
    an = float((dx.astype(np.float64) * u).sum())
    assert abs(fd - an) <= 1e-3 * (abs(fd) + 0.1 * np.linalg.norm(dx) * np.linalg.norm(u)) + 1e-6, \
        f"{act.name}: finite differences {fd:.6g} vs analytic {an:.6g}"


@pytest.mark.parametrize("act", EVERY, ids=lambda a: a.name)
def test_in_place_and_extremes(act):
    x = np.array([-1e4, -80.0, -1e-3, 0.0, 1e-3, 80.0, 1e4], np.float32)
    want = R.activation(x.astype(np.float64), act.name, 0.5)
    K.activation_forward(x, act.code, np.float32(0.5), x)  # y is x
    assert np.isfinite(x).all(), f"{act.name}: {x}"
    _close(x, want, f"{act.name} extremes")


def test_prelu_kernel_reference_and_finite_differences():
    rng = np.random.default_rng(1)
    for shape in ((3, 4), (2, 3, 4, 5)):
        x, slope, dy = _inputs(rng, shape), rng.uniform(-0.5, 0.5, shape[1]), rng.standard_normal(shape)
        y = np.full(shape, np.nan, np.float32)
        K.prelu_forward(x.astype(np.float32), slope.astype(np.float32), y)
        _close(y, R.prelu(x, slope), "prelu forward")
        dx, ds = np.full(shape, np.nan, np.float32), np.full(shape[1], np.nan, np.float32)
        K.prelu_backward(x.astype(np.float32), dy.astype(np.float32), slope.astype(np.float32), dx, ds)
        rdx, rds = R.prelu_backward(x, dy, slope)
        _close(dx, rdx, "prelu dx")
        _close(ds, rds, "prelu dslope")
        fd, u = _fd(lambda v: R.prelu(v, slope), x, dy, rng)
        assert abs(fd - float((dx * u).sum())) <= 1e-3 * abs(fd) + 1e-4
        fd, u = _fd(lambda s: R.prelu(x, s), slope, dy, rng)
        assert abs(fd - float((ds * u).sum())) <= 1e-3 * abs(fd) + 1e-4


def _source(name: str) -> str:
    call = f"{name}({ALPHA[name]})" if name in ALPHA else name
    return f"""
network Act(classes = 3) {{
  input image: 2x6x6
  conv 3 kernel=3 padding=same {call}
  maxpool 2
  conv 4 kernel=3 padding=same
  batchnorm {call}
  flatten
  dense 5 {call}
  dense classes -> logits
}}
train {{
  batch 4
  seed 2
  loss logits cross_entropy
}}
"""


def _run(src, level, x, y):
    model = Model(cnndsl.loads(src, "act.cnn"), seed=5, opt_level=level)
    model.set_optimizer(make_optimizer("sgd", model.store.params, lr=0.1, momentum=0.9))
    pred = model.predict(x)["logits"]
    loss, _ = model.train_step(x, y, step=1)
    return model, pred, loss, model.store.params.grad.copy(), model.store.state_dict()


@pytest.mark.parametrize("name", [a.name for a in EVERY] + ["prelu"])
def test_network_O0_and_O2_agree_with_the_fusions_allowed(name):
    """Usable from a .cnn file; the fusions -O2 makes (conv/batchnorm/dense + activation at
    inference; in training only those whose gradient reads the output; conv + activation + 2x2
    max pool only for a monotone activation) change nothing numerically."""
    from cnndsl.passes.pipeline import optimize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    src = _source(name)
    _, pred0, loss0, grad0, state0 = _run(src, 0, x, y)
    _, pred2, loss2, grad2, state2 = _run(src, 2, x, y)
    scale = max(1.0, float(np.abs(pred0).max()))
    assert np.abs(pred2 - pred0).max() <= 2e-4 * scale, name
    assert abs(loss2 - loss0) <= 1e-4 * max(1.0, abs(loss0)), name
    assert np.abs(grad2 - grad0).max() <= 1e-3 * max(1.0, float(np.abs(grad0).max())), name
    for k in state0:
        assert np.allclose(state2[k], state0[k], rtol=1e-4, atol=1e-5), (name, k)
    graph = cnndsl.loads(src, "act.cnn").graph
    act = next((a for a in EVERY if a.name == name), None)
    inference = {n.op for n in optimize(graph, "inference", 2, backend=load_backend("cpu")).nodes()}
    if act is None:  # prelu: learned per-channel slopes, never fused
        assert "prelu" in inference
        return
    assert name not in inference, f"{name} should fuse at inference: {sorted(inference)}"
    assert ("fused_conv_pool" in inference) == act.monotone, name
    ctx_ops = {n.op for n in optimize(graph, "training", 2, backend=load_backend("cpu"),
                                      losses=[_loss()]).nodes()}
    assert (name in ctx_ops) == (act.grad_from == INPUT), f"{name}: {sorted(ctx_ops)}"


def _loss():
    from cnndsl.training_graph import LossSpec

    return LossSpec("logits", "cross_entropy")
