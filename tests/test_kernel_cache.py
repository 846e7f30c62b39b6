"""The Numba cache directory: keyed on the kernel sources, overridable, pruned of old fingerprints."""
from __future__ import annotations

import os
import time
from pathlib import Path

from cnndsl import kernel_cache


def test_the_fingerprint_follows_the_kernel_sources(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "kernels" / "cpu").mkdir(parents=True)
    source = package / "kernels" / "cpu" / "conv.py"
    source.write_text("x = 1\n")
    monkeypatch.setattr(kernel_cache, "PACKAGE", package)
    first = kernel_cache.fingerprint()
    assert kernel_cache.fingerprint() == first  # stable
    source.write_text("x = 2\n")
    assert kernel_cache.fingerprint() != first  # any edit of a kernel file: a fresh cache


def test_a_user_set_cache_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kernel_cache.configure()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
    assert not (tmp_path / "xdg").exists()


def test_old_fingerprints_are_pruned_but_recent_or_newest_ones_stay(tmp_path):
    now = time.time()
    ages_days = {"a": 0, "b": 1, "c": 30, "d": 40, "e": 50, "f": 2, "g": 60}
    for name, age in ages_days.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.nbi").write_text("")
        os.utime(tmp_path / name, (now - age * 86400, now - age * 86400))
    removed = kernel_cache.prune_old(tmp_path, keep=4, stale_days=7)
    # newest four: a, b, f, c; of the rest, d, e and g are stale
    assert sorted(p.name for p in removed) == ["d", "e", "g"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "f"]


def _without_boundscheck(monkeypatch):
    import numba.core.config

    monkeypatch.delenv("NUMBA_BOUNDSCHECK", raising=False)
    monkeypatch.setattr(numba.core.config, "BOUNDSCHECK", None)  # as when the variable is unset


def test_the_bounds_checked_build_has_a_fingerprint_of_its_own(monkeypatch):
    # Numba's cache index leaves the boundscheck setting out: one folder would mix the two builds
    _without_boundscheck(monkeypatch)
    unchecked = kernel_cache.fingerprint()
    monkeypatch.setenv("NUMBA_BOUNDSCHECK", "0")
    assert kernel_cache.fingerprint() == unchecked
    monkeypatch.setenv("NUMBA_BOUNDSCHECK", "1")
    assert kernel_cache.boundscheck()
    assert kernel_cache.fingerprint() != unchecked
    monkeypatch.setenv("NUMBA_BOUNDSCHECK", "yes")  # not an integer: Numba leaves the checks off
    assert kernel_cache.fingerprint() == unchecked


def test_a_bounds_checked_process_with_numba_imported_masks_its_threads(tmp_path, monkeypatch):
    import numba

    calls = []
    monkeypatch.setattr(numba, "set_num_threads", calls.append)
    monkeypatch.setenv("NUMBA_BOUNDSCHECK", "1")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    kernel_cache.configure()
    assert calls == [1]
    # changing the variable after Numba's threads started would make its next compilation raise
    assert "NUMBA_NUM_THREADS" not in os.environ


OOB_MODULE = '''
import numpy as np
from numba import njit, prange


@njit(cache=True)
def serial(a, idx):
    s = 0.0
    for i in range(idx.shape[0]):
        s += a[idx[i]]
    return s


@njit(cache=True, parallel=True)
def parallel(a, idx, out):
    for i in prange(idx.shape[0]):
        out[i] = a[idx[i]]
'''

