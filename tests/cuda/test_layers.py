"""The CUDA kernels of global_maxpool, multiply, lrn, softmax along an axis and bilinear
upsampling against the NumPy references (simulator, tiny shapes), and a network using every one
of them trained on 'cuda' against 'cpu' (losses, gradients, weights, predictions)."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

import cnndsl
from cnndsl.kernels.reference import layers as R
from cnndsl.model import Model
from cnndsl.train.optim import SGD

pytestmark = pytest.mark.cuda
f32 = np.float32


def _grid(n):
    from cnndsl.kernels.cuda.common import grid1d
    return grid1d(n)


def test_global_maxpool_kernels():
    from cnndsl.kernels.cuda import layers as K

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 4))
    x[1, 2, 2, 3] = x[1, 2, 0, 0] = x[1, 2].max() + 1  # a tie: the first maximum takes the gradient
    nc, p = 6, 12
    y = empty(nc)
    K.global_maxpool_forward[_grid(nc)](dev(x), y, nc, p)
    assert_close(host(y, (2, 3)), R.global_maxpool(x), what="global_maxpool")
    dy = rng.standard_normal((2, 3))
    dx = empty(x.size)
    K.global_maxpool_backward[_grid(nc)](dev(x), dev(dy), dx, nc, p)
    assert_close(host(dx, x.shape), R.global_maxpool_backward(x, dy), what="global_maxpool backward")


@pytest.mark.parametrize("b_shape", [(2, 3), (2, 3, 2, 2)])
def test_multiply_kernels(b_shape):
    from cnndsl.kernels.cuda import layers as K

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal(b_shape)
    nc, s, sb = 6, 4, b.size // 6
    y = empty(a.size)
    K.multiply_forward[_grid(a.size)](dev(a), dev(b), y, nc, s, sb)
    assert_close(host(y, a.shape), R.multiply(a, b), what="multiply")
    dy = rng.standard_normal(a.shape)
    da_ref, db_ref = R.multiply_backward(a, b, dy)
    da = empty(a.size)
    K.multiply_forward[_grid(a.size)](dev(dy), dev(b), da, nc, s, sb)
    assert_close(host(da, a.shape), da_ref, what="multiply grad a")
    if sb == 1:
        db = empty(nc)
        K.multiply_backward_reduce[_grid(nc)](dev(dy), dev(a), db, nc, s)
        assert_close(host(db, b.shape), db_ref, what="multiply grad b (reduced)")


def test_lrn_kernels():
    from cnndsl.kernels.cuda import layers as K

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 2, 1)) * 2
    size, alpha, beta, k = 3, 0.2, 0.75, 2.0
    args = (2, 5, 2, size, f32(alpha / size), f32(beta), f32(k))
    y = empty(x.size)
    K.lrn_forward[_grid(x.size)](dev(x), y, *args)
    assert_close(host(y, x.shape), R.lrn(x, size, alpha, beta, k), what="lrn")
    dy = rng.standard_normal(x.shape)
    dx = empty(x.size)
    K.lrn_backward[_grid(x.size)](dev(x), dev(dy), dx, *args)
    assert_close(host(dx, x.shape), R.lrn_backward(x, dy, size, alpha, beta, k), what="lrn backward")


@pytest.mark.parametrize("corners", [False, True])
def test_bilinear_kernels(corners):
    from cnndsl.kernels.cpu.layers import bilinear_tables
    from cnndsl.kernels.cuda import layers as K

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 3, 2))
    s, (n, c, h, w) = 2, x.shape
    tables = [dev(t, t.dtype) for t in bilinear_tables(h * s, h, s, corners) + bilinear_tables(w * s, w, s, corners)]
    y = empty(x.size * s * s)
    K.bilinear_forward[_grid(x.size * 4)](dev(x), y, *tables, n * c, h, w, h * s, w * s)
    assert_close(host(y, (n, c, h * s, w * s)), R.upsample_bilinear(x, s, corners), what="bilinear")
    dy = rng.standard_normal((n, c, h * s, w * s))
    dx = empty(x.size)
    K.bilinear_backward[_grid(n * c)](dev(dy), dx, *tables, n * c, h, w, h * s, w * s)
    assert_close(host(dx, x.shape), R.upsample_bilinear_backward(dy, x.shape, s, corners), what="bilinear backward")


NET = """
network AllNew(classes = 3) {
  input image: 2x4x4
  a = conv 4 kernel=3 padding=same
  global_avgpool
  s = dense 4 sigmoid
  m = multiply(a, s)
  lrn 3 alpha=0.1 k=2
  softmax axis=width
  upsample 2 mode=bilinear
  c = conv 2 kernel=1
  reshape 4x4x8
  global_maxpool
  dense classes -> logits
}
train {
  batch 2
  loss logits cross_entropy
}
"""


def _run(device, x, y):
    model = Model(cnndsl.loads(NET), device=device, seed=2)
    model.set_optimizer(SGD(model.store.params, lr=0.1))
    losses = [model.train_step(x, y, step)[0] for step in range(2)]
    return np.array(losses), model.store.state_dict(), model.predict(x)["logits"]


def test_a_network_of_the_new_layers_trains_the_same_on_cuda():
    x = np.random.default_rng(4).standard_normal((2, 2, 4, 4)).astype(f32)
    y = np.array([0, 2])
    cpu, gpu = _run("cpu", x, y), _run("cuda", x, y)
    assert_close(gpu[0], cpu[0], rtol=1e-5, what="losses")
    for k in cpu[1]:
        assert_close(gpu[1][k], cpu[1][k], rtol=1e-4, atol=1e-6, what=k)
    assert_close(gpu[2], cpu[2], rtol=1e-4, atol=1e-6, what="predictions")
