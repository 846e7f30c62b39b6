"""The Numba cache directory: keyed on the kernel sources, overridable, pruned of old fingerprints."""
from __future__ import annotations

import os
import time

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
