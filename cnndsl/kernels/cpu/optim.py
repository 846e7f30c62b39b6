"""The optimizer steps over the flat parameter buffer (cnndsl/ops/training/optimizers.py declares each
optimizer and computes its scalar coefficients once per step, `coefficients(hyper, lr, t)`, for these
kernels and for their CUDA twins in cnndsl/kernels/cuda/optim.py; cnndsl/backend/cpu/step.py calls them).

Every kernel takes (p, g, <state arrays>, lr_mult, wd_mult, <coefficients>) over float32 arrays of
one length: lr_mult[i] == 0 skips element i entirely (frozen: its value and state stay bit-exact),
wd_mult[i] scales the weight decay. Plain float32 loops without fastmath: the update rules are
PyTorch's, evaluated as PyTorch evaluates them on the CPU (torch.optim.SGD, Adam, AdamW, RMSprop;
Lion as in its paper, Chen et al. 2023), with the scalar coefficients computed in double precision
and rounded to float32.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sgd_step(p, g, buf, lr_mult, wd_mult, lr, momentum, dampening_c, wd, nesterov, first):
    use_momentum = momentum != np.float32(0)
    for i in range(p.shape[0]):
        mult = lr_mult[i]
        if mult == np.float32(0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != np.float32(0):
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


@njit(cache=True)
def adam_step(p, g, m, v, lr_mult, wd_mult, step_size, beta2, one_minus_beta1,
              one_minus_beta2, bc2_sqrt, eps, wd, lerp_low, lr_decay):
    """Adam (wd: L2 added to the gradient) and AdamW (lr_decay = lr * weight_decay: the weights
    shrink by (1 - lr_decay) before the update, decoupled from the moments)."""
    for i in range(p.shape[0]):
        mult = lr_mult[i]
        if mult == np.float32(0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != np.float32(0):
            d = d + w * p[i]
        decay = lr_decay * mult * wd_mult[i]
        if decay != np.float32(0):
            p[i] = p[i] * (np.float32(1) - decay)
        if lerp_low:  # torch.lerp's two branches: weight (1 - beta1) < 0.5 or not
            mi = m[i] + one_minus_beta1 * (d - m[i])
        else:
            mi = d - (d - m[i]) * (np.float32(1) - one_minus_beta1)
        vi = beta2 * v[i] + one_minus_beta2 * d * d
        m[i] = mi
        v[i] = vi
        denom = np.sqrt(vi) / bc2_sqrt + eps
        p[i] = p[i] - (step_size * mult) * mi / denom  # addcdiv: (value * m) / denom


@njit(cache=True)
def rmsprop_step(p, g, sq, buf, lr_mult, wd_mult, lr, alpha, one_minus_alpha, eps, wd, momentum):
    """torch.optim.RMSprop (centered=False): sq = alpha*sq + (1-alpha)*g^2; with momentum
    buf = momentum*buf + g/(sqrt(sq)+eps) and p -= lr*buf, else p -= lr*g/(sqrt(sq)+eps)."""
    use_momentum = momentum != np.float32(0)
    for i in range(p.shape[0]):
        mult = lr_mult[i]
        if mult == np.float32(0):
            continue
        d = g[i]
        w = wd * wd_mult[i]
        if w != np.float32(0):
            d = d + w * p[i]
        s = alpha * sq[i] + one_minus_alpha * d * d
        sq[i] = s
        avg = np.sqrt(s) + eps
        if use_momentum:
            b = momentum * buf[i] + d / avg
            buf[i] = b
            p[i] = p[i] - (lr * mult) * b
        else:
            p[i] = p[i] - (lr * mult) * d / avg


@njit(cache=True)
def lion_step(p, g, m, lr_mult, wd_mult, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, wd):
    """Lion: p = p * (1 - lr*wd) - lr * sign(beta1*m + (1-beta1)*g); m = beta2*m + (1-beta2)*g."""
    zero = np.float32(0)
    one = np.float32(1)
    for i in range(p.shape[0]):
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
