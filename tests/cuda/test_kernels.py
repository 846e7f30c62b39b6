"""Elementwise, reduction, pooling, structural, loss and optimizer CUDA kernels vs the NumPy
references (and the CPU dropout kernel, bit for bit), under the simulator, tiny shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.reference import activation as RA
from cnndsl.kernels.reference import batchnorm as RB
from cnndsl.kernels.reference import loss as RL
from cnndsl.kernels.reference import pool as RP
from cnndsl.kernels.reference import tensor as RT

pytestmark = pytest.mark.cuda
f32 = np.float32


def _grid(n):
    from cnndsl.kernels.cuda.common import grid1d
    return grid1d(n)


def test_activation_in_place():
    """y is x, as the executor may run it (every activation's kernels: tests/cuda/test_cuda_activations.py)."""
    from cnndsl.kernels.activations import CODE
    from cnndsl.kernels.cuda import elementwise as E

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)) * 3
    n = x.size
    a = dev(x)
    E.activation_forward[_grid(n)](a, a, CODE["relu"], f32(0.0), n)
    assert_close(host(a, x.shape), RA.activation(x, "relu"), what="relu in place")


@pytest.mark.parametrize("shape", [(2, 5), (2, 3, 2, 3)])
def test_softmax(shape):
    from cnndsl.kernels.cuda import elementwise as E

    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape) * 4, rng.standard_normal(shape)
    n, k = shape[0], shape[1]
    s = int(np.prod(shape[2:]))
    y, dx = empty(x.size), empty(x.size)
    E.softmax_forward[_grid(n * s)](dev(x), y, n, k, s)
    ref = RA.softmax(x)
    assert_close(host(y, shape), ref, what="softmax")
    E.softmax_backward[_grid(n * s)](y, dev(dy), dx, n, k, s)
    assert_close(host(dx, shape), RA.softmax_backward(ref, dy), what="softmax backward")


def test_add_copy_scale_fill():
    from cnndsl.kernels.cuda import elementwise as E

    rng = np.random.default_rng(2)
    a, b, c = (rng.standard_normal(67) for _ in range(3))
    out = empty(67)
    E.add2[_grid(67)](dev(a), dev(b), out, 67)
    E.add_accumulate[_grid(67)](out, dev(c), 67)
    assert_close(host(out, (67,)), RT.add(a, b, c), what="add")
    E.scale[_grid(67)](out, f32(-2.0), 67)
    assert_close(host(out, (67,)), -2 * (a + b + c), what="scale")
    E.copy[_grid(67)](dev(a), out, 67)
    assert np.array_equal(host(out, (67,)), a.astype(np.float32))
    E.fill[_grid(67)](out, f32(3.0), 67)
    assert (host(out, (67,)) == 3).all()


