"""Launchers for conv and conv_transpose, forward and backward.

Three algorithms serve a conv (groups = 1): Winograd F(2x2, 3x3) (cnndsl/kernels/cpu/winograd.py)
for the forward and input gradient of the 3x3 stride-1 convs where it pays (winograd.plan's
measured rule); the register-blocked direct convolution (cnndsl/kernels/cpu/direct.py) for the
other forwards, every weight gradient and the other input gradients (of a strided conv by phases,
from the batch where they pay); im2col + BLAS (cnndsl/kernels/cpu/conv.py) for the rest (plain 1x1
convs, small strided input gradients) and for grouped convs. The choice depends on the layer's
shapes only, the same for every launcher of a layer (`algorithms` lists it for --print-ir);
CNNDSL_CPU_CONV=direct leaves Winograd out, =im2col forces the old path, =winograd takes Winograd
wherever it applies (A/B measurements and the equivalence tests).

While training, a conv's forward keeps its unfolded input (im2col) for the weight gradient,
which would otherwise unfold the same input again; `kept_col` decides when (im2col path,
within KEEP_COL_BUDGET_BYTES per layer) and records the decision for the backward launcher.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

import numba

from cnndsl.backend.cpu.launch import grads_of, launches, params_of
from cnndsl.kernels.cpu import conv as K
from cnndsl.kernels.cpu import direct as DR
from cnndsl.kernels.cpu import winograd as WG
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE

_NO_BIAS = np.zeros(1, np.float32)
# Largest unfolded input a layer keeps between its forward and backward launches.
KEEP_COL_BUDGET_BYTES = 64 << 20


class DirectForward(NamedTuple):
    """A layer's direct forward, worked out at its first launch and kept for the executable's life
    (rc.cache): at batch 1, redoing this per launch cost LeNet-5 about 15 us of its 57."""

    launch: DR.Launch
    x_len: int  # scratch elements: the padded input, the weight blocks and bias
    w_len: int
    act: np.integer  # the epilogue's activation code and alpha, typed as the kernel takes them
    alpha: np.float32


class WinogradForward(NamedTuple):
    """A layer's Winograd forward (winograd.py), kept as DirectForward is."""

    plan: WG.Plan
    u_len: int  # scratch elements: the transformed weights
    pt: int
    pl: int
    act: np.integer
    alpha: np.float32


def direct_plan(rc, node, x, weight, y_shape, act=KERNEL_CODE["none"],
                alpha=0.0) -> DirectForward | WinogradForward | None:
    """The forward of this conv layer from x to a y_shape output (the conv's own map, before any
    pooling) by Winograd or the direct kernel, or None for im2col; decided once per executable
    and node geometry (CNNDSL_CPU_CONV is read then). act, alpha: the fused activation."""
    key = "direct:" + node.name
    geometry = node.geometry
    kept = rc.cache.get(key)
    if kept is not None and kept[0] is geometry:
        return kept[1]
    st = None
    if DR.allowed():
        sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
        n, c, h, w = x.shape
        f, _, kh, kw = weight.shape
        oh, ow = y_shape[2], y_shape[3]
        wq = WG.plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, g, oh, ow, WG.forced(), n) if WG.allowed() else None
        p = DR.plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, g, oh, ow)
        if wq is not None:
            st = WinogradForward(wq, WG.scratch_len(f, c), pt, pl, DR.kernel_code(act), np.float32(alpha))
        elif p is not None:
            st = DirectForward(DR.launch(n, c, h, w, f, kh, kw, oh, ow, sh, sw, pt, pl, dh, dw, p),
                               *DR.scratch_len(n, c, f, kh, kw, p), DR.kernel_code(act), np.float32(alpha))
    rc.cache[key] = (geometry, st)
    return st


def direct_forward(rc, st: DirectForward | WinogradForward, x, weight, bias, has_bias, res, has_res, y) -> None:
    if isinstance(st, WinogradForward):
        WG.run(st.plan, x, weight, bias, has_bias, res, has_res, st.act, st.alpha, False, st.pt, st.pl,
               rc.scratch("winograd_u", st.u_len), y)
        return
    DR.run(st.launch, x, weight, bias, has_bias, res, has_res, st.act, st.alpha, False,
           rc.scratch("direct_x", st.x_len), rc.scratch("direct_w", st.w_len), y)


