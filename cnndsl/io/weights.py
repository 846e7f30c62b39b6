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
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cnndsl.diagnostics import LIST_LIMIT, CnnError, abbreviated, did_you_mean, file_error
from cnndsl.io.atomic import atomic_write_bytes
from cnndsl.io.files import read_regular

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
# The order in which the safetensors library lays out tensor data: dtype codes by decreasing
# element size (then by name), so every tensor starts at a multiple of its element size.
_LAYOUT_ORDER = ("U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
                 "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL")
_LAYOUT_RANK = {code: i for i, code in enumerate(_LAYOUT_ORDER)}


def _code_of(dtype) -> str:
    dtype = np.dtype(dtype)
    for code, (np_dtype, _) in _DTYPES.items():
        if np_dtype is not None and np.dtype(np_dtype) == dtype:
            return code
    return str(dtype)


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")" if len(shape) != 1 else f"({int(shape[0])},)"


# ---------------------------------------------------------------------------- saving

def _encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if _code_of(arr.dtype.newbyteorder("=")) not in _DTYPES:  # big-endian float32 is F32 too
            raise ValueError(f"tensor '{name}' has dtype {arr.dtype}, which safetensors cannot store")
        # safetensors stores little-endian, C-contiguous data.
        # (np.require, not np.ascontiguousarray, which turns 0-d arrays into 1-d ones)
        arrays[name] = np.require(arr.astype(arr.dtype.newbyteorder("<"), copy=False), requirements="C")
    meta = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"safetensors metadata must map str to str, got {k!r}: {v!r}")
        meta[k] = v
    return _serialize(arrays, meta)


def _serialize(arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> bytes:
    """The safetensors bytes of little-endian C-contiguous `arrays`, written here rather than by
    `safetensors.numpy.save`: that library keeps the metadata in a hash map, so two identical
    runs wrote the keys in different orders (three PYTHONHASHSEEDs, three different files).
    Here the metadata keys are sorted, and everything else is what the library writes: an 8-byte
    little-endian header length, compact JSON ("__metadata__" first, then the tensors in data
    order), padded with spaces to a multiple of 8 bytes, then the tensors' bytes back to back,
    ordered by decreasing element size, then name (so each tensor is aligned to its element
    size). With at most one metadata key the bytes equal the library's (tested)."""
    if "__metadata__" in arrays:
        raise ValueError("'__metadata__' is reserved by safetensors and cannot name a tensor")
    codes = {name: _code_of(arr.dtype.newbyteorder("=")) for name, arr in arrays.items()}
    order = sorted(arrays, key=lambda name: (_LAYOUT_RANK.get(codes[name], len(_LAYOUT_RANK)), name))
    header: dict[str, Any] = {}
    if meta:
        header["__metadata__"] = {k: meta[k] for k in sorted(meta)}
    offset = 0
    for name in order:
        arr = arrays[name]
        header[name] = {"dtype": codes[name], "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate in a name or value
        raise ValueError(f"tensor names and metadata must be valid Unicode text: {e}") from None
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text] + [arrays[name].tobytes() for name in order])


