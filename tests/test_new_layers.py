"""The layers a Keras or PyTorch user reaches for: global_maxpool, multiply (squeeze-and-excitation),
reshape, lrn, softmax along any axis, bilinear upsample. Shape rules and their error texts, the
compiled network against the NumPy references, and a whole-network gradient check."""
from __future__ import annotations

import numpy as np
import pytest

import cnndsl
from cnndsl.diagnostics import CnnError
from cnndsl.kernels.reference import layers as R
from cnndsl.model import Model
from cnndsl.train.optim import SGD


def _errors(text: str):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(text)
    return e.value.diagnostics


def _net(body: str, inp: str = "3x4x4") -> str:
    return f"network N {{\n  input x: {inp}\n{body}\n}}\n"


def test_shapes():
    p = cnndsl.loads(_net("""  a = conv 8 kernel=3 padding=same
  g = global_maxpool
  s = dense 8 sigmoid
  m = multiply(a, s)
  l = lrn 3 alpha=1e-3 beta=0.5 k=2
  r = reshape 2x4x16
  sm = softmax axis=width
  u = upsample 2 mode=bilinear align_corners=true
  f = reshape -1
  dense 2 -> out"""))
    t = {n: p.graph.node(n).type.shape for n in p.graph.topo_order()}
    assert t["g"] == (8,) and t["m"] == (8, 4, 4) and t["l"] == (8, 4, 4) and t["r"] == (2, 4, 16)
    assert t["sm"] == (2, 4, 16) and p.graph.node("sm").op == "softmax_axis"
    assert t["u"] == (2, 8, 32) and t["f"] == (512,)
    assert p.graph.node("u").attrs == {"scale": 2, "mode": "bilinear", "align_corners": True}


def test_multiply_broadcast_errors_say_what_fits():
    d = _errors(_net("""  a = conv 8 kernel=1
  g = global_avgpool
  s = dense 4
  multiply(a, s)"""))[0]
    assert d.message == "multiply 'multiply1' multiplies tensors of shapes that do not broadcast: 8x4x4 and 4"
    assert d.help == "a per-channel scale of 'a' needs 8 values, and 's' has 4: make the layer before it `dense 8`"
    d = _errors(_net("""  a = conv 8 kernel=1
  b = conv 8 kernel=3
  multiply(a, b)"""))[0]
    assert "8x4x4 and 8x2x2" in d.message and "or be 1x1 (global_avgpool it)" in d.help


def test_reshape_errors():
    d = _errors(_net("  reshape 5x5"))[0]
    assert "takes F (a vector) or CxHxW" in d.message
    d = _errors(_net("  reshape 5x5x5"))[0]
    assert d.message == "reshape 'reshape1' cannot make 48 values (3x4x4) into 5x5x5 (125 values)"
    assert d.help == "use -1 for one size to have it inferred (e.g. `reshape -1x5x5`)"
    d = _errors(_net("  reshape [-1, 5, 1]"))[0]
    assert d.message == "reshape 'reshape1' cannot infer the -1 of -1x5x1: 48 values (3x4x4) are not a multiple of 5"
    assert cnndsl.loads(_net("  reshape [-1, 2, 2]")).graph.node("reshape1").type.shape == (12, 2, 2)


def test_softmax_axis_errors_and_the_activation_stays():
    d = _errors(_net("  flatten\n  softmax axis=height"))[0]
    assert d.message == "softmax_axis 'softmax_axis1': a vector (48) has no height"
    d = _errors(_net("  softmax axis=diagonal"))[0]
    assert "axis takes one of channels, height, width, spatial, got 'diagonal'" in d.message
    p = cnndsl.loads(_net("  softmax"))
    assert p.graph.node("softmax1").op == "softmax"  # without axis=: the activation, over the channels


def test_upsample_mode_is_checked():
    d = _errors(_net("  upsample 2 mode=bicubic"))[0]
    assert "mode takes one of nearest, bilinear, got 'bicubic'" in d.message
    p = cnndsl.loads(_net("  upsample 2 align_corners=true\n  conv 1 kernel=1"))
    assert any("align_corners applies to mode=bilinear only" in w.message for w in p.diagnostics)


ALL = """
network All {
  input x: 3x4x4
  a = conv 4 kernel=3 padding=same
  g = global_avgpool
  s = dense 4 sigmoid
  m = multiply(a, s)
  l = lrn 3 alpha=0.1 beta=0.75 k=2
  sm = softmax axis=spatial
  u = upsample 2 mode=bilinear
  c = conv 2 kernel=1
  r = reshape 2x8x8
  gm = global_maxpool
  e = multiply(gm, gm)
  dense 3 -> out
}
"""


def test_compiled_layers_match_the_references():
    # every tensor checked is a head, so the memory plan keeps it and no fusion renames it
    lines = []
    for line in ALL.splitlines():
        head = line.strip().split(" = ")[0]
        if head in ("a", "s", "m", "l", "sm", "u", "c", "gm", "e"):
            line += f" -> {head}"
        lines.append(line)
    model = Model(cnndsl.loads("\n".join(lines)), seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = {k: v.astype(np.float64) for k, v in model.predict(x).items()}
    assert np.allclose(out["m"], R.multiply(out["a"], out["s"]), atol=1e-5)
    assert np.allclose(out["l"], R.lrn(out["m"], 3, 0.1, 0.75, 2.0), atol=1e-5)
    assert np.allclose(out["sm"], R.softmax_axis(out["l"], "spatial"), atol=1e-6)
    assert np.allclose(out["u"], R.upsample_bilinear(out["sm"], 2, False), atol=1e-6)
    assert np.allclose(out["gm"], R.global_maxpool(out["c"].reshape(2, 2, 8, 8)), atol=1e-6)
    assert np.allclose(out["e"], out["gm"] ** 2, atol=1e-5)


def test_whole_network_gradient_through_every_new_layer():
    model = Model(cnndsl.loads(ALL), seed=3)
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 4, 4)).astype(np.float32)
    targets = model.example_targets(2, rng)
    model.set_optimizer(SGD(model.store.params, lr=0.0))
    model.train_step(x, targets, step=0)
    grad = model.store.params.grad.astype(np.float64).copy()
    theta = model.store.params.data
    base = theta.copy()

    def loss():
        exe = model.executable("loss_train", 2)
        exe.run(model._feeds(model.prepare(x), targets), training=True, step=0, seed=model.seed)
        return model._loss_value(exe)

    for _ in range(3):
        v = rng.standard_normal(theta.shape).astype(np.float32)
        v /= np.linalg.norm(v)
        eps = 1e-2
        theta[:] = base + eps * v
        up = loss()
        theta[:] = base - eps * v
        down = loss()
        theta[:] = base
        numeric, analytic = (up - down) / (2 * eps), float(grad @ v.astype(np.float64))
        assert abs(numeric - analytic) <= 2e-2 * max(1.0, abs(numeric), abs(analytic)) + 2e-3, (numeric, analytic)


def test_reshape_is_a_view_in_the_memory_plan():
    from cnndsl.analysis.plan import plan_memory

    p = cnndsl.loads(_net("  c = conv 4 kernel=1\n  r = reshape 16x2x2\n  flatten\n  dense 2 -> out"))
    plan = plan_memory(p.graph)
    assert plan.view_of["r"] == "c" and plan.slot_of["r"] == plan.slot_of["c"]
