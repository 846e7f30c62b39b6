"""The optimizers against NumPy transcriptions of torch.optim.SGD / Adam / AdamW / RMSprop and of Lion."""
import math

import numpy as np
import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.backend.params import FlatParams, ParamLayout
from cnndsl.train.optim import SGD, Adam, make_optimizer

f32 = np.float32
SHAPES = {"c1.weight": (4, 1, 3, 3), "c1.bias": (4,), "fc.weight": (3, 36), "fc.bias": (3,)}


def make_params(seed=0):
    fp = FlatParams(SHAPES)
    fp.data[:] = np.random.default_rng(seed).standard_normal(fp.size).astype(np.float32)
    return fp


def grads(n, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]


# NumPy transcriptions of PyTorch's single-tensor update code (float32, same operation order)

def torch_sgd(p, gs, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p = p.copy()
    buf = None
    for g in gs:
        d = g + f32(weight_decay) * p if weight_decay else g.copy()  # d_p.add(param, alpha=wd)
        if momentum:
            if buf is None:
                buf = d.copy()  # torch.clone(d_p).detach()
            else:
                buf = buf * f32(momentum) + f32(1 - dampening) * d  # buf.mul_(m).add_(d_p, alpha=1-damp)
            d = d + f32(momentum) * buf if nesterov else buf
        p = p + f32(-lr) * d  # param.add_(d_p, alpha=-lr)
    return p, buf


def torch_adam(p, gs, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        d = g + f32(weight_decay) * p if weight_decay else g
        w = f32(1 - beta1)
        m = m + w * (d - m) if w < 0.5 else d - (d - m) * (f32(1) - w)  # exp_avg.lerp_(grad, 1-beta1)
        v = v * f32(beta2) + f32(1 - beta2) * d * d  # mul_(beta2).addcmul_(grad, grad, value=1-beta2)
        step_size = lr / (1 - beta1 ** t)
        bc2_sqrt = (1 - beta2 ** t) ** 0.5
        denom = np.sqrt(v) / f32(bc2_sqrt) + f32(eps)
        p = p + f32(-step_size) * m / denom  # param.addcdiv_(exp_avg, denom, value=-step_size)
    return p, m, v


def textbook_adam64(p, gs, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        g = g.astype(np.float64) + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        mhat, vhat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


def run(opt, gs):
    for g in gs:
        opt.params.grad[:] = g
        opt.step()
    return opt.params.data


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.01, momentum=0.5, nesterov=True, weight_decay=1e-2),
    dict(lr=0.01, momentum=0.9, dampening=0.1),
    dict(lr=0.2, weight_decay=0.1),
]


@pytest.mark.parametrize("hp", SGD_CASES)
def test_sgd_matches_torch_formulas(hp):
    fp = make_params()
    p0 = fp.data.copy()
    gs = grads(fp.size, 5)
    opt = SGD(fp, **hp)
    run(opt, gs)
    ref, buf = torch_sgd(p0, gs, **hp)
    np.testing.assert_array_equal(fp.data, ref)  # same float32 operations in the same order
    if hp.get("momentum"):
        np.testing.assert_array_equal(opt.state["momentum_buffer"], buf)


def test_sgd_momentum_first_step_buffer_is_grad():
    fp = make_params()
    g = grads(fp.size, 1)[0]
    opt = SGD(fp, lr=0.1, momentum=0.9)
    run(opt, [g])
    np.testing.assert_array_equal(opt.state["momentum_buffer"], g)


ADAM_CASES = [
    dict(lr=1e-3),
    dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6),
    dict(lr=3e-3, weight_decay=1e-2),
    dict(lr=1e-3, beta1=0.3),  # the other branch of torch.lerp
]


@pytest.mark.parametrize("hp", ADAM_CASES)
def test_adam_matches_torch_formulas(hp):
    fp = make_params()
    p0 = fp.data.copy()
    gs = grads(fp.size, 6)
    opt = Adam(fp, **hp)
    run(opt, gs)
    ref, m, v = torch_adam(p0, gs, **hp)
    np.testing.assert_array_equal(fp.data, ref)
    np.testing.assert_array_equal(opt.state["exp_avg"], m)
    np.testing.assert_array_equal(opt.state["exp_avg_sq"], v)
    np.testing.assert_allclose(fp.data, textbook_adam64(p0, gs, **hp), rtol=1e-5, atol=1e-6)
    assert opt.step_count == 6


