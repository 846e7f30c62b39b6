"""Weights and checkpoints in the safetensors format.

safetensors is a plain, framework-neutral format (an 8-byte little-endian
header length, a JSON header naming each tensor's dtype, shape and byte range,
then the raw little-endian data). Files written here load unchanged with
`safetensors.torch.load_file`, JAX, TensorFlow, etc.

* `save_weights` / `load_weights`: a model's parameters (float32 by default),
  with optional string metadata. Writes are atomic (see `cnndsl.io.atomic`).
* `match_weights`: compare loaded tensors with the names and shapes a network
  expects; `MatchReport.raise_if_mismatch` turns any difference into one clear
  error naming each tensor and both shapes.
* `save_checkpoint` / `load_checkpoint`: a training checkpoint is ONE
  safetensors file `<dir>/checkpoint.safetensors` holding the weights (names
  prefixed `weights/`), the optimizer state (prefixed `optim/`) and JSON
  metadata (epoch, step, rng seed, config, ...). It is replaced atomically, so
  a SIGKILL at any moment leaves the previous checkpoint loadable.

Every problem with a user's file is a `CnnError` from `file_error`.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from cnndsl.diagnostics import CnnError, did_you_mean, file_error
from cnndsl.io.atomic import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "cnndsl-checkpoint-1"
_WEIGHTS_PREFIX = "weights/"
_OPTIM_PREFIX = "optim/"
_META_KEY = "cnndsl_checkpoint"

# safetensors dtype code -> (numpy dtype or None when numpy cannot hold it, bytes per element)
_DTYPES: dict[str, tuple[Any, int]] = {
    "F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2),
    "I64": (np.int64, 8), "I32": (np.int32, 4), "I16": (np.int16, 2), "I8": (np.int8, 1),
    "U64": (np.uint64, 8), "U32": (np.uint32, 4), "U16": (np.uint16, 2), "U8": (np.uint8, 1),
    "BOOL": (np.bool_, 1), "F8_E4M3": (None, 1), "F8_E5M2": (None, 1),
}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


def _code_of(dtype) -> str:
    dtype = np.dtype(dtype)
    for code, (np_dtype, _) in _DTYPES.items():
        if np_dtype is not None and np.dtype(np_dtype) == dtype:
            return code
    return str(dtype)


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")" if len(shape) != 1 else f"({int(shape[0])},)"


# ---------------------------------------------------------------------------- saving

def _encode(path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if _code_of(arr.dtype) not in _DTYPES:
            raise ValueError(f"tensor '{name}' has dtype {arr.dtype}, which safetensors cannot store")
        # safetensors stores little-endian, C-contiguous data.
        # (np.require, not np.ascontiguousarray, which turns 0-d arrays into 1-d ones)
        arrays[name] = np.require(arr.astype(arr.dtype.newbyteorder("<"), copy=False), requirements="C")
    meta = None
    if metadata:
        meta = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"safetensors metadata must map str to str, got {k!r}: {v!r}")
            meta[k] = v
    return _st_save(arrays, metadata=meta)


def save_weights(path, tensors: Mapping[str, np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` as safetensors, atomically (temp file + fsync + rename)."""
    atomic_write_bytes(path, _encode(path, tensors, metadata))


# ---------------------------------------------------------------------------- loading

def _read_file(path: Path, what: str) -> bytes:
    if not path.exists():
        hint = None
        if path.parent.is_dir():
            near = did_you_mean(path.name, [p.name for p in path.parent.iterdir()])
            hint = near
        raise file_error(path, f"{what} file does not exist", expected="a .safetensors file",
                         found="no such file", help=hint, code="weights-missing")
    if path.is_dir():
        raise file_error(path, f"{what} path is a directory, not a file",
                         expected="a .safetensors file", found="a directory",
                         help=f"name the file inside it, e.g. {path / 'weights.safetensors'}",
                         code="weights-directory")
    try:
        return path.read_bytes()
    except OSError as e:
        raise file_error(path, f"cannot read {what} file", expected="a readable file",
                         found=e.strerror or str(e), code="weights-unreadable") from None


def _describe_start(blob: bytes) -> str:
    """A guess at what a non-safetensors file is, from its first bytes."""
    magic = {
        b"PK\x03\x04": "a zip archive (a .npz or PyTorch .pt/.pth file?)",
        b"\x93NUMPY": "a NumPy .npy file",
        b"\x80\x02": "a Python pickle (a PyTorch .pt/.pth file?)",
        b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x89HDF": "an HDF5 (Keras .h5) file",
    }
    for prefix, name in magic.items():
        if blob.startswith(prefix):
            return name
    if blob[:1] in (b"{", b"[") or blob[:20].isascii():
        return f"text starting with {blob[:24]!r}"
    return f"{len(blob)} bytes starting with {blob[:8].hex(' ')}"


