"""Every registered activation on the CUDA kernels (simulated) against the NumPy reference, and
a small network using it trained one step on 'cuda' and on 'cpu' at -O2 (the fusions it allows
included). The CPU side: tests/test_activations.py."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.activations import ACTIVATIONS, INPUT
from cnndsl.kernels.reference import activation as R

pytestmark = pytest.mark.cuda

EVERY = [a for a in ACTIVATIONS if a.code != 0]
ALPHA = {"leaky_relu": 0.2, "elu": 0.7}


def _grid(n):
    from cnndsl.kernels.cuda.common import grid1d

    return grid1d(n)


@pytest.mark.parametrize("act", EVERY, ids=lambda a: a.name)
def test_kernels_match_reference(act):
    from cnndsl.kernels.cuda import elementwise as E

    rng = np.random.default_rng(act.code)
    x = rng.standard_normal((3, 5, 4)) * 3
    dy = rng.standard_normal(x.shape)
    alpha = np.float32(ALPHA.get(act.name, 0.0))
    n = x.size
    y, dx = empty(n), empty(n)
    E.activation_forward[_grid(n)](dev(x), y, act.code, alpha, n)
    yh = host(y, x.shape)
    assert_close(yh, R.activation(x, act.name, float(alpha)), what=f"{act.name} forward")
    saved = dev(x) if act.grad_from == INPUT else y
    E.activation_backward[_grid(n)](saved, dev(dy), dx, act.code, alpha, n)
    assert_close(host(dx, x.shape), R.activation_backward(x, dy, act.name, float(alpha)), what=f"{act.name} backward")


def test_prelu_kernels_match_reference():
    from cnndsl.kernels.cuda import elementwise as E

    rng = np.random.default_rng(0)
    x, slope, dy = rng.standard_normal((2, 3, 4)), rng.uniform(-0.5, 0.5, 3), rng.standard_normal((2, 3, 4))
    n, (N, C, S) = x.size, x.shape
    y, dx, ds = empty(n), empty(n), empty(C)
    E.prelu_forward[_grid(n)](dev(x), dev(slope), y, N, C, S)
    assert_close(host(y, x.shape), R.prelu(x, slope), what="prelu forward")
    E.prelu_backward_slope[_grid(C)](dev(x), dev(dy), ds, N, C, S)
    E.prelu_backward_data[_grid(n)](dev(x), dev(dy), dev(slope), dx, N, C, S)
    rdx, rds = R.prelu_backward(x, dy, slope)
    assert_close(host(dx, x.shape), rdx, what="prelu dx")
    assert_close(host(ds, (C,)), rds, what="prelu dslope")


@pytest.mark.parametrize("name", [a.name for a in EVERY] + ["prelu"])
def test_network_step_on_cuda_matches_cpu(name):
    import cnndsl
    from cnndsl.model import Model
    from cnndsl.train.optim import make_optimizer

    call = f"{name}({ALPHA[name]})" if name in ALPHA else name
    src = f"""
network Act(classes = 3) {{
  input image: 2x4x4
  conv 3 kernel=3 padding=same {call}
  batchnorm {call}
  flatten
  dense 4 {call}
  dense classes -> logits
}}
train {{
  batch 2
  loss logits cross_entropy
}}
"""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((2, 2, 4, 4)).astype(np.float32), rng.integers(0, 3, 2)
    out = {}
    for device in ("cpu", "cuda"):
        model = Model(cnndsl.loads(src, "act.cnn"), device=device, seed=3, opt_level=2)
        model.set_optimizer(make_optimizer("sgd", model.store.params, lr=0.1, momentum=0.9))
        loss, _ = model.train_step(x, y, step=1)
        out[device] = (loss, model.store.state_dict(), model.predict(x)["logits"])
    assert abs(out["cuda"][0] - out["cpu"][0]) <= 1e-4 * max(1.0, abs(out["cpu"][0]))
    for k, v in out["cpu"][1].items():
        assert_close(out["cuda"][1][k], v, rtol=1e-4, what=f"{name} {k}")
    assert_close(out["cuda"][2], out["cpu"][2], rtol=1e-4, what=f"{name} predictions")