def input_grad(rc, dy, weight, geometry, x, dx) -> None:
    """dx = dL/dx of a conv from dy: Winograd or the direct kernel for stride 1, its phases for a
    large strided conv (direct.strided_data_plan), im2col otherwise."""
    sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
    n, c, h, w = dx.shape
    f, _, kh, kw = weight.shape
    args = (c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, g, dy.shape[2], dy.shape[3])
    wq = WG.input_grad_plan(*args, WG.forced(), n) if WG.allowed() else None
    if wq is not None:
        WG.run(wq, dy, weight, _NO_BIAS, False, dx, False, KERNEL_CODE["none"], np.float32(0.0), True, 2 - pt, 2 - pl,
               rc.scratch("winograd_u", WG.scratch_len(c, f)), dx)
        return
    q = DR.backward_data_plan(*args) if DR.allowed() else None
    if q is not None:
        xl, wl = DR.scratch_len(n, f, c, kh, kw, q)
        DR.backward_data(dy, weight, pt, pl, dh, dw, dx, rc.scratch("direct_x", xl), rc.scratch("direct_w", wl))
        return
    ph = DR.strided_data_plan(*args, n) if DR.allowed() else None
    if ph is not None:
        DR.backward_data_strided(dy, weight, ph, sh, sw, dx, rc.scratch("direct_x", ph.x_len),
                                 rc.scratch("direct_w", ph.w_len), rc.scratch("direct_phases", ph.buf_len))
        return
    nb, col, tmp = _conv_ws(rc, x, dy, weight, g)
    K.conv2d_backward_data(dy, weight, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, dx)


def params_grad(rc, fwd, x, dy, geometry, dweight, dbias, has_bias) -> None:
    """dweight (and dbias) of a conv from dy: the direct kernel where the forward's plan exists,
    im2col otherwise (reusing the forward's kept unfolded input when it kept one)."""
    sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
    n, c, h, w = x.shape
    f, _, kh, kw = dweight.shape
    oh, ow = dy.shape[2], dy.shape[3]
    q = DR.wgrad_plan(c, f, h, w, kh, kw, sh, sw, pt, pl, dh, dw, g, oh, ow) if DR.allowed() else None
    if q is not None:
        threads = numba.get_num_threads()
        xl, dl, pl_ = DR.wgrad_scratch_len(n, c, f, kh, kw, oh, ow, q, threads)
        DR.backward_weight(x, dy, pt, pl, sh, sw, dh, dw, dweight, rc.scratch("direct_x", xl),
                           rc.scratch("direct_dy", dl), rc.scratch("direct_w", pl_), threads)
        if has_bias:
            K.bias_grad(dy, dbias)
        return
    nb, col, tmp = _conv_ws(rc, x, dy, dweight, g)
    ready = col_was_kept(rc, fwd)
    K.conv2d_backward_weight(x, dy, has_bias, sh, sw, pt, pl, dh, dw, g, nb, kept_col_of(rc, fwd) if ready else col,
                             tmp, dweight, dbias, ready)


def _conv_ws(rc, x, y, weight, groups):
    return conv_workspace(rc, x, weight, groups, y.shape[2], y.shape[3])


def conv_workspace(rc, x, weight, groups, oh, ow):
    """(nb, col, tmp) of a conv from x to an (oh, ow) map: chunking and the shared scratch buffers."""
    n, c = x.shape[:2]
    f, _, kh, kw = weight.shape
    nb, col_len, tmp_len = K.conv2d_workspace(n, c, f, kh, kw, groups, oh, ow)
    return nb, rc.scratch("col", col_len), rc.scratch("tmp", tmp_len)


def kept_col(rc, node, x, y, weight, nb, sh, sw, pt, pl):
    """The per-layer buffer the forward unfolds the whole batch into, for the weight gradient to
    reuse (training only; not for the direct path or a plain 1x1 conv, which unfold nothing);
    None otherwise. Either way the decision is recorded for `col_was_kept`."""
    n, c, h, w = x.shape
    _, _, kh, kw = weight.shape
    oh, ow = y.shape[2], y.shape[3]
    plain_1x1 = kh == kw == 1 and sh == sw == 1 and pt == pl == 0 and (oh, ow) == (h, w)
    length = K.saved_col_len(n, c, kh, kw, oh, ow)
    keep = rc.training and nb > 0 and not plain_1x1 and 4 * length <= KEEP_COL_BUDGET_BYTES
    rc.cache["kept_col:" + node.name] = keep
    return rc.ws(node.name, "kept_col", (length,)) if keep else None


def col_was_kept(rc, fwd) -> bool:
    return rc.cache.get("kept_col:" + fwd.name, False)


def kept_col_of(rc, fwd) -> np.ndarray:
    return rc.workspace[(fwd.name, "kept_col")]


def _convt_ws(rc, x, weight, groups):
    n, c, h, w = x.shape
    _, fg, kh, kw = weight.shape
    nb, col_len, tmp_len = K.conv_transpose2d_workspace(n, c, fg * groups, kh, kw, groups, h, w)
    return nb, rc.scratch("col", col_len), rc.scratch("tmp", tmp_len)


