"""Lowering a graph to a list of kernel launches over planned buffers, and running it.

`compile_graph` resolves every node's kernel for a backend from the op registry
(a missing kernel is a compile-time error naming the op), plans memory, and
allocates every buffer once for a batch size. `Executable.run` then only copies
the inputs in and calls the launchers in order.

Where the buffers live is the backend object's business (cnndsl/backend/base.py):
NumPy arrays for the CPU, device arrays for CUDA; see docs/architecture.md, "Backends".
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cnndsl.analysis.memory import check_executable
from cnndsl.analysis.plan import MemoryPlan, execution_order, plan_memory
from cnndsl.backend.base import CPU, Backend
from cnndsl.backend.params import ParamStore
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.registry import get_op

Launcher = Callable[["RunContext", Node, list, Any], None]


@dataclass
class RunContext:
    """What launchers see besides their node and buffers."""

    graph: Graph
    store: ParamStore
    batch: int
    training: bool = False
    step: int = 0
    seed: int = 0
    # the optimizer step's run-time input: this step's learning rate (a schedule changes it every
    # step; the optimizer and its hyperparameters are the step node's attributes)
    lr: float = 0.0
    comm: Any = None  # cnndsl.distributed communicator; None: one process
    share: float = 1.0  # this rank's fraction of the global batch (data-parallel training)
    losses: dict[str, float] = field(default_factory=dict)  # loss node -> value of the last run
    workspace: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    backend: Backend = CPU  # allocates ws/scratch buffers in the backend's memory
    cache: dict[str, Any] = field(default_factory=dict)  # per-node objects a backend's launchers keep

    def ws(self, node: str, key: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """A per-node scratch or saved-for-backward buffer, allocated once."""
        arr = self.workspace.get((node, key))
        if arr is None or arr.shape != tuple(shape) or arr.dtype != dtype:
            arr = self.backend.zeros(shape, dtype)
            self.workspace[(node, key)] = arr
        return arr

    def scratch(self, key: str, n: int) -> np.ndarray:
        """A 1-D float32 scratch buffer of n elements, shared by every node that asks with `key`
        (it holds nothing between launches); grows to the largest request, never shrinks."""
        arr = self.workspace.get(("", key))
        if arr is None or arr.size < n:
            arr = self.backend.zeros(max(n, 1), np.float32)
            self.workspace[("", key)] = arr
        return arr[:max(n, 1)]

    def forward_node(self, node: Node) -> Node:
        return self.graph.node(node.attrs["forward"])


def load_backend(name: str) -> Backend:
    """Import a backend's launchers so that they register themselves in the op registry, and
    return its backend object. CUDA without a usable device is a CnnError saying so."""
    if name == "cpu":
        import cnndsl.backend.cpu  # noqa: F401
        return CPU
    if name == "cuda":
        from cnndsl.backend.cuda import load

        return load()
    raise CnnError([Diagnostic("error", f"unknown device '{name}'", help="use --device cpu or --device cuda",
                               code="device")])


class Executable:
    def __init__(self, graph: Graph, store: ParamStore, batch: int, backend: str = "cpu"):
        self.backend = load_backend(backend)
        self.graph = graph
        self.batch = batch
        self.order = execution_order(graph)
        self.plan: MemoryPlan = plan_memory(graph, self.order)
        self.rc = RunContext(graph, store, batch, backend=self.backend)
        self._launchers = self._resolve(backend)
        check_executable(graph, batch, store, self.backend, self.plan)  # refuse before allocating
        self._slots = [self.backend.zeros(batch * n, np.dtype(d))
                       for n, d in zip(self.plan.slot_elems, self.plan.slot_dtype)]
        self.arrays = {name: self._array(name) for name in self.order if name in self.plan.slot_of}
        # node name -> seconds spent in its launches, accumulated by run() while this is a dict
        # (`cnndsl bench --profile`); None (the default) runs without a clock.
        self.timings: dict[str, float] | None = None
        self._steps = [(self._launchers[name], graph.node(name),
                        [self.arrays.get(s) for s in graph.inputs_of(name)], self.arrays.get(name))
                       for name in self.order if graph.node(name).op not in ("input", "target")]

    def _resolve(self, backend: str) -> dict[str, Launcher]:
        launchers, missing = {}, []
        for name in self.order:
            node = self.graph.node(name)
            fn = get_op(node.op).kernels.get(backend)
            if fn is None and node.op not in ("input", "target"):
                missing.append(Diagnostic("error", f"the {backend} backend has no kernel for op '{node.op}' "
                                          f"(layer '{name}')", node.span, code="no-kernel"))
            launchers[name] = fn
        if missing:
            raise CnnError(missing)
        return launchers

    def _array(self, name: str) -> np.ndarray:
        t = self.graph.node(name).type
        slot = self._slots[self.plan.slot_of[name]]
        return slot[: self.batch * math.prod(t.shape)].reshape((self.batch,) + t.shape)

    def run(self, feeds: dict[str, np.ndarray], training: bool = False, step: int = 0, seed: int = 0,
            lr: float = 0.0) -> None:
        """One run: `feeds` copied into the graph's inputs, then every launch in order. `lr`: the
        learning rate the optimizer step applies (training graphs)."""
        rc = self.rc
        rc.training, rc.step, rc.seed, rc.lr = training, step, seed, float(lr)
        backend = self.backend
        backend.start_run(rc)  # the CPU backend's hooks do nothing
        for name, value in feeds.items():
            backend.copy_in(self.arrays[name], value)
        if self.timings is None:
            for launch, node, ins, out in self._steps:
                launch(rc, node, ins, out)
        else:
            self._run_timed(rc)
        backend.finish_run(rc)

    def _run_timed(self, rc: RunContext) -> None:
        clock = time.perf_counter
        for launch, node, ins, out in self._steps:
            start = clock()
            launch(rc, node, ins, out)
            self.backend.synchronize()  # device kernels run asynchronously: time them, not their launch
            self.timings[node.name] = self.timings.get(node.name, 0.0) + clock() - start

    def output(self, name: str) -> np.ndarray:
        """A tensor's values as a NumPy array (on the CPU a view of the buffer itself)."""
        return self.backend.to_host(self.arrays[name])
