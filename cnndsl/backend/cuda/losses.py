"""Launchers for the fused losses: the output is dL/d(head) times the loss weight; the
weighted loss value goes into the device array of loss values (cuda/backend.py), read back
into rc.losses once after the run."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.backend import loss_values
from cnndsl.backend.cuda.launch import flat, launch, launches, sequence, split3
from cnndsl.kernels.cuda import loss as L
from cnndsl.kernels.cuda.common import RB, grid1d
from cnndsl.kernels.cuda.reduce import sum_to


def _slot(rc, node):
    values, _, index = loss_values(rc)
    return values, index[node.name], float(node.attrs.get("weight", 1.0))


@launches("cross_entropy")
def cross_entropy(rc, node, ins, out):
    values, idx, weight = _slot(rc, node)
    n, k = ins[0].shape
    terms = rc.ws(node.name, "terms", (n,))
    return sequence([
        launch(L.cross_entropy_rows, grid1d(n), flat(ins[0]), flat(ins[1]), flat(out), terms, n, k,
               np.float32(weight / n)),
        launch(sum_to, (1, RB), terms, n, np.float32(weight / n), values, idx)])


@launches("pixel_cross_entropy")
def pixel_cross_entropy(rc, node, ins, out):
    values, idx, weight = _slot(rc, node)
    n, k, s = split3(ins[0].shape)
    terms, valid = rc.ws(node.name, "terms", (n * s,)), rc.ws(node.name, "valid", (n * s,))
    totals = rc.ws(node.name, "totals", (2,))
    one = np.float32(1.0)
    return sequence([
        launch(L.pixel_cross_entropy_terms, grid1d(n * s), flat(ins[0]), flat(ins[1]), flat(out), terms, valid,
               n, k, s),
        launch(sum_to, (1, RB), terms, n * s, one, totals, 0),
        launch(sum_to, (1, RB), valid, n * s, one, totals, 1),
        launch(L.pixel_cross_entropy_finish, grid1d(out.size), flat(out), totals, np.float32(weight), values, idx,
               out.size)])


@launches("mse")
def mse(rc, node, ins, out):
    values, idx, weight = _slot(rc, node)
    m = out.size
    terms = rc.ws(node.name, "terms", (m,))
    return sequence([
        launch(L.mse_terms, grid1d(m), flat(ins[0]), flat(ins[1]), flat(out), terms, np.float32(2.0 * weight / m), m),
        launch(sum_to, (1, RB), terms, m, np.float32(weight / m), values, idx)])


@launches("smooth_l1")
def smooth_l1(rc, node, ins, out):
    values, idx, weight = _slot(rc, node)
    m = out.size
    terms = rc.ws(node.name, "terms", (m,))
    return sequence([
        launch(L.smooth_l1_terms, grid1d(m), flat(ins[0]), flat(ins[1]), np.float32(1.0), flat(out), terms,
               np.float32(weight / m), m),
        launch(sum_to, (1, RB), terms, m, np.float32(weight / m), values, idx)])
