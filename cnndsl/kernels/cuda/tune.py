"""A measured tile choice per GEMM launch, remembered on disk (cuDNN's benchmark mode, MIOpen's
find-db).

gemm.choose_tile / choose_weight_tile pick a conv's tile (and a weight gradient's reduction
splits) from the output's shape by rules written without a GPU at hand: no rule sees the card's
caches, its occupancy limits or the gathers' real cost. With CNNDSL_CUDA_TUNE=on, the first
launch of each convolution or dense layer (when its launch is prepared, before the first step)
runs every candidate tile of its family on scratch outputs, times it on the GPU, and keeps the
fastest; the choice is written to a JSON file under cnndsl's cache folder, keyed by the GPU and
the launch's shape, so that later runs on that GPU read it and compile only the chosen kernels.

CNNDSL_CUDA_TUNE:
  cached  (default) use the choices measured earlier on this GPU; measure nothing
  on      measure every launch no choice is remembered for, and remember it
  off     the shape rules alone (the file is neither read nor written)

Measuring costs the candidates' compilation (1-3 s per generated kernel and candidate tile:
docs/cuda.md) on the first run, hence off by default, as PyTorch leaves cudnn.benchmark off.
Trials write scratch buffers only, so a layer whose output is also an input (an in-place
residual) is not disturbed, and the choice changes which kernel computes the result, never the
result beyond float32 summation order (every tile is tested against the NumPy references).

The file is named after the kernel sources' fingerprint (kernel_cache.fingerprint): a change
to any kernel starts from no choices. A file that cannot be read or parsed counts as empty and
is replaced by the next measurement; it is written atomically, re-read and merged first, so two
processes tuning at once (MPI ranks) lose nothing but each other's simultaneous entries.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from cnndsl.kernels.cuda.shim import SIMULATOR, cuda, env_policy

ENV = "CNNDSL_CUDA_TUNE"
POLICIES = ("cached", "on", "off")
VERSION = 1


def policy() -> str:
    return env_policy(ENV, POLICIES, "cached")


@dataclass(frozen=True)
class Choice:
    tile: str
    splits: int = 1  # a weight gradient's reduction splits (1 for the other modes)

    def label(self) -> str:
        return self.tile if self.splits == 1 else f"{self.tile}/{self.splits}"


def path():
    from cnndsl.kernel_cache import cache_root, fingerprint

    return cache_root() / "cuda_tune" / f"{fingerprint()}.json"


def device_key() -> str:
    """The GPU the choices hold for: its name and compute capability."""
    if SIMULATOR:
        return "simulator"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    return f"{name} cc{dev.compute_capability[0]}.{dev.compute_capability[1]}"


def _read(file) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("devices"), dict):
        return {}
    return data["devices"]


class _Memory:
    """The choices of this process's GPU: loaded from the file once, added to as measured."""

    def __init__(self):
        self.loaded = False
        self.file = self.device = None  # path() and device_key(), found once: path() hashes the kernel sources
        self.entries: dict[str, dict] = {}
        self.used: dict[str, dict] = {}  # the launches this process chose for from remembered or measured times

    def load(self) -> dict[str, dict]:
        if not self.loaded:
            self.file, self.device = path(), device_key()
            got = _read(self.file).get(self.device, {})
            self.entries = got if isinstance(got, dict) else {}
            self.loaded = True
        return self.entries

    def remember(self, key: str, entry: dict) -> None:
        from cnndsl.io.atomic import atomic_write_text

        self.load()[key] = entry
        devices = _read(self.file)
        mine = devices.get(self.device)
        mine = dict(mine) if isinstance(mine, dict) else {}
        mine[key] = entry
        devices[self.device] = mine
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.file, json.dumps({"version": VERSION, "devices": devices}, indent=1, sort_keys=True))
        except OSError:
            pass  # an unwritable cache folder: the choice holds for this process only


MEMORY = _Memory()


def seconds_per_call(run: Callable[[], None]) -> float:
    """The GPU time of one call of `run`, which launches kernels: after two calls (compilation
    and the prepared launch's fast path), the best of three rounds of back-to-back calls between
    CUDA events, each round at least a millisecond long (or 64 calls). Under the simulator, the
    host time of one call (the figures mean nothing there; tests replace this function)."""
    run()
    run()
    if SIMULATOR:
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0
    cuda.synchronize()
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    reps, best = 1, float("inf")
    for _ in range(3):
        while True:
            start.record()
            for _ in range(reps):
                run()
            end.record()
            end.synchronize()
            ms = cuda.event_elapsed_time(start, end)
            if ms >= 1.0 or reps >= 64:
                break
            reps = min(64, reps * 4)
        best = min(best, ms / reps)
    return best / 1e3


measure = seconds_per_call  # tests replace it with a fake timer


def remembered(key: str) -> str | None:
    """The label of the choice remembered for the launch `key` on this GPU (None: none), under
    any policy but "off"."""
    if policy() == "off":
        return None
    known = MEMORY.load().get(key)
    return known.get("choice") if isinstance(known, dict) else None


def pick(key: str, candidates: list[Choice], default: Choice,
         trial: Callable[[Choice], Callable[[], None]]) -> Choice:
    """The choice for the launch `key` (its mode, operand orders and geometry): remembered,
    measured over `candidates` (each `trial(choice)` a no-argument launch writing scratch
    buffers only), or `default` (the shape rules), as the policy says. A remembered choice that
    is no longer a candidate is measured again (or ignored, under "cached")."""
    mode = policy()
    if mode == "off":
        return default
    known = MEMORY.load().get(key)
    if isinstance(known, dict):
        hit = next((c for c in candidates if c.label() == known.get("choice")), None)
        if hit is not None:
            MEMORY.used[key] = known
            return hit
    if mode == "cached":
        return default
    times, failed = {}, {}
    for c in dict.fromkeys([default, *candidates]):  # the default first: it must work
        try:
            times[c] = measure(trial(c))
        except Exception as e:  # a candidate the card cannot launch (resources): not a choice
            if c == default:
                raise
            failed[c.label()] = f"{type(e).__name__}: {e}"[:200]
    best = min(times, key=times.get)
    entry = {"choice": best.label(), "default": default.label(),
             "us": {c.label(): round(t * 1e6, 2) for c, t in times.items()}, "failed": failed}
    MEMORY.remember(key, entry)
    MEMORY.used[key] = entry
    return best