@launches("conv")
def conv(rc, node, ins, out):
    p = params_of(rc, node.name)
    geometry = node.geometry
    sh, sw, pt, pl, dh, dw, g = geometry.cpu_args
    bias = p.get("bias", _NO_BIAS)
    st = direct_plan(rc, node, ins[0], p["weight"], out.shape)
    if st is not None:
        rc.cache["kept_col:" + node.name] = False
        direct_forward(rc, st, ins[0], p["weight"], bias, "bias" in p, out, False, out)
        return
    nb, col, tmp = _conv_ws(rc, ins[0], out, p["weight"], g)
    keep = kept_col(rc, node, ins[0], out, p["weight"], nb, sh, sw, pt, pl)
    K.conv2d_forward(ins[0], p["weight"], bias, "bias" in p, sh, sw, pt, pl, dh, dw, g, nb,
                     col if keep is None else keep, tmp, out, keep is not None)


@launches("conv_grad_input")
def conv_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    input_grad(rc, dy, params_of(rc, fwd.name)["weight"], fwd.geometry, x, out)


@launches("conv_grad_params")
def conv_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    params_grad(rc, fwd, x, dy, fwd.geometry, grads["weight"], grads.get("bias", _NO_BIAS), "bias" in grads)


@launches("conv_transpose")
def conv_transpose(rc, node, ins, out):
    p = params_of(rc, node.name)
    sh, sw, pt, pl, dh, dw, g = node.geometry.cpu_args
    nb, col, tmp = _convt_ws(rc, ins[0], p["weight"], g)
    bias = p.get("bias", _NO_BIAS)
    K.conv_transpose2d_forward(ins[0], p["weight"], bias, "bias" in p, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_transpose_grad_input")
def conv_transpose_grad_input(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    w = params_of(rc, fwd.name)["weight"]
    sh, sw, pt, pl, dh, dw, g = fwd.geometry.cpu_args
    nb, col, tmp = _convt_ws(rc, x, w, g)
    K.conv_transpose2d_backward_data(dy, w, sh, sw, pt, pl, dh, dw, g, nb, col, tmp, out)


@launches("conv_transpose_grad_params")
def conv_transpose_grad_params(rc, node, ins, out):
    fwd = rc.forward_node(node)
    dy, x = ins
    grads = grads_of(rc, fwd.name)
    sh, sw, pt, pl, dh, dw, g = fwd.geometry.cpu_args
    nb, col, tmp = _convt_ws(rc, x, grads["weight"], g)
    K.conv_transpose2d_backward_weight(x, dy, "bias" in grads, sh, sw, pt, pl, dh, dw, g, nb, col, tmp,
                                       grads["weight"], grads.get("bias", _NO_BIAS))


def _with_winograd(wp, oh: int, ow: int, other: str) -> str:
    """A pass's algorithm in words where Winograd plan wp (or None) may serve it: from which batch,
    and what runs below it."""
    if wp is None:
        return other
    b = 1 if WG.forced() else WG.from_batch(wp, oh, ow)
    return WG.describe(wp) if b == 1 else f"{WG.describe(wp)} from batch {b}, below it {other}"


def algorithms(graph) -> list[str]:
    """One line per conv of `graph` (conv, fused_conv, fused_conv_pool): the algorithm each of its
    CPU launches runs (for `cnndsl compile --print-ir`). The choice depends on the per-sample shapes
    only, so it is the same in every executable of the graph, except for a strided conv's input
    gradient, by phases from the batch where they pay (direct.PHASES_MIN_WORK), and Winograd on a
    small map, from the batch where it pays (winograd.MIN_TILES): said so."""
    lines = []
    for node in graph.nodes():
        if node.op not in ("conv", "fused_conv", "fused_conv_pool"):
            continue
        geo = node.geometry  # of the conv: for fused_conv_pool, (OH, OW) is the map before pooling
        c, f, g = geo.C, geo.F, geo.G
        args = (geo.C, geo.F, geo.H, geo.W, geo.KH, geo.KW, *geo.cpu_args, geo.OH, geo.OW)
        p, q, r = (DR.plan(*args), DR.backward_data_plan(*args), DR.wgrad_plan(*args)) if DR.allowed() \
            else (None, None, None)
        wp, wq = (WG.plan(*args, WG.forced()), WG.input_grad_plan(*args, WG.forced())) if WG.allowed() \
            else (None, None)
        fwd = DR.describe(p, f) if p else "im2col + GEMM" if g == 1 or c // g > 1 else "depthwise loops"
        grad_in = DR.describe(q, c) if q else "im2col + GEMM" if g == 1 or c // g > 1 else "depthwise loops"
        fwd = _with_winograd(wp, geo.OH, geo.OW, fwd)
        grad_in = _with_winograd(wq, geo.H, geo.W, grad_in)
        if q is None and DR.allowed():
            b = DR.phases_from_batch(*args)
            if b is not None:
                ph = DR.describe_phases(DR.strided_data_plan(*args, b))
                grad_in = ph if b == 1 else f"{ph} from batch {b}, below it {grad_in}"
        grad_w = DR.describe_wgrad(r) if r else "im2col + dot products" \
            if g == 1 or c // g > 1 else "depthwise loops"
        lines.append(f"{node.name} ({node.op}): forward {fwd}; input gradient {grad_in}; weight gradient {grad_w}")
    return lines
