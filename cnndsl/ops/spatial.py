"""The sliding-window size rule shared by conv, pooling and friends.

Per spatial axis, with K_eff = D*(K-1) + 1:

    O = (W - K_eff + 2P) / S + 1

Strict by default: when S does not divide (W - K_eff + 2P) the layer is an
error, with the arithmetic shown and paddings/strides that would tile proposed.
`rounding=floor` (PyTorch, Keras) or `rounding=ceil` (Caffe pooling) opt in to
the lossy rules; floor then warns how many input rows/columns are never read.

`padding=same` means TensorFlow's rule: O = ceil(W / S), the total padding
max((O-1)*S + K_eff - W, 0) is split with the smaller half on the top/left and
the extra one on the bottom/right. At stride 1 and odd K that is P = (K-1)/2 on
every side. The resolved window (padding as (top, bottom, left, right), stride, dilation, the
sizes) is stored on the node as its `geometry` (cnndsl/kernels/geometry.py), which every
launcher of both backends reads.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

from cnndsl.kernels.geometry import ConvGeometry
from cnndsl.ops.registry import ShapeContext

AXES = ("height", "width")


@dataclass
class AxisResult:
    out: int
    pad_before: int
    pad_after: int


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def formula(w: int, k_eff: int, p: int, s: int) -> str:
    value = (w - k_eff + 2 * p) / s + 1
    return f"({w} - {k_eff} + 2*{p}) / {s} + 1 = {_fmt(value)}"


DIVISOR_TRIALS = 10**6  # trial divisions at most (0.1 s): beyond, a help hint may miss a divisor


def divisors(n: int, limit: int = DIVISOR_TRIALS) -> set[int]:
    """The divisors of n >= 1 found by trial division up to min(sqrt(n), limit), with 1 and n."""
    found = {1, n}
    for i in range(2, min(math.isqrt(n), limit) + 1):
        if n % i == 0:
            found.update((i, n // i))
    return found


def _tiling_fixes(w: int, k_eff: int, p: int, s: int, max_pad: int) -> list[str]:
    """The smallest other padding and the largest smaller stride that tile, in closed form: loops
    over every padding and every stride below s did not end for stride=999999999 or
    kernel=999999999 (the same answers on 109,305 random small cases)."""
    fixes = []
    # padding: 2*p2 = k_eff - w (mod s), p2 >= lo; p does not tile, so p2 != p
    r, lo = k_eff - w, max(0, -(-(k_eff - w) // 2))
    if s % 2 == 0 and r % 2:
        p2 = None  # 2*p2 is even, k_eff - w odd, s even: no padding tiles
    else:
        m = s // 2 if s % 2 == 0 else s
        x = (r // 2) % m if s % 2 == 0 else (r * ((s + 1) // 2)) % m
        p2 = lo + (x - lo) % m
    if p2 is not None and p2 <= max_pad:
        fixes.append(f"padding={p2} gives {formula(w, k_eff, p2, s).split(' = ')[0]} = {(w - k_eff + 2 * p2) // s + 1}")
    span = w - k_eff + 2 * p
    below = [d for d in divisors(span) if d < s] if span > 0 else []
    if below:
        s2 = max(below)
        fixes.append(f"stride={s2} gives {span // s2 + 1}")
    return fixes


def axis_output(
    ctx: ShapeContext,
    axis: int,
    w: int,
    kernel: int,
    stride: int,
    padding,
    dilation: int = 1,
    max_pad: int | None = None,
    what: str = "kernel",
) -> AxisResult:
    """Output size along one axis, or a diagnostic raised through ctx."""
    k_eff = dilation * (kernel - 1) + 1
    rounding = ctx.attrs.get("rounding") or ctx.rounding
    if padding == "same":
        out = -(-w // stride)
        total = max((out - 1) * stride + k_eff - w, 0)
        return AxisResult(out, total // 2, total - total // 2)
    p = 0 if padding == "valid" else padding[axis]
    limit = k_eff - 1 if max_pad is None else max_pad
    if p > limit:
        ctx.error(
            f"padding {p} is too large for the {_k_desc(kernel, dilation, k_eff, what)} of {ctx.describe()}",
            attr="padding",
            details=[f"padding may be at most {limit} here: a larger one makes windows that see only padding"],
            help=f"padding={limit}" if limit > 0 else "padding=0",
            code="padding-too-large",
        )
    span = w + 2 * p - k_eff
    if span < 0:
        ctx.error(
            f"the {_k_desc(kernel, dilation, k_eff, what)} of {ctx.describe()} is larger than its padded input "
            f"({w} + 2*{p} = {w + 2 * p} along the {AXES[axis]})",
            attr="kernel",
            details=[formula(w, k_eff, p, stride) + " is not a positive size"],
            help=_smaller_kernel_help(w, p, dilation, what),
            code="kernel-too-large",
        )
    if span % stride == 0:
        return AxisResult(span // stride + 1, p, p)
    if rounding == "floor":
        out = span // stride + 1
        dropped = span % stride  # the last positions of the padded input no window reaches
        pad_dropped = min(dropped, p)  # the bottom/right padding comes last
        if dropped - pad_dropped:  # only padding left out changes nothing: no warning then
            ctx.node.meta.setdefault("floor_unread", []).append(
                (axis, dropped - pad_dropped, pad_dropped, formula(w, k_eff, p, stride) + f", floored to {out}",
                 (out - 1) * stride + k_eff, w, p, -(-w // stride)))
        return AxisResult(out, p, p)
    if rounding == "ceil":
        out = -(-span // stride) + 1
        if (out - 1) * stride >= w + p:  # PyTorch/Caffe: no window may start in the right padding
            out -= 1
        extra = max((out - 1) * stride + k_eff - (w + 2 * p), 0)
        return AxisResult(out, p, p + extra)
    ctx.error(
        f"stride {stride} does not tile the {_hw(ctx)} input of {ctx.describe()}",
        attr="stride" if "stride" in ctx.node.attr_spans else None,
        details=[formula(w, k_eff, p, stride) + " is not a whole number"],
        help="; ".join([f"padding=same gives {-(-w // stride)}"] + _tiling_fixes(w, k_eff, p, stride, limit))
        + f"; or rounding=floor gives {span // stride + 1}{_unread(span % stride, p, axis)} (on this layer, or a line "
          "`rounding floor` in the network for every layer)",
        code="stride-does-not-tile",
    )
    raise AssertionError("unreachable")


def _unread(dropped: int, p: int, axis: int) -> str:
    """What floor rounding leaves unread, in words: input rows (padding rows do not count)."""
    rows = dropped - min(dropped, p)
    unit = "row" if axis == 0 else "column"
    return f", leaving {rows} input {unit}{'s' if rows > 1 else ''} unread" if rows else f", reading every input {unit}"


def _hw(ctx: ShapeContext) -> str:
    return "x".join(str(d) for d in ctx.inputs[0].shape[1:])


def _k_desc(kernel: int, dilation: int, k_eff: int, what: str) -> str:
    return f"{what} {kernel} (dilated to {k_eff})" if dilation > 1 else f"{what} {kernel}"


def _smaller_kernel_help(w: int, p: int, dilation: int, what: str) -> str:
    biggest = (w + 2 * p - 1) // dilation + 1
    return f"{what}={biggest} or smaller fits" if biggest >= 1 else "use a larger input"


def window_2d(ctx: ShapeContext, kernel, stride, padding, dilation=(1, 1), max_pad=None, what="kernel",
              filters: int | None = None, groups: int = 1):
    """Output (H, W) of a 2-D sliding window; stores the resolved window on the node as its
    `geometry` (`filters`: the output channels of a conv; a pool keeps its C)."""
    c, h, w = ctx.inputs[0].shape
    ctx.node.meta.pop("floor_unread", None)
    rh = axis_output(ctx, 0, h, kernel[0], stride[0], padding, dilation[0], _pick(max_pad, 0), what)
    rw = axis_output(ctx, 1, w, kernel[1], stride[1], padding, dilation[1], _pick(max_pad, 1), what)
    ctx.node.geometry = ConvGeometry(
        C=c, H=h, W=w, F=c if filters is None else filters, OH=rh.out, OW=rw.out, KH=kernel[0], KW=kernel[1],
        sh=stride[0], sw=stride[1], pt=rh.pad_before, pb=rh.pad_after, pl=rw.pad_before, pr=rw.pad_after,
        dh=dilation[0], dw=dilation[1], G=groups)
    _warn_unread(ctx, ctx.node.meta.pop("floor_unread", []))
    return rh.out, rw.out


def _warn_unread(ctx: ShapeContext, unread: list) -> None:
    """One warning for the input rows and columns floor rounding leaves unread (none when only
    padding is left out: that changes nothing)."""
    if not unread:
        return
    parts, details, same = [], [], []
    for axis, rows, pad_rows, arithmetic, covered, size, p, same_out in unread:
        unit = ("row" if axis == 0 else "column") + ("s" if rows > 1 else "")
        parts.append(f"the last {rows} input {unit}")
        pad_unit = ("row" if axis == 0 else "column") + ("s" if pad_rows > 1 else "")
        details.append(f"{AXES[axis]}: {arithmetic}; the windows cover {covered} of {size + 2 * p} padded positions "
                       f"({p} + {size} + {p}): {rows} input {unit}"
                       + (f" and {pad_rows} padding {pad_unit}" if pad_rows else "") + " left out")
        same.append(str(same_out))
    n = sum(r[1] for r in unread)
    ctx.warn(f"rounding=floor leaves {' and '.join(parts)} of {ctx.describe()} unread "
             f"({'they never reach' if n > 1 else 'it never reaches'} the output)",
             attr="stride", details=details,
             help=f"padding=same gives {'x'.join(same) if len(same) > 1 else same[0]} and reads every input value",
             code="rounding-drops")


def _pick(max_pad, axis):
    return None if max_pad is None else max_pad[axis]


def require_image(ctx: ShapeContext, port: int = 0) -> tuple[int, int, int]:
    """The (C, H, W) of an input, or an error saying a feature map was expected."""
    shape = ctx.inputs[port].shape
    if len(shape) != 3:
        ctx.error(
            f"{ctx.describe()} needs a feature map (CxHxW) but '{ctx.input_names[port]}' is a vector of {shape[0]}",
            details=["vectors come out of flatten, dense and global pooling"],
            help="move this layer before the flatten, or use dense on vectors",
            code="needs-image",
        )
    return shape