OOB_SCRIPT = '''
import json, os, sys
import cnndsl  # chooses the cache folder and the threads before Numba's import
import numpy as np
sys.path.insert(0, sys.argv[1])
import oob_probe

idx = np.zeros(1000, np.int64)
idx[-1] = int(sys.argv[2])  # the last iteration: a worker thread's share of the prange
res = {"cache_dir": os.environ.get("NUMBA_CACHE_DIR"), "threads": os.environ.get("NUMBA_NUM_THREADS")}
for name, args in (("serial", ()), ("parallel", (np.zeros(1000),))):
    try:
        getattr(oob_probe, name)(np.zeros(3), idx, *args)
        res[name] = "ok"
    except Exception as e:  # in a prange: SystemError raised from the IndexError
        res[name] = " ".join(type(x).__name__ for x in (e, e.__cause__) if x is not None)
res["hits"] = sum(oob_probe.serial.stats.cache_hits.values())
print(json.dumps(res))
'''


def test_a_bounds_checked_run_checks_even_after_an_unchecked_run_cached_the_code(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "oob_probe.py").write_text(OOB_MODULE)
    script = tmp_path / "probe.py"
    script.write_text(OOB_SCRIPT)
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(root), XDG_CACHE_HOME=str(tmp_path / "cache"))

    def probe(index, **extra):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "mod"), str(index)],
                              env=dict(env, **extra), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    unchecked = probe(2)  # in bounds: compiles and caches the unchecked code
    assert (unchecked["serial"], unchecked["parallel"], unchecked["hits"]) == ("ok", "ok", 0)
    checked = probe(5, NUMBA_BOUNDSCHECK="1")
    assert checked["cache_dir"] != unchecked["cache_dir"]
    assert checked["threads"] == "1"
    assert checked["serial"] == "IndexError"
    assert "IndexError" in checked["parallel"]  # not lost on a worker thread
    again = probe(2)  # the unchecked cache is still the unchecked code, and still used
    assert again["cache_dir"] == unchecked["cache_dir"] and again["hits"] == 1


# One small kernel called in a fresh process; prints where cnndsl came from and how many functions
# Numba compiled.
_ONE_KERNEL = """
import json, sys
import numpy as np
import cnndsl
from cnndsl.backend.compile_events import counting
from cnndsl.kernels.cpu.optim import sgd_step

a = np.ones(8, np.float32)
with counting() as c:
    sgd_step(a, a.copy(), np.zeros(1, np.float32), a.copy(), a.copy(), np.float32(0.1), np.float32(0),
             np.float32(1), np.float32(0), False, True)
print(json.dumps({"package": cnndsl.__file__, "compiled": c.count,
                  "cache": __import__("numba").core.config.CACHE_DIR}))
"""


