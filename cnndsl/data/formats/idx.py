"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, ...): an images file and a labels file,
either gzip-compressed (read by content), alone or in a folder under the MNIST names.

    load_idx(images, labels)            one pair of files
    load_idx_folder(dir, split)         train-{images-idx3,labels-idx1}-ubyte[.gz], t10k-...
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cnndsl.data.formats.common import (GZIP_MAGIC, SPLITS, ZIP_MAGIC, ClassDataset, check_labels, check_shape,
                                        check_split, head, is_pickle, listing, pickle_error)
from cnndsl.diagnostics import file_error
from cnndsl.io.files import check_budget, file_size, human_bytes, need_dir, need_file, open_regular

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
              0x0D: "32-bit floats", 0x0E: "64-bit floats"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """The uint8 array of an IDX file, gunzipped when it is gzip-compressed (by content).

    A gzip file is decompressed as a stream: the header first, then at most the bytes the header
    declares (checked against the memory budget) and one more, so a decompression bomb stops at
    the first byte beyond what the header announced instead of filling the memory."""
    what = f"IDX {kind} file"
    need_file(path, what)
    with open_regular(path, what) as f:
        try:
            gz = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if not gz:
                size = file_size(f)
                check_budget(path, what, size, f"the file holds {human_bytes(size)}")
                return _parse_idx(path, f.read(), kind)
            with gzip.GzipFile(fileobj=f, mode="rb") as src:
                return _read_idx_stream(path, src, kind)
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise file_error(path, f"cannot read {what}", expected="a readable file",
                                 found=e.strerror or str(e), code="data-format") from None
            raise file_error(path, f"cannot decompress {what} (truncated or corrupt .gz?)",
                             expected="a complete gzip file", found=str(e) or type(e).__name__,
                             help="download the file again", code="data-format") from None


def _read_idx_stream(path: Path, src, kind: str) -> np.ndarray:
    head = src.read(4)
    if len(head) == 4 and head[:2] == b"\0\0":
        head += src.read(4 * head[3])
    header, dims, size = _idx_header(path, head, kind)
    _idx_budget(path, kind, dims, size)  # before decompressing a byte of the body
    body = src.read(size + 1)
    if len(body) > size:
        what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if kind == "images" else f"{dims[0]} labels"
        raise file_error(path, f"IDX {kind} file is longer than its header says",
                         expected=f"{size} data bytes after the header ({what})",
                         found=f"more than {size} bytes once decompressed",
                         help="a corrupt file, or a decompression bomb: check where it came from",
                         code="data-format")
    return _parse_idx(path, head + body, kind)



# ---------------------------------------------------------------------------- IDX (MNIST)
def _idx_header(path: Path, data: bytes, kind: str) -> tuple[int, tuple[int, ...], int]:
    """(header length, dims, data size) of an IDX file starting with `data`, checked against the
    memory budget; kind is 'images' (3 dims) or 'labels' (1 dim)."""
    want_magic = IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC
    want_ndim = 3 if kind == "images" else 1
    want = f"an IDX {kind} file (magic number 0x{want_magic:08X}, " + \
        ("then the image count, rows and columns" if kind == "images" else "then the label count") + \
        " as big-endian 32-bit integers)"
    if len(data) < 4:
        raise file_error(path, f"IDX {kind} file is too short to hold a header", expected=want,
                         found=f"{len(data)} bytes", code="data-format")
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0":
        found = f"magic number 0x{magic:08X}"
        hint = None
        if is_pickle(data):
            raise pickle_error(path)
        if data[:4] == ZIP_MAGIC:
            found, hint = "a zip/.npz archive", "load .npz files as a data set of their own"
        elif data[:4] == b"\x89PNG":
            found = "a PNG image"
        raise file_error(path, f"not an IDX {kind} file", expected=want, found=found, help=hint,
                         code="data-format")
    dtype, ndim = data[2], data[3]
    if dtype != 0x08:
        raise file_error(path, f"IDX {kind} file holds {_IDX_TYPES.get(dtype, f'element type 0x{dtype:02X}')}",
                         expected="unsigned bytes (type 0x08), as in MNIST and Fashion-MNIST",
                         found=f"magic number 0x{magic:08X}", code="data-format")
    if ndim != want_ndim:
        other = {1: "labels", 3: "images"}.get(ndim)
        hint = f"this looks like an IDX {other} file: are the image and label files swapped?" if other else None
        raise file_error(path, f"IDX file has {ndim} dimension{'s' if ndim != 1 else ''}, not {want_ndim}",
                         expected=want, found=f"magic number 0x{magic:08X}", help=hint, code="data-format")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise file_error(path, f"IDX {kind} file is truncated inside its header",
                         expected=f"{header} header bytes", found=f"{len(data)} bytes", code="data-truncated")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)  # Python integers: three 32-bit dims overflow int64 (they wrapped before)
    if kind == "images" and not (dims[1] and dims[2]):
        raise file_error(path, f"IDX images file declares images of {dims[1]}x{dims[2]} pixels",
                         expected="images at least 1 pixel high and wide",
                         found=f"magic number 0x{magic:08X}, dimensions {' x '.join(map(str, dims))}",
                         code="data-format")
    return header, dims, size


def _idx_budget(path: Path, kind: str, dims: tuple[int, ...], size: int) -> None:
    what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if kind == "images" else f"{dims[0]} labels"
    # the raw bytes, plus the float32 images (4 bytes a pixel) or int64 labels (8) made from them
    factor = 5 if kind == "images" else 9
    check_budget(path, f"IDX {kind} file", size * factor, f"the header declares {what}")
    if kind == "images":  # with 0 images, 65535x65535 images are still no shape to reshape to
        check_budget(path, "IDX images file", dims[1] * dims[2] * factor,
                     f"the header declares images of {dims[1]}x{dims[2]} pixels each")


