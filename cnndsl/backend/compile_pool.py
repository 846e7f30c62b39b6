"""Compile a model's kernels in several processes at once, into the shared on-disk cache.

Numba compiles under one lock per process (numba/numba#3278): threads cannot compile in
parallel, processes can. When the compile phase before the first training step
(cnndsl.train.trainer.compile_kernels) finds the cache cold, it starts worker processes that
build the same model and compile a share of its kernels; every process writes what it compiles
to the on-disk cache, and the main process then loads it from there.

**Units of work.** The launches of a training and an evaluation step are grouped by their op's
family (`conv`, `fused_conv` and `fused_conv_pool` are one unit, their gradients another, then
`dense`, `maxpool`, `optimizer`, ...: `op_family`), and each augmentation of the file's pipeline
is a unit of its own. A process runs one unit by running the real training and evaluation steps
(`warm_up`: the same batch, optimizer, evaluation batch, arguments and therefore the same
signatures) with every other op's launches left out, on buffers of zeros. Units are handed out
from one queue, the costliest first (`COST`), to the main process and to the workers as they
become free. Two ops that share a kernel (a GEMM under a convolution and a dense layer) can
both compile it; the second process then loads it from the cache or compiles it again.

**Exactly the signatures the main process will dispatch.** After the queue is empty the main
process runs the whole compile phase as before: it loads from the cache whatever the pool
compiled and compiles what is still missing, so a unit that failed in a worker, or a signature a
worker did not reproduce, costs time, never correctness. `PoolCounter.after_pool` counts those
compilations (0 for every example model: tests/test_compile_pool.py).

**Who.** `cnndsl train`, `cnndsl warmup` and `Model.fit` run it before the first step, for a
training and an evaluation step (cnndsl.train.trainer.compile_kernels). `Model.train_step`,
`predict` and `evaluate` run it the first time they need one kind of executable ("train",
"infer", "eval": `kinds`), for that kind alone (`Model._compile_phase`); there the caller's own
first step is the final pass.

**When.** Only when something has to be compiled: the main process starts on the first unit
alone and starts the workers at its first compilation (a warm cache starts none). The number of
processes compiling at once, the main one included, is `CNNDSL_COMPILE_WORKERS` (an integer; 0
or 1: no pool), else the number of cores this process may run on (`os.sched_getaffinity`): one
core, no pool. `cnndsl warmup --workers N` sets it for one command.

**The cache under several writers.** Numba writes each data file and index atomically
(a temporary file, then a rename) but picks a data file's number and rewrites a function's
index without a lock: two processes adding two signatures of one function at once can lose an
index entry, or both take file number 1 (numba/core/caching.py, `IndexDataCacheFile.save`,
0.68). `locked_cache_saves` serializes those saves with a lock file in the cache folder,
in every process of the pool.

The workers run `_worker(JOB)` (`worker_command`: this process's cnndsl first on the path) and speak
JSON lines: the main process sends a unit per line on stdin (an empty line: stop); a worker answers
with a line per compilation started and ended, and one when a unit is done.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from cnndsl.backend import compile_events

ENV_WORKERS = "CNNDSL_COMPILE_WORKERS"
AUGMENT = "augment:"  # unit name prefix: "augment:2" is the pipeline's third augmentation
LOCK_NAME = ".cnndsl-index.lock"

# Relative compile cost of an op's unit, for the order the queue hands units out (costliest first,
# so that no large unit starts last): roughly the CPU seconds each took for the example models
# when compiled alone, one unit after another, on the 2-core development machine (2026-12-02):
# the forward convolution 8 to 9 s, its gradients 2 to 9, an augmentation about 2, a dense layer
# 1 to 2.6, batchnorm 1.3 to 1.6, max pooling 1.6, the rest under 1.5. Unknown ops count 1.
COST = {
    "conv": 10, "fused_conv": 10, "fused_conv_grad": 9, "conv_grad": 9, "conv_grad_params": 4,
    "conv_grad_input": 4, "fused_dense": 4, "batchnorm": 3, "fused_batchnorm": 3, "batchnorm_grad": 3,
    "fused_batchnorm_grad": 3, "maxpool": 3, AUGMENT: 3, "cross_entropy": 2, "dense": 2, "fused_dense_grad": 2,
    "pool_grad": 1, "dropout": 1, "dropout_grad": 0.5, "optimizer_step": 0.5, "flatten": 0, "unflatten": 0,
}


# -- how many processes ------------------------------------------------------------------------
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pool_size(requested: int | None = None) -> int:
    """Processes compiling at once, the main one included: `requested`, else CNNDSL_COMPILE_WORKERS,
    else the cores this process may run on. 1 or less: no pool. A CNNDSL_COMPILE_WORKERS that is
    not an integer is a CnnError naming the variable."""
    if requested is None:
        env = os.environ.get(ENV_WORKERS, "").strip()
        if env:
            try:
                requested = int(env)
            except ValueError:
                from cnndsl.diagnostics import CnnError, Diagnostic

                raise CnnError([Diagnostic(
                    "error", f"the environment variable {ENV_WORKERS} is not an integer",
                    details=["expected: the number of processes compiling kernels at once (0 or 1: no worker "
                             "processes)", f"found: {env!r}"],
                    help=f"unset it (one process per core) or set e.g. {ENV_WORKERS}=1",
                    code="compile-workers")]) from None
    n = available_cores() if requested is None else int(requested)
    return max(1, n)


# -- units ---------------------------------------------------------------------------------------
def _augment_applies(model, augment) -> bool:
    return augment is not None and len(augment) > 0 and \
        tuple(augment.output_shape(model.input_shape)) == tuple(model.input_shape)


def op_family(op: str) -> str:
    """The group an op's launches join: its first word without `fused_`, and "/grad" for a
    gradient (`conv`, `fused_conv`, `fused_conv_pool` -> conv; `fused_conv_grad`,
    `conv_grad_params`, `conv_grad_input` -> conv/grad). Ops of one family call the same kernels
    (vgg_small's `conv` and `fused_conv` both compile the 8 s `gemm_forward`; run as two units
    in two processes they compiled it twice, 15 CPU s more in all)."""
    name = op[len("fused_"):] if op.startswith("fused_") else op
    root = name.split("_", 1)[0]
    return root + "/grad" if "grad" in name.split("_")[1:] else root


TRAIN_AND_EVAL = ("train", "eval")  # the trainer's compile phase: a training and an evaluation step


def units_of(model, batch: int, eval_batch: int, augment=None, kinds=TRAIN_AND_EVAL) -> list[str]:
    """The model's units of compile work, costliest first (ties: in execution order): the ops of
    the graphs of `kinds` (Model._graph's names) grouped by `op_family`, "+"-joined, and each
    augmentation of the pipeline ("augment:J")."""
    from cnndsl.analysis.plan import execution_order

    groups: dict[str, list[str]] = {}
    for kind in kinds:
        graph = model._graph(kind)
        for name in execution_order(graph):
            op = graph.node(name).op
            if op in ("input", "target"):
                continue
            ops = groups.setdefault(op_family(op), [])
            if op not in ops:
                ops.append(op)
    units = ["+".join(ops) for ops in groups.values()]
    if _augment_applies(model, augment):
        units += [f"{AUGMENT}{j}" for j in range(len(augment.ops))]
    return sorted(units, key=lambda u: -unit_cost(u))  # stable: execution order among equals


def unit_cost(unit: str) -> float:
    """The COST of a unit's family (its costliest op's: ops of one family share their kernels)."""
    if unit.startswith(AUGMENT):
        return COST[AUGMENT]
    return max(COST.get(op, 1) for op in unit.split("+"))


@contextlib.contextmanager
def only_ops(model, ops: set, batch: int, eval_batch: int, kinds=TRAIN_AND_EVAL):
    """While the block runs, the model's executables of `kinds` at these batches (eval_batch for
    "eval") run only the launches of `ops` (the others' buffers keep what they hold: zeros, as
    allocated); the losses of launches left out read 0."""
    exes = [model.executable(kind, eval_batch if kind == "eval" else batch) for kind in kinds]
    saved = [exe._steps for exe in exes]
    try:
        for exe in exes:
            exe._steps = [s for s in exe._steps if s[1].op in ops]
            for loss in exe.graph.attrs.get("losses", {}).values():
                exe.rc.losses.setdefault(loss, 0.0)
        yield
    finally:
        for exe, steps in zip(exes, saved):
            exe._steps = steps


def run_unit(model, unit: str, batch: int, eval_batch: int, optimizer, augment, kinds=TRAIN_AND_EVAL) -> None:
    """Compile (or load) one unit's kernels: the steps of `kinds` restricted to one op family, or
    one augmentation of the pipeline run alone on its own input shape."""
    from cnndsl.train.trainer import warm_up

    if unit.startswith(AUGMENT):
        import numpy as np

        from cnndsl.augment.pipeline import Pipeline

        j = int(unit[len(AUGMENT):])
        shape = tuple(model.input_shape)
        for op in augment.ops[:j]:
            shape = tuple(op.output_shape(shape))
        one = Pipeline([augment.ops[j]], augment.seed)
        one.apply(np.zeros((batch,) + shape, np.float32), np.arange(batch, dtype=np.int64), 0, op_offset=j)
        return
    with only_ops(model, set(unit.split("+")), batch, eval_batch, kinds):
        warm_up(model, batch, eval_batch, optimizer=optimizer, augment=None, kinds=kinds)


# -- the cache under several writers ----------------------------------------------------------------
_lock_state = {"installed": False}


def locked_cache_saves() -> None:
    """Serialize Numba's cache index updates across processes with an flock in the cache folder
    (see the module docstring). Idempotent; a no-op where fcntl is missing."""
    if _lock_state["installed"]:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    from numba.core import caching

    original = caching.IndexDataCacheFile.save

    def save(self, key, data):
        lock_path = os.path.join(os.path.dirname(self._index_path), LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:
            return original(self, key, data)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return original(self, key, data)
        finally:
            os.close(fd)  # releases the lock

    caching.IndexDataCacheFile.save = save
    _lock_state["installed"] = True
    _one_compiler_per_signature(caching, fcntl)


# How long a process waits for another one's compilation of the same function before compiling it
# itself (a compilation took up to 30 s of wall time at load 4; a process stopped for longer, or a
# call graph with a cycle, must not stall the others).
COMPILE_WAIT_S = 300.0


def _one_compiler_per_signature(caching, fcntl) -> None:
    """Two processes of the pool that need the same function for the same signature compile it
    once: the units share callees (LeNet-5's forward and gradient units both call the direct
    convolution's parallel driver, 5 to 7 CPU s), and two processes reaching one at once each
    compiled it, 7 to 9 of its 52 to 58 pooled CPU s (2026-12-02). After a cache miss a process takes
    an flock named after the function's index and the signature in the cache folder; one that finds
    it taken waits until it is free and loads what the other process saved, so only one compiles.
    The lock is released once the function is saved, or when its compilation fails (Numba's
    compile event). Waiting cannot deadlock for an acyclic call graph: a process holds the locks
    of the functions it is compiling, nested callers first, and waits only for a callee."""
    import hashlib

    from numba.core import event

    held: dict[int, list[int]] = {}  # id(Cache) -> the fds of its compilations in progress
    load, save = caching.Cache.load_overload, caching.Cache.save_overload

    def lock_path(cache, sig) -> str:
        tag = hashlib.sha256(str(sig).encode()).hexdigest()[:16]
        return os.path.join(cache._cache_path, f"{cache._cache_file._index_name}.{tag}.compiling")

    def release(cache) -> None:
        fds = held.get(id(cache))
        if fds:
            os.close(fds.pop())  # releases the flock

    def load_overload(self, sig, target_context):
        data = load(self, sig, target_context)
        if data is not None or not self._enabled:
            return data
        try:
            fd = os.open(lock_path(self, sig), os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:
            return None
        deadline = time.monotonic() + COMPILE_WAIT_S
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:  # another process compiles it
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                waited = True
                time.sleep(0.02)
        if waited:
            data = load(self, sig, target_context)
            if data is not None:
                os.close(fd)
                return data
        held.setdefault(id(self), []).append(fd)
        return None

    def save_overload(self, sig, data):
        try:
            save(self, sig, data)
        finally:
            release(self)

    class _Failed(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            # Event.is_failed is inverted in Numba 0.68 (True when there is no exception)
            if getattr(ev, "_exc_details", None) is not None and isinstance(ev.data, dict) and "dispatcher" in ev.data:
                release(ev.data["dispatcher"]._cache)

    caching.Cache.load_overload = load_overload
    caching.Cache.save_overload = save_overload
    event.register("numba:compile", _Failed())


# -- the counter the status line and the callers see ----------------------------------------------
class _WorkerCounter:
    """A worker's compilations, rebuilt from its event lines (the same fields as compile_events)."""

    def __init__(self, index: int):
        self.index = index
        self.unit = ""
        self.records: list = []
        self.stack: list = []
        self.top_seconds = 0.0

    def event(self, msg: dict) -> None:
        if msg["ev"] == "start":
            record = compile_events.Compilation(module=msg["module"], name=msg["name"], signature=msg["signature"],
                                                start=time.perf_counter(), depth=len(self.stack), worker=self.index,
                                                unit=self.unit)
            self.stack.append(record)
            self.records.append(record)
        elif self.stack:
            record = self.stack.pop()
            record.seconds, record.self_seconds = msg["seconds"], msg["self_seconds"]
            record.cpu_seconds, record.self_cpu_seconds = msg.get("cpu_seconds", 0.0), msg.get("self_cpu_seconds", 0.0)
            if not self.stack:
                self.top_seconds += record.seconds


class PoolCounter:
    """The compile phase's figures over every process: `count` functions compiled and `seconds`
    compiling (summed over the processes: compile work, not wall time), `records`, `active`, as a
    compile_events.CompileCounter has them; plus `workers` (processes started besides this one),
    `main` (this process's own counter, whole phase), `after_pool` (what this process compiled
    after the pool had finished: what the workers did not leave in the cache), `units`, `failed`
    (units a worker could not run: "unit: error"), `wall_pool` (seconds from the pool's start to
    its end)."""

    def __init__(self, main):
        self.main = main
        self.workers: int = 0
        self.worker_counters: list[_WorkerCounter] = []
        self.after_pool_from: int | None = None  # index in main.records where the final pass began
        self.units: list[str] = []
        self.failed: list[str] = []
        self.wall_pool: float = 0.0
        self.ready_s: list[float] = []  # per worker: seconds from the pool's start to its model built
        self.ready_cpu_s: list[float] = []  # the same in the worker's CPU seconds (its start-up's cost)
        self.final_pass_s: float = 0.0  # the whole phase in this process after the pool (loading)
        self.pool: Pool | None = None  # while the pool may still start
        self._lock = threading.Lock()

    def main_changed(self, main) -> None:
        """Part of this process's counter callback: its first compilation starts the pool."""
        pool = self.pool
        if pool is not None and pool.started_at is None and main.count > 0:
            pool.start()

    @property
    def records(self) -> list:
        with self._lock:
            return list(self.main.records) + [r for w in self.worker_counters for r in w.records]

    @property
    def count(self) -> int:
        with self._lock:
            return self.main.count + sum(len(w.records) for w in self.worker_counters)

    @property
    def seconds(self) -> float:
        with self._lock:
            running = 0.0
            now = time.perf_counter()
            for w in self.worker_counters:
                if w.stack:
                    running += now - w.stack[0].start
            return self.main.seconds + sum(w.top_seconds for w in self.worker_counters) + running

    @property
    def active(self):
        own = self.main.active
        if own is not None:
            return own
        with self._lock:
            for w in self.worker_counters:
                if w.stack:
                    return w.stack[-1]
        return None

    @property
    def after_pool(self) -> list:
        """What this process compiled after the pool was done (only meaningful when workers > 0)."""
        return [] if self.after_pool_from is None else self.main.records[self.after_pool_from:]

    @property
    def pool_used(self) -> bool:
        return self.workers > 0

    def by_family(self):
        return compile_events.by_family(self.records)

    def slowest(self, n: int = 10):
        return compile_events.slowest(self.records, n)


# -- the pool -----------------------------------------------------------------------------------------
def _package_root() -> str:
    """The folder holding this cnndsl package (cnndsl/backend/compile_pool.py -> its grandparent's parent)."""
    return str(Path(__file__).resolve().parents[2])


def worker_env() -> dict:
    """The workers' environment: this process's, with the same cnndsl first on the path, the same
    Numba cache folder and bounds-check setting, one Numba thread each (they run steps on zeros
    only to compile them), and no pool of their own."""
    import numba.core.config

    from cnndsl import kernel_cache

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p])
    if numba.core.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = str(numba.core.config.CACHE_DIR)
    if kernel_cache.boundscheck():
        env["NUMBA_BOUNDSCHECK"] = "1"
    env["NUMBA_NUM_THREADS"] = "1"
    env[ENV_WORKERS] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# The worker's first statement puts this process's cnndsl first on its path. `python -m` (and -c)
