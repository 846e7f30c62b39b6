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