def test_two_installations_share_one_cache(tmp_path):
    """Numba names a function's cache subfolder after the absolute path of its source folder, so a
    cache filled by one installation (venv) was not read by another; kernel_cache files cnndsl's
    kernels by their package-relative folder and the fingerprint. Two copies of the package in two
    folders, one cache home: the second copy compiles nothing."""
    import json
    import shutil
    import subprocess
    import sys

    source = kernel_cache.PACKAGE
    runs = []
    for name in ("venv_a", "venv_b"):
        root = tmp_path / name
        shutil.copytree(source, root / "cnndsl", ignore=shutil.ignore_patterns("__pycache__"))
        env = dict(os.environ, PYTHONPATH=str(root), XDG_CACHE_HOME=str(tmp_path / "home_cache"))
        for variable in ("NUMBA_CACHE_DIR", "NUMBA_BOUNDSCHECK", "NUMBA_CACHE_LOCATOR_CLASSES"):
            env.pop(variable, None)
        done = subprocess.run([sys.executable, "-c", _ONE_KERNEL], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[0]["package"].startswith(str(tmp_path / "venv_a")), runs
    assert runs[1]["package"].startswith(str(tmp_path / "venv_b")), runs
    assert runs[0]["cache"] == runs[1]["cache"], runs  # one fingerprint: the same sources
    assert runs[0]["compiled"] >= 1 and runs[1]["compiled"] == 0, runs
    # named after the package-relative folders (kernels.cpu; kernels, for the activations' helpers)
    fingerprint = Path(runs[0]["cache"]).name
    subfolders = sorted(p.name for p in Path(runs[0]["cache"]).iterdir() if p.is_dir())
    assert f"cnndsl_kernels.cpu_{fingerprint}" in subfolders, subfolders
    assert all(name.startswith("cnndsl_") and name.endswith("_" + fingerprint) for name in subfolders), subfolders


def test_functions_outside_the_package_keep_numbas_own_folders(tmp_path):
    assert kernel_cache.package_subfolder(str(tmp_path / "mine.py")) is None
    inside = kernel_cache.package_subfolder(str(kernel_cache.PACKAGE / "kernels" / "cpu" / "conv.py"))
    assert inside == f"cnndsl_kernels.cpu_{kernel_cache.cached_fingerprint()}"


def test_the_locator_goes_into_numba_cudas_copy_of_the_caching_code(tmp_path):
    """numba-cuda keeps its own copy of Numba's caching code (numba.cuda.core.caching: the
    locator `_UserProvidedCacheLocator`, a config without CACHE_LOCATOR_CLASSES); install_locator
    puts the package-relative locator at the head of that copy's list too, once. A stand-in for
    the module: numba-cuda is not installed here (its own check ran with numba-cuda 0.30.4,
    docs/cuda.md, "Kept between processes")."""
    import types

    class Base:
        def __init__(self, py_func, py_file):
            self._cache_path = "numba's own"

        @classmethod
        def from_function(cls, py_func, py_file):
            return cls(py_func, py_file)

    class CacheImpl:
        _locator_classes = [Base]

    caching = types.SimpleNamespace(CacheImpl=CacheImpl, _UserProvidedCacheLocator=Base)
    config = types.SimpleNamespace(CACHE_DIR=str(tmp_path))
    kernel_cache.install_locator(caching, config)
    kernel_cache.install_locator(caching, config)  # once only
    classes = CacheImpl._locator_classes
    assert [c.__name__ for c in classes] == ["PackageCacheLocator", "Base"]
    inside = str(kernel_cache.PACKAGE / "kernels" / "cuda" / "gemm.py")
    found = classes[0].from_function(None, inside)
    assert found._cache_path == str(tmp_path / f"cnndsl_kernels.cuda_{kernel_cache.cached_fingerprint()}")
    assert classes[0].from_function(None, str(tmp_path / "generated.py")) is None  # left to numba's own
    config.CACHE_DIR = ""
    assert classes[0].from_function(None, inside) is None


def test_prelink_passes_skipped_only_when_asked_with_a_fingerprint_of_their_own(monkeypatch):
    monkeypatch.delenv("CNNDSL_PRELINK_PASSES", raising=False)
    assert not kernel_cache.prelink_passes_skipped()
    numbas = kernel_cache.fingerprint()
    monkeypatch.setenv("CNNDSL_PRELINK_PASSES", "0")  # other machine code: another folder
    assert kernel_cache.prelink_passes_skipped()
    assert kernel_cache.fingerprint() != numbas


PRELINK = """
import os, sys
import numpy as np
from numba import njit
from numba.core import codegen
import cnndsl.kernels.cpu
@njit
def total(a):
    s = 0.0
    for i in range(a.size):
        s += a[i] * 2.0
    return s
print(getattr(codegen.CPUCodeLibrary._optimize_functions, "_cnndsl_skips_prelink", False),
      total(np.arange(10.0)))
"""


def test_the_passes_skipped_when_asked_and_the_same_results_either_way(tmp_path):
    import subprocess
    import sys

    out = {}
    for value in ("", "0"):
        env = dict(os.environ, CNNDSL_PRELINK_PASSES=value, NUMBA_CACHE_DIR=str(tmp_path))
        done = subprocess.run([sys.executable, "-c", PRELINK], capture_output=True, text=True, env=env, timeout=300,
                              cwd=str(Path(__file__).resolve().parents[1]))
        assert done.returncode == 0, done.stderr
        out[value] = done.stdout.split()
    assert out[""] == ["False", "90.0"] and out["0"] == ["True", "90.0"]
