"""Parameter storage: every learnable tensor of a model in one flat float32 buffer.

One flat buffer (and a gradient buffer of the same layout: FlatParams, with its
ParamLayout, below) makes the optimizer
one loop, a checkpoint one array, and (later) a distributed step one
all-reduce. Each tensor is a named view `<layer>.<param>` into it. Batchnorm
running statistics are non-learnable buffers kept beside it.

On a device backend (CUDA) the store also keeps a copy of everything in device memory
(`DeviceTensors`), which the launchers use; the host arrays and the device copy are kept
coherent lazily: the device copy is refreshed before a run when the host values were
changed (initialize, load_state_dict, view), and the host arrays are
refreshed from the device when they are read after a training run changed the device copy
(state_dict, view, grad_view, sync_to_host). On the CPU the host arrays are the only copy
and none of this does anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from cnndsl.analysis.memory import check_store
from cnndsl.backend.base import CPU
from cnndsl.backend.optimizer_state import OptimizerState
from cnndsl.ir.graph import Graph
from cnndsl.kernels.activations import ACTIVATIONS

_GLOROT_AFTER = {a.name for a in ACTIVATIONS if a.squashing} | {"softmax"}  # bounded outputs


@dataclass(frozen=True)
class Segment:
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stop(self) -> int:
        return self.offset + self.size


class ParamLayout:
    """name -> (offset, shape) of each tensor in the flat buffer, in insertion order."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], align: int = 1):
        self.segments: dict[str, Segment] = {}
        offset = 0
        for name, shape in shapes.items():
            shape = tuple(int(d) for d in shape)
            seg = Segment(offset, shape)
            self.segments[name] = seg
            offset = seg.stop
            if align > 1:
                offset = -(-offset // align) * align
        self.size = offset

    def __contains__(self, name: str) -> bool:
        return name in self.segments

    def __iter__(self):
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, name: str) -> Segment:
        return self.segments[name]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: s.shape for k, s in self.segments.items()}


class FlatParams:
    """The flat parameter buffer, its gradient, and the per-element multipliers."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | ParamLayout):
        self.layout = shapes if isinstance(shapes, ParamLayout) else ParamLayout(shapes)
        n = self.layout.size
        self.data = np.zeros(n, dtype=np.float32)
        self.grad = np.zeros(n, dtype=np.float32)
        self.lr_mult = np.ones(n, dtype=np.float32)
        self.wd_mult = np.ones(n, dtype=np.float32)

    @property
    def size(self) -> int:
        return self.layout.size

    def _slice(self, name: str) -> slice:
        seg = self.layout[name]
        return slice(seg.offset, seg.stop)

    def view(self, name: str) -> np.ndarray:
        """The tensor `name` as a writable view into `data`."""
        return self.data[self._slice(name)].reshape(self.layout[name].shape)

    def grad_view(self, name: str) -> np.ndarray:
        return self.grad[self._slice(name)].reshape(self.layout[name].shape)

    def views(self) -> dict[str, np.ndarray]:
        return {k: self.view(k) for k in self.layout}

    def grad_views(self) -> dict[str, np.ndarray]:
        return {k: self.grad_view(k) for k in self.layout}

    def tensors(self) -> dict[str, np.ndarray]:
        """Copies of every tensor (e.g. for `save_weights`)."""
        return {k: self.view(k).copy() for k in self.layout}

    def load(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Copy tensors into the buffer (shapes must match; see `match_weights` for user files)."""
        for name, value in tensors.items():
            dst = self.view(name)
            value = np.asarray(value)
            if value.shape != dst.shape:
                raise ValueError(f"tensor '{name}': shape {value.shape}, expected {dst.shape}")
            dst[...] = value

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def set_lr_mult(self, name: str, mult: float) -> None:
        """Learning-rate multiplier of tensor `name` (0 freezes it)."""
        self.lr_mult[self._slice(name)] = np.float32(mult)

    def set_wd_mult(self, name: str, mult: float) -> None:
        """Weight-decay multiplier of tensor `name` (0 exempts it from weight decay)."""
        self.wd_mult[self._slice(name)] = np.float32(mult)

    def frozen(self) -> np.ndarray:
        return self.lr_mult == 0


