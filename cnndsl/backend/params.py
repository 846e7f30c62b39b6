"""Parameter storage: every learnable tensor of a model in one flat float32 buffer.

One flat buffer (and a gradient buffer of the same layout, see
cnndsl/train/optim.py's FlatParams) makes the optimizer
one loop, a checkpoint one array, and (later) a distributed step one
all-reduce. Each tensor is a named view `<layer>.<param>` into it. Batchnorm
running statistics are non-learnable buffers kept beside it.
"""
from __future__ import annotations

import math

import numpy as np

from cnndsl.ir.graph import Graph
from cnndsl.train.optim import FlatParams

_GLOROT_AFTER = {"tanh", "sigmoid", "softmax"}


class ParamStore:
    """The learnable tensors of one model (a FlatParams: data, grad, lr_mult buffers) and
    its non-learnable buffers (batchnorm running statistics)."""

    def __init__(self, graph: Graph):
        shapes, self.owner = {}, {}
        for node in graph.nodes():
            for pname, shape in node.params.items():
                shapes[f"{node.name}.{pname}"] = tuple(shape)
                self.owner[f"{node.name}.{pname}"] = node.name
        self.params = FlatParams(shapes)
        self.buffers: dict[str, np.ndarray] = {}
        for node in graph.nodes():
            for bname, shape in node.meta.get("buffers", {}).items():
                self.buffers[f"{node.name}.{bname}"] = np.zeros(shape, np.float32)
        self._graph = graph
        # per layer: short name ("weight") -> view into the flat buffers; stable for the store's life
        self.by_layer: dict[str, dict[str, np.ndarray]] = {}
        self.grads_by_layer: dict[str, dict[str, np.ndarray]] = {}
        for name, layer in self.owner.items():
            short = name[len(layer) + 1:]
            self.by_layer.setdefault(layer, {})[short] = self.params.view(name)
            self.grads_by_layer.setdefault(layer, {})[short] = self.params.grad_view(name)

    @property
    def segments(self) -> dict[str, tuple[int, ...]]:
        return self.params.layout.shapes

    # -- views ----------------------------------------------------------------
    def view(self, name: str) -> np.ndarray:
        return self.params.view(name)

    def grad_view(self, name: str) -> np.ndarray:
        return self.params.grad_view(name)

    def set_lr_mult(self, layer: str, mult: float) -> None:
        for name, owner in self.owner.items():
            if owner == layer:
                self.params.set_lr_mult(name, mult)

    # -- initialization ---------------------------------------------------------
    def initialize(self, seed: int) -> None:
        """He-normal weights before ReLU-like activations, Glorot-uniform before tanh/sigmoid/softmax
        and on heads; zero biases, unit batchnorm scales. Deterministic in `seed`."""
        rng = np.random.default_rng(seed)
        for name, shape in self.segments.items():
            layer = self._graph.node(self.owner[name])
            kind = name.rsplit(".", 1)[1]
            self.view(name)[...] = _init(kind, shape, layer, self._graph, rng)
        for name, buf in self.buffers.items():
            buf[...] = 1.0 if name.endswith("var") else 0.0

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        out = {name: self.view(name).copy() for name in self.segments}
        out.update({name: b.copy() for name, b in self.buffers.items()})
        return out

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = dict(self.segments)
        shapes.update({name: b.shape for name, b in self.buffers.items()})
        return shapes

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy tensors in by name; the caller has matched names and shapes already."""
        for name, value in tensors.items():
            if name in self.segments:
                self.view(name)[...] = value
            elif name in self.buffers:
                self.buffers[name][...] = value


def _init(kind: str, shape: tuple[int, ...], layer, graph: Graph, rng) -> np.ndarray:
    if kind in ("bias", "beta"):
        return np.zeros(shape, np.float32)
    if kind == "gamma":
        return np.ones(shape, np.float32)
    fan_in, fan_out = _fans(shape)
    if _followed_by_squashing(layer, graph):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape).astype(np.float32)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    # PyTorch's convention for every layout, conv_transpose's (C_in, F/groups, KH, KW) included
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _followed_by_squashing(layer, graph: Graph) -> bool:
    """Glorot for layers feeding tanh/sigmoid/softmax and for heads (no activation after)."""
    consumers = graph.consumers(layer.name)
    if layer.name in graph.outputs or not consumers:
        return True
    return any(graph.node(c).op in _GLOROT_AFTER for c in consumers)
