"""A training run's output folder: one run at a time, never replaced or mixed up by accident.

* `check_writable(folder)`: create the folder and write + remove a probe file, so an `--out`
  that cannot be written is an error before anything is compiled or trained.
* `RunLock(folder)`: `<folder>/train.lock`, held while a run trains there. It holds the PID,
  host and start time of the process (JSON) and is removed when the run ends. Exclusion is an
  advisory `flock` on that file: the kernel drops it when the process dies however it dies, so
  a lock file left by a crash (SIGKILL, power loss) is stale and simply taken over. Where
  `fcntl` is missing the PID is checked instead (stale when no process has it on this host).
  Re-entrant within a process (the CLI takes it before compiling, `Trainer.fit` again).
* `existing_run(folder)` / `refuse_existing_run`: a folder that already holds a run
  (checkpoint, weights or metrics) is not trained into again unless resumed or overwritten.
* `resume_folder(path)`: what `--resume` was given, as a run folder (the checkpoint file
  itself is accepted and stands for its folder).
* `RunSettings`: the settings a run was started with (epochs, batch, lr, seed, -D values, data,
  profile, network, augmentation, -O level), saved in every checkpoint; `merge_resumed`
  restores them on `--resume` and refuses a flag given again with another value.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from cnndsl.diagnostics import CnnError, file_error
from cnndsl.io.atomic import remove_stale_temps
from cnndsl.io.weights import CHECKPOINT_FILE

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = "train.lock"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
# A folder holding any of these holds a run; --overwrite removes all of RUN_FILES.
RUN_MARKERS = (CHECKPOINT_FILE, WEIGHTS_FILE, METRICS_FILE)
BEST_FILE = "best.safetensors"  # `checkpoint best=METRIC`
LOG_FILE = "train.log"  # what the console printed (appended by a resumed run)
MODEL_COPY = "model.cnn"  # the exact model text the run compiled
SETTINGS_FILE = "settings.json"  # the resolved settings: training section, flags, parameters
RUN_FILES = RUN_MARKERS + (CURVES_FILE, BEST_FILE, LOG_FILE, MODEL_COPY, SETTINGS_FILE)
# An unreadable lock file younger than this may be one being written right now (the O_EXCL
# fallback writes its content just after creating it); older, it is left over.
_FRESH_LOCK_S = 10.0


# ---------------------------------------------------------------------------- the folder

def check_writable(folder, option: str = "--out") -> Path:
    """Create `folder` (and its parents) and write, fsync and remove a probe file in it; a
    `CnnError` naming the folder and the reason when any of that fails."""
    folder = Path(folder)
    help_ = f"choose another {option} folder"
    if folder.exists() and not folder.is_dir():
        raise file_error(folder, f"the output folder is a file ({option})", expected="a folder (or a new name)",
                         found="a file" if folder.is_file() else "not a folder", help=help_, code="out-not-folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a part of the path is a file (or appeared meanwhile)
        raise file_error(folder, f"cannot create the output folder ({option})", expected="a folder that can be created",
                         found="a file is in the way", help=help_, code="out-unwritable") from None
    except OSError as e:
        raise file_error(folder, f"cannot create the output folder ({option})", expected="a folder that can be created",
                         found=e.strerror or str(e), help=help_, code="out-unwritable") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".cnndsl-probe-", dir=folder)
        try:
            os.write(fd, b"cnndsl")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    except OSError as e:
        raise file_error(folder, f"cannot write into the output folder ({option})",
                         expected="a folder this user can write", found=e.strerror or str(e), help=help_,
                         code="out-unwritable") from None
    return folder


def existing_run(folder) -> list[str]:
    """The run files already in `folder` ([] for a new or empty folder)."""
    folder = Path(folder)
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def refuse_existing_run(folder, out_option: str = "--out") -> None:
    """A `CnnError` when `folder` already holds a run (a new run would replace its files)."""
    found = existing_run(folder)
    if found:
        raise file_error(folder, "the output folder already holds a run; a new run would replace it",
                         expected="a new or empty folder", found=", ".join(found),
                         help=f"continue that run with --resume {folder}, replace it with --overwrite, "
                              f"or choose another {out_option}", code="run-exists")


def remove_run_files(folder) -> list[str]:
    """--overwrite: remove the previous run's files (so nothing of it is mixed with the new run)."""
    removed = []
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (Path(folder) / name).unlink()
            removed.append(name)
    return removed


def clean_stale_temps(folder) -> list[Path]:
    """Temporary files of atomic writes killed mid-way (only those of the run's own files)."""
    return remove_stale_temps(folder, RUN_FILES)