def test_dropout_base_on_the_host_is_the_references():
    """E.dropout_base (the reference's, in Python integers, computed on the host each training
    step) against the reference's hash on NumPy uint64 arrays, on random and edge seeds and steps."""
    from cnndsl.kernels.cuda import elementwise as E
    from cnndsl.kernels.reference import dropout as RDo

    def in_numpy(seed, step):
        with np.errstate(over="ignore"):
            s = np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
            t = np.array([step & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
            return RDo._mix(RDo._mix(s * RDo.GOLDEN) ^ (t * RDo.STEP_MUL))[0]

    rng = np.random.default_rng(5)
    pairs = [(0, 0), (2**31 - 1, 0), (2**63, 2**64 - 1), (2**64 - 1, 2**63 + 1), (-1, 3)]
    pairs += [(int(a), int(b)) for a, b in rng.integers(0, 2**63, (200, 2), dtype=np.uint64)]
    for seed, step in pairs:
        got = E.dropout_base(seed, step)
        assert type(got) is np.uint64 and got == in_numpy(seed, step), (seed, step)


@pytest.mark.parametrize("p, seed, step", [(0.5, 12345, 0), (0.3, 7, 41), (0.9, 2**31 - 1, 10**6)])
def test_dropout_mask_is_bit_identical_to_the_cpu_kernel(p, seed, step):
    from cnndsl.kernels.cpu import dropout as CD
    from cnndsl.kernels.cuda import elementwise as E
    from cnndsl.kernels.reference import dropout as RDo

    n = 2 * 3 * 7 * 7
    base, thr, scale = E.dropout_params(p, seed, step)
    mask = empty(n, np.uint8)
    E.dropout_mask[_grid(n)](base, thr, mask, n)
    cpu = np.zeros(n, np.uint8)
    CD.dropout_mask(f32(p), seed, step, cpu)
    assert np.array_equal(mask.copy_to_host(), cpu)
    assert np.array_equal(cpu.astype(bool), RDo.dropout_keep_mask((n,), p, seed, step))
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    y = empty(n)
    E.dropout_apply[_grid(n)](dev(x), base, thr, scale, y, n)
    cpu_y = np.empty_like(x)
    CD.dropout_forward(x, f32(p), seed, step, cpu_y)
    assert np.array_equal(y.copy_to_host(), cpu_y)  # same mask, same float32 scale: bit for bit


def _steps(triples) -> None:
    """Run a host helper's planned launches [(kernel, config, args)] in order."""
    for k, config, args in triples:
        k[config](*args)


@pytest.fixture(params=["natural", "many"])
def runs(request, monkeypatch):
    """Per-channel reductions as reduce.plan splits them under the simulator, and split into many
    short runs (the last one shorter: (5, 2, 3, 7) has 105 elements per channel in runs of 8)."""
    from cnndsl.kernels.cuda import reduce as R

    if request.param == "many":
        monkeypatch.setattr(R, "TARGET_BLOCKS", 64)
        monkeypatch.setattr(R, "CHUNK_MIN", 8)
    return request.param


def test_reduction_plans():
    from cnndsl.kernels.cuda import reduce as R

    for C, M in ((1, 1), (3, 1000), (2, 10**6), (500, 7), (1, 2**33)):
        chunks, L = R.plan(C, M)
        assert chunks >= 1 and (chunks - 1) * L < M <= chunks * L, (C, M, chunks, L)
        assert chunks == 1 or M / chunks >= R.CHUNK_MIN / 2
    assert R.plan(500, 7)[0] == 1 and R.plan(1, 10**6)[0] > 1


@pytest.mark.parametrize("shape", [(3, 5, 2, 3), (4, 6), (5, 2, 3, 7)])
def test_batchnorm_train_inference_backward(shape, runs):
    from cnndsl.kernels.cuda import reduce as R

    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[1]
    n, s = shape[0], int(np.prod(shape[2:]))
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    y_ref, mean, inv, rm_ref, rv_ref = RB.batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv)
    d_rm, d_rv = dev(rm), dev(rv)
    save_mean, save_inv, scale, shift, y = empty(c), empty(c), empty(c), empty(c), empty(x.size)
    _steps(R.bn_train_stats_steps(dev(x), n, c, s, dev(gamma), dev(beta), f32(1e-5), f32(0.1), d_rm, d_rv,
                                  save_mean, save_inv, scale, shift, empty(R.workspace(c, n * s, 2))))
    R.channel_affine[_grid(x.size)](dev(x), scale, shift, 0, f32(0.0), y, c, s, x.size)
    assert_close(host(y, shape), y_ref, what="train forward")
    assert_close(host(save_mean, (c,)), mean, what="mean")
    assert_close(host(save_inv, (c,)), inv, what="invstd")
    assert_close(host(d_rm, (c,)), rm_ref, what="running mean")
    assert_close(host(d_rv, (c,)), rv_ref, what="running var")

    dy = rng.standard_normal(shape)
    dx_ref, dg_ref, db_ref = RB.batchnorm_backward(x, dy, gamma, mean, inv)
    dx, dg, db, coef = empty(x.size), empty(c), empty(c), empty(3 * c)
    _steps(R.bn_backward_reduce_steps(dev(x), dev(dy), dev(dy), 0, f32(0.0), n, c, s, dev(gamma), save_mean,
                                      save_inv, dg, db, coef, empty(R.workspace(c, n * s, 2))))
    R.bn_backward_apply[_grid(x.size)](dev(x), dev(dy), dev(dy), 0, f32(0.0), dx, save_mean, coef, c, s, x.size)
    assert_close(host(dx, shape), dx_ref, rtol=1e-3, what="dx")
    assert_close(host(dg, (c,)), dg_ref, what="dgamma")
    assert_close(host(db, (c,)), db_ref, what="dbeta")

    R.bn_inference_coeffs[_grid(c)](dev(gamma), dev(beta), dev(rm), dev(rv), f32(1e-5), scale, shift, c)
    R.channel_affine[_grid(x.size)](dev(x), scale, shift, 0, f32(0.0), y, c, s, x.size)
    assert_close(host(y, shape), RB.batchnorm_inference(x, gamma, beta, rm, rv, 1e-5), what="inference")


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(3, 5, 2, 3), (4, 6)])
def test_fused_batchnorm_forward_and_backward(shape, activation):
    # (the activation is applied per element, before and after the per-channel runs: their
    # splitting is tested once, by test_batchnorm_train_inference_backward's `runs`)
    """fused_batchnorm: the activation applied as the affine output is written, and the backward
    recomputing dz = act'(y) * dy in both of its kernels, against the composed references."""
    from cnndsl.kernels.cuda import reduce as R
    from cnndsl.kernels.reference import fused as RF
    from cnndsl.ops.fused.epilogue import ACTIVATION_CODE

    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 2 + 1
    c, n, s = shape[1], shape[0], int(np.prod(shape[2:]))
    act, alpha = ACTIVATION_CODE[activation], f32(0.2)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    y_ref, mean, inv, rm_ref, rv_ref = RF.fused_batchnorm_train(x, gamma, beta, 1e-5, 0.1, rm, rv, activation, 0.2)
    d_rm, d_rv = dev(rm), dev(rv)
    save_mean, save_inv, scale, shift, y = empty(c), empty(c), empty(c), empty(c), empty(x.size)
    _steps(R.bn_train_stats_steps(dev(x), n, c, s, dev(gamma), dev(beta), f32(1e-5), f32(0.1), d_rm, d_rv,
                                  save_mean, save_inv, scale, shift, empty(R.workspace(c, n * s, 2))))
    R.channel_affine[_grid(x.size)](dev(x), scale, shift, act, alpha, y, c, s, x.size)
    assert_close(host(y, shape), y_ref, what="train forward")
    assert_close(host(d_rv, (c,)), rv_ref, what="running var")

    dy = rng.standard_normal(shape)
    dx_ref, dg_ref, db_ref = RF.fused_batchnorm_backward(x, y_ref, dy, gamma, beta, mean, inv, activation, 0.2)
    dx, dg, db, coef = empty(x.size), empty(c), empty(c), empty(3 * c)
    _steps(R.bn_backward_reduce_steps(dev(x), dev(dy), y, act, alpha, n, c, s, dev(gamma), save_mean,
                                      save_inv, dg, db, coef, empty(R.workspace(c, n * s, 2))))
    R.bn_backward_apply[_grid(x.size)](dev(x), dev(dy), y, act, alpha, dx, save_mean, coef, c, s, x.size)
    assert_close(host(dx, shape), dx_ref, rtol=1e-3, what="dx")
    assert_close(host(dg, (c,)), dg_ref, what="dgamma")
    assert_close(host(db, (c,)), db_ref, what="dbeta")

    R.bn_inference_coeffs[_grid(c)](dev(gamma), dev(beta), dev(rm), dev(rv), f32(1e-5), scale, shift, c)
    R.channel_affine[_grid(x.size)](dev(x), scale, shift, act, alpha, y, c, s, x.size)
    assert_close(host(y, shape), RF.fused_batchnorm_inference(x, gamma, beta, rm, rv, 1e-5, activation, 0.2),
                 what="inference")