def _parse(path: Path, blob: bytes, what: str) -> tuple[dict, dict[str, str]]:
    """Validate the safetensors layout; return (tensor header entries, metadata)."""
    not_st = dict(expected="a safetensors file (8-byte header length, JSON header, tensor data)",
                  code="weights-format")
    if len(blob) < 8:
        raise file_error(path, f"{what} file is not a safetensors file (too short)",
                         found=f"{len(blob)} bytes" if blob else "an empty file", **not_st)
    (n,) = struct.unpack("<Q", blob[:8])
    head = blob[8:8 + n]
    looks_like_header = blob[8:9] == b"{"
    if n == 0 or n > _MAX_HEADER or not looks_like_header:
        raise file_error(path, f"{what} file is not a safetensors file", found=_describe_start(blob),
                         help="save with safetensors (e.g. safetensors.torch.save_file) or cnndsl",
                         **not_st)
    if 8 + n > len(blob):
        raise file_error(path, f"{what} file is truncated",
                         expected=f"a {n}-byte JSON header after the first 8 bytes",
                         found=f"the file ends after {len(blob)} bytes",
                         help="the file was cut short (interrupted copy or download?); write it again",
                         code="weights-truncated")
    try:
        header = json.loads(head.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise file_error(path, f"{what} file is corrupt: its header is not valid JSON",
                         expected="a JSON object describing the tensors", found=str(e),
                         code="weights-corrupt") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise file_error(path, f"{what} file is corrupt: bad __metadata__",
                         expected="a map of strings to strings", found=repr(metadata)[:80],
                         code="weights-corrupt")
    data_len = len(blob) - 8 - n
    need = 0
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if dtype not in _DTYPES or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise file_error(path, f"{what} file is corrupt: bad header entry for tensor '{name}'",
                             expected="{dtype, shape, data_offsets}", found=json.dumps(entry)[:120],
                             code="weights-corrupt") from None
        size = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype][1]
        if end - start != size:
            raise file_error(path, f"{what} file is corrupt: tensor '{name}' has the wrong byte size",
                             expected=f"{size} bytes for {dtype} {_shape_str(shape)}",
                             found=f"{end - start} bytes", code="weights-corrupt")
        need = max(need, end)
    if need > data_len:
        raise file_error(path, f"{what} file is truncated",
                         expected=f"{8 + n + need} bytes (header says so)",
                         found=f"{len(blob)} bytes",
                         help="the file was cut short (interrupted copy or download?); write it again",
                         code="weights-truncated")
    return header, dict(metadata)


