"""What this machine lets a process use: its memory limit, and byte counts as people read them.

One place for both, used by the memory estimates (`cnndsl/analysis/memory.py`: can this model be
built?) and by the readers of user files (`cnndsl/io/files.py`: may this header make us allocate
that much?), so that the two never disagree about the machine.

The limit is the smallest of the physical memory, the cgroup's memory limit and the address-space
limit (`ulimit -v`, less what the process maps already); `CNNDSL_MEMORY_LIMIT=8G` replaces it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cnndsl.diagnostics import CnnError, Diagnostic

# No single array may exceed this many bytes: far beyond any machine, and below numpy's int64 limits.
MAX_BYTES = 2**62


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; up to EiB."""
    n = int(n)
    for scale, suffix in ((2**60, "EiB"), (2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"),
                          (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limit:
    bytes: int
    source: str  # "physical memory", "the cgroup's memory limit", "ulimit -v", "CNNDSL_MEMORY_LIMIT"
    net: bool = False  # what this process maps already is subtracted (ulimit -v): do not count it again

    def describe(self) -> str:
        return f"{human_bytes(self.bytes)} ({self.source})"


_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int | None:
    """'4G' -> 4 GiB, '512M', '1000000' (bytes); None when not a size."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        return None
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def memory_limit() -> Limit:
    """How much memory this process may use, at most."""
    override = os.environ.get("CNNDSL_MEMORY_LIMIT")
    if override:
        size = parse_size(override)
        if size is None or size <= 0:
            raise CnnError([Diagnostic(
                "error", f"CNNDSL_MEMORY_LIMIT must be a size such as 8G, 512M or 1000000 (bytes), got '{override}'",
                help="unset it to use the machine's memory", code="memory-limit")])
        return Limit(min(size, MAX_BYTES), "CNNDSL_MEMORY_LIMIT")
    limits = []
    try:
        limits.append(Limit(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"))
    except (ValueError, OSError, AttributeError):  # not on Linux/macOS
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append(Limit(cgroup, "the cgroup's memory limit"))
    address = _address_space_left()
    if address is not None:
        limits.append(Limit(address, "ulimit -v, less what this process maps already", net=True))
    if not limits:
        return Limit(MAX_BYTES, "no limit found")
    return min(limits, key=lambda lim: lim.bytes)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < MAX_BYTES:  # "max" or 2**63 - page: no limit
            return int(text)
    return None


def _address_space_left() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    mapped = 0
    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - mapped, 0)


