"""The shared parallel loop (cnndsl/kernels/cpu/parallel.py): kernels run their items through one
compiled prange loop instead of one of their own (docs/performance.md, "One parallel loop").
What must hold: every item runs exactly once, with its arguments, for any count (0, 1, fewer or
more than the threads); `chunks` covers every unit; two kernels share the one loop; a kernel
loaded from the cache in a fresh process finds the item's entry and the thread count installed
(and compiles nothing); and under NUMBA_BOUNDSCHECK an out-of-bounds index in an item reaches
the caller as IndexError. The kernels that use it are checked against their references in
their own tests (pool, activation, dropout, conv, dense, blas)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULE = '''
import numpy as np
from cnndsl.kernels.cpu.common import kernel
from cnndsl.kernels.cpu.parallel import chunks, parallel_items

@kernel
def add_item(t, per, out, v, n):
    for i in range(t * per, min((t + 1) * per, n)):
        out[i] += v * (i + 1)

add_items = parallel_items(add_item)

@kernel
def count_item(t, hits):
    hits[t] += 1

count_items = parallel_items(count_item)

@kernel
def run_add(out, v, n):
    items, per = chunks(n)
    add_items(items, per, out, v, n)
    return items, per

@kernel
def run_count(hits):
    count_items(hits.size, hits)
'''

RUN = '''
import sys
import numpy as np
sys.path.insert(0, {folder!r})
from cnndsl.backend.compile_events import counting
import par_mod as m
ok = True
with counting() as c:
    for n in (0, 1, 2, 3, 7, 100, 1001):
        out = np.zeros(max(n, 1), np.float32)
        items, per = m.run_add(out, np.float32(2.0), n)
        want = 2.0 * np.arange(1, max(n, 1) + 1, dtype=np.float32) * (np.arange(max(n, 1)) < n)
        ok &= bool(np.array_equal(out, want)) and items * per >= n and (n == 0 or (items - 1) * per < n)
    for n in (1, 5, 64):
        hits = np.zeros(n, np.int64)
        m.run_count(hits)
        ok &= bool((hits == 1).all())
from cnndsl.kernels.cpu import parallel
print("RESULT", c.count, ok, len(parallel._launch.signatures))
'''


def _run(tmp_path: Path, cache: Path, env_extra: dict | None = None) -> tuple[int, bool, int]:
    (tmp_path / "par_mod.py").write_text(MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("NUMBA_BOUNDSCHECK", None)
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", RUN.format(folder=str(tmp_path))], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1].split()
    return int(line[1]), line[2] == "True", int(line[3])


def test_items_run_once_each_and_share_one_loop_across_processes(tmp_path):
    cache = tmp_path / "cache"
    compiled, ok, launches = _run(tmp_path, cache)
    assert ok
    assert compiled > 0 and launches == 1  # both kernels' items ran through the one compiled loop
    compiled, ok, launches = _run(tmp_path, cache, {"NUMBA_NUM_THREADS": "2"})
    assert ok and compiled == 0  # loaded: the item entries and the thread count installed by reload_init


def test_one_thread(tmp_path):
    compiled, ok, _ = _run(tmp_path, tmp_path / "cache1", {"NUMBA_NUM_THREADS": "1"})
    assert ok


BOUNDS = '''
import sys
import numpy as np
sys.path.insert(0, {folder!r})
import par_mod as m
out = np.zeros(10, np.float32)
try:
    m.run_add(out, np.float32(1.0), 11)  # n past out's end: the last item writes out[10]
    print("RESULT no error")
except IndexError as e:
    print("RESULT IndexError")
'''


def test_an_index_out_of_bounds_in_an_item_is_an_index_error_when_checked(tmp_path):
    (tmp_path / "par_mod.py").write_text(MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), NUMBA_BOUNDSCHECK="1")
    done = subprocess.run([sys.executable, "-c", BOUNDS.format(folder=str(tmp_path))], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT IndexError" in done.stdout, done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 100])
def test_chunks_cover_every_unit(n):
    import numba

    from cnndsl.kernels.cpu.parallel import chunks

    items, per = chunks(n)
    assert (items == 0) == (n == 0) and items <= max(1, numba.get_num_threads()) and per >= 1
    assert items * per >= n and (n == 0 or (items - 1) * per < n)