def resume_folder(path) -> Path:
    """The run folder `--resume` names. The checkpoint file itself stands for its folder;
    anything else that is not a folder holding a checkpoint is a `CnnError`."""
    path = Path(path)
    if path.is_file() and path.name == CHECKPOINT_FILE:
        return path.parent
    if path.is_file() or (path.exists() and not path.is_dir()):
        near = path.parent if (path.parent / CHECKPOINT_FILE).is_file() else None
        raise file_error(path, "--resume takes the folder of a run, not a file",
                         expected=f"a folder holding {CHECKPOINT_FILE}", found="a file",
                         help=f"--resume {near}" if near is not None else
                         "give the --out folder of the run to continue", code="resume-not-folder")
    if not path.exists():
        raise file_error(path, "no run to resume: the folder does not exist",
                         expected=f"a folder holding {CHECKPOINT_FILE} from an earlier run", found="no such folder",
                         help="start a new run with --out instead of --resume", code="checkpoint-missing")
    if not (path / CHECKPOINT_FILE).exists():
        others = existing_run(path)
        raise file_error(path / CHECKPOINT_FILE, "no checkpoint to resume from",
                         expected=f"{CHECKPOINT_FILE} written by an earlier training run",
                         found="no such file" + (f" (the folder holds {', '.join(others)})" if others else ""),
                         help="start a new run with --out (add --overwrite to replace what the folder holds)",
                         code="checkpoint-missing")
    return path


# ---------------------------------------------------------------------------- the lock

