"""The epilogue of a conv's GEMM chunk, shared by conv, fused_conv and fused_conv_pool: bias,
residual add and activation applied to each output plane while it is in cache (`chunk_epilogue`),
or the same followed by a 2x2 max pool (`chunk_pool_epilogue`). fused_batchnorm (batchnorm.py)
uses the same activation loops (`activate_affine`) and their gradient (`grad_from_output`), and
the standalone activation kernels (activation.py) too.

`act` is an activation's code (cnndsl/kernels/activations.py: 0 none, 1 relu, 2 leaky_relu, ...);
the branches on it are not written here but unrolled by Numba over the table of every
activation's scalar code (`literal_unroll`), so a new activation needs no edit here; only `none`
and `relu` also have loops of their own that callers inline (activate_affine,
activation_grad_loop), and kernels given their codes as np.uint8 (KERNEL_CODE) leave the table out. `res` is the
residual (shaped like the conv's output; any float32 4-D array when has_res is False).
"""
from __future__ import annotations

import warnings

import numpy as np
from numba import literal_unroll, types
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.extending import overload

from cnndsl.kernels.activations import ACTIVATIONS, CODE, jit_helpers
from cnndsl.kernels.cpu.common import FASTMATH, I0, PAR_MIN, kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

jit_helpers()

# Typing the global table of scalar functions goes through Numba's first-class function types,
# which warn as experimental; each entry is still a distinct dispatcher type, so every call is
# direct and inlined (measured: relu through the table runs as fast as a hand-written loop).
warnings.filterwarnings("ignore", category=NumbaExperimentalFeatureWarning,
                        message=".*[Ff]irst-class function type")

NONE, RELU, LEAKY_RELU, SIGMOID, TANH = (CODE[n] for n in ("none", "relu", "leaky_relu", "sigmoid", "tanh"))

# The written-out activations: activate_affine and activation_grad_loop have loops of their own for
# these and reach every other activation through the table's functions (_activate_affine_table,
# _activation_grad_table: 15 loops each, the scalar code of 14 activations, about 4 CPU s to compile
# for one signature on the development machine). The TYPE of a kernel's `act` argument says which
# codes it may be given, so that a network of written-out activations only (every example) never
# compiles the table: an np.uint8 code is a written-out activation and the kernel is compiled
# without the table (another code raises ValueError), an np.int64 code is any activation and the
# table is compiled in. Launchers pass KERNEL_CODE[name]; a plain Python int is an int64.
WRITTEN_OUT = (NONE, RELU)
KERNEL_CODE = {name: (np.uint8 if code in WRITTEN_OUT else np.int64)(code) for name, code in CODE.items()}
NO_ACTIVATION = KERNEL_CODE["none"]  # what the plain layers' kernels pass for `act`
_OVERLOAD_OPTIONS = dict(fastmath=set(FASTMATH), error_model="numpy")

# (code, scalar forward, scalar gradient) of every activation but "none", compiled once each
_TABLE = tuple((np.int64(a.code), kernel(a.forward), kernel(a.grad)) for a in ACTIVATIONS if a.code != NONE)


@kernel
def activate_scalar(v, act, alpha):
    """act(v) of one value."""
    r = v
    for e in literal_unroll(_TABLE):
        if act == e[0]:
            r = e[1](v, alpha)
    return r


@kernel
def grad_scalar(g, v, act, alpha):
    """dL/dz = act'(z) * g of one value; v is what the activation's gradient reads: its output y
    (grad_from "output") or its input z ("input")."""
    r = g
    for e in literal_unroll(_TABLE):
        if act == e[0]:
            r = e[2](g, v, alpha)
    return r


@kernel
def grad_from_output(g, y, act, alpha):
    """dL/dz of one element from the activation's output y: the fused layers' backward, which keeps
    only y (the fusion passes never fuse, in training, an activation whose gradient needs z)."""
    return grad_scalar(g, y, act, alpha)


@kernel
def _activate_affine_table(src, dst, scale, shift, act, alpha):
    """activate_affine for every activation of the table: one loop per activation with the branch
    outside it (unrolled over the table), so that each loop vectorizes where its code allows.
    Compiled once per signature and called, not inlined (see activate_affine)."""
    n = dst.size
    done = False
    for e in literal_unroll(_TABLE):
        if act == e[0]:
            f = e[1]
            for p in range(n):
                dst[p] = f(src[p] * scale + shift, alpha)
            done = True
    if not done:
        for p in range(n):
            dst[p] = src[p] * scale + shift


_RELU_FORWARD = _TABLE[[int(e[0]) for e in _TABLE].index(RELU)][1]
_RELU_GRAD = _TABLE[[int(e[0]) for e in _TABLE].index(RELU)][2]