def _parse_idx(path: Path, data: bytes, kind: str) -> np.ndarray:
    """The uint8 array of an IDX file; kind is 'images' (3 dims) or 'labels' (1 dim)."""
    header, dims, size = _idx_header(path, data, kind)
    body = len(data) - header
    what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if kind == "images" else f"{dims[0]} labels"
    if body < size:
        complete = body // max(1, size // max(1, dims[0]))
        raise file_error(path, f"IDX {kind} file is truncated",
                         expected=f"{size} data bytes after the header ({what})",
                         found=f"{body} bytes (only {complete} complete)",
                         help="the download was probably cut off: fetch the file again", code="data-truncated")
    if body > size:
        raise file_error(path, f"IDX {kind} file is longer than its header says",
                         expected=f"{size} data bytes after the header ({what})",
                         found=f"{body} bytes ({body - size} extra)", code="data-format")
    _idx_budget(path, kind, dims, size)
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def load_idx(images_path, labels_path, expected_shape=None, num_classes: int | None = None,
             name: str | None = None) -> ClassDataset:
    """MNIST-format IDX image and label files (either may be gzip-compressed).

    expected_shape: the network input (1, H, W), checked when given.
    Pixels are divided by 255; labels are int64."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = _read_idx(images_path, "images")
    labels = _read_idx(labels_path, "labels")
    n, h, w = images.shape
    if len(labels) != n:
        raise file_error(labels_path, "the image and label files hold different numbers of samples",
                         expected=f"{n} labels, one per image of {images_path.name}",
                         found=f"{len(labels)} labels", help="are the files from the same split (train / t10k)?",
                         code="data-shape")
    check_shape(images_path, (1, h, w), expected_shape, n)
    y = labels.astype(np.int64)
    check_labels(labels_path, y, num_classes)
    x = images.astype(np.float32)[:, None] / np.float32(255)
    return ClassDataset(x, y, name or images_path.name)


def _find_idx(folder: Path, split: str, kind: str) -> Path | None:
    prefix = _IDX_PREFIX[split]
    dims = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{dims}-ubyte", f"{prefix}-{kind}.{dims}-ubyte"):
        for suffix in ("", ".gz"):
            p = folder / (stem + suffix)
            if p.is_file():
                return p
    return None


def load_idx_folder(folder, split: str = "train", expected_shape=None, num_classes: int | None = None) -> ClassDataset:
    """The MNIST-layout folder: {train,t10k}-{images-idx3,labels-idx1}-ubyte, each optionally .gz."""
    folder = Path(folder)
    check_split(split)
    need_dir(folder, "IDX data folder")
    images, labels = _find_idx(folder, split, "images"), _find_idx(folder, split, "labels")
    if images is None or labels is None:
        prefix = _IDX_PREFIX[split]
        missing = " and ".join(f"{prefix}-{k}-{d}-ubyte[.gz]" for k, d, p in
                               (("images", "idx3", images), ("labels", "idx1", labels)) if p is None)
        raise file_error(folder, f"the folder has no {split} split in IDX format",
                         expected=missing, found=listing(folder), code="data-no-split")
    return load_idx(images, labels, expected_shape, num_classes, name=f"{folder.name}/{split}")


def _idx_partner(path: Path) -> tuple[Path, Path] | None:
    """(images, labels) when `path` names one of an IDX pair by the MNIST naming scheme."""
    name = path.name
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if a in name:
            return path, path.with_name(name.replace(a, b))
        if b in name:
            return path.with_name(name.replace(b, a)), path
    return None


def _idx_magic(path: Path) -> bytes:
    start = head(path, 4)
    if start[:2] == GZIP_MAGIC:
        try:
            with open_regular(path, "data file") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return f.read(4)
        except (OSError, EOFError, zlib.error):
            return b""
    return start



# ---------------------------------------------------------------------------- the two records' functions
def is_idx_folder(path: Path) -> bool:
    return path.is_dir() and any(_find_idx(path, s, k) for s in SPLITS for k in ("images", "labels"))


def idx_folder_splits(folder: Path) -> tuple[str, ...]:
    return tuple(s for s in SPLITS if _find_idx(folder, s, "images") and _find_idx(folder, s, "labels"))


def is_idx_file(path: Path) -> bool:
    """An IDX magic number (gzip or not), or a name of the MNIST scheme."""
    return _idx_magic(path)[:3] == b"\0\0\x08" or _idx_partner(path) is not None


def load_idx_file(path: Path, expected_shape=None, num_classes: int | None = None) -> ClassDataset:
    """An IDX images or labels file with its partner, found by the MNIST naming."""
    pair = _idx_partner(path)
    if pair is None:
        raise file_error(path, "cannot tell the matching IDX labels file",
                         expected="MNIST file names (train-images-idx3-ubyte with train-labels-idx1-ubyte)",
                         found=f"'{path.name}'",
                         help="rename the pair to the MNIST names, or point at their folder",
                         code="data-missing")
    images, labels = pair
    for p, role in ((images, "images"), (labels, "labels")):
        if not p.is_file():
            raise file_error(p, f"the IDX {role} file that goes with {path.name} does not exist",
                             expected=f"'{p.name}' next to '{path.name}'", found=listing(path.parent),
                             code="data-missing")
    return load_idx(images, labels, expected_shape, num_classes)
