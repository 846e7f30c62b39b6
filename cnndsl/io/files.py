"""Opening a user's input file defensively: regular files only, of a bounded size.

Every reader of user files (model .cnn files, data sets, weights, checkpoints,
images) goes through here, so that

* a FIFO, a socket, a character or block device (`/dev/zero`, `/dev/urandom`,
  a terminal) is refused at once with "... is a FIFO, not a regular file"
  instead of blocking forever (opening a FIFO for reading waits for a writer)
  or growing without end (`/dev/zero` has st_size 0 and never ends);
* a file larger than what its reader may load is refused before it is read;
* what a file's header declares (array shapes, decompressed sizes) can be
  compared with a memory budget before anything is allocated.

`memory_budget()` is the most one input may make cnndsl allocate: half of what
this process may use (`cnndsl.machine.memory_limit`: the physical memory, the
cgroup's limit or `ulimit -v`, whichever is smallest). Half, because a loader holds the raw bytes and the converted
float32 arrays at once, and the process needs the rest for the network.
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO

from cnndsl.diagnostics import file_error
from cnndsl.machine import human_bytes, memory_limit

GiB = 1024 ** 3


def memory_budget() -> tuple[int, str]:
    """(bytes, how that figure was derived): the most one input file may make us allocate, half
    of what this process may use (`cnndsl.machine.memory_limit`)."""
    limit = memory_limit()
    return limit.bytes // 2, f"half of {limit.describe()}"


def check_budget(path, what: str, nbytes: int, description: str) -> None:
    """Raise a `CnnError` when `nbytes` (what `path` declares it needs) exceeds `memory_budget()`.

    `description` says where the figure comes from, e.g. "the header declares 60000 images of 28x28"."""
    budget, why = memory_budget()
    if nbytes > budget:
        raise file_error(path, f"{what} is too large to load: {description}",
                         expected=f"at most {human_bytes(budget)} ({why})",
                         found=f"{human_bytes(nbytes)} ({nbytes:,} bytes)",
                         help="a lying or corrupt header, or a data set too big for this machine: "
                              "check the file, or split it", code="file-too-large")


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def kind_of(mode: int) -> str:
    """'a regular file', 'a FIFO (named pipe)', 'a character device', ... for an st_mode."""
    if stat.S_ISREG(mode):
        return "a regular file"
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a special file"


def _refuse_special(path, what: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = kind_of(mode)
    short = kind.split(" (")[0]  # "a FIFO", not "a FIFO (named pipe)", in the one-line message
    raise file_error(path, f"{what} is {short}, not a regular file", expected="a regular file",
                     found=kind,
                     help=None if stat.S_ISDIR(mode) else
                     "cnndsl reads its inputs whole and checks them first; save the data to a file "
                     "(e.g. `cat pipe > data.bin`) and pass that", code="file-special")


def check_regular(path, what: str) -> os.stat_result:
    """stat() `path` (following links) and refuse anything but a regular file. Nothing is opened:
    opening some devices has effects (a tape rewinds, a FIFO blocks)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise file_error(path, f"{what} does not exist", expected="a regular file", found="no such file",
                         code="file-missing") from None
    except OSError as e:
        raise file_error(path, f"cannot read {what}", expected="a readable file",
                         found=e.strerror or str(e), code="file-unreadable") from None
    _refuse_special(path, what, st.st_mode)
    return st


def open_regular(path, what: str, limit: int | None = None) -> BinaryIO:
    """Open `path` for binary reading, refusing non-regular files and (with `limit`) files larger
    than `limit` bytes. The check is made on the opened descriptor too (O_NONBLOCK, so a FIFO put
    in the file's place after the stat() cannot block the open), so a swap between the checks
    cannot slip a device through."""
    check_regular(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise file_error(path, f"cannot read {what}", expected="a readable file",
                         found=e.strerror or str(e), code="file-unreadable") from None
    try:
        st = os.fstat(fd)
        _refuse_special(path, what, st.st_mode)
        if limit is not None and st.st_size > limit:
            raise file_error(path, f"{what} is too large ({human_bytes(st.st_size)})",
                             expected=f"at most {human_bytes(limit)}", found=f"{st.st_size:,} bytes",
                             code="file-too-large")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def need_file(path, what: str, expected: str | None = None, code: str = "data-missing") -> None:
    """Refuse a missing `path` or a folder where a file is wanted, saying `expected` (or `what`)."""
    if not os.path.exists(path):
        raise file_error(path, f"{what} does not exist", expected=expected or what, found="no such file",
                         code=code)
    if os.path.isdir(path):
        raise file_error(path, f"{what} is a directory, not a file", expected=expected or what,
                         found="a directory", code=code)


def need_dir(path, what: str, code: str = "data-missing") -> None:
    """Refuse a missing `path` or a file where a folder is wanted."""
    if not os.path.exists(path):
        raise file_error(path, f"{what} does not exist", expected=what, found="no such folder", code=code)
    if not os.path.isdir(path):
        raise file_error(path, f"{what} is a file, not a folder", expected=what, found="a file", code=code)


def file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def read_regular(path, what: str, limit: int | None = None) -> bytes:
    """The whole content of the regular file `path`: at most `limit` bytes, or at most the memory
    budget when `limit` is None. A file that grows while being read is cut there and refused."""
    with open_regular(path, what, limit=limit) as f:
        if limit is None:
            size = file_size(f)
            check_budget(path, what, size, f"the file holds {human_bytes(size)}")
            limit = memory_budget()[0]
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise file_error(path, f"cannot read {what}", expected="a readable file",
                             found=e.strerror or str(e), code="file-unreadable") from None
    if len(data) > limit:
        raise file_error(path, f"{what} grew beyond {human_bytes(limit)} while it was read",
                         expected="a file that does not change while cnndsl reads it",
                         found=f"more than {limit:,} bytes", code="file-too-large")
    return data


def read_text(path, what: str, expected: str, binary: str) -> str:
    """The UTF-8 text of the regular file `path` (read whole, as read_regular does), or a CnnError
    "this <what> is not text" saying what was `expected` and what binary data it may be."""
    try:
        return read_regular(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise file_error(path, f"this {what} is not text", expected=expected, found=binary) from None


def read_head(path, what: str, n: int = 16) -> bytes:
    """The first `n` bytes of the regular file `path` (fewer when it is shorter)."""
    with open_regular(path, what) as f:
        try:
            return f.read(n)
        except OSError as e:
            raise file_error(path, f"cannot read {what}", expected="a readable file",
                             found=e.strerror or str(e), code="file-unreadable") from None


__all__ = ["GiB", "memory_budget", "human_bytes", "check_budget", "kind_of", "check_regular",
           "open_regular", "read_regular", "read_text", "read_head", "file_size", "need_file", "need_dir"]