def test_adam_first_step_is_lr_times_sign():
    fp = make_params()
    p0 = fp.data.copy()
    g = grads(fp.size, 1)[0]
    run(Adam(fp, lr=0.01, eps=0.0), [g])
    np.testing.assert_allclose(fp.data, p0 - 0.01 * np.sign(g), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [
    lambda fp: SGD(fp, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda fp: Adam(fp, lr=0.01, weight_decay=0.1),
])
def test_frozen_parameters_stay_bit_exact(make):
    fp = make_params()
    fp.set_lr_mult("c1.weight", 0.0)
    fp.set_lr_mult("fc.bias", 0.0)
    before = fp.tensors()
    opt = make(fp)
    run(opt, grads(fp.size, 4))
    after = fp.tensors()
    assert after["c1.weight"].tobytes() == before["c1.weight"].tobytes()
    assert after["fc.bias"].tobytes() == before["fc.bias"].tobytes()
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])
    seg = fp.layout["c1.weight"]
    for buf in opt.state.values():
        assert not buf[seg.offset:seg.stop].any()  # no optimizer state for frozen elements


def test_lr_and_wd_multipliers():
    hp = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    fp = make_params()
    p0 = fp.data.copy()
    gs = grads(fp.size, 3)
    fp.set_lr_mult("fc.weight", 0.5)
    fp.set_wd_mult("c1.bias", 0.0)
    run(SGD(fp, **hp), gs)
    seg = fp.layout["fc.weight"]
    half, _ = torch_sgd(p0, gs, **dict(hp, lr=0.05))
    np.testing.assert_array_equal(fp.data[seg.offset:seg.stop], half[seg.offset:seg.stop])
    seg = fp.layout["c1.bias"]
    nowd, _ = torch_sgd(p0, gs, **dict(hp, weight_decay=0.0))
    np.testing.assert_array_equal(fp.data[seg.offset:seg.stop], nowd[seg.offset:seg.stop])


def test_step_lr_override():
    fp = make_params()
    p0 = fp.data.copy()
    g = grads(fp.size, 1)[0]
    opt = SGD(fp, lr=1.0)
    fp.grad[:] = g
    opt.step(lr=0.25)
    np.testing.assert_array_equal(fp.data, p0 + f32(-0.25) * g)


@pytest.mark.parametrize("make", [
    lambda fp: SGD(fp, lr=0.1, momentum=0.9),
    lambda fp: Adam(fp, lr=0.01),
])
def test_state_dict_resume_is_exact(make):
    gs = grads(make_params().size, 6)
    a = make_params()
    opt_a = make(a)
    run(opt_a, gs)
    b = make_params()
    opt_b = make(b)
    run(opt_b, gs[:3])
    state = opt_b.state_dict()
    weights = b.tensors()
    assert state["step"].dtype == np.int64 and int(state["step"]) == 3
    c = FlatParams(SHAPES)
    c.load(weights)
    opt_c = make(c)
    opt_c.load_state_dict(state)
    run(opt_c, gs[3:])
    np.testing.assert_array_equal(c.data, a.data)


def test_load_state_dict_errors():
    fp = make_params()
    with pytest.raises(CnnError, match="does not fit the adam"):
        Adam(fp).load_state_dict(SGD(fp, momentum=0.9).state_dict(), path="ck.safetensors")
    bad = Adam(FlatParams({"x": (3,)})).state_dict()
    with pytest.raises(CnnError, match="wrong size"):
        Adam(fp).load_state_dict(bad)


def test_layout_views_share_memory():
    fp = FlatParams(SHAPES)
    assert fp.size == 36 + 4 + 108 + 3
    fp.view("c1.bias")[:] = 7
    assert (fp.data[36:40] == 7).all()
    fp.grad_view("fc.bias")[:] = 1
    assert fp.grad[-3:].tolist() == [1, 1, 1]
    assert ParamLayout(SHAPES, align=16)["c1.bias"].offset == 48


def test_make_optimizer_and_validation():
    fp = make_params()
    assert isinstance(make_optimizer("Adam", fp, lr=0.1), Adam)
    with pytest.raises(ValueError):
        make_optimizer("nadam", fp)
    with pytest.raises(ValueError):
        SGD(fp, lr=0.1, nesterov=True)


