"""Count and time Numba's compilations as they happen.

Numba broadcasts a "numba:compile" event (numba.core.event, 0.68: `Dispatcher.compile`) around
every compilation of a function for one signature, and only then: a function loaded from the
on-disk cache, or already compiled in this process, raises no event. A function that calls
another @njit function compiles its callee inside its own event, so events nest; each record
here keeps both its inclusive seconds and its own ("self") seconds, the inclusive time less that
of the compilations nested in it. The parallel regions of a `parallel=True` function
(gufuncs) are not dispatchers: their time is part of their function's own seconds.

    with counting() as c:        # or counting(on_change=callback): called at each start and end
        model.train_step(x, y, 0)
    c.count, c.seconds, c.records   # functions compiled, seconds compiling (top level), details

Counting costs two Python calls per compilation (a compilation takes 0.05 to several seconds).
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(eq=False)
class Compilation:
    """One function compiled for one signature."""
    module: str  # the Python module defining it (cnndsl.kernels.cpu.conv)
    name: str  # its qualified name
    signature: str  # the argument types, as Numba prints them
    start: float  # time.perf_counter() at its start
    seconds: float = 0.0  # inclusive: with the callees compiled inside it
    self_seconds: float = 0.0  # without them
    depth: int = 0  # 0: compiled for a call from Python; 1+: a callee compiled inside another
    children_seconds: float = field(default=0.0, repr=False)
    # the same in this process's CPU seconds (time.process_time): what a compilation costs whatever
    # else the machine runs (wall seconds stretch on a loaded machine, CPU seconds hardly)
    cpu_start: float = field(default=0.0, repr=False)
    cpu_seconds: float = 0.0
    self_cpu_seconds: float = 0.0
    children_cpu_seconds: float = field(default=0.0, repr=False)
    worker: int = 0  # 0: this process; 1+: a worker of cnndsl.backend.compile_pool
    unit: str = ""  # the compile pool's unit of work it was compiled for ("" outside a pool)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def family(self) -> str:
        """The kernel family: cnndsl's module without the package path (conv, blas, fused,
        augment.kernels, train.optim, ...), or "numba:<module>" for Numba's own library code
        compiled as a callee (string formatting of error messages, builtins)."""
        if self.module.startswith("cnndsl."):
            rest = self.module[len("cnndsl."):]
            for prefix in ("kernels.cpu.", "kernels.cuda.", "kernels."):
                if rest.startswith(prefix):
                    return rest[len(prefix):]
            return rest
        return "numba:" + self.module.rsplit(".", 1)[-1]


class CompileCounter:
    """Records every "numba:compile" event while installed (see `counting`)."""

    def __init__(self, on_change: Callable[["CompileCounter"], None] | None = None):
        self.records: list[Compilation] = []
        self.on_change = on_change
        self._stack: list[Compilation] = []
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._top_seconds = 0.0
        self.started = time.perf_counter()
        # the event on_change was called for: ("start" or "end", its Compilation)
        self.last_event: tuple[str, Compilation] | None = None

    # -- figures ------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Functions compiled so far (callees included; each signature counts once)."""
        return len(self.records)

    @property
    def active(self) -> Compilation | None:
        """The compilation running now (the innermost), if any."""
        with self._lock:
            return self._stack[-1] if self._stack else None

    @property
    def seconds(self) -> float:
        """Seconds spent compiling: the sum of the top-level compilations (a compilation running
        now counts up to this moment)."""
        now = time.perf_counter()
        with self._lock:
            running = now - self._stack[0].start if self._stack else 0.0
            return self._top_seconds + running

    # -- Numba's listener interface --------------------------------------------------
    def on_start(self, event) -> None:
        data = event.data or {}
        dispatcher = data.get("dispatcher")
        py_func = getattr(dispatcher, "py_func", None)
        args = data.get("args")
        record = Compilation(
            module=getattr(py_func, "__module__", None) or "?",
            name=getattr(py_func, "__qualname__", None) or getattr(dispatcher, "__name__", "?"),
            signature=f"({', '.join(str(a) for a in args)})" if args is not None else "()",
            start=time.perf_counter(), depth=len(self._stack), cpu_start=time.process_time())
        with self._lock:
            self._stack.append(record)
            self.records.append(record)
            self.last_event = ("start", record)
        self._changed()

    def on_end(self, event) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        with self._lock:
            if not self._stack:
                return
            record = self._stack.pop()
            record.seconds = now - record.start
            record.self_seconds = max(0.0, record.seconds - record.children_seconds)
            record.cpu_seconds = cpu - record.cpu_start
            record.self_cpu_seconds = max(0.0, record.cpu_seconds - record.children_cpu_seconds)
            if self._stack:
                self._stack[-1].children_seconds += record.seconds
                self._stack[-1].children_cpu_seconds += record.cpu_seconds
            else:
                self._top_seconds += record.seconds
            self.last_event = ("end", record)
        self._changed()

    def notify(self, event) -> None:
        if threading.get_ident() != self._thread:
            return  # another thread's compilation: not the work this counter watches
        if event.is_start:
            self.on_start(event)
        elif event.is_end:
            self.on_end(event)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # -- reports --------------------------------------------------------------------
    def by_family(self) -> list[tuple[str, int, float]]:
        return by_family(self.records)

    def slowest(self, n: int = 10) -> list[Compilation]:
        return slowest(self.records, n)


def by_family(records) -> list[tuple[str, int, float]]:
    """(family, functions, self seconds) of compilation records, most seconds first (the reports of
    this counter and of the compile pool's, which sums every process's)."""
    families: dict[str, list] = {}
    for r in records:
        entry = families.setdefault(r.family, [0, 0.0])
        entry[0] += 1
        entry[1] += r.self_seconds
    return sorted(((k, n, s) for k, (n, s) in families.items()), key=lambda t: -t[2])


def slowest(records, n: int = 10) -> list[Compilation]:
    return sorted(records, key=lambda r: -r.self_seconds)[:n]


def _listener_class():
    from numba.core import event

    class _Listener(event.Listener):
        def __init__(self, counter: CompileCounter):
            self.counter = counter

        def on_start(self, ev):  # pragma: no cover - notify dispatches
            self.counter.on_start(ev)

        def on_end(self, ev):  # pragma: no cover
            self.counter.on_end(ev)

        def notify(self, ev):
            self.counter.notify(ev)

    return _Listener


@contextlib.contextmanager
def counting(on_change: Callable[[CompileCounter], None] | None = None):
    """Count Numba's compilations (in this thread) while the block runs; yields a CompileCounter."""
    from numba.core import event

    counter = CompileCounter(on_change)
    listener = _listener_class()(counter)
    event.register("numba:compile", listener)
    try:
        yield counter
    finally:
        event.unregister("numba:compile", listener)
