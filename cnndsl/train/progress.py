"""A per-batch progress bar for training: loss, accuracy and images/s.

A thin wrapper over tqdm. It is silent when the output stream is not a
terminal (logs, CI, pipes) or when `enabled=False`; the training loop prints
its own one-line epoch summaries either way.

    bar = Progress(total=batches_per_epoch, desc="epoch 3/10", initial=batches_done)
    for ...:
        bar.update(loss=running_loss, accuracy=running_accuracy, images_per_s=rate)
    bar.close()

`update(n=1, ...)` advances the bar by `n` units (batches by default) and shows
the given values as they are (the caller keeps the running averages).

`CompileStatus` is the line shown while Numba compiles the kernels before the first step
(cnndsl.train.trainer.compile_kernels): rewritten in place on a terminal, one line at the start
and one at the end in a log, nothing at all when every kernel comes from the cache.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import IO


def _columns(stream) -> int:
    """The width of the terminal `stream` writes to (80 when it cannot be told)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = shutil.get_terminal_size((80, 24)).columns
    return columns if columns > 0 else 80


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar over `total` units; silent unless `enabled` (default: the stream is a TTY)."""

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None,
                 file: IO[str] | None = None, initial: int = 0, unit: str = "batch",
                 leave: bool = False):
        self.file = file if file is not None else sys.stderr
        # enabled=None: on when the stream is a terminal; False: off; True: on (e.g. a test's StringIO)
        self.enabled = _is_tty(self.file) if enabled is None else bool(enabled)
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, initial=initial, unit=unit, file=self.file,
                             leave=leave, dynamic_ncols=True, mininterval=0.2)

    def update(self, n: int = 1, loss: float | None = None, accuracy: float | None = None,
               images_per_s: float | None = None, **extra: float) -> None:
        """Advance by `n` and show `loss`, `accuracy`, `images_per_s` (and any `extra` values)."""
        if self._bar is None:
            return
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if accuracy is not None:
            post["acc"] = f"{accuracy:.3f}"
        if images_per_s is not None:
            post["img/s"] = f"{images_per_s:.0f}"
        for k, v in extra.items():
            post[k] = f"{v:.4g}" if isinstance(v, float) else str(v)
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(n)

    def write(self, text: str) -> None:
        """Print a line without breaking the bar (to the bar's stream, or stdout when silent)."""
        if self._bar is not None:
            self._bar.write(text, file=self.file)
        else:
            print(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CompileStatus:
    """What the user sees while kernels compile, fed by a cnndsl.backend.compile_events counter.

    mode "live" (a terminal): from the first compilation on, one line rewritten every `tick`
    seconds by a background thread, `compiling kernels for LeNet5 (first run only): 14 functions,
    6 s  [conv.im2col]`, replaced at the end by `compiled 61 kernel functions for LeNet5 in 41 s`;
    mode "lines" (a log, or --no-progress): one line when the first compilation starts and one at
    the end; None: silent. Nothing is printed when nothing compiles (a warm cache): loading the
    cached kernels takes about a second, which needs no words.

    Use: `on_change` as the counter's callback, `finish(counter)` at the end (also after an error:
    it stops the thread and ends the line)."""

    def __init__(self, network: str, mode: str | None, file: IO[str] | None = None, tick: float = 0.25):
        if mode not in ("live", "lines", None):
            raise ValueError(f"mode must be 'live', 'lines' or None, not {mode!r}")
        self.network = network
        self.mode = mode
        self.file = file if file is not None else sys.stderr
        self.tick = tick
        self.started_at = time.perf_counter()
        self.shown = False  # the first line is out
        self._counter = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0
        self._lock = threading.Lock()

    @property
    def title(self) -> str:
        return f"compiling kernels for {self.network} (first run only)"

    def on_change(self, counter) -> None:
        """The counter's callback (a compilation started or ended)."""
        self._counter = counter
        if self.shown or self.mode is None or counter.count == 0:
            return
        with self._lock:  # worker processes' events arrive on other threads (compile_pool)
            if self.shown:
                return
            self.shown = True
        if self.mode == "lines":
            self._print(f"{self.title}...")
        else:
            self._draw()
            self._thread = threading.Thread(target=self._run, name="cnndsl-compile-status", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self._draw()

    def _line(self) -> str:
        c = self._counter
        n = c.count if c is not None else 0
        text = f"{self.title}: {n} function{'s' if n != 1 else ''}, {time.perf_counter() - self.started_at:.0f} s"
        workers = getattr(c, "workers", 0)
        if workers:
            text += f", {workers + 1} processes"
        active = c.active if c is not None else None
        if active is not None:
            text += f"  [{active.family}.{active.name.rsplit('.', 1)[-1]}]"
        return text

    def _draw(self) -> None:
        columns = _columns(self.file)
        text = self._line()[:max(20, columns - 1)]
        pad = max(0, self._width - len(text))
        self._width = len(text)
        try:
            self.file.write("\r" + text + " " * pad)
            self.file.flush()
        except (OSError, ValueError):
            pass

    def _print(self, text: str) -> None:
        try:
            print(text, file=self.file, flush=True)
        except (OSError, ValueError):
            pass

    def finish(self, counter, failed: bool = False) -> None:
        """Stop the live line and print the summary (when anything compiled)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.shown:
            return
        seconds = time.perf_counter() - self.started_at
        n = counter.count
        if failed:
            text = f"{self.title}: stopped after {n} function{'s' if n != 1 else ''}, {seconds:.1f} s"
        else:
            text = f"compiled {n} kernel function{'s' if n != 1 else ''} for {self.network} in {seconds:.1f} s"
            workers = getattr(counter, "workers", 0)
            if workers:
                text += f" ({workers + 1} processes)"
        if self.mode == "live":
            text = "\r" + text + " " * max(0, self._width - len(text))
        self._print(text)
        self.shown = False