def test_channel_sum_and_sum_to(runs):
    from cnndsl.kernels.cuda import reduce as R
    from cnndsl.kernels.cuda.common import RB as THREADS

    rng = np.random.default_rng(5)
    for shape in ((3, 4, 10), (7, 2, 15)):
        x = rng.standard_normal(shape)
        n, c, s = shape
        out = empty(c)
        _steps(R.channel_sum_steps(dev(x), n, c, s, f32(0.5), out, empty(R.workspace(c, n * s))))
        assert_close(host(out, (c,)), 0.5 * x.sum(axis=(0, 2)), what=f"channel sum {shape}")
    values = empty(3)
    R.sum_to[1, THREADS](dev(x), x.size, f32(2.0), values, 1)
    assert_close(host(values, (3,))[1], 2 * x.sum(), what="sum_to")


POOLS = [  # kernel, stride, pads (t, b, l, r)
    ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 3), (1, 2), (0, 1, 1, 0)),
    ((2, 2), (2, 2), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("kernel, stride, pads", POOLS)
def test_pooling_forward_and_backward(kernel, stride, pads):
    from cnndsl.kernels.cuda import pool as K

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 7, 7))
    y = RP.maxpool2d(x, kernel, stride, pads, (1, 1))
    dy = rng.standard_normal(y.shape)
    geo = (2, 3, 7, 7, y.shape[2], y.shape[3], kernel[0], kernel[1], stride[0], stride[1], pads[0], pads[2], 1, 1)
    out, idx, dx = empty(y.size), empty(y.size, np.int32), empty(x.size)
    K.maxpool_forward[_grid(y.size)](dev(x), out, idx, *geo)
    assert_close(host(out, y.shape), y, what="maxpool")
    K.maxpool_backward[_grid(x.size)](dev(dy), idx, dx, *geo)
    assert_close(host(dx, x.shape), RP.maxpool2d_backward(x, dy, kernel, stride, pads, (1, 1)), what="maxpool bwd")
    for kind, fwd, bwd in ((K.AVG, RP.avgpool2d, RP.avgpool2d_backward), (K.L2, RP.l2pool2d, RP.l2pool2d_backward)):
        K.avg_l2_forward[_grid(y.size)](dev(x), out, *geo, kind)
        assert_close(host(out, y.shape), fwd(x, kernel, stride, pads, (1, 1)), what=f"pool {kind}")
        K.avg_l2_backward[_grid(x.size)](dev(x), out, dev(dy), dx, *geo, kind)
        assert_close(host(dx, x.shape), bwd(x, dy, kernel, stride, pads, (1, 1)), what=f"pool {kind} backward")


