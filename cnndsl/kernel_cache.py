"""Where Numba keeps the compiled kernels: a directory named after a fingerprint of their sources.

Numba's on-disk cache checks only the timestamp of the file that defines a function, not of the
files its callees come from (numba issues #8926, #8851). A kernel in fused.py that inlines a
helper from conv.py therefore stays cached after conv.py changes, and the stale machine code can
compute garbage or crash. Keying the cache directory on the contents of every file that defines
kernels makes any change start from a fresh cache, while unchanged sources keep hitting it.

Bounds checking (NUMBA_BOUNDSCHECK=1) gets a fingerprint of its own. Numba's cache index key is
the signature, the CPU and the bytecode (numba/core/caching.py, `_index_key`, 0.68): it leaves the
boundscheck setting out, so a checked run sharing the folder loaded the unchecked machine code and
let an out-of-bounds read through, and an unchecked run after it loaded the slower checked code
(both seen with a one-line @njit(cache=True) function). The unchecked fingerprint is unchanged.
A checked run also gets one Numba thread unless NUMBA_NUM_THREADS is set: an IndexError raised in a
prange region on a worker thread is lost (set in that thread's Python state; 5 of 11 out-of-bounds
positions went unreported with 2 threads, none with 1).

Two installations of the same sources share their cache (`install_locator`). Numba files each
function under a subfolder named after the absolute path of its source folder
(numba/core/caching.py, `get_suitable_cache_subpath`, 0.68), so a cache one venv filled was never
read by another (a `pip install .` elsewhere, a CI checkout in another folder, a tox env) even
though the fingerprint folder above it was the same. cnndsl's own files are filed instead under
their folder relative to the package plus the fingerprint (`cnndsl_kernels.cpu_<fingerprint>`);
Numba's index still checks a hash of the defining file's contents, and its key the CPU and the
bytecode, so nothing is reused that would not be valid. The fingerprint in the subfolder also
keeps stale callees apart when the user's NUMBA_CACHE_DIR (not fingerprinted) is used. No cache
is shipped in the wheel: Numba's key holds the exact CPU, and pip does not keep the files' times.

NUMBA_CACHE_DIR, when the user sets it, wins; so does an unwritable home (Numba's default then).
Old fingerprints (10 to 20 MB each) are removed once they are both beyond the KEEP most recently
used and unused for STALE_DAYS, so that upgrades do not pile them up and a second installation
still in use keeps its own.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import shutil
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Every file that defines or inlines @njit code (the CUDA kernels too: one fingerprint for all).
# (train/optim.py is not one: its step kernels moved to kernels/cpu/optim.py, and editing the
# optimizer classes must not make every kernel compile cold.)
KERNEL_SOURCES = ("kernels/**/*.py", "augment/kernels.py")
KEEP = 4
STALE_DAYS = 7


def boundscheck() -> bool:
    """Whether Numba compiles with bounds checks: NUMBA_BOUNDSCHECK set to a non-zero integer (the
    compiler re-reads the environment before each compilation), or numba.config.BOUNDSCHECK set
    in a process that imported Numba."""
    try:
        env = bool(int(os.environ.get("NUMBA_BOUNDSCHECK", "") or 0))
    except ValueError:
        env = False  # Numba warns about the bad value itself and leaves the checks off
    numba_config = sys.modules.get("numba.core.config")
    return env or bool(numba_config is not None and numba_config.BOUNDSCHECK)


def fingerprint() -> str:
    digest = hashlib.sha256()
    for pattern in KERNEL_SOURCES:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    # the cached code is only valid for the Numba that compiled it (read without importing it)
    digest.update(importlib.metadata.version("numba").encode())
    if boundscheck():  # the checked code apart (see the module docstring); unchecked: as before
        digest.update(b"\0NUMBA_BOUNDSCHECK=1")
    if prelink_passes_skipped():  # LLVM's per-function passes skipped: other machine code, its own folder
        digest.update(b"\0CNNDSL_PRELINK_PASSES=0")
    return digest.hexdigest()[:16]


_FINGERPRINTS: dict[bool, str] = {}


def cached_fingerprint() -> str:
    """fingerprint(), computed once per process for each bounds-check setting."""
    checked = boundscheck()
    if checked not in _FINGERPRINTS:
        _FINGERPRINTS[checked] = fingerprint()
    return _FINGERPRINTS[checked]


def package_subfolder(py_file: str) -> str | None:
    """The cache subfolder of a function defined in py_file: `cnndsl_<folder relative to the
    package, dotted>_<fingerprint>`, or None for a file outside this package."""
    dotted = _package_folder(py_file)
    return None if dotted is None else f"cnndsl_{dotted}_{cached_fingerprint()}"


@functools.lru_cache(maxsize=None)
def _package_folder(py_file: str) -> str | None:
    """py_file's folder relative to the package, dotted. Asked twice for every kernel as it is
    defined (two path resolutions each): 45 ms of a 1.1 s warm start before this cache (312
    calls, Xeon, 2026-12-03)."""
    try:
        rel = Path(py_file).resolve().parent.relative_to(PACKAGE)
    except (OSError, ValueError):
        return None
    return ".".join(rel.parts) or "."


def install_locator(caching=None, config=None) -> None:
    """Make Numba file cnndsl's cached kernels by package-relative folder (see the module
    docstring), ahead of its own locators; functions outside the package are left to those. Done
    once, by cnndsl.kernels.cpu before any kernel is defined; and for numba-cuda's own copy of
    the caching code (`caching`, `config`: numba.cuda.core's), by cnndsl.kernels.cuda.common when
    CNNDSL_CUDA_CACHE is on, so that a user's NUMBA_CACHE_DIR also keeps the CUDA kernels of other
    sources apart. Nothing is changed when the user chose locators (NUMBA_CACHE_LOCATOR_CLASSES)
    or this Numba lacks the hook: the cache then works as before, per installation."""
    if caching is None:
        from numba.core import caching, config

    impl = getattr(caching, "CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    base = getattr(caching, "UserProvidedCacheLocator", None) or getattr(caching, "_UserProvidedCacheLocator", None)
    if getattr(config, "CACHE_LOCATOR_CLASSES", None) or not isinstance(classes, list) or base is None:
        return
    if any(getattr(c, "__name__", "") == "PackageCacheLocator" for c in classes):
        return

    class PackageCacheLocator(base):
        """Numba's locator for a user-given cache folder, with a subfolder that does not depend
        on where cnndsl is installed."""

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = os.path.join(config.CACHE_DIR, package_subfolder(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if not config.CACHE_DIR or package_subfolder(py_file) is None:
                return None  # Numba's own locators decide
            return super().from_function(py_func, py_file)

    classes.insert(0, PackageCacheLocator)


def keep_reload_init() -> None:
    """Make a function loaded from the cache pass its `reload_init` on to the functions compiled
    against it. Numba runs a cached function's reload_init (callables that set up what its machine
    code needs in this process) before loading it, and a caller inherits its callees' when it is
    compiled, but only from callees compiled in the same process: a callee loaded from the cache
    gets a library with none (numba/core/compiler.py, CompileResult._rebuild, 0.68). So a caller
    compiled against a cached callee was saved without them, and a later process that loaded that
    caller first skipped them. microkernel.call_tile relies on it (its table of C entries), as do
    Numba's parallel regions (`_reload_parfors` starts the thread pool). Done once, by
    cnndsl.kernels.cpu; nothing is changed when this Numba lacks the hook."""
    from numba.core import compiler

    cls = compiler.CompileResult
    rebuild = cls.__dict__.get("_rebuild")
    if not isinstance(rebuild, classmethod) or getattr(rebuild.__func__, "_cnndsl_keeps_reload_init", False):
        return
    import inspect

    params = inspect.signature(rebuild.__func__).parameters
    if "reload_init" not in params:
        return
    at = list(params).index("reload_init") - 1  # less cls

    def _rebuild(klass, *args, **kwargs):
        cr = rebuild.__func__(klass, *args, **kwargs)
        fns = kwargs["reload_init"] if "reload_init" in kwargs else args[at] if len(args) > at else None
        if fns:
            cr.library._reload_init.update(fns)
        return cr

    _rebuild._cnndsl_keeps_reload_init = True
    cls._rebuild = classmethod(_rebuild)


def prelink_passes_skipped() -> bool:
    """Whether skip_prelink_passes applies: only with CNNDSL_PRELINK_PASSES=0."""
    return os.environ.get("CNNDSL_PRELINK_PASSES", "") == "0"


def skip_prelink_passes() -> None:
    """With CNNDSL_PRELINK_PASSES=0, optimize each compiled function once, not twice. Numba runs
    LLVM's O3 function pipeline on every function of a module as it is added to a library
    (CPUCodeLibrary._optimize_functions, numba/core/codegen.py, 0.68), then links the callees'
    modules in and runs the O3 module pipeline over the whole, which runs the function pipeline
    again after inlining; this skips the first run. Off by default, because what it saves is
    smaller than what it costs a latency-bound user (docs/performance.md, "One parallel loop,
    and LLVM's per-function passes"): LeNet-5's cold first step compiled in 19.4 to 22.4 CPU s
    instead of 20.3 to 24.9 (one process, three alternated triples, with the shared parallel
    loop; 5.5 s saved before it), while LeNet-5's batch-1 inference took 37 to 38 us instead of
    35 to 36 (best of 60, five alternated pairs): smaller callees, not yet simplified, inline
    differently. The data layout the skipped method set is kept. Every CPU function the process
    compiles is affected (Numba's parallel regions, a user's own @njit); what the code computes
    does not change. Done once, by cnndsl.kernels.cpu, under a fingerprint of its own; nothing is
    changed when this Numba lacks the method."""
    if not prelink_passes_skipped():
        return
    from numba.core import codegen

    cls = getattr(codegen, "CPUCodeLibrary", None)
    current = getattr(cls, "_optimize_functions", None)
    if current is None or getattr(current, "_cnndsl_skips_prelink", False):
        return

    def _optimize_functions(self, ll_module):
        ll_module.data_layout = self._codegen._data_layout

    _optimize_functions._cnndsl_skips_prelink = True
    cls._optimize_functions = _optimize_functions


def cache_root() -> Path:
    """cnndsl's folder of caches: $XDG_CACHE_HOME/cnndsl, else ~/.cache/cnndsl (the kernels under
    numba/, the parser's tables under parser/: frontend/parser.py)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnndsl"


def default_cache_dir() -> Path:
    return cache_root() / "numba" / fingerprint()


def configure() -> None:
    """Point Numba at the fingerprinted directory unless NUMBA_CACHE_DIR is set already; under
    NUMBA_BOUNDSCHECK, run Numba's parallel regions on one thread unless NUMBA_NUM_THREADS is set."""
    if boundscheck() and not os.environ.get("NUMBA_NUM_THREADS"):
        if "numba" in sys.modules:
            # Numba has read its settings: changing NUMBA_NUM_THREADS now would make its next
            # compilation raise once its threads run; mask them for this thread instead
            import numba

            numba.set_num_threads(1)
        else:
            os.environ["NUMBA_NUM_THREADS"] = "1"  # also inherited by child processes
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