# put the current folder before PYTHONPATH: run from a folder holding another cnndsl (a checkout
# beside the installed one), the workers imported that one, filed their kernels under its source
# fingerprint, and neither side loaded the other's (seen: every direct-convolution kernel compiled
# in both processes, 243 compilations instead of 152).
_WORKER_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from cnndsl.backend.compile_pool import _worker; sys.exit(_worker(sys.argv[2]))")


def worker_command(job_path: str) -> list[str]:
    return [sys.executable, "-c", _WORKER_BOOT, _package_root(), job_path]


class Pool:
    """Worker processes fed units from a queue this process shares (see the module docstring).

    `start()` launches them (from any thread); `take()` gives the next unit to this process;
    `close()` waits until every started unit is done and stops the workers."""

    def __init__(self, job: dict, units: list[str], processes: int, counter: PoolCounter, on_change=None):
        self.job = job
        self.queue: deque[str] = deque(units)
        self.processes = processes
        self.counter = counter
        self.on_change = on_change
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self._jobfile: str | None = None
        self.started_at: float | None = None
        self.start_error: str | None = None

    def take(self) -> str | None:
        with self._lock:
            return self.queue.popleft() if self.queue else None

    def start(self) -> None:
        if self.started_at is not None:
            return
        self.started_at = time.perf_counter()
        n = self.processes - 1
        if n < 1 or not self.queue:
            return
        try:
            fd, self._jobfile = tempfile.mkstemp(prefix="cnndsl-compile-job-", suffix=".pickle")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self.job, f)
            env = worker_env()
        except Exception as e:  # an unpicklable program: compile in this process only
            self.start_error = f"{type(e).__name__}: {e}"
            return
        for i in range(min(n, len(self.queue))):
            try:
                proc = subprocess.Popen(worker_command(self._jobfile),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, env=env, bufsize=1)
            except OSError as e:
                self.start_error = f"{type(e).__name__}: {e}"
                break
            wc = _WorkerCounter(i + 1)
            with self.counter._lock:
                self.counter.worker_counters.append(wc)
                self.counter.workers += 1
            self._procs.append(proc)
            t = threading.Thread(target=self._serve, args=(proc, wc), name=f"cnndsl-compile-worker-{i + 1}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _send(self, proc, unit: str | None) -> bool:
        try:
            proc.stdin.write((unit or "") + "\n")
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _serve(self, proc, wc: _WorkerCounter) -> None:
        """Read one worker's lines; give it the next unit each time it is ready."""
        current = None
        try:
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "ev" in msg:
                    with self.counter._lock:
                        wc.event(msg)
                    if self.on_change is not None:
                        self.on_change(self.counter)
                    continue
                if msg.get("error"):
                    with self.counter._lock:
                        self.counter.failed.append(f"{current}: {msg['error']}")
                if "ready" in msg:
                    with self.counter._lock:
                        self.counter.ready_s.append(time.perf_counter() - self.started_at)
                        self.counter.ready_cpu_s.append(float(msg.get("cpu", 0.0)))
                if "ready" in msg or "done" in msg:
                    current = self.take()
                    wc.unit = current or ""
                    if not self._send(proc, current) or current is None:
                        break
        finally:
            # a worker that died mid-unit: the main process's final pass compiles what it missed
            if current is not None and proc.poll() is not None and proc.returncode:
                with self.counter._lock:
                    self.counter.failed.append(f"{current}: worker exited with status {proc.returncode}")
            with self.counter._lock:
                wc.stack.clear()  # compilations cut short by the worker's end are not running anymore

    def close(self) -> None:
        for t in self._threads:
            t.join()
        for proc in self._procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._jobfile is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._jobfile)
            self._jobfile = None

    def abort(self) -> None:
        """Stop the workers now (this process failed or was interrupted)."""
        with self._lock:
            self.queue.clear()
        for proc in self._procs:
            with contextlib.suppress(OSError):
                proc.kill()
        self.close()