def test_pooling_with_dilation():
    from cnndsl.kernels.cuda import pool as K

    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 7, 6))
    args = ((3, 2), (1, 2), (1, 0, 0, 1), (2, 2))
    y = RP.avgpool2d(x, *args)
    geo = (1, 2, 7, 6, y.shape[2], y.shape[3], 3, 2, 1, 2, 1, 0, 2, 2)
    out, dx = empty(y.size), empty(x.size)
    K.avg_l2_forward[_grid(y.size)](dev(x), out, *geo, K.AVG)
    assert_close(host(out, y.shape), y, what="dilated avgpool")
    dy = rng.standard_normal(y.shape)
    K.avg_l2_backward[_grid(x.size)](dev(x), out, dev(dy), dx, *geo, K.AVG)
    assert_close(host(dx, x.shape), RP.avgpool2d_backward(x, dy, *args), what="dilated avgpool backward")


def test_global_avgpool():
    from cnndsl.kernels.cuda import pool as K
    from cnndsl.kernels.cuda import reduce as R

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 5, 4))
    out, dx = empty(6), empty(x.size)
    _steps(R.channel_sum_steps(dev(x), 1, 6, 20, f32(1 / 20), out, empty(R.workspace(6, 20))))
    assert_close(host(out, (2, 3)), RP.global_avgpool(x), what="global avgpool")
    dy = rng.standard_normal((2, 3))
    K.global_avgpool_backward[_grid(x.size)](dev(dy), dx, 20, f32(1 / 20))
    assert_close(host(dx, x.shape), RP.global_avgpool_backward(x.shape, dy), what="global avgpool backward")


def test_concat_and_upsample():
    from cnndsl.kernels.cuda import tensor as T

    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((2, 3, 3, 2)), rng.standard_normal((2, 2, 3, 2))
    out = empty(2 * 5 * 6)
    T.concat_forward[_grid(a.size)](dev(a), out, 2, 3, 6, 5, 0)
    T.concat_forward[_grid(b.size)](dev(b), out, 2, 2, 6, 5, 3)
    cat = RT.concat([a, b])
    assert_close(host(out, cat.shape), cat, what="concat")
    db = empty(b.size)
    T.concat_backward[_grid(b.size)](out, db, 2, 2, 6, 5, 3)
    assert_close(host(db, b.shape), b, what="concat backward")
    up = empty(a.size * 6)
    T.upsample_forward[_grid(a.size * 6)](dev(a), up, 6, 3, 2, 2, 3)
    assert_close(host(up, (2, 3, 6, 6)), RT.upsample_nearest(a, 2, 3), what="upsample")
    dy = rng.standard_normal((2, 3, 6, 6))
    dx = empty(a.size)
    T.upsample_backward[_grid(a.size)](dev(dy), dx, 6, 3, 2, 2, 3)
    assert_close(host(dx, a.shape), RT.upsample_nearest_backward(dy, 2, 3), what="upsample backward")


