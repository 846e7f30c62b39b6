"""Helpers shared by the hostile-input tests (tests/test_hostile_readers.py,
tests/test_reliability_files.py) and the Ctrl-C tests (tests/test_reliability_runs.py, tests/test_sweep.py)."""
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


def sigint_default_in_child() -> None:
    """preexec_fn for a child that a test sends SIGINT (Ctrl-C): SIGINT at the system default, which
    Python turns into its KeyboardInterrupt handler at start-up. A job started in the background by a
    non-interactive shell (`pytest ... &` in a script, nohup, some CI runners) has SIGINT ignored, and
    every process it starts inherits that: Python then keeps it ignored and cnndsl, rightly, installs
    no handler over an ignored SIGINT, so the Ctrl-C tests failed in full-suite runs started with `&`
    (and passed in the foreground). They test what a terminal user's Ctrl-C does, so they set it up."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
