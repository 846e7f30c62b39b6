"""The optimizer step over the flat parameter buffers on the device.

The update rules of cnndsl/kernels/cpu/optim.py (PyTorch's SGD, Adam, AdamW, RMSprop; Lion),
element by element in float32, with the same per-element lr_mult (0 skips the element: frozen,
bit-exact) and wd_mult, and the same arguments after the arrays: the scalar coefficients of the
optimizer's `coefficients(hyper, lr, t)` (cnndsl/ops/training/optimizers.py), computed once for
both backends. `losses` holds this step's loss values (written on the device by the loss kernels):
when any is NaN or infinite the kernel changes nothing, as the CPU backend skips the step, without
a device-to-host round trip before the update.
"""
from __future__ import annotations

import math

from cnndsl.kernels.cuda.common import F32, boolean, cuda, device, float32, int64, kernel


@kernel(F32, F32, F32, F32, F32, float32, float32, float32, float32, boolean, boolean, F32, int64, int64)
def sgd_step(p, g, buf, lr_mult, wd_mult, lr, momentum, dampening_c, wd, nesterov, first, losses, nloss, n):
    for k in range(nloss):
        v = losses[k]
        if math.isnan(v) or math.isinf(v):
            return
    use_momentum = momentum != float32(0.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        mult = lr_mult[i]
        if mult == float32(0.0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != float32(0.0):
            d = d + w * p[i]
        if use_momentum:
            if first:
                b = d
            else:
                b = momentum * buf[i] + dampening_c * d
            buf[i] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        p[i] = p[i] - (lr * mult) * d


@device
def _finite(losses, nloss):
    for k in range(nloss):
        lv = losses[k]
        if math.isnan(lv) or math.isinf(lv):
            return False
    return True


@kernel(F32, F32, F32, F32, F32, F32, float32, float32, float32, float32, float32, float32, float32, boolean,
        float32, F32, int64, int64)
def adam_step(p, g, m, v, lr_mult, wd_mult, step_size, beta2, one_minus_beta1, one_minus_beta2, bc2_sqrt,
              eps, wd, lerp_low, lr_decay, losses, nloss, n):
    for k in range(nloss):
        lv = losses[k]
        if math.isnan(lv) or math.isinf(lv):
            return
    one = float32(1.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        mult = lr_mult[i]
        if mult == float32(0.0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != float32(0.0):
            d = d + w * p[i]
        decay = lr_decay * mult * wd_mult[i]  # AdamW: decoupled weight decay
        if decay != float32(0.0):
            p[i] = p[i] * (one - decay)
        if lerp_low:  # torch.lerp's two branches
            mi = m[i] + one_minus_beta1 * (d - m[i])
        else:
            mi = d - (d - m[i]) * (one - one_minus_beta1)
        vi = beta2 * v[i] + one_minus_beta2 * d * d
        m[i] = mi
        v[i] = vi
        denom = math.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] - (step_size * mult) * mi / denom


@kernel(F32, F32, F32, F32, F32, F32, float32, float32, float32, float32, float32, float32, F32, int64, int64)
def rmsprop_step(p, g, sq, buf, lr_mult, wd_mult, lr, alpha, one_minus_alpha, eps, wd, momentum, losses, nloss, n):
    if not _finite(losses, nloss):
        return
    use_momentum = momentum != float32(0.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        mult = lr_mult[i]
        if mult == float32(0.0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != float32(0.0):
            d = d + w * p[i]
        s = alpha * sq[i] + one_minus_alpha * d * d
        sq[i] = s
        avg = math.sqrt(s) + eps
        if use_momentum:
            b = momentum * buf[i] + d / avg
            buf[i] = b
            p[i] = p[i] - (lr * mult) * b
        else:
            p[i] = p[i] - (lr * mult) * d / avg


@kernel(F32, F32, F32, F32, F32, float32, float32, float32, float32, float32, float32, F32, int64, int64)
def lion_step(p, g, m, lr_mult, wd_mult, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, wd, losses, nloss, n):
    if not _finite(losses, nloss):
        return
    zero = float32(0.0)
    one = float32(1.0)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        mult = lr_mult[i]
        if mult == zero:
            continue
        d = g[i]
        c = beta1 * m[i] + one_minus_beta1 * d
        step = lr * mult
        w = wd * wd_mult[i]
        if w != zero:
            p[i] = p[i] * (one - step * w)
        if c > zero:
            p[i] = p[i] - step
        elif c < zero:
            p[i] = p[i] + step
        m[i] = beta2 * m[i] + one_minus_beta2 * d
