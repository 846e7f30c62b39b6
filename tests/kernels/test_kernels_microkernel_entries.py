"""The tiles' C entries (microkernel.call_tile): the direct convolution calls each tile class by
address, from a table each process fills, so that no caller compiles the tiles again
(docs/performance.md, "Compile time"). What must hold: the call computes what the tile does, and
machine code loaded from the cache finds the table filled in a fresh process, including code
compiled in a process that had loaded its callee from the cache (kernel_cache.keep_reload_init)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from kernels_testutil import assert_close, f32

from cnndsl.kernels.cpu import direct as DR
from cnndsl.kernels.cpu import microkernel as M

ROOT = Path(__file__).resolve().parents[2]


def _tile_case(rng, vf, code, k=13):
    """Arguments of one call (two tiles, every base moved between them, rows interleaved) and the
    output the NumPy statement gives, as in test_kernels_direct_conv's tile test."""
    rb = code % M.TABLE
    xf = f32(rng.standard_normal(460))
    wf = f32(rng.standard_normal(70 + 3 + (k + 1) * vf))
    xoffs = rng.integers(0, 300, k).astype(np.int64)
    xro = rng.integers(0, 80, rb).astype(np.int64)
    woffs = rng.integers(0, 60, k).astype(np.int64)
    init = f32(rng.standard_normal(7 + 2 + rb * (vf + 5)))
    out = np.full(11 + vf + 2 + rb * (2 * vf + 4), np.nan, np.float32)
    args = (xf, 9, xoffs, xro, wf, 5, woffs, k, init, 7, vf + 5, out, 11, 2 * vf + 4, 2, 37, 3, 2, vf + 2)
    expected = out.copy()
    M.reference_tile(code, vf, *args[:11], expected, *args[12:])
    return tuple(np.int64(a) if isinstance(a, int) else a for a in args), out, expected


@pytest.mark.parametrize("vf", sorted(M.SHAPES))
def test_every_tile_through_its_c_entry(vf):
    """direct._tile (the path the convolutions take) reaches the right class and tile for every
    code: a wrong table slot, a swapped argument or a pointer taken from the wrong array fails."""
    rng = np.random.default_rng(100 + vf)
    M.require(vf)  # as the launchers do: on AVX2 the VF 32 class is installed only on demand
    codes = list(range(1, M.MAX_RB[vf] + 1))
    codes += [M.TABLE + rb for rb in range(1, M.PV_MAX_RB + 1)] if vf in M.PV_SHAPES else []
    for code in codes:
        args, out, expected = _tile_case(rng, vf, code)
        DR._tile(np.int64(vf), np.int64(code), *args)
        written = ~np.isnan(expected)
        assert np.array_equal(~np.isnan(out), written), f"tile {code} x {vf} wrote outside its rows"
        assert_close(out[written], expected[written], what=f"tile {code} x {vf} through its C entry")


def test_only_the_planned_classes_are_installed_until_asked_for():
    """install_entries' default: the classes this CPU's plans use (on AVX2 not VF 32, whose entry
    costs a second of a cold compile); require installs any other on demand."""
    assert M.PLANNED_VFS == tuple(vf for vf in M.ENTRY_VFS if vf <= M.VF_MAX)
    assert 8 in M.PLANNED_VFS and 16 in M.PLANNED_VFS and (32 in M.PLANNED_VFS) == (M.VECTOR_LANES >= 16)
    M.install_entries()
    assert all(M._ENTRIES[M.ENTRY_VFS.index(vf)] for vf in M.PLANNED_VFS)
    M.require(32)
    assert M._ENTRIES[M.ENTRY_VFS.index(32)]


def test_the_table_holds_each_class_entry():
    """Three distinct C functions, one per class, in the table's order."""
    addrs = [M.entry_address(vf) for vf in M.ENTRY_VFS]
    assert all(addrs) and len(set(addrs)) == len(addrs)
    for vf, addr in zip(M.ENTRY_VFS, addrs):
        cres = M.TILES[vf].overloads[M.ENTRY_SIG.args]
        assert addr == cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)


CALLER = '''
from numba import njit
from cnndsl.kernels.cpu import direct

@njit(cache=True)
def outer(vf, code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep, xstep, wstep,
          istep, ostep):
    direct._tile(vf, code, xf, xbase, xoffs, xro, wf, wbase, woffs, K, init, ioff, irs, out, ooff, ors, nrep,
                 xstep, wstep, istep, ostep)
'''

RUN = '''
import sys
import numpy as np
sys.path.insert(0, {tests!r})
sys.path.insert(0, {folder!r})
from test_kernels_microkernel_entries import _tile_case
from cnndsl.backend.compile_events import counting
rng = np.random.default_rng(7)
args, out, expected = _tile_case(rng, {vf}, 5)
with counting() as c:
    if {direct}:
        from cnndsl.kernels.cpu import direct
        direct._tile(np.int64({vf}), np.int64(5), *args)
    else:
        import caller
        caller.outer(np.int64({vf}), np.int64(5), *args)
w = ~np.isnan(expected)
print("RESULT", c.count, bool(np.array_equal(~np.isnan(out), w) and np.allclose(out[w], expected[w], 1e-4, 1e-5)))
'''


def test_a_cached_caller_runs_in_a_fresh_process(tmp_path):
    """Three processes on one empty cache: the first compiles direct._tile (and the C entries);
    the second compiles a caller of it against the cached _tile; the third runs that caller first
    thing, loaded from the cache. Before kernel_cache.keep_reload_init the second process saved
    the caller without _tile's reload_init, and the third died: "tile entries not installed"."""
    (tmp_path / "caller.py").write_text(textwrap.dedent(CALLER))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    env.pop("CNNDSL_COMPILE_WORKERS", None)
    counts = []
    for step, direct in (("compiles _tile", True), ("compiles the caller", False), ("loads the caller", False)):
        # the widest class this CPU's plans use (the table's slots for the others may stay empty)
        code = RUN.format(tests=str(Path(__file__).parent), folder=str(tmp_path), direct=direct,
                          vf=M.PLANNED_VFS[-1])
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{step}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1].split()
        assert line[2] == "True", f"{step}: wrong tile result"
        counts.append(int(line[1]))
    assert counts[0] > 0 and counts[1] == 1 and counts[2] == 0, counts