def test_cross_entropy_and_pixel_cross_entropy():
    from cnndsl.kernels.cuda import loss as L
    from cnndsl.kernels.cuda import reduce as R
    from cnndsl.kernels.cuda.common import RB as THREADS

    rng = np.random.default_rng(10)
    z, lab = rng.standard_normal((3, 5)) * 3, np.array([4, 0, 2])
    loss_ref, d_ref = RL.softmax_cross_entropy(z, lab)
    d, terms, values = empty(z.size), empty(3), empty(2)
    w = 0.5
    L.cross_entropy_rows[_grid(3)](dev(z), dev(lab, np.int64), d, terms, 3, 5, f32(w / 3))
    R.sum_to[1, THREADS](terms, 3, f32(w / 3), values, 1)
    assert_close(host(d, z.shape), w * d_ref, what="cross-entropy gradient")
    assert abs(values.copy_to_host()[1] - w * loss_ref) < 1e-5

    z = rng.standard_normal((2, 4, 3, 3))
    lab = rng.integers(0, 4, (2, 3, 3))
    lab[0, 1, :] = -1
    loss_ref, d_ref = RL.pixel_cross_entropy(z, lab)
    n = 18
    d, terms, valid, totals = empty(z.size), empty(n), empty(n), empty(2)
    L.pixel_cross_entropy_terms[_grid(n)](dev(z), dev(lab, np.int64), d, terms, valid, 2, 4, 9)
    R.sum_to[1, THREADS](terms, n, f32(1), totals, 0)
    R.sum_to[1, THREADS](valid, n, f32(1), totals, 1)
    L.pixel_cross_entropy_finish[_grid(z.size)](d, totals, f32(2.0), values, 0, z.size)
    assert_close(host(d, z.shape), 2 * d_ref, what="pixel cross-entropy gradient")
    assert abs(values.copy_to_host()[0] - 2 * loss_ref) < 1e-5
    # everything ignored: loss 0, zero gradient
    lab[:] = -1
    L.pixel_cross_entropy_terms[_grid(n)](dev(z), dev(lab, np.int64), d, terms, valid, 2, 4, 9)
    R.sum_to[1, THREADS](terms, n, f32(1), totals, 0)
    R.sum_to[1, THREADS](valid, n, f32(1), totals, 1)
    L.pixel_cross_entropy_finish[_grid(z.size)](d, totals, f32(1.0), values, 0, z.size)
    assert values.copy_to_host()[0] == 0 and not host(d, z.shape).any()


@pytest.mark.parametrize("beta", [1.0, 0.0])
def test_mse_and_smooth_l1(beta):
    from cnndsl.kernels.cuda import loss as L

    rng = np.random.default_rng(11)
    p, t = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    t[0, 0] = p[0, 0]  # d == 0
    m = p.size
    g, terms = empty(m), empty(m)
    L.mse_terms[_grid(m)](dev(p), dev(t), g, terms, f32(2.0 / m), m)
    loss_ref, g_ref = RL.mse(p, t)
    assert_close(host(g, p.shape), g_ref, what="mse gradient")
    assert abs(host(terms, (m,)).sum() / m - loss_ref) < 1e-5
    L.smooth_l1_terms[_grid(m)](dev(p), dev(t), f32(beta), g, terms, f32(1.0 / m), m)
    loss_ref, g_ref = RL.smooth_l1(p, t, beta)
    assert_close(host(g, p.shape), g_ref, what="smooth l1 gradient")
    assert abs(host(terms, (m,)).sum() / m - loss_ref) < 1e-5