def _table_only(act):
    """Whether a kernel compiled for this type of `act` can be given a code of the table (see
    KERNEL_CODE): np.uint8 codes are written-out activations only."""
    return act != types.uint8


def _affine_through_table(src, dst, scale, shift, act, alpha):
    """_activate_affine_table(...) where `act` may be a table code (see KERNEL_CODE)."""


@overload(_affine_through_table, jit_options=_OVERLOAD_OPTIONS)
def _affine_through_table_impl(src, dst, scale, shift, act, alpha):
    if _table_only(act):
        def through_table(src, dst, scale, shift, act, alpha):
            _activate_affine_table(src, dst, scale, shift, act, alpha)
        return through_table

    def written_out_only(src, dst, scale, shift, act, alpha):
        raise ValueError("activation code given as np.uint8 is not a written-out activation (none, relu): "
                         "pass it as np.int64 (epilogue.KERNEL_CODE)")
    return written_out_only


@kernel(inline=True)  # batchnorm and the direct convolution call it per row
def activate_affine(src, dst, scale, shift, act, alpha):
    """dst[p] = act(src[p] * scale + shift). `none` and `relu` (every example network's activation) are loops
    inlined into the caller; every other activation is a call of _activate_affine_table, compiled in only for an
    np.int64 code (KERNEL_CODE). Inlining the whole table copied its 15 loops into each of the callers (the
    direct convolution's row kernels, batchnorm, the plane epilogue) and made it the costliest thing they
    compiled; an activation that calls exp or erf per element does not notice one call per row. fused_batchnorm
    (batchnorm.py) runs it a row at a time from x, not in place over its affine output: measured there, in place
    was several times slower."""
    n = dst.size
    if act == NONE:
        for p in range(n):
            dst[p] = src[p] * scale + shift
    elif act == RELU:
        for p in range(n):
            dst[p] = _RELU_FORWARD(src[p] * scale + shift, alpha)
    else:
        _affine_through_table(src, dst, scale, shift, act, alpha)


@kernel
def activation_grad_loop(v, g, dx, act, alpha):
    """dx[p] = act'(.) * g[p] from v (the activation's y or z, as it needs): the written-out
    activations' loops here, every other through _activation_grad_table (see KERNEL_CODE)."""
    n = dx.size
    if act == NONE:
        for p in range(n):
            dx[p] = g[p]
    elif act == RELU:
        for p in range(n):
            dx[p] = _RELU_GRAD(g[p], v[p], alpha)
    else:
        _grad_through_table(v, g, dx, act, alpha)


def _grad_through_table(v, g, dx, act, alpha):
    """_activation_grad_table(...) where `act` may be a table code (see KERNEL_CODE)."""


@overload(_grad_through_table, jit_options=_OVERLOAD_OPTIONS)
def _grad_through_table_impl(v, g, dx, act, alpha):
    if _table_only(act):
        def through_table(v, g, dx, act, alpha):
            _activation_grad_table(v, g, dx, act, alpha)
        return through_table

    def written_out_only(v, g, dx, act, alpha):
        raise ValueError("activation code given as np.uint8 is not a written-out activation (none, relu): "
                         "pass it as np.int64 (epilogue.KERNEL_CODE)")
    return written_out_only


@kernel
def _activation_grad_table(v, g, dx, act, alpha):
    """activation_grad_loop for every activation of the table: one loop per code, the branch
    outside it. Compiled once per signature and called (see activate_affine)."""
    n = dx.size
    done = False
    for e in literal_unroll(_TABLE):
        if act == e[0]:
            f = e[2]
            for p in range(n):
                dx[p] = f(g[p], v[p], alpha)
            done = True
    if not done:
        for p in range(n):
            dx[p] = g[p]


@kernel
def _activate_plane(src, dst, bias_value, act, alpha):
    """dst[p] = act(src[p] + bias_value) (the multiply by one folds away once inlined)."""
    activate_affine(src, dst, np.float32(1.0), bias_value, act, alpha)


@kernel
def epilogue(src, dst, bias_value, res, has_res, act, alpha):
    """dst = act(src + bias_value (+ res)) over one output plane (1-D views; dst may be src). The
    plane is a few KiB, so the residual's own loop reads it back from L1."""
    if has_res:
        for p in range(dst.size):
            dst[p] = src[p] + res[p]
        _activate_plane(dst, dst, bias_value, act, alpha)
    else:
        _activate_plane(src, dst, bias_value, act, alpha)


