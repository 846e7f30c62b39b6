"""Launchers for the fused losses: the output is dL/d(head) times the loss weight; the
loss value goes to rc.losses."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import launches
from cnndsl.kernels.cpu import loss as L


def _finish(rc, node, value: float, out) -> None:
    weight = node.attrs.get("weight", 1.0)
    if weight != 1.0:
        out *= np.float32(weight)
    rc.losses[node.name] = weight * float(value)


@launches("cross_entropy")
def cross_entropy(rc, node, ins, out):
    _finish(rc, node, L.softmax_cross_entropy(ins[0], ins[1], out), out)


@launches("pixel_cross_entropy")
def pixel_cross_entropy(rc, node, ins, out):
    _finish(rc, node, L.pixel_cross_entropy(ins[0], ins[1], out), out)


@launches("mse")
def mse(rc, node, ins, out):
    _finish(rc, node, L.mse(ins[0], ins[1], out), out)


@launches("smooth_l1")
def smooth_l1(rc, node, ins, out):
    _finish(rc, node, L.smooth_l1(ins[0], ins[1], np.float32(1.0), out), out)
