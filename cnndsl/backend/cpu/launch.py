"""`@launches("op", ...)`: register a CPU launcher in the op registry."""
from __future__ import annotations

from cnndsl.backend.base import register_launcher

BACKEND = "cpu"


def launches(*ops: str):
    def register(fn):
        register_launcher(BACKEND, ops, fn)
        return fn
    return register


def params_of(rc, layer: str) -> dict:
    """The layer's learnable tensors by short name ("weight", "bias", ...)."""
    return rc.store.by_layer.get(layer, {})


def grads_of(rc, layer: str) -> dict:
    return rc.store.grads_by_layer.get(layer, {})


def buffers_of(rc, layer: str) -> dict:
    """Non-learnable state (batchnorm running statistics) by short name."""
    prefix = layer + "."
    return {k[len(prefix):]: v for k, v in rc.store.buffers.items() if k.startswith(prefix)}


def flat(a):
    """A 1-D view of a C-contiguous buffer, for the element-wise kernels (activation_forward and
    _backward), so that they compile one signature whatever the layer's rank: activation_backward
    compiled for 2-D and again for 4-D arrays, 1.2 s more for LeNet-5. Anything else is passed as
    it is (the kernels refuse it)."""
    return a.reshape(a.size) if a.flags.c_contiguous else a