_phase = threading.local()


def in_phase() -> bool:
    """Whether this thread is inside a compile phase (Model's own first-use phase then stays out)."""
    return getattr(_phase, "depth", 0) > 0


@contextlib.contextmanager
def phase():
    _phase.depth = getattr(_phase, "depth", 0) + 1
    try:
        yield
    finally:
        _phase.depth -= 1


def compile_with_pool(model, batch: int, eval_batch: int, optimizer, augment, processes: int,
                      counter: PoolCounter, on_change=None, kinds=TRAIN_AND_EVAL, final_pass: bool = True) -> None:
    """The compile phase with a pool (see the module docstring): this process takes units from the
    queue, and its first compilation starts the workers, which take the rest as they become free;
    then (`final_pass`) the whole phase in this process, loading what the workers compiled.
    `counter.main` must be this process's CompileCounter, installed by the caller with
    `counter.main_changed` in its callback; `on_change(counter)` is called at each worker event
    (the status line). `optimizer`: a fresh one of the kind and hyperparameters the steps will use
    (None when `kinds` has no "train"; they are the optimizer_step node's attributes); the workers
    make the same."""
    with phase():
        _compile_with_pool(model, batch, eval_batch, optimizer, augment, processes, counter, on_change, kinds,
                           final_pass)