@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov", "adam"])
def test_optimizer_steps_match_the_cpu_optimizer(kind):
    """Three steps over a flat buffer with frozen elements (lr_mult 0), a per-element lr_mult and
    wd_mult, weight decay; then a step with a NaN loss changes nothing."""
    from cnndsl.kernels.cuda import optim as K
    from cnndsl.backend.params import FlatParams
    from cnndsl.train.optim import SGD, Adam

    rng = np.random.default_rng(12)
    fp = FlatParams({"a": (13,), "b": (4, 5)})
    fp.data[:] = rng.standard_normal(fp.size)
    fp.set_lr_mult("b", 0.5)
    fp.lr_mult[3] = 0
    fp.wd_mult[:4] = 0
    if kind == "adam":
        opt = Adam(fp, lr=0.01, weight_decay=0.01)
    else:
        opt = SGD(fp, lr=0.1, momentum=0.9, nesterov=kind == "sgd_nesterov", weight_decay=0.01)
    p, mult, wdm = dev(fp.data), dev(fp.lr_mult), dev(fp.wd_mult)
    s1, s2 = empty(fp.size), empty(fp.size)
    n = fp.size
    ok = dev(np.array([0.3]))
    for step in range(4):
        fp.grad[:] = rng.standard_normal(n)
        g = dev(fp.grad)
        losses = ok if step < 3 else dev(np.array([0.3, np.nan]))
        if kind == "adam":
            t = step + 1
            bc1, bc2 = 1 - 0.9 ** t, 1 - 0.999 ** t
            if step == 0:
                s1, s2 = dev(np.zeros(n)), dev(np.zeros(n))
            K.adam_step[_grid(n)](p, g, s1, s2, mult, wdm, f32(0.01 / bc1), f32(0.999), f32(0.1), f32(0.001),
                                  f32(math.sqrt(bc2)), f32(1e-8), f32(0.01), True, f32(0.0), losses, losses.size, n)
        else:
            K.sgd_step[_grid(n)](p, g, s1, mult, wdm, f32(0.1), f32(0.9), f32(1.0), f32(0.01),
                                 kind == "sgd_nesterov", step == 0, losses, losses.size, n)
        if step < 3:
            opt.step()
        np.testing.assert_allclose(p.copy_to_host(), fp.data, rtol=2e-6, atol=2e-7, err_msg=f"step {step}")


@pytest.mark.parametrize("make", [
    lambda fp: __import__("cnndsl.train.optim", fromlist=["x"]).make_optimizer("adamw", fp, lr=0.01, weight_decay=0.1),
    lambda fp: __import__("cnndsl.train.optim", fromlist=["x"]).make_optimizer("rmsprop", fp, lr=0.01, momentum=0.9,
                                                                                weight_decay=0.01),
    lambda fp: __import__("cnndsl.train.optim", fromlist=["x"]).make_optimizer("lion", fp, lr=0.01, weight_decay=0.1),
], ids=["adamw", "rmsprop", "lion"])
def test_every_optimizer_kernel_matches_the_cpu_one(make):
    """The device kernel each optimizer names, with its `coefficients(lr, t)`, step for step
    against the CPU optimizer (frozen elements, lr_mult, wd_mult), and a NaN loss changes nothing."""
    from cnndsl.kernels.cuda import optim as K
    from cnndsl.backend.params import FlatParams

    rng = np.random.default_rng(3)
    fp = FlatParams({"a": (13,), "b": (4, 5)})
    fp.data[:] = rng.standard_normal(fp.size)
    fp.set_lr_mult("b", 0.5)
    fp.lr_mult[3] = 0
    fp.wd_mult[:4] = 0
    opt = make(fp)
    n = fp.size
    p, mult, wdm = dev(fp.data), dev(fp.lr_mult), dev(fp.wd_mult)
    state = {k: dev(np.zeros(n)) for k in opt.state_keys}
    dummy = dev(np.zeros(1))
    kernel = getattr(K, opt.kernel)
    for step in range(4):
        fp.grad[:] = rng.standard_normal(n)
        losses = dev(np.array([0.3])) if step < 3 else dev(np.array([0.3, np.nan]))
        kernel[_grid(n)](p, dev(fp.grad), *opt.kernel_arrays(state, dummy), mult, wdm,
                         *opt.coefficients(opt.lr, step + 1), losses, losses.size, n)
        if step < 3:
            opt.step()
        np.testing.assert_allclose(p.copy_to_host(), fp.data, rtol=2e-6, atol=2e-7, err_msg=f"step {step}")
