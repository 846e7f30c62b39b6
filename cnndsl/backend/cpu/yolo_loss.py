"""Launcher of the `yolo` detection loss (cnndsl/ops/training/yolo_loss.py)."""
from __future__ import annotations

import numpy as np

from cnndsl.backend.cpu.launch import launches
from cnndsl.backend.cpu.losses import _finish
from cnndsl.kernels.cpu import yolo_loss as Y


@launches("yolo")
def yolo(rc, node, ins, out):
    a = node.attrs
    value = Y.yolo_loss(ins[0], ins[1], int(a.get("boxes", 1)), np.float32(a.get("noobj", 0.5)),
                        np.float32(a.get("coord", 5.0)), out)
    _finish(rc, node, value, out)