def _compile_with_pool(model, batch, eval_batch, optimizer, augment, processes, counter, on_change, kinds,
                       final_pass) -> None:
    from cnndsl.train.trainer import warm_up

    ok = False
    pool = None
    try:
        if processes > 1:
            units = units_of(model, batch, eval_batch, augment, kinds)
            counter.units = list(units)
            # the workers build a model of the caller's own class (pickled by reference: the
            # pool never imports the Python API that sits above it)
            job = {"model_type": type(model), "program": model.program,
                   "opt_level": getattr(model, "opt_level", 2), "seed": model.seed,
                   "batch": batch, "eval_batch": eval_batch, "kinds": tuple(kinds),
                   "optimizer": None if optimizer is None else (optimizer.kind, dict(optimizer.hyper)),
                   "augment": augment}
            pool = Pool(job, units, processes, counter, on_change)
            locked_cache_saves()
            counter.pool = pool
            while True:
                unit = pool.take()
                if unit is None:
                    break
                before = counter.main.count
                try:
                    run_unit(model, unit, batch, eval_batch, optimizer, augment, kinds)
                except Exception as e:  # the final pass compiles it, or raises the real error
                    counter.failed.append(f"{unit}: {type(e).__name__}: {e}")
                for record in counter.main.records[before:]:
                    record.unit = unit
                if pool.started_at is None and counter.main.count == before:
                    break  # the first unit compiled nothing: a warm cache, no pool; the pass below loads
            counter.pool = None  # no start from the final pass
            pool.close()
            if pool.started_at is not None:
                counter.wall_pool = time.perf_counter() - pool.started_at
        counter.after_pool_from = counter.main.count
        if final_pass:
            t = time.perf_counter()
            warm_up(model, batch, eval_batch, optimizer=optimizer, augment=augment, kinds=kinds)
            counter.final_pass_s = time.perf_counter() - t
        ok = True
    finally:
        counter.pool = None
        if not ok and pool is not None:
            pool.abort()