def save_weights(path, tensors: Mapping[str, np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` as safetensors, atomically (temp file + fsync + rename)."""
    atomic_write_bytes(path, _encode(tensors, metadata))


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
    # A FIFO or a device is refused before it is read; so is a file larger than the memory budget.
    return read_regular(path, f"{what} file")


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


def _no_duplicates(pairs):
    """A JSON object as a dict; a name given twice is an error (json keeps the last silently)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the name '{k[:80]}' appears twice")
        out[k] = v
    return out


def _is_int(v) -> bool:
    return type(v) is int  # not bool, which JSON true/false become


def _valid_entry(entry) -> list[int] | None:
    """The shape of a well-formed header entry {dtype, shape, data_offsets}, else None."""
    if not isinstance(entry, dict):
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        return None
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        return None
    if not 0 <= offsets[0] <= offsets[1]:
        return None
    return shape


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
        header = json.loads(head.decode("utf-8"), object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except RecursionError:  # a JSON "depth bomb": [[[[...]]]] nested beyond Python's stack
        raise file_error(path, f"{what} file is corrupt: its header nests too deeply",
                         expected="a JSON object describing the tensors (3 levels deep)",
                         found="JSON nested thousands of levels deep", code="weights-corrupt") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise file_error(path, f"{what} file is corrupt: its header is not valid JSON",
                         expected="a JSON object describing the tensors", found=str(e)[:200],
                         code="weights-corrupt") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise file_error(path, f"{what} file is corrupt: bad __metadata__",
                         expected="a map of strings to strings", found=repr(metadata)[:80],
                         code="weights-corrupt")
    data_len = len(blob) - 8 - n
    spans = []
    for name, entry in header.items():
        shape = _valid_entry(entry)
        if shape is None:
            raise file_error(path, f"{what} file is corrupt: bad header entry for tensor '{name}'",
                             expected="{dtype, shape (non-negative integers), data_offsets [start, end]}",
                             found=json.dumps(entry)[:120], code="weights-corrupt")
        dtype, (start, end) = entry["dtype"], entry["data_offsets"]
        size = math.prod(shape) * _DTYPES[dtype][1]  # Python integers: no overflow at 2^63
        if end - start != size:
            raise file_error(path, f"{what} file is corrupt: tensor '{name}' has the wrong byte size",
                             expected=f"{size} bytes for {dtype} {_shape_str(shape)}",
                             found=f"{end - start} bytes", code="weights-corrupt")
        spans.append((start, end, name))
    need = max((end for _, end, _ in spans), default=0)
    if need > data_len:
        raise file_error(path, f"{what} file is truncated",
                         expected=f"{8 + n + need} bytes (header says so)",
                         found=f"{len(blob)} bytes",
                         help="the file was cut short (interrupted copy or download?); write it again",
                         code="weights-truncated")
    # The tensors must tile the data exactly, as the safetensors library requires: no overlap,
    # no gap, nothing after the last one.
    position, previous = 0, None
    for start, end, name in sorted(spans):
        if start != position:
            if start < position:
                problem = f"tensor '{name}' overlaps tensor '{previous}'"
            else:
                problem = f"{start - position} bytes before tensor '{name}' belong to no tensor"
            raise file_error(path, f"{what} file is corrupt: {problem}",
                             expected=f"tensor '{name}' to start at byte {position} of the data",
                             found=f"data_offsets [{start}, {end}]", code="weights-corrupt")
        position, previous = end, name
    if position != data_len:
        raise file_error(path, f"{what} file is corrupt: {data_len - position} bytes after the last tensor",
                         expected=f"{8 + n + position} bytes (header says so)",
                         found=f"{len(blob)} bytes", code="weights-corrupt")
    return header, dict(metadata)


def _check_dtypes(path: Path, what: str, header: Mapping[str, dict], dtype, strip: str = "") -> None:
    if dtype is not None:
        want = _code_of(dtype)
        bad = [(k[len(strip):], e["dtype"]) for k, e in header.items() if e["dtype"] != want]
        if bad:
            raise file_error(path, f"{what} file has {len(bad)} tensor{'s' if len(bad) != 1 else ''} "
                                   "of the wrong dtype",
                             expected=f"{want} ({np.dtype(dtype).name}) for every tensor",
                             found=abbreviated(f"'{k}' is {d}" for k, d in bad),
                             help="convert before saving, e.g. {k: v.float() for k, v in sd.items()} "
                                  "in PyTorch or arr.astype(np.float32) in NumPy",
                             code="weights-dtype")
    unsupported = [(k[len(strip):], e["dtype"]) for k, e in header.items() if _DTYPES[e["dtype"]][0] is None]
    if unsupported:
        k, d = unsupported[0]
        raise file_error(path, f"{what} file has a tensor type NumPy cannot hold",
                         expected="F32 (or another NumPy dtype)", found=f"'{k}' is {d}",
                         code="weights-dtype")


def _decode(blob: bytes, header: Mapping[str, dict]) -> dict[str, np.ndarray]:
    """The tensors `header` (validated by `_parse`) describes, copied out of `blob` in native
    byte order, in the header's order. Only the tensors named are decoded."""
    (n,) = struct.unpack("<Q", blob[:8])
    out = {}
    for name, entry in header.items():
        np_dtype = np.dtype(_DTYPES[entry["dtype"]][0])
        shape = tuple(entry["shape"])
        start = 8 + n + entry["data_offsets"][0]
        if np_dtype == np.bool_:  # any non-zero byte is True (numpy's bool must be 0 or 1)
            raw = np.frombuffer(blob, np.uint8, count=math.prod(shape), offset=start)
            arr = (raw != 0).reshape(shape)
        else:
            raw = np.frombuffer(blob, np_dtype.newbyteorder("<"), count=math.prod(shape), offset=start)
            arr = raw.astype(np_dtype.newbyteorder("="), copy=True).reshape(shape)
        out[name] = arr
    return out


def _load(path, what: str, dtype) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    path = Path(path)
    blob = _read_file(path, what)
    header, metadata = _parse(path, blob, what)
    _check_dtypes(path, what, header, dtype)
    return _decode(blob, header), metadata, header


def _check_finite(path: Path, what: str, tensors: Mapping[str, np.ndarray]) -> None:
    """NaN or infinity in loaded weights is an error naming the tensors: a network run with them
    printed "accuracy 0.1000" and exited 0."""
    bad = non_finite_tensors(tensors)  # in the checkpoints section below
    if bad:
        raise file_error(path, f"{what} file holds NaN or infinite values in {len(bad)} "
                               f"tensor{'s' if len(bad) != 1 else ''}",
                         expected="finite values in every tensor", found=abbreviated(bad),
                         help="the run that wrote them diverged: retrain (e.g. with a lower learning rate) "
                              "or use an earlier weights file", code="weights-nonfinite")


def load_weights(path, dtype=np.float32) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file -> (tensors by name, metadata).

    Every tensor must have `dtype` (float32 by default) and finite values. A cnndsl training
    checkpoint (`checkpoint.safetensors`) is accepted too: it holds the weights (its `weights/`
    tensors), which are returned without the prefix; its optimizer state is not decoded.
    `dtype=None` reads every tensor of any file as stored (a checkpoint's included, prefixes and
    all): the raw view, for inspecting a file. Raises `CnnError` when the file is missing, a
    directory, a FIFO or a device, larger than the memory budget, not safetensors, truncated or
    corrupt, or holds tensors of the wrong dtype or NaN/infinity.
    """
    path = Path(path)
    what = "weights"
    blob = _read_file(path, what)
    header, metadata = _parse(path, blob, what)
    strip = ""
    if metadata.get("format") == CHECKPOINT_FORMAT and dtype is not None:
        what, strip = "checkpoint", _WEIGHTS_PREFIX
        header = {k: e for k, e in header.items() if k.startswith(_WEIGHTS_PREFIX)}
        if not header:
            raise file_error(path, "checkpoint file holds no weights",
                             expected=f"tensors named '{_WEIGHTS_PREFIX}<layer>.<param>'",
                             found="only optimizer state", code="weights-mismatch")
    _check_dtypes(path, what, header, dtype, strip)
    tensors = {k[len(strip):]: v for k, v in _decode(blob, header).items()}
    _check_finite(path, what, tensors)
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

    def lines(self, limit: int | None = None) -> list[str]:
        """One line per problem (the first `limit` of them when given)."""
        end = len(self.mismatched) + len(self.missing) + len(self.unexpected) if limit is None else limit
        out = [f"tensor '{n}': file has shape {_shape_str(f)}, network expects {_shape_str(e)}"
               for n, f, e in self.mismatched[:end]]
        # A "did you mean" hint compares a name with every unexpected one (difflib): with 20,000
        # unexpected names, 100 missing tensors took 7 s. Hints only among at most 1,000 names.
        hints = self.unexpected if len(self.unexpected) <= 1000 else ()
        for n in self.missing[:max(0, end - len(out))]:
            hint = did_you_mean(n, hints)
            out.append(f"tensor '{n}' is missing from the file" + (f" ({hint})" if hint else ""))
        out += [f"tensor '{n}' in the file is not a parameter of the network"
                for n in self.unexpected[:max(0, end - len(out))]]
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
        # One line per tensor, at most LIST_LIMIT of them, then "... and N more" (a file of another
        # network can hold thousands of unexpected tensors).
        total = len(self.mismatched) + len(self.missing) + len(self.unexpected)
        shown = self.lines(LIST_LIMIT + 1)  # one more than abbreviated() lists, so it says "and N more"
        more = [""] * (total - len(shown))  # placeholders: abbreviated() only counts them
        err.diagnostics[0].details.extend(abbreviated(shown + more, sep="\n").split("\n"))
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
    path = checkpoint_path(directory)
    bad = non_finite_tensors(all_tensors)
    if bad:  # a checkpoint that cannot be resumed must not replace the last good one
        raise file_error(path, "refusing to write a checkpoint with NaN or infinite values; the previous "
                               "checkpoint is kept", expected="finite values in every tensor",
                         found=abbreviated(bad), code="non-finite")
    # allow_nan=False: a NaN in the metadata (e.g. a running loss sum) would make a file that
    # strict JSON readers refuse and that load_checkpoint rejects
    try:
        text = json.dumps(dict(meta), sort_keys=True, allow_nan=False)
    except ValueError as e:
        raise file_error(path, "refusing to write non-finite checkpoint metadata; the previous checkpoint "
                               "is kept", expected="finite numbers", found=str(e), code="non-finite") from None
    metadata = {"format": CHECKPOINT_FORMAT, _META_KEY: text}
    atomic_write_bytes(path, _encode(all_tensors, metadata))
    return path


def non_finite_tensors(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """'name' (count of values) for each floating-point tensor holding NaN or infinity."""
    bad = []
    for name, value in tensors.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and arr.size:
            count = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if count:
                bad.append(f"'{name}' ({count:,} of {arr.size:,} values)")
    return bad


def _json_kind(value) -> str:
    """How a JSON value reads in a message: its value and its JSON type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (a whole number)"
    if isinstance(value, float):
        return f"{value!r} (a number)" if math.isfinite(value) else f"{value} (not a finite number)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"{json.dumps(shown)} (text)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
    return type(value).__name__


def _meta_error(path, field: str, expected: str, value, missing: bool = False):
    return file_error(path, f"checkpoint metadata field '{field}' is {'missing' if missing else 'invalid'}",
                      expected=expected, found="nothing" if missing else _json_kind(value),
                      help="the file was damaged or edited; resume from another checkpoint, or start a new run",
                      code="checkpoint-format")


def _whole(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _finite(value, low: float | None = None) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (low is None or value >= low))


# position field -> (required, check, what it must be); the others of a run are optional
_POSITION_FIELDS = {
    "epoch": (True, _whole, "a whole number >= 0 (epochs completed)"),
    "batch": (True, _whole, "a whole number >= 0 (batches done in the current epoch)"),
    "step": (True, _whole, "a whole number >= 0 (optimizer steps taken)"),
    "loss_sum": (False, _finite, "a finite number"),
    "correct": (False, _whole, "a whole number >= 0"),
    "seen": (False, _whole, "a whole number >= 0"),
    "seconds": (False, lambda v: _finite(v, 0), "a finite number >= 0"),
}


def _is_defines(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())


# settings field (see cnndsl.train.run_dir.RunSettings) -> (check, what it must be)
_SETTINGS_FIELDS = {
    "epochs": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "batch": (lambda v: _whole(v, 1), "a whole number >= 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "seed": (_whole, "a whole number >= 0"),
    "defines": (_is_defines, "an object of text values (-D NAME=VALUE)"),
    "data": (lambda v: v is None or isinstance(v, str), "text or null"),
    "profile": (lambda v: v is None or isinstance(v, str), "text or null"),
    "network": (lambda v: v is None or isinstance(v, str), "text or null"),
    "augment": (lambda v: isinstance(v, bool), "true or false"),
    "opt_level": (_whole, "a whole number >= 0"),
    "early_stopping": (lambda v: v is None or isinstance(v, str), "text or null"),
    "patience": (lambda v: v is None or _whole(v, 1), "a whole number >= 1 or null"),
    "checkpoint_best": (lambda v: v is None or isinstance(v, str), "text or null"),
}


def check_checkpoint_meta(path, meta, require_position: bool = True) -> dict:
    """A checkpoint's metadata, every field the trainer reads of the right type and range (a
    `CnnError` naming the file, the field, what was expected and what was found). A run's
    checkpoint needs `position` (resuming one checks it); `load_checkpoint` checks the fields
    that are present, as a checkpoint written through the API may hold other metadata."""
    if not isinstance(meta, dict):
        raise _meta_error(path, "(top level)", "a JSON object", meta)
    if "position" not in meta:
        if require_position:
            raise _meta_error(path, "position", "an object {epoch, batch, step, ...}", None, missing=True)
        return _check_other_meta(path, meta)
    position = meta["position"]
    if not isinstance(position, dict):
        raise _meta_error(path, "position", "an object {epoch, batch, step, ...}", position)
    for name, (required, check, what) in _POSITION_FIELDS.items():
        if name not in position:
            if required:
                raise _meta_error(path, f"position.{name}", what, None, missing=True)
            continue
        if not check(position[name]):
            raise _meta_error(path, f"position.{name}", what, position[name])
    return _check_other_meta(path, meta)


def _check_other_meta(path, meta: dict) -> dict:
    if "seed" in meta and meta["seed"] is not None and not _whole(meta["seed"]):
        raise _meta_error(path, "seed", "a whole number >= 0", meta["seed"])
    if "world_size" in meta and not _whole(meta["world_size"], 1):
        raise _meta_error(path, "world_size", "a whole number >= 1", meta["world_size"])
    if "network" in meta and not isinstance(meta["network"], str):
        raise _meta_error(path, "network", "text (the network's name)", meta["network"])
    settings = meta.get("settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise _meta_error(path, "settings", "an object of the run's settings", settings)
        for name, (check, what) in _SETTINGS_FIELDS.items():
            if name in settings and not check(settings[name]):
                raise _meta_error(path, f"settings.{name}", what, settings[name])
    return meta


def _check_checkpoint_tensors(path: Path, weights: dict, optim: dict) -> None:
    bad = [f"'{_WEIGHTS_PREFIX}{k}' ({v.dtype})" for k, v in weights.items() if v.dtype.kind != "f"]
    bad += [f"'{_OPTIM_PREFIX}{k}' ({v.dtype})" for k, v in optim.items() if k != "step" and v.dtype.kind != "f"]
    if bad:
        raise file_error(path, "checkpoint tensors of the wrong type", expected="floating-point weights and "
                         "optimizer state", found=abbreviated(bad), code="checkpoint-format")
    step = optim.get("step")
    if step is not None and (step.shape != () or step.dtype.kind not in "iu" or int(step) < 0):
        raise file_error(path, f"checkpoint tensor '{_OPTIM_PREFIX}step' is invalid",
                         expected="one whole number >= 0 (the optimizer's step count)",
                         found=f"{step.dtype} of shape {_shape_str(step.shape)}"
                         + (f", value {int(step)}" if step.size == 1 and step.dtype.kind in "iu" else ""),
                         code="checkpoint-format")
    _check_finite(path, "checkpoint", {**{_WEIGHTS_PREFIX + k: v for k, v in weights.items()},
                                      **{_OPTIM_PREFIX + k: v for k, v in optim.items()}})


def load_checkpoint(directory) -> Checkpoint:
    """Read what `save_checkpoint` wrote. `directory` may also name the file itself (a folder
    is always a run's folder, even one named `*.safetensors`). The metadata and tensors are
    checked: a damaged or edited checkpoint is a `CnnError` naming the field, not a crash."""
    directory = Path(directory)
    path = checkpoint_path(directory) if directory.is_dir() or directory.suffix != ".safetensors" \
        else directory
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
    except (ValueError, RecursionError) as e:
        raise file_error(path, "checkpoint metadata is corrupt", expected="JSON", found=str(e),
                         code="checkpoint-format") from None
    meta = check_checkpoint_meta(path, meta, require_position=False)
    weights = {k[len(_WEIGHTS_PREFIX):]: v for k, v in tensors.items() if k.startswith(_WEIGHTS_PREFIX)}
    optim = {k[len(_OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(_OPTIM_PREFIX)}
    _check_checkpoint_tensors(path, weights, optim)
    return Checkpoint(weights, optim, meta, path)
