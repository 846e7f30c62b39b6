"""Helpers shared by the hostile-input tests (tests/test_hostile_readers.py,
tests/test_reliability_files.py)."""
from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def watchdog(seconds: float = 10):
    """Fail (TimeoutError) instead of hanging when a reader blocks, e.g. opening a FIFO."""
    def fire(signum, frame):
        raise TimeoutError(f"the reader blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
