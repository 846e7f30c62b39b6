"""Where Numba keeps the compiled kernels: a directory named after a fingerprint of their sources.

Numba's on-disk cache checks only the timestamp of the file that defines a function, not of the
files its callees come from (numba issues #8926, #8851). A kernel in fused.py that inlines a
helper from conv.py therefore stays cached after conv.py changes, and the stale machine code can
compute garbage or crash. Keying the cache directory on the contents of every file that defines
kernels makes any change start from a fresh cache, while unchanged sources keep hitting it.

NUMBA_CACHE_DIR, when the user sets it, wins; so does an unwritable home (Numba's default then).
Old fingerprints (10 to 20 MB each) are removed once they are both beyond the KEEP most recently
used and unused for STALE_DAYS, so that upgrades do not pile them up and a second installation
still in use keeps its own.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Every file that defines or inlines @njit code (the CUDA kernels too: one fingerprint for all).
KERNEL_SOURCES = ("kernels/**/*.py", "augment/kernels.py", "train/optim.py")
KEEP = 4
STALE_DAYS = 7


def fingerprint() -> str:
    digest = hashlib.sha256()
    for pattern in KERNEL_SOURCES:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    # the cached code is only valid for the Numba that compiled it (read without importing it)
    digest.update(importlib.metadata.version("numba").encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnndsl" / "numba" / fingerprint()


def configure() -> None:
    """Point Numba at the fingerprinted directory unless NUMBA_CACHE_DIR is set already."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    try:
        path = default_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        os.utime(path)  # "last used", for prune_old
    except OSError:
        return  # read-only home: Numba's own default (beside the sources, or its user dir)
    prune_old(path.parent)
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    if "numba" in sys.modules:  # imported before cnndsl: it has read its settings already
        import numba.core.config

        numba.core.config.CACHE_DIR = str(path)


def prune_old(root: Path, keep: int = KEEP, stale_days: float = STALE_DAYS) -> list[Path]:
    """Remove the fingerprint directories under root beyond the `keep` most recently used that
    nobody has used for `stale_days`; returns what it removed (errors leave a directory be)."""
    try:
        dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []
    cutoff = time.time() - stale_days * 86400
    removed = []
    for old in dirs[keep:]:
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old)
                removed.append(old)
        except OSError:
            pass
    return removed
