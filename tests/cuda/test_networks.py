"""Whole networks on 'cuda' (simulated) vs 'cpu': the same losses, gradients, updated weights,
optimizer state, batchnorm statistics, evaluation and predictions after training steps,
through Model, the executor, the memory plan, the launchers and the kernels."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close

import cnndsl
from cnndsl.model import Model
from cnndsl.train.optim import SGD, Adam

pytestmark = pytest.mark.cuda

LENET = """
network LeNetTiny(classes = 3) {
  input image: 1x8x8
  c1 = conv 3 kernel=3 padding=same relu
  maxpool 2
  conv 4 kernel=3 stride=2 padding=1 rounding=floor
  batchnorm relu
  flatten
  dense 6 relu
  dropout 0.3
  dense classes -> logits
}
train {
  batch 2
  seed 3
  loss logits cross_entropy
}
"""

RESIDUAL = """
block residual(filters) {
  input x
  conv filters kernel=3 padding=same groups=2 bias=false
  batchnorm relu
  conv filters kernel=3 padding=same dilation=2 bias=false
  y = batchnorm
  add(x, y) relu
}
network ResTiny(classes = 3) {
  input image: 3x5x5
  conv 4 kernel=3 padding=same bias=false
  batchnorm relu
  residual 4
  conv 5 kernel=3 stride=2
  maxpool 3 stride=1 padding=same
  global_avgpool
  dense classes -> logits
}
train {
  batch 2
  loss logits cross_entropy
}
"""

SEGMENTATION = """
network SegTiny(classes = 3) {
  input image: 2x6x6
  e1 = conv 3 kernel=3 padding=same leaky_relu(0.2)
  p = avgpool 2
  e2 = conv 4 kernel=3 padding=same tanh
  up = conv_transpose 3 kernel=2 stride=2
  u2 = upsample(p) 2
  concat(up, e1, u2)
  l2pool 3 stride=1 padding=same
  conv 4 kernel=1 sigmoid
  conv classes kernel=1 -> masks
}
train {
  batch 2
  loss masks pixel_cross_entropy
}
"""


def _run(src, device, make_optimizer, x, y, opt_level, steps=2, freeze=None):
    model = Model(cnndsl.loads(src), device=device, opt_level=opt_level)
    if freeze:
        model.store.set_lr_mult(freeze, 0.0)
    model.set_optimizer(make_optimizer(model.store.params))
    losses = [model.train_step(x, y, step)[0] for step in range(steps)]
    return {
        "losses": np.array(losses),
        "state": model.store.state_dict(),
        "grads": {k: model.store.grad_view(k).copy() for k in model.store.segments},
        "optimizer": model.optimizer.state_dict(),
        "eval": model.evaluate(x, y),
        "predict": model.predict(x),
    }


def _compare(src, make_optimizer, x, y, opt_level=2, **kw):
    cpu = _run(src, "cpu", make_optimizer, x, y, opt_level, **kw)
    gpu = _run(src, "cuda", make_optimizer, x, y, opt_level, **kw)
    assert_close(gpu["losses"], cpu["losses"], rtol=1e-5, what="losses")
    for what in ("state", "grads", "optimizer", "predict"):
        assert set(gpu[what]) == set(cpu[what])
        for k in cpu[what]:
            assert_close(gpu[what][k], cpu[what][k], rtol=1e-4, atol=1e-6, what=f"{what} {k}")
    assert gpu["eval"].keys() == cpu["eval"].keys()
    for k in cpu["eval"]:
        assert abs(gpu["eval"][k] - cpu["eval"][k]) <= 1e-5 * max(1.0, abs(cpu["eval"][k])), k
    return cpu, gpu


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal((2,) + shape).astype(np.float32)


def test_lenet_like_sgd_nesterov_dropout_batchnorm_frozen_layer():
    x, y = _images((1, 8, 8)), np.array([0, 2])
    cpu, gpu = _compare(LENET, lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), x, y,
                        freeze="c1")
    # the frozen layer kept its weights on both devices; the others moved
    before = Model(cnndsl.loads(LENET)).store.state_dict()
    assert np.array_equal(gpu["state"]["c1.weight"], before["c1.weight"])
    assert not np.allclose(gpu["state"]["logits.weight"], before["logits.weight"])


def test_lenet_like_unfused_graph():
    """-O0: standalone activations and their activation_grad nodes, no fusion."""
    x, y = _images((1, 8, 8), 1), np.array([1, 1])
    _compare(LENET, lambda p: SGD(p, lr=0.05, momentum=0.5), x, y, opt_level=0, steps=1)


def test_tiny_residual_net_adam_groups_dilation_global_pool():
    x, y = _images((3, 5, 5), 2), np.array([2, 0])
    _compare(RESIDUAL, lambda p: Adam(p, lr=1e-2, weight_decay=1e-4), x, y)


def test_segmentation_net_conv_transpose_concat_upsample_pixel_loss():
    x = _images((2, 6, 6), 3)
    y = np.random.default_rng(4).integers(0, 3, (2, 6, 6))
    y[0, 0, :3] = -1  # ignored pixels
    _compare(SEGMENTATION, lambda p: SGD(p, lr=0.1), x, y, steps=1)


def test_the_step_nodes_lr_mult_from_freeze_and_lr_mult_on_both_devices():
    """The train section's freeze and lr_mult reach both backends' kernels through the step node's
    lr_mult attribute, expanded when the launch is prepared: the same update on the device."""
    src = SEGMENTATION.replace("  loss masks pixel_cross_entropy\n",
                               "  loss masks pixel_cross_entropy\n  freeze e2\n  lr_mult e1=0.5 up=3\n")
    x, y = _images((2, 6, 6), 4), np.random.default_rng(5).integers(0, 3, (2, 6, 6))
    cpu, gpu = _compare(src, lambda p: SGD(p, lr=0.1, momentum=0.5), x, y)
    model = Model(cnndsl.loads(src))
    assert dict(model._graph("train").node("optimizer_step").attrs["lr_mult"]) == {"e1": 0.5, "e2": 0.0, "up": 3.0}
    before = model.store.state_dict()
    assert np.array_equal(gpu["state"]["e2.weight"], before["e2.weight"])
    assert not np.allclose(gpu["state"]["e1.weight"], before["e1.weight"])


def test_non_finite_loss_changes_nothing_on_the_device():
    """A NaN loss: the device step skips the update and the step count stays, as on the CPU."""
    model = Model(cnndsl.loads(LENET), device="cuda")
    opt = SGD(model.store.params, lr=0.1, momentum=0.9)
    model.set_optimizer(opt)
    x, y = _images((1, 8, 8), 5), np.array([0, 1])
    model.train_step(x, y, 0)
    state = model.store.state_dict()
    state["logits.bias"][1] = np.nan  # NaN logits, NaN loss
    model.store.load_state_dict(state)
    before = model.store.state_dict()
    loss, _ = model.train_step(x, y, 1)
    assert not np.isfinite(loss)
    assert opt.step_count == 1
    after = model.store.state_dict()
    for k in before:
        if not k.endswith(("running_mean", "running_var")):  # the forward pass itself updates those
            assert np.array_equal(after[k], before[k], equal_nan=True), k


DENSE = """
network DenseTiny(classes = 3) {
  input image: 1x3x3
  flatten
  dense 5 relu
  dense classes -> logits
}
train {
  batch 2
  loss logits cross_entropy
}
"""


@pytest.mark.parametrize("kind, hyper", [
    ("sgd", dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("adam", dict(lr=0.01, beta1=0.8, weight_decay=0.01)),
    ("adamw", dict(lr=0.01, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, weight_decay=0.01)),
    ("lion", dict(lr=0.01, weight_decay=0.1)),
])
def test_every_optimizer_step_node_runs_alike_on_both_devices(kind, hyper):
    """The optimizer_step launchers of both backends, from the node's attributes, the run's learning
    rate and the runtime's state: the same weights and optimizer state after three steps."""
    from cnndsl.train.optim import make_optimizer

    x, y = _images((1, 3, 3), 7), np.array([2, 0])
    cpu, gpu = _compare(DENSE, lambda p: make_optimizer(kind, p, **hyper), x, y, steps=3)
    assert int(gpu["optimizer"]["step"]) == int(cpu["optimizer"]["step"]) == 3