def process_start_time(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux: /proc/<pid>/stat field 22), or None.
    With the PID it names a process uniquely: a PID reused after a crash has another. (Also what
    `cnndsl sweep` records of each trial's process, cnndsl/sweep/study.py.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) is in parentheses and may hold spaces
        return stat[stat.rindex(")") + 2:].split()[19]
    except (ValueError, IndexError):
        return None


def process_alive(pid: int, started: str | None) -> bool:
    """Whether process `pid`, started at `started` (process_start_time; None: not known), still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    except OSError:
        return False
    return started is None or process_start_time(pid) in (None, started)


_HELD: dict[str, "RunLock"] = {}  # folder (resolved) -> the lock this process holds on it


class RunLock:
    """Exclusive use of a run folder by this process; a context manager.

        with RunLock(out):
            ...train...
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._owner = False  # False: a re-entrant acquisition, released by the outer one

    @property
    def _key(self) -> str:
        return os.path.realpath(self.folder)

    def acquire(self) -> "RunLock":
        if self._key in _HELD:
            return self
        for _ in range(10):  # the lock file may be replaced between opening and locking it
            if self._try_acquire():
                _HELD[self._key] = self
                self._owner = True
                return self
        raise self._busy(self._holder())  # pragma: no cover - ten lost races in a row

    def _info(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": process_start_time(os.getpid()),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}, sort_keys=True).encode()

    def _try_acquire(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows
            return self._try_acquire_by_pid()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise file_error(self.path, "cannot create the run's lock file", expected="a writable folder",
                             found=e.strerror or str(e), code="out-unwritable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by a live process
            holder = self._holder()
            os.close(fd)
            raise self._busy(holder) from None
        except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): the PID decides
            holder = self._holder()
            if holder is not None and holder.get("pid") != os.getpid() and not self._stale(holder) \
                    and not holder.get("unreadable"):
                os.close(fd)
                raise self._busy(holder) from None
        try:  # the file we locked must still be the one at the path (not one unlinked meanwhile)
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                os.close(fd)
                return False
        except FileNotFoundError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, self._info())
        self._fd = fd
        return True

    def _try_acquire_by_pid(self) -> bool:  # pragma: no cover - Windows
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                raise self._busy(holder) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return False
        os.write(fd, self._info())
        os.close(fd)
        return True

    def _stale(self, holder: dict) -> bool:
        if holder.get("unreadable"):
            try:
                return time.time() - self.path.stat().st_mtime > _FRESH_LOCK_S
            except OSError:
                return True
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        return not process_alive(holder["pid"], holder.get("started"))

    def _holder(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return info if isinstance(info, dict) else {"unreadable": True}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"unreadable": True}

    def _busy(self, holder: dict | None) -> CnnError:
        if holder and not holder.get("unreadable"):
            who = f"process {holder.get('pid')} on host {holder.get('host')}"
            if holder.get("since"):
                who += f" (since {holder['since']})"
        else:
            who = "another process"
        return file_error(self.folder, "another training run is using this output folder",
                          expected="one run at a time in a folder", found=f"{who} holds {self.path}",
                          help="wait for it to finish, or choose another --out; if no such run exists any more "
                               f"(e.g. on another host that crashed), delete {self.path}", code="run-locked")

    def release(self) -> None:
        if not self._owner:
            return
        _HELD.pop(self._key, None)
        self._owner = False
        if self._fd is not None:
            with contextlib.suppress(OSError):  # unlink first, while still holding the lock
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                    os.unlink(self.path)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        else:  # pragma: no cover - Windows
            with contextlib.suppress(OSError):
                holder = self._holder()
                if holder and holder.get("pid") == os.getpid():
                    os.unlink(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------- settings

# name -> (the flag that sets it, the Python types it may have in a checkpoint)
SETTINGS: dict[str, tuple[str, tuple]] = {
    "epochs": ("--epochs", (int,)),
    "batch": ("--batch", (int,)),
    "lr": ("--lr", (float, int)),
    "seed": ("--seed", (int,)),
    "defines": ("-D", (dict,)),
    "data": ("--data", (str, type(None))),
    "profile": ("--profile", (str, type(None))),
    "network": ("--network", (str, type(None))),
    "augment": ("--no-augment", (bool,)),
    "opt_level": ("-O", (int,)),
    "early_stopping": ("--early-stopping", (str, type(None))),
    "patience": ("--patience", (int, type(None))),
    "checkpoint_best": ("--checkpoint-best", (str, type(None))),
}
# Settings a resumed run may change: --epochs extends (or ends) a run.
CHANGEABLE = frozenset({"epochs"})


def data_setting(spec: str | None) -> str | None:
    """The --data value as saved: an existing path made absolute (a resumed run may start in
    another working folder), anything else ('digits', a task's name) as given."""
    if spec is None:
        return None
    return os.path.abspath(spec) if os.path.exists(spec) else spec


def _show(name: str, value) -> str:
    flag = SETTINGS[name][0]
    if name == "augment":
        return "augmentation on" if value else "--no-augment"
    if name == "defines":
        return " ".join(f"-D {k}={v}" for k, v in sorted(value.items())) or "no -D values"
    if name == "opt_level":
        return f"-O{value}"
    if value is None:
        return f"no {flag}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def _moved(saved_data) -> bool:
    """True when a run's saved data setting was a path that no longer exists (moved or renamed):
    then a new --data is taken instead of refused."""
    return isinstance(saved_data, str) and ("/" in saved_data or "." in saved_data) \
        and not Path(saved_data).exists()


def merge_resumed(saved: Mapping[str, Any] | None, given: Mapping[str, Any], path) -> dict[str, Any]:
    """The settings of a resumed run: those `saved` in its checkpoint, with the flags `given`
    again on the command line (only those the user typed). A given flag that differs from the
    saved value is an error naming both, unless the setting may change (`CHANGEABLE`).
    A checkpoint without saved settings (older versions) takes the flags as given."""
    if not saved:
        return dict(given)
    merged = {k: v for k, v in saved.items() if k in SETTINGS}
    conflicts = []
    for name, value in given.items():
        if name not in SETTINGS:
            continue
        old = saved.get(name)
        if name == "defines":
            old = dict(old or {})
            differing = {k: v for k, v in value.items() if old.get(k) != v}
            if differing:
                conflicts.append((name, {k: old.get(k) for k in differing}, differing))
            continue
        if name == "data" and value is not None:
            same = data_setting(value) == old or value == old
            if not same and _moved(old):  # the run's data file is gone: the user points at its new place
                merged[name] = value
                continue
        else:
            same = value == old  # lr: the float parsed from the flag, exactly as saved
        if same:
            continue
        if name in CHANGEABLE:
            merged[name] = value
            continue
        conflicts.append((name, old, value))
    if conflicts:
        lines = []
        for name, old, new in conflicts:
            if name == "defines":
                for k in new:
                    was = f"-D {k}={old[k]}" if old.get(k) is not None else f"no -D {k}"
                    lines.append(f"-D {k}={new[k]} differs from the run's {was}")
            else:
                lines.append(f"{_show(name, new)} differs from the run's {_show(name, old)}")
        raise file_error(path, "--resume continues a run with the settings saved in its checkpoint, and "
                         + ("this flag differs" if len(lines) == 1 else "these flags differ") + ": "
                         + "; ".join(lines),
                         help="leave the flag out to continue the run as it was started (only --epochs may "
                              "change), or start a new run with --out", code="resume-settings")
    return merged
