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
"""
from __future__ import annotations

import sys
from typing import IO


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