def test_kernels_are_float32_only():
    from cnndsl.kernels.cpu import optim
    fp = make_params()
    run(SGD(fp, lr=0.1, momentum=0.9, weight_decay=0.1), grads(fp.size, 2))
    run(Adam(fp, lr=0.1, weight_decay=0.1), grads(fp.size, 2))
    import numba
    for kernel in (optim.sgd_step, optim.adam_step):
        assert kernel.signatures
        fresh = numba.njit(kernel.py_func)  # a non-cached copy, so the type annotations exist
        for sig in kernel.signatures:
            fresh.compile(sig)
        for res in fresh.overloads.values():
            typemap = res.type_annotation.typemap
            bad = {k: str(v) for k, v in typemap.items() if "float64" in str(v)}
            assert not bad, f"{kernel.__name__} has float64 values: {bad}"
            assert any("float32" in str(v) for v in typemap.values())


# -- AdamW, RMSprop, Lion (issue 16): NumPy transcriptions of torch.optim.AdamW / RMSprop and of
# the Lion paper's update, in float64; the float32 kernels within 1e-5 relative

def torch_adamw(p, gs, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    p = p.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        g = g.astype(np.float64)
        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - (lr / (1 - beta1 ** t)) * m / (np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps)
    return p


def torch_rmsprop(p, gs, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    p = p.astype(np.float64)
    sq, buf = np.zeros_like(p), np.zeros_like(p)
    for g in gs:
        g = g.astype(np.float64) + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


def lion_reference(p, gs, lr, beta1=0.9, beta2=0.99, weight_decay=0.0):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    for g in gs:
        g = g.astype(np.float64)
        p = p * (1 - lr * weight_decay) - lr * np.sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g
    return p


NEW_CASES = [
    ("adamw", dict(lr=1e-2), torch_adamw),
    ("adamw", dict(lr=1e-2, weight_decay=0.1, beta1=0.3), torch_adamw),
    ("rmsprop", dict(lr=1e-2), torch_rmsprop),
    ("rmsprop", dict(lr=1e-2, alpha=0.9, momentum=0.8, weight_decay=1e-2), torch_rmsprop),
    ("lion", dict(lr=1e-3), lion_reference),
    ("lion", dict(lr=1e-3, beta1=0.8, beta2=0.95, weight_decay=0.1), lion_reference),
]


@pytest.mark.parametrize("kind, hp, reference", NEW_CASES, ids=lambda c: c if isinstance(c, str) else "")
def test_new_optimizers_match_their_reference(kind, hp, reference):
    fp = make_params()
    p0 = fp.data.copy()
    gs = grads(fp.size, 5)
    got = run(make_optimizer(kind, fp, **hp), gs)
    want = reference(p0, gs, **hp)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["adamw", "rmsprop", "lion"])
def test_new_optimizers_frozen_and_resume(kind):
    hp = {"rmsprop": dict(lr=0.01, momentum=0.9, weight_decay=0.1)}.get(kind, dict(lr=0.01, weight_decay=0.1))
    fp = make_params()
    fp.set_lr_mult("c1.weight", 0.0)
    before = fp.tensors()
    gs = grads(fp.size, 6)
    opt = make_optimizer(kind, fp, **hp)
    run(opt, gs)
    assert fp.tensors()["c1.weight"].tobytes() == before["c1.weight"].tobytes()
    b = make_params()
    b.set_lr_mult("c1.weight", 0.0)
    opt_b = make_optimizer(kind, b, **hp)
    run(opt_b, gs[:3])
    c = FlatParams(SHAPES)
    c.load(b.tensors())
    c.set_lr_mult("c1.weight", 0.0)
    opt_c = make_optimizer(kind, c, **hp)
    opt_c.load_state_dict(opt_b.state_dict())
    run(opt_c, gs[3:])
    np.testing.assert_array_equal(c.data, fp.data)


def test_adam_coefficients_are_the_bias_correction():
    """One `coefficients(lr, t)` per optimizer, read by both backends' kernels."""
    fp = make_params()
    opt = Adam(fp, lr=0.01, beta1=0.9, beta2=0.999)
    step_size, *_, bc2_sqrt = opt.coefficients(0.01, 3)[:5]
    assert step_size == np.float32(0.01 / (1 - 0.9 ** 3)) and bc2_sqrt == np.float32(math.sqrt(1 - 0.999 ** 3))
    assert make_optimizer("adamw", fp, lr=0.01, weight_decay=0.1).coefficients(0.01, 1)[-1] == np.float32(0.001)