@kernel
def _plane_item(t2, o, y, n, f, bias, has_bias, res, has_res, act, alpha):
    P = y.shape[2] * y.shape[3]
    bv = bias[f] if has_bias else np.float32(0.0)
    r = res[n, f].reshape(P) if has_res else y[n, f].reshape(P)
    epilogue(t2[o:o + P], y[n, f].reshape(P), bv, r, has_res, act, alpha)


@kernel
def _epilogue_planes(t, per, t2, n0, nbb, f0, Fg, bias, has_bias, res, has_res, act, alpha, y):
    """Planes t*per .. (it = b*Fg + f) of chunk_epilogue (an item of parallel_items)."""
    P = y.shape[2] * y.shape[3]
    for it in range(t * per, min((t + 1) * per, nbb * Fg)):
        b = it // Fg
        f = it - b * Fg
        _plane_item(t2[f], b * P, y, n0 + b, f0 + f, bias, has_bias, res, has_res, act, alpha)


_epilogue_items = parallel_items(_epilogue_planes)


@kernel
def chunk_epilogue(t2, n0, nbb, f0, Fg, bias, has_bias, res, has_res, act, alpha, y):
    """y[n0+b, f0+f] = act(t2[f, b*P:(b+1)*P] + bias (+ res)): the GEMM result scattered to NCHW and
    finished in the same pass (t2 may be a view of y itself when nbb == 1)."""
    P = y.shape[2] * y.shape[3]
    planes = nbb * Fg
    if planes * P >= PAR_MIN:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(planes)
        _epilogue_items(items, per, t2, n0, nbb, f0, Fg, bias, has_bias, res, has_res, act, alpha, y)
    else:
        _epilogue_planes(I0, planes, t2, n0, nbb, f0, Fg, bias, has_bias, res, has_res, act, alpha, y)


@kernel
def _pool_plane(src, W, bias_value, res, has_res, act, alpha, dst):
    """dst (PH x PW) = act(max over each 2x2 window of src (+ res) + bias), src and res being flat
    planes W wide. src is scratch (a GEMM chunk), so the vertical max of each row pair is written
    over its first row in one contiguous, vectorized loop; the horizontal max and the activation
    then read it back. Only non-decreasing activations come here (Activation.monotone, checked by
    fuse_conv_pool), so act(max) == max(act): one activation per window instead of four."""
    PH, PW = dst.shape
    for i in range(PH):
        top = src[2 * i * W:(2 * i + 1) * W]
        bottom = src[(2 * i + 1) * W:(2 * i + 2) * W]
        if has_res:
            rt = res[2 * i * W:(2 * i + 1) * W]
            rb = res[(2 * i + 1) * W:(2 * i + 2) * W]
            for j in range(W):
                top[j] = max(top[j] + rt[j], bottom[j] + rb[j])
        else:
            for j in range(W):
                top[j] = max(top[j], bottom[j])
        out = dst[i]
        for j in range(PW):
            out[j] = max(top[2 * j], top[2 * j + 1])
        _activate_plane(out, out, bias_value, act, alpha)


@kernel
def _pool_item(t2, b, f, P, n0, f0, OW, bias, has_bias, res, has_res, act, alpha, y):
    bv = bias[f0 + f] if has_bias else np.float32(0.0)
    r = res[n0 + b, f0 + f].reshape(P) if has_res else t2[f, :P]
    _pool_plane(t2[f, b * P:(b + 1) * P], OW, bv, r, has_res, act, alpha, y[n0 + b, f0 + f])


@kernel
def _pool_planes(t, per, t2, n0, nbb, f0, Fg, OW, bias, has_bias, res, has_res, act, alpha, y):
    """Planes t*per .. (it = b*Fg + f) of chunk_pool_epilogue (an item of parallel_items)."""
    P = t2.shape[1] // nbb
    for it in range(t * per, min((t + 1) * per, nbb * Fg)):
        b = it // Fg
        f = it - b * Fg
        _pool_item(t2, b, f, P, n0, f0, OW, bias, has_bias, res, has_res, act, alpha, y)


_pool_items = parallel_items(_pool_planes)


@kernel
def chunk_pool_epilogue(t2, n0, nbb, f0, Fg, OW, bias, has_bias, res, has_res, act, alpha, y):
    """y[n0+b, f0+f] = the pooled, activated plane t2[f, b*P:(b+1)*P] (P = the conv's OH*OW)."""
    P = t2.shape[1] // nbb
    planes = nbb * Fg
    if planes * P >= PAR_MIN:  # a chunk of planes per thread (parallel.py)
        items, per = chunks(planes)
        _pool_items(items, per, t2, n0, nbb, f0, Fg, OW, bias, has_bias, res, has_res, act, alpha, y)
    else:
        _pool_planes(I0, planes, t2, n0, nbb, f0, Fg, OW, bias, has_bias, res, has_res, act, alpha, y)