# -- a worker -----------------------------------------------------------------------------------------
def _worker(job_path: str) -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by the model's code goes to stderr, not into the protocol

    def say(**msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    with open(job_path, "rb") as f:
        job = pickle.load(f)
    from cnndsl import kernel_cache
    kernel_cache.configure()
    from cnndsl.train.optim import make_optimizer

    locked_cache_saves()
    model = job["model_type"](job["program"], seed=job["seed"], opt_level=job["opt_level"], init_from_file=False)
    optimizer = None
    if job["optimizer"] is not None:
        kind, hyper = job["optimizer"]
        optimizer = make_optimizer(kind, model.store.params, **hyper)
        # its hyperparameters are the training graph's optimizer_step attributes: set before the
        # units build the graph, so that warm_up's set_optimizer keeps it (and only_ops' filter)
        model.set_optimizer(optimizer)
    kinds = job["kinds"]

    def on_change(counter):
        kind, r = counter.last_event
        if kind == "start":
            say(ev="start", module=r.module, name=r.name, signature=r.signature)
        else:
            say(ev="end", seconds=r.seconds, self_seconds=r.self_seconds, cpu_seconds=r.cpu_seconds,
                self_cpu_seconds=r.self_cpu_seconds)

    say(ready=True, cpu=time.process_time())
    with compile_events.counting(on_change), phase():
        for line in sys.stdin:
            unit = line.strip()
            if not unit:
                break
            try:
                run_unit(model, unit, job["batch"], job["eval_batch"], optimizer, job["augment"], kinds)
                say(done=unit)
            except Exception as e:  # the main process compiles it itself
                say(done=unit, error=f"{type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