def _load(path, what: str, dtype) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    path = Path(path)
    blob = _read_file(path, what)
    header, metadata = _parse(path, blob, what)
    if dtype is not None:
        want = _code_of(dtype)
        bad = [(k, e["dtype"]) for k, e in header.items() if e["dtype"] != want]
        if bad:
            listing = ", ".join(f"'{k}' is {d}" for k, d in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise file_error(path, f"{what} file has tensors of the wrong dtype",
                             expected=f"{want} ({np.dtype(dtype).name}) for every tensor",
                             found=listing,
                             help="convert before saving, e.g. {k: v.float() for k, v in sd.items()} "
                                  "in PyTorch or arr.astype(np.float32) in NumPy",
                             code="weights-dtype")
    unsupported = [(k, e["dtype"]) for k, e in header.items() if _DTYPES[e["dtype"]][0] is None]
    if unsupported:
        k, d = unsupported[0]
        raise file_error(path, f"{what} file has a tensor type NumPy cannot hold",
                         expected="F32 (or another NumPy dtype)", found=f"'{k}' is {d}",
                         code="weights-dtype")
    try:
        tensors = _st_load(blob)
    except (SafetensorError, ValueError) as e:  # anything _parse did not foresee
        raise file_error(path, f"{what} file is corrupt", expected="a valid safetensors file",
                         found=str(e), code="weights-corrupt") from None
    # Keep the file's tensor order (safetensors sorts by dtype/offset).
    tensors = {k: np.array(tensors[k]) for k in header}
    return tensors, metadata, header


def load_weights(path, dtype=np.float32) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file -> (tensors by name, metadata).

    Every tensor must have `dtype` (float32 by default; pass None to accept any).
    Raises `CnnError` when the file is missing, a directory, not safetensors,
    truncated or corrupt, or holds tensors of the wrong dtype.
    """
    tensors, metadata, _ = _load(path, "weights", dtype)
    return tensors, metadata


# ---------------------------------------------------------------------------- matching

@dataclass
class MatchReport:
    """How loaded tensors compare with what a network expects."""

    loaded: list[str] = field(default_factory=list)  # present with the right shape
    missing: list[str] = field(default_factory=list)  # expected, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not expected
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, found, expected)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def lines(self) -> list[str]:
        out = [f"tensor '{n}': file has shape {_shape_str(f)}, network expects {_shape_str(e)}"
               for n, f, e in self.mismatched]
        for n in self.missing:
            hint = did_you_mean(n, self.unexpected)
            out.append(f"tensor '{n}' is missing from the file" + (f" ({hint})" if hint else ""))
        out += [f"tensor '{n}' in the file is not a parameter of the network" for n in self.unexpected]
        return out

    def raise_if_mismatch(self, path, allow_unexpected: bool = False) -> None:
        """Raise one `CnnError` listing every problem (each tensor and both shapes)."""
        problems = bool(self.missing or self.mismatched or (self.unexpected and not allow_unexpected))
        if not problems:
            return
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} with the wrong shape")
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        if self.unexpected and not allow_unexpected:
            parts.append(f"{len(self.unexpected)} unexpected")
        err = file_error(path, "weights do not match the network: " + ", ".join(parts),
                         help="were these weights saved from a different .cnn model?",
                         code="weights-mismatch")
        err.diagnostics[0].details.extend(self.lines())
        raise CnnError(err.diagnostics)


def match_weights(loaded: Mapping[str, np.ndarray], expected: Mapping[str, tuple]) -> MatchReport:
    """Compare `loaded` tensors with `expected` names -> shapes."""
    report = MatchReport()
    for name, shape in expected.items():
        if name not in loaded:
            report.missing.append(name)
            continue
        found = tuple(int(d) for d in np.shape(loaded[name]))
        want = tuple(int(d) for d in shape)
        if found != want:
            report.mismatched.append((name, found, want))
        else:
            report.loaded.append(name)
    report.unexpected = [n for n in loaded if n not in expected]
    return report


# ---------------------------------------------------------------------------- checkpoints

@dataclass
class Checkpoint:
    tensors: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path


def checkpoint_path(directory) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory, tensors: Mapping[str, np.ndarray],
                    optimizer_state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write `<directory>/checkpoint.safetensors` atomically and return its path.

    `tensors`: the model parameters; `optimizer_state`: e.g. `optimizer.state_dict()`
    (numpy arrays, any dtype); `meta`: JSON-serialisable (epoch, step, seed, config...).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    all_tensors = {_WEIGHTS_PREFIX + k: v for k, v in tensors.items()}
    all_tensors.update({_OPTIM_PREFIX + k: np.asarray(v) for k, v in optimizer_state.items()})
    metadata = {"format": CHECKPOINT_FORMAT, _META_KEY: json.dumps(dict(meta), sort_keys=True)}
    path = checkpoint_path(directory)
    atomic_write_bytes(path, _encode(path, all_tensors, metadata))
    return path


def load_checkpoint(directory) -> Checkpoint:
    """Read what `save_checkpoint` wrote. `directory` may also name the file itself."""
    directory = Path(directory)
    path = directory if directory.is_file() or directory.suffix == ".safetensors" \
        else checkpoint_path(directory)
    if not path.exists():
        raise file_error(path, "no checkpoint to resume from",
                         expected=f"{CHECKPOINT_FILE} written by an earlier training run",
                         found="no such file" if path.parent.is_dir() else f"no folder {path.parent}",
                         help="start training without resuming, or point at the run's output folder",
                         code="checkpoint-missing")
    tensors, metadata, _ = _load(path, "checkpoint", None)
    if metadata.get("format") != CHECKPOINT_FORMAT or _META_KEY not in metadata:
        raise file_error(path, "not a cnndsl checkpoint",
                         expected=f"safetensors metadata format={CHECKPOINT_FORMAT}",
                         found=f"format={metadata.get('format')!r}",
                         help="a plain weights file loads with --weights, not as a checkpoint",
                         code="checkpoint-format")
    try:
        meta = json.loads(metadata[_META_KEY])
    except ValueError as e:
        raise file_error(path, "checkpoint metadata is corrupt", expected="JSON", found=str(e),
                         code="checkpoint-format") from None
    weights = {k[len(_WEIGHTS_PREFIX):]: v for k, v in tensors.items() if k.startswith(_WEIGHTS_PREFIX)}
    optim = {k[len(_OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(_OPTIM_PREFIX)}
    return Checkpoint(weights, optim, meta, path)
