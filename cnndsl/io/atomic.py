"""Atomic file writes: a reader (or a crash) never sees a half-written file.

The data goes to a temporary file in the same folder as the target (so the
final rename stays on one file system), is flushed and fsync'ed, then
`os.replace`d over the target. `os.replace` is atomic on POSIX and Windows:
killing the process at any moment leaves either the old file or the new one,
never a truncated mix. If the writer raises, the temporary file is removed and
the old file is left untouched. A process killed mid-write (SIGKILL, power loss)
leaves its temporary file behind: `.<name>.<8 random characters>.tmp`, which
`stale_temp_files` recognises and `remove_stale_temps` removes (a training run
does so when it starts in its folder, under the folder's lock).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator


TEMP_SUFFIX = ".tmp"
# mkstemp(prefix=".<name>.", suffix=".tmp") names: 8 characters of tempfile's alphabet
# (tempfile._RandomNameSequence: a-z, 0-9 and "_"); tests pin this against real temp names.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def temp_target(name: str) -> str | None:
    """The file name a temporary file of `atomic_writer` was going to replace, or None when
    `name` is not such a temporary file."""
    m = _TEMP_NAME.match(name)
    return m.group("target") if m else None


def stale_temp_files(folder, targets) -> list[Path]:
    """Temporary files of `atomic_writer` in `folder` for the file names in `targets` (sorted).
    Only call this when no writer can be active in the folder (e.g. under a run's lock)."""
    folder, targets = Path(folder), set(targets)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(Path(e.path) for e in entries
                  if temp_target(e.name) in targets and e.is_file(follow_symlinks=False))


def remove_stale_temps(folder, targets) -> list[Path]:
    """Remove what `stale_temp_files` finds; returns the files removed."""
    removed = []
    for path in stale_temp_files(folder, targets):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort; not supported on every OS)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_target(path) -> None:
    """Raise the OSError that writing `path` with `atomic_writer` would, before anything is written
    (a command that writes two files checks both first): a folder at `path`, or a file where one of
    its folders should be (mkdir said only 'File exists')."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    folder = path.parent if str(path.parent) else Path(".")
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{p} is a file, not a folder", str(path))
            break


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to `path`; on a clean exit it replaces `path`.

        with atomic_writer("metrics.json", "w") as f:
            json.dump(record, f)

    `mode` is "wb" (default) or "w" (text, UTF-8 unless `encoding` is given).
    If the body raises, `path` keeps its previous contents (or stays absent).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        check_target(path)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as e:  # name the file the caller asked for, not a temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    tmp = Path(tmp_name)
    try:
        if mode == "w":
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        else:
            f = os.fdopen(fd, "wb")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions.
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    with atomic_writer(path, "w", encoding=encoding) as f:
        f.write(text)
