"""Kernels called by address (cnndsl/kernels/cpu/byaddress.py): the direct convolution's parallel
drivers call their per-image functions through a slot each process fills, so that the drivers do
not compile those functions again (docs/performance.md, "Compile time"). What must hold: the call
computes what a direct call does (the convolution tests check the drivers' results), the driver's
machine code does not contain the callee, and a driver loaded from the cache in a fresh process
finds its slot filled, also when it is reached through a caller compiled against the cached
driver (three processes on one cache)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MODULE = '''
import numpy as np
from numba import njit, prange
from cnndsl.kernels.cpu.byaddress import by_address
from cnndsl.kernels.cpu.common import kernel, parallel_kernel

@kernel
def body(a, i, v):
    for j in range(a.shape[1]):
        a[i, j] += v * j

body_at = by_address(body)

@parallel_kernel
def driver(a, v):
    for i in prange(a.shape[0]):
        body_at(a, np.int64(i), v)

@njit(cache=True)
def outer(a, v):
    driver(a, v)
    driver(a, v)
'''

RUN = '''
import re, sys
import numpy as np
sys.path.insert(0, {folder!r})
from cnndsl.backend.compile_events import counting
import byaddr_mod as m
a = np.zeros((37, 5), np.float32)
with counting() as c:
    if {step} == 0:
        m.driver(a, np.float32(2.0))
        want = 1
    else:
        m.outer(a, np.float32(2.0))
        want = 2
ir = "".join(m.driver.inspect_llvm().values()) if {step} == 0 else ""
linked = bool(re.search(r"^define[^\\n]*byaddr_mod\\d*body", ir, re.M)) or ({step} == 0 and "cnndsl_entry_" not in ir)
ok = np.array_equal(a, want * 2.0 * np.tile(np.arange(5, dtype=np.float32), (37, 1)))
print("RESULT", c.count, ok, linked)
'''


def test_a_driver_calls_its_body_by_address_and_runs_from_the_cache(tmp_path):
    """Process 1 compiles the driver (and its body) and checks the driver's LLVM IR defines no copy
    of the body and loads the body's slot (a direct call inlines the body into the parfor); process 2 compiles a caller against the cached driver; process 3 loads that
    caller from the cache and runs it first thing (the slot filled by reload_init, else the
    process would abort with "kernel entry ... not installed")."""
    (tmp_path / "byaddr_mod.py").write_text(textwrap.dedent(MODULE))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    env.pop("NUMBA_BOUNDSCHECK", None)
    counts = []
    for step, what in enumerate(("compiles the driver", "compiles the caller", "loads the caller")):
        code = RUN.format(folder=str(tmp_path), step=step)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1].split()
        assert line[2] == "True", f"{what}: wrong result"
        assert line[3] == "False", f"{what}: the driver's module defines the body (linked or inlined, not called by address)"
        counts.append(int(line[1]))
    assert counts[0] >= 2 and counts[1] == 1 and counts[2] == 0, counts

