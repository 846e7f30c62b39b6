"""Launchers for flatten (a view), add, concat and upsample, with their gradients."""
from __future__ import annotations

from cnndsl.backend.cuda.launch import flat, launch, launches, nothing, sequence, split3
from cnndsl.kernels.cuda import elementwise as E
from cnndsl.kernels.cuda import tensor as T
from cnndsl.kernels.cuda.common import grid1d


@launches("flatten", "unflatten")
def reshape(rc, node, ins, out):
    """Nothing to do: the memory plan makes the output a view of the input's buffer."""
    return nothing


@launches("add")
def add(rc, node, ins, out):
    n = out.size
    steps = [launch(E.add2, grid1d(n), flat(ins[0]), flat(ins[1]), flat(out), n)]
    steps += [launch(E.add_accumulate, grid1d(n), flat(out), flat(x), n) for x in ins[2:]]
    return sequence(steps)


@launches("concat")
def concat(rc, node, ins, out):
    steps, offset, ct = [], 0, out.shape[1]
    for x in ins:
        n, c, s = split3(x.shape)
        steps.append(launch(T.concat_forward, grid1d(x.size), flat(x), flat(out), n, c, s, ct, offset))
        offset += c
    return sequence(steps)


@launches("concat_grad")
def concat_grad(rc, node, ins, out):
    n, c, s = split3(out.shape)
    return sequence([launch(T.concat_backward, grid1d(out.size), flat(ins[0]), flat(out), n, c, s,
                            ins[0].shape[1], node.attrs["offset"])])


def _bilinear_tables(rc, node, in_shape):
    """The per-axis source tables of a bilinear upsample node, on the device."""
    from cnndsl.backend.cpu.shape_ops import bilinear_tables

    return [rc.backend.to_device(t) for t in bilinear_tables(node, in_shape)]


@launches("upsample")
def upsample(rc, node, ins, out):
    n, c, h, w = ins[0].shape
    s = node.attrs["scale"]
    if node.attrs.get("mode", "nearest") == "bilinear":
        from cnndsl.kernels.cuda import layers as L

        tables = _bilinear_tables(rc, node, ins[0].shape)
        return sequence([launch(L.bilinear_forward, grid1d(out.size), flat(ins[0]), flat(out), *tables,
                                n * c, h, w, h * s, w * s)])
    return sequence([launch(T.upsample_forward, grid1d(out.size), flat(ins[0]), flat(out), n * c, h, w, s, s)])


@launches("upsample_grad")
def upsample_grad(rc, node, ins, out):
    n, c, h, w = out.shape
    fwd = rc.forward_node(node)
    s = fwd.attrs["scale"]
    if fwd.attrs.get("mode", "nearest") == "bilinear":
        from cnndsl.kernels.cuda import layers as L

        tables = _bilinear_tables(rc, fwd, out.shape)
        return sequence([launch(L.bilinear_backward, grid1d(n * c), flat(ins[0]), flat(out), *tables,
                                n * c, h, w, h * s, w * s)])
    return sequence([launch(T.upsample_backward, grid1d(out.size), flat(ins[0]), flat(out), n * c, h, w, s, s)])
