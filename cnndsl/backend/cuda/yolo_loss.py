"""CUDA launcher of the `yolo` detection loss (cnndsl/ops/training/yolo_loss.py): the output
is dL/d(head) times the loss weight, the weighted loss value goes into the loss values array."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cuda.launch import flat, launch, launches, sequence
from cnndsl.backend.cuda.losses import _slot
from cnndsl.kernels.cuda import yolo_loss as Y
from cnndsl.kernels.cuda.common import RB, grid1d
from cnndsl.kernels.cuda.reduce import sum_to


@launches("yolo")
def yolo(rc, node, ins, out):
    values, idx, weight = _slot(rc, node)
    n, c = ins[0].shape[0], ins[0].shape[1]
    s = ins[0].size // (n * c)
    boxes = int(node.attrs.get("boxes", 1))
    items = n * boxes * s
    terms = rc.ws(node.name, "terms", (items,))
    return sequence([
        launch(Y.yolo_terms, grid1d(items), flat(ins[0]), flat(ins[1]), flat(out), terms, n, boxes, c // boxes, s,
               np.float32(node.attrs.get("noobj", 0.5)), np.float32(node.attrs.get("coord", 5.0)),
               np.float32(weight / n)),
        launch(sum_to, (1, RB), terms, items, np.float32(weight / n), values, idx)])
