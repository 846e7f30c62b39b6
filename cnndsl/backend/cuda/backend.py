"""The CUDA backend object: device arrays through numba's (or numba-cuda-mlir's) `cuda` module.

Parameters, gradients, optimizer state, activations and workspaces are device arrays for
the whole run. Per run only the inputs go in (`copy_in`), and the loss values come out, in
one small copy after the last launch (`finish_run`); head outputs are copied to the host
only when asked for (`Executable.output`).
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.backend.base import Backend
from cnndsl.kernels.cuda.shim import cuda

LOSSES = " losses"  # RunContext.cache keys that are no node name
STEPPED = " stepped"


class CudaBackend(Backend):
    name = "cuda"
    host = False

    def __init__(self, simulated: bool = False):
        self.simulated = simulated

    def zeros(self, shape, dtype=np.float32):
        return cuda.to_device(np.zeros(shape, dtype))

    def to_device(self, host):
        return cuda.to_device(np.ascontiguousarray(host))

    def to_host(self, arr):
        return arr.copy_to_host()

    def copy_in(self, dst, src):
        src = np.ascontiguousarray(src, dtype=dst.dtype)
        dst.copy_to_device(src.reshape(dst.shape))

    def copy_out(self, dst, src):
        src.copy_to_host(dst)

    def synchronize(self) -> None:
        cuda.synchronize()

    def start_run(self, rc) -> None:
        rc.store.on_device()  # uploads parameters only if the host copy changed
        rc.cache.pop(STEPPED, None)

    def finish_run(self, rc) -> None:
        entry = rc.cache.get(LOSSES)
        if entry is not None:
            values, names, _ = entry
            host = values.copy_to_host()
            for i, name in enumerate(names):
                rc.losses[name] = float(host[i])
        if rc.training:
            rc.store.device_changed()
        # the device step refused a non-finite loss: the host step count must not advance either
        if rc.cache.pop(STEPPED, False) and not all(math.isfinite(v) for v in rc.losses.values()):
            rc.store.optimizer_state.step -= 1


def loss_values(rc):
    """(device array, loss node names, index of each name): where loss launchers write their
    value, read back by finish_run and checked by the optimizer step on the device."""
    entry = rc.cache.get(LOSSES)
    if entry is None:
        from cnndsl.ops.registry import get_op

        names = sorted(n.name for n in rc.graph.nodes() if get_op(n.op).category == "loss")
        arr = rc.backend.zeros(max(1, len(names)), np.float32)
        entry = rc.cache[LOSSES] = (arr, names, {n: i for i, n in enumerate(names)})
    return entry