def test_host_changes_reach_the_device():
    """load_state_dict / initialize between runs: the next run on the device sees the new values."""
    x, y = _images((1, 8, 8), 6), np.array([0, 2])
    gpu = Model(cnndsl.loads(LENET), device="cuda")
    cpu = Model(cnndsl.loads(LENET))
    gpu.set_optimizer(SGD(gpu.store.params, lr=0.1))
    gpu.train_step(x, y, 0)
    gpu.store.load_state_dict(cpu.store.state_dict())  # back to the initial weights
    assert_close(gpu.predict(x)["logits"], cpu.predict(x)["logits"], what="after load_state_dict")


def test_a_new_optimizer_state_between_steps_is_the_one_updated():
    """set_optimizer with the same hyperparameters keeps the training graph and its prepared
    optimizer launch; the new optimizer's state (fresh Adam moments, step 0) must be the arrays
    that launch updates from then on, on both devices alike."""
    x, y = _images((1, 3, 3), 4), np.array([1, 2])
    out = {}
    for device in ("cpu", "cuda"):
        model = Model(cnndsl.loads(DENSE), device=device)
        model.set_optimizer(Adam(model.store.params, lr=0.01))
        for step in range(2):
            model.train_step(x, y, step)
        graph = model._graph("train")
        model.set_optimizer(Adam(model.store.params, lr=0.01))
        model.train_step(x, y, 2)
        assert model._graph("train") is graph  # the same graph: the launch was not rebuilt with it
        out[device] = model.store.state_dict(), model.optimizer.state_dict()
    for cpu, gpu in zip(out["cpu"], out["cuda"]):
        assert set(cpu) == set(gpu)
        for k in cpu:
            assert_close(gpu[k], cpu[k], rtol=1e-4, atol=1e-6, what=k)
    assert int(out["cuda"][1]["step"]) == 1