class ParamStore:
    """The learnable tensors of one model (a FlatParams: data, grad, lr_mult buffers) and
    its non-learnable buffers (batchnorm running statistics)."""

    def __init__(self, graph: Graph, backend=None):
        shapes, self.owner = {}, {}
        for node in graph.nodes():
            for pname, shape in node.params.items():
                shapes[f"{node.name}.{pname}"] = tuple(shape)
                self.owner[f"{node.name}.{pname}"] = node.name
        check_store(graph, shapes)  # refuse before allocating what cannot fit (a located CnnError)
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
        self.backend = backend if backend is not None else CPU
        # per-layer learning-rate factors (set_lr_mult) for the next training graph's optimizer step,
        # and a count of their changes (a training graph built before a change is rebuilt)
        self.lr_mults: dict[str, float] = {}
        self.lr_mult_version = 0
        # what the optimizer step carries from run to run (step count, momentum, moments): set by
        # Model.set_optimizer, read and advanced by the optimizer_step launchers
        self.optimizer_state: OptimizerState | None = None
        self._device: DeviceTensors | None = None
        self._host_stale = False  # a device run changed values the host arrays do not have yet
        self._device_stale = True  # the host arrays changed since the device copy was made

    # -- device copy (device backends only) ------------------------------------------
    def on_device(self) -> "DeviceTensors":
        """The device copy, brought up to date with the host arrays if they changed."""
        if self._device is None:
            self._device = DeviceTensors(self, self.backend)
            self._device_stale = False
        elif self._device_stale:
            self._device.upload(self)
            self._device_stale = False
        return self._device

    def device_changed(self) -> None:
        """A run wrote the device copy (weights, gradients, statistics, optimizer state)."""
        self._host_stale = True

    def sync_to_host(self) -> None:
        """Bring the host arrays (and the optimizer's state) up to date with the device copy."""
        if self._host_stale:
            self._device.download(self)
            self._host_stale = False

    def _host_write(self) -> None:
        """Before the host arrays are written: pull device values, then mark the device copy stale."""
        if not self.backend.host:
            self.sync_to_host()
            self._device_stale = True

    @property
    def segments(self) -> dict[str, tuple[int, ...]]:
        return self.params.layout.shapes

    # -- views ----------------------------------------------------------------
    def view(self, name: str) -> np.ndarray:
        """A writable host view (on a device backend the device copy is refreshed before the next run)."""
        self._host_write()
        return self.params.view(name)

    def grad_view(self, name: str) -> np.ndarray:
        self.sync_to_host()
        return self.params.grad_view(name)

    def set_lr_mult(self, layer: str, mult: float) -> None:
        """The learning-rate factor of a layer's tensors (0 freezes them) in the next training graph:
        `lr_mults` becomes the `lr_mult` attribute of its optimizer_step node (Model._step_attrs), a
        graph built before is rebuilt (Model checks `lr_mult_version`), and the step's launcher
        expands the node's attribute into the per-element array the kernels read (expand_lr_mult)."""
        mult = float(mult)
        if mult == 1.0:
            self.lr_mults.pop(layer, None)
        else:
            self.lr_mults[layer] = mult
        self.lr_mult_version += 1

    def lr_mult_attr(self) -> tuple[tuple[str, float], ...]:
        """`lr_mults` as the step node's attribute value: ((layer, factor), ...) by layer name."""
        return tuple(sorted(self.lr_mults.items()))

    def expand_lr_mult(self, lr_mult) -> None:
        """Write a step node's per-layer factors ((layer, factor), ...) into the per-element array the
        optimizer kernels read, every tensor of a layer not named at 1; the device copy too. What the
        step launchers do at plan time: the node is the one source of the factors."""
        p = self.params
        p.lr_mult.fill(1.0)
        factors = dict(lr_mult)
        for name, owner in self.owner.items():
            if owner in factors:
                p.set_lr_mult(name, factors[owner])
        if self._device is not None:  # the device never writes lr_mult: the host array is current
            self.backend.copy_in(self._device.lr_mult, p.lr_mult)

    # -- initialization ---------------------------------------------------------
    def initialize(self, seed: int) -> None:
        """He-normal weights before ReLU-like activations, Glorot-uniform before tanh/sigmoid/softmax
        and on heads; zero biases, unit batchnorm scales. Deterministic in `seed`."""
        self._host_write()
        rng = np.random.default_rng(seed)
        for name, shape in self.segments.items():
            layer = self._graph.node(self.owner[name])
            kind = name.rsplit(".", 1)[1]
            self.params.view(name)[...] = _init(kind, shape, layer, self._graph, rng)
        for name, buf in self.buffers.items():
            buf[...] = 1.0 if name.endswith("var") else 0.0

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.sync_to_host()
        out = {name: self.params.view(name).copy() for name in self.segments}
        out.update({name: b.copy() for name, b in self.buffers.items()})
        return out

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = dict(self.segments)
        shapes.update({name: b.shape for name, b in self.buffers.items()})
        return shapes

    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy tensors in by name; the caller has matched names and shapes already."""
        self._host_write()
        for name, value in tensors.items():
            if name in self.segments:
                self.params.view(name)[...] = value
            elif name in self.buffers:
                self.buffers[name][...] = value


class DeviceTensors:
    """The store's arrays in a device backend's memory: flat data, grad, lr_mult and wd_mult,
    the buffers, per-layer views of them, and the arrays of the optimizer state that last
    stepped (launchers get them through `optimizer_arrays`)."""

    def __init__(self, store: ParamStore, backend):
        p = store.params
        self.backend = backend
        self.data, self.grad = backend.to_device(p.data), backend.to_device(p.grad)
        self.lr_mult, self.wd_mult = backend.to_device(p.lr_mult), backend.to_device(p.wd_mult)
        self.buffers = {name: backend.to_device(b) for name, b in store.buffers.items()}
        self.by_layer: dict[str, dict] = {}
        self.grads_by_layer: dict[str, dict] = {}
        self.buffers_by_layer: dict[str, dict] = {}
        for name, layer in store.owner.items():
            seg, short = p.layout[name], name[len(layer) + 1:]
            self.by_layer.setdefault(layer, {})[short] = self.data[seg.offset:seg.stop].reshape(seg.shape)
            self.grads_by_layer.setdefault(layer, {})[short] = self.grad[seg.offset:seg.stop].reshape(seg.shape)
        for name, buf in self.buffers.items():
            layer, short = name.rsplit(".", 1)
            self.buffers_by_layer.setdefault(layer, {})[short] = buf
        self.optimizer_state: OptimizerState | None = None
        self.opt_arrays: dict = {}

    def optimizer_arrays(self, state: OptimizerState) -> dict:
        """Device copies of `state.arrays` (uploaded when this state is new here)."""
        if state is not self.optimizer_state:
            self.optimizer_state = state
            self.opt_arrays = {k: self.backend.to_device(v) for k, v in state.arrays.items()}
        return self.opt_arrays

    def upload(self, store: ParamStore) -> None:
        p, b = store.params, self.backend
        for dst, src in ((self.data, p.data), (self.grad, p.grad), (self.lr_mult, p.lr_mult),
                         (self.wd_mult, p.wd_mult)):
            b.copy_in(dst, src)
        for name, buf in store.buffers.items():
            b.copy_in(self.buffers[name], buf)
        if self.optimizer_state is not None:
            for k, v in self.optimizer_state.arrays.items():
                b.copy_in(self.opt_arrays[k], v)

    def download(self, store: ParamStore) -> None:
        p, b = store.params, self.backend
        b.copy_out(p.data, self.data)
        b.copy_out(p.grad, self.grad)
        for name, buf in store.buffers.items():
            b.copy_out(buf, self.buffers[name])
        if self.optimizer_state is not None:
            for k, v in self.opt_arrays.items():
                b.copy_out(self.optimizer_state.arrays[k], v)


def _init(kind: str, shape: tuple[int, ...], layer, graph: Graph, rng) -> np.ndarray:
    if kind in ("bias", "beta"):
        return np.zeros(shape, np.float32)
    if kind == "gamma":
        return np.ones(shape, np.float32)
    if kind == "slope":  # prelu (He et al. 2015)
        return np.full(shape, 0.25, np.float32)
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
