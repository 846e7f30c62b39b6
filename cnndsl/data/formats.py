"""The data-set formats users bring, each loaded into a `Dataset`.

    load_idx(images, labels)            MNIST-format IDX files (optionally .gz): MNIST, Fashion-MNIST, ...
    load_idx_folder(dir, split)         a folder holding train-images-idx3-ubyte[.gz], t10k-..., ...
    load_cifar10_bin(path)              CIFAR-10 binary batches (.bin: 1 label byte + 3072 CHW pixel bytes)
    load_cifar10_folder(dir, split)     a folder of data_batch_*.bin / test_batch.bin
    load_image_folder(dir, shape)       PNG/JPEG images, one subfolder per class
    load_dataset(spec, shape, split)    any of the above, a .npz file, or 'digits', picked by path

Every problem with a file raises a `CnnError` (via `file_error`) naming the file,
what was expected and what was found. Images come back as float32 (N, C, H, W)
in [0, 1], labels as int64 class indices. Loaders return a `ClassDataset`: a
`Dataset` that also knows its class names when the format says them (image
folders, CIFAR-10), else None.

Pickled data (the CIFAR-10 "python version") is never read: unpickling a data
file can run arbitrary code. It is recognised and the user is asked for the
binary version.

Splits: folder formats hold a 'train' and a 'test' split (image folders may
have train/ and test/ (or val/) subfolders); a single file is the whole data
set whatever split is asked for. `dataset_splits(spec)` says which splits a spec
provides, so a trainer can hold out part of the training data when there is no
test split.
"""
from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from cnndsl.data.dataset import Dataset, load_npz_dataset
from cnndsl.diagnostics import CnnError, Diagnostic, file_error
from cnndsl.io.files import check_budget, file_size, human_bytes, open_regular, read_head

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_RECORD = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
              0x0D: "32-bit floats", 0x0E: "64-bit floats"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


class ClassDataset(Dataset):
    """A `Dataset` with the names of its classes (index order), or None when unknown."""

    def __init__(self, x, y, name: str = "data", class_names: Sequence[str] | None = None):
        super().__init__(x, y, name)
        self.class_names: tuple[str, ...] | None = tuple(class_names) if class_names is not None else None

    def subset(self, indices) -> "ClassDataset":
        d = super().subset(indices)
        return ClassDataset(d.x, d.y, d.name, self.class_names)


# ---------------------------------------------------------------------------- helpers
def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _kind(c: int) -> str:
    return {1: "grayscale", 3: "RGB"}.get(int(c), f"{c}-channel")


def _listing(folder: Path, limit: int = 8) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        return e.strerror or str(e)
    if not names:
        return "an empty folder"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _need_file(path: Path, what: str) -> None:
    if not path.exists():
        raise file_error(path, f"{what} does not exist", expected=what, found="no such file", code="data-missing")
    if path.is_dir():
        raise file_error(path, f"{what} is a directory, not a file", expected=what, found="a directory",
                         code="data-missing")


def _need_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise file_error(path, f"{what} does not exist", expected=what, found="no such folder", code="data-missing")
    if not path.is_dir():
        raise file_error(path, f"{what} is a file, not a folder", expected=what, found="a file", code="data-missing")


def _head(path: Path, n: int = 8) -> bytes:
    """The first bytes of a data file; a FIFO or a device is refused (opening a FIFO blocks)."""
    return read_head(path, "data file", n)


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _pickle_error(path: Path, what: str = "data file") -> CnnError:
    return file_error(
        path, f"{what} is a Python pickle; cnndsl does not unpickle data (loading a pickle can run arbitrary code)",
        expected="the CIFAR-10 binary version (data_batch_1.bin ... test_batch.bin), IDX files, a folder of "
                 "images, or a .npz file",
        found="a pickle (the CIFAR 'python version'?)",
        help=f"download the binary version (cifar-10-binary.tar.gz) from {CIFAR_URL} and point at its "
             "cifar-10-batches-bin folder, or save the arrays with np.savez(path, x=images, y=labels)",
        code="data-pickle")


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """The uint8 array of an IDX file, gunzipped when it is gzip-compressed (by content).

    A gzip file is decompressed as a stream: the header first, then at most the bytes the header
    declares (checked against the memory budget) and one more, so a decompression bomb stops at
    the first byte beyond what the header announced instead of filling the memory."""
    what = f"IDX {kind} file"
    _need_file(path, what)
    with open_regular(path, what) as f:
        try:
            gz = f.read(2) == _GZIP_MAGIC
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


def _check_shape(path, shape, expected_shape, n: int, help_extra: str = "") -> None:
    if expected_shape is None:
        return
    want = tuple(int(d) for d in expected_shape)
    if tuple(shape) == want:
        return
    c, h, w = want
    fc, fh, fw = shape
    hint = f"the network's input is {_shape_text(want)}: declare the input as {_shape_text(shape)}" \
        + (help_extra and f", {help_extra}")
    raise file_error(path, "the images do not match the network's input shape",
                     expected=f"{_kind(c)} {h}x{w} images ({_shape_text(want)})",
                     found=f"{n} {_kind(fc)} {fh}x{fw} images ({_shape_text(shape)})", help=hint,
                     code="data-shape")


def _check_labels(path, y: np.ndarray, num_classes: int | None) -> None:
    if num_classes is None or not len(y):
        return
    hi = int(y.max())
    if hi >= num_classes:
        where = int(np.argmax(y >= num_classes))
        raise file_error(path, "labels are out of range for the network",
                         expected=f"class indices 0..{num_classes - 1}",
                         found=f"label {hi} (first out-of-range label at position {where})", code="data-labels")


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
        if _is_pickle(data):
            raise _pickle_error(path)
        if data[:4] == _ZIP_MAGIC:
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
    _check_shape(images_path, (1, h, w), expected_shape, n)
    y = labels.astype(np.int64)
    _check_labels(labels_path, y, num_classes)
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
    _check_split(split)
    _need_dir(folder, "IDX data folder")
    images, labels = _find_idx(folder, split, "images"), _find_idx(folder, split, "labels")
    if images is None or labels is None:
        prefix = _IDX_PREFIX[split]
        missing = " and ".join(f"{prefix}-{k}-{d}-ubyte[.gz]" for k, d, p in
                               (("images", "idx3", images), ("labels", "idx1", labels)) if p is None)
        raise file_error(folder, f"the folder has no {split} split in IDX format",
                         expected=missing, found=_listing(folder), code="data-no-split")
    return load_idx(images, labels, expected_shape, num_classes, name=f"{folder.name}/{split}")


# ---------------------------------------------------------------------------- CIFAR-10 binary
def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _need_file(path, "CIFAR-10 batch file")
    head = read_head(path, "CIFAR-10 batch file", 8)
    if _is_pickle(head):
        raise _pickle_error(path, "CIFAR-10 batch file")
    if head[:2] == _GZIP_MAGIC:
        raise file_error(path, "CIFAR-10 batch file is gzip-compressed",
                         expected=f"an uncompressed CIFAR-10 binary batch ({CIFAR_RECORD}-byte records)",
                         found="a gzip file (cifar-10-binary.tar.gz?)",
                         help="extract it first: tar xzf cifar-10-binary.tar.gz", code="data-format")
    with open_regular(path, "CIFAR-10 batch file") as f:
        size = file_size(f)
        # the raw bytes, then the float32 images made from them (4 bytes a pixel)
        check_budget(path, "CIFAR-10 batch file", size * 5,
                     f"{size // CIFAR_RECORD:,} records of 3x32x32 pixels")
        try:
            data = f.read(size)
        except OSError as e:
            raise file_error(path, "cannot read CIFAR-10 batch file", expected="a readable file",
                             found=e.strerror or str(e), code="data-format") from None
    want = f"CIFAR-10 binary records of {CIFAR_RECORD} bytes (1 label byte, then 3072 pixel bytes: " \
           "1024 red, 1024 green, 1024 blue, row by row)"
    size = len(data)
    if size == 0:
        raise file_error(path, "CIFAR-10 batch file is empty", expected=want, found="0 bytes",
                         code="data-truncated")
    if size % CIFAR_RECORD:
        n, rest = divmod(size, CIFAR_RECORD)
        if size % 3074 == 0:
            raise file_error(path, "this looks like a CIFAR-100 binary file, not CIFAR-10", expected=want,
                             found=f"{size} bytes = {size // 3074} records of 3074 bytes (2 label bytes each)",
                             help="CIFAR-100 is not supported; convert it to .npz (x, y) to use it",
                             code="data-format")
        raise file_error(path, "CIFAR-10 batch file is truncated or not a CIFAR-10 binary batch",
                         expected=want, found=f"{size} bytes = {n} whole records and {rest} bytes more",
                         help="download and extract cifar-10-binary.tar.gz again", code="data-truncated")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0]
    if len(labels) and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise file_error(path, "CIFAR-10 batch file has labels outside 0..9",
                         expected="a label byte 0..9 at the start of each record",
                         found=f"label {int(labels[bad])} in record {bad}",
                         help="is this really a CIFAR-10 binary batch?", code="data-labels")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta.txt"
    if meta.is_file():
        try:  # ten short names: the first 64 KiB are plenty, whatever the file's size
            with open_regular(meta, "CIFAR-10 class names file") as f:
                text = f.read(65536).decode("utf-8", errors="replace")
            names = tuple(s.strip() for s in text.splitlines() if s.strip())
        except (OSError, CnnError):
            names = ()
        if len(names) == 10:
            return names
    return CIFAR10_CLASSES


def load_cifar10_bin(paths, expected_shape=None, num_classes: int | None = None,
                     name: str | None = None) -> ClassDataset:
    """One CIFAR-10 binary batch file, or several (concatenated in the given order)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_cifar10_bin needs at least one file")
    parts = [_read_cifar(p) for p in paths]
    x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    y = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    _check_shape(paths[0], (3, 32, 32), expected_shape, len(x),
                 "or resize the images and save them as .npz")
    _check_labels(paths[0], y, num_classes)
    return ClassDataset(x.astype(np.float32) / np.float32(255), y, name or paths[0].name,
                        _cifar_class_names(paths[0].parent))


def _cifar_batches(folder: Path, split: str) -> list[Path]:
    if split == "test":
        p = folder / "test_batch.bin"
        return [p] if p.is_file() else []
    found = []
    for p in folder.glob("data_batch_*.bin"):
        m = re.fullmatch(r"data_batch_(\d+)\.bin", p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _pickled_cifar_folder(folder: Path) -> Path | None:
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        p = folder / name
        if p.is_file() and _is_pickle(_head(p)):
            return p
    return None


def load_cifar10_folder(folder, split: str = "train", expected_shape=None,
                        num_classes: int | None = None) -> ClassDataset:
    """The cifar-10-batches-bin folder: train = data_batch_*.bin (in number order), test = test_batch.bin."""
    folder = Path(folder)
    _check_split(split)
    _need_dir(folder, "CIFAR-10 folder")
    files = _cifar_batches(folder, split)
    if not files:
        pickled = _pickled_cifar_folder(folder)
        if pickled is not None:
            raise _pickle_error(pickled, "CIFAR-10 batch file")
        raise file_error(folder, f"the folder has no CIFAR-10 {split} batches",
                         expected="test_batch.bin" if split == "test" else "data_batch_1.bin ... data_batch_5.bin",
                         found=_listing(folder), code="data-no-split")
    return load_cifar10_bin(files, expected_shape, num_classes, name=f"{folder.name}/{split}")


# ---------------------------------------------------------------------------- image folders
def _image_files(folder: Path) -> list[Path]:
    # Not only regular files: a FIFO or a device named like an image is refused when it is read,
    # not skipped in silence.
    return sorted(p for p in folder.rglob("*")
                  if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _load_resized(path: Path, expected) -> np.ndarray:
    """Any image Pillow reads, converted to the expected channel count and resized (bilinear)."""
    from PIL import Image

    from cnndsl.io.images import decode_image, non_finite_error

    c, h, w = expected
    im = decode_image(path)  # FIFOs, devices, decompression bombs and corrupt files are refused
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # high bit depth grey: keep the precision
        arr = np.asarray(im).astype(np.float32)
        if not np.all(np.isfinite(arr)):  # a float TIFF can hold NaN, which clip() keeps
            raise non_finite_error(path, arr)
        if im.mode != "F":
            arr /= np.float32(255 if im.mode == "I" and arr.max(initial=0) <= 255 else 65535)
        arr = np.clip(arr, 0, 1)
        if arr.shape != (h, w):
            arr = np.asarray(Image.fromarray(arr, "F").resize((w, h), Image.Resampling.BILINEAR))
        arr = np.clip(arr, 0, 1)[None]
        return np.ascontiguousarray(np.repeat(arr, c, axis=0), dtype=np.float32)
    im = im.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(im).astype(np.float32) / np.float32(255)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    if arr.shape[0] != c:
        raise file_error(path, "cannot convert the image to the network's channel count",
                         expected=f"{c} channels", found=f"{arr.shape[0]} channels", code="image-shape")
    return np.ascontiguousarray(arr)


def load_image_folder(root, expected_shape, resize: bool = False, num_classes: int | None = None,
                      name: str | None = None) -> ClassDataset:
    """Images in class subfolders: root/<class>/<image>. Class index = position of the
    subfolder name in sorted order; `class_names` holds the names.

    expected_shape (C, H, W) is required: every image must have it, unless
    resize=True (then images are converted to grey/RGB and resized, bilinear)."""
    from cnndsl.io.images import load_image

    root = Path(root)
    _need_dir(root, "image folder")
    expected = tuple(int(d) for d in expected_shape)
    classes = _class_folders(root)
    if not classes:
        loose = _image_files(root)
        raise file_error(root, "the image folder has no class subfolders",
                         expected="one subfolder per class holding its images, e.g. cat/001.png, dog/002.png",
                         found=(f"{len(loose)} images directly in the folder" if loose else _listing(root)),
                         help="move the images of each class into a folder named after the class",
                         code="data-format")
    if num_classes is not None and len(classes) > num_classes:
        raise file_error(root, "the image folder has more classes than the network has outputs",
                         expected=f"at most {num_classes} class folders",
                         found=f"{len(classes)}: " + ", ".join(p.name for p in classes[:12]), code="data-labels")
    images: list[np.ndarray] = []
    labels: list[int] = []
    files_of = []
    for folder in classes:
        files = _image_files(folder)
        if not files:
            raise file_error(folder, f"class folder '{folder.name}' has no images",
                             expected=f"image files ({', '.join(IMAGE_SUFFIXES[:3])}, ...)",
                             found=_listing(folder), help="remove the folder or add images", code="data-format")
        files_of.append(files)
    total = sum(len(files) for files in files_of)
    # each image twice (the list, then the stacked array), float32
    check_budget(root, "image folder", total * math.prod(expected) * 4 * 2,
                 f"{total:,} images of {_shape_text(expected)}")
    for k, files in enumerate(files_of):
        for f in files:
            if resize:
                images.append(_load_resized(f, expected))
            else:
                try:
                    images.append(load_image(f, expected))
                except CnnError as e:
                    raise _with_resize_hint(e) from None
            labels.append(k)
    x = np.stack(images)
    return ClassDataset(x, np.asarray(labels, np.int64), name or root.name, [p.name for p in classes])


def _with_resize_hint(e: CnnError) -> CnnError:
    diags = []
    for d in e.diagnostics:
        if d.code == "image-shape":
            extra = ("or, from Python, load the folder with cnndsl.data.formats.load_dataset(..., resize=True), which "
                     "converts and resizes every image (the command line has no such flag for training data)")
            d = Diagnostic(d.severity, d.message, d.span, list(d.details),
                           f"{d.help}; {extra}" if d.help else extra, list(d.notes), d.code)
        diags.append(d)
    return CnnError(diags)


def _split_subfolder(root: Path, split: str) -> Path | None:
    names = ("train",) if split == "train" else ("test", "val", "valid", "validation")
    for n in names:
        p = root / n
        if p.is_dir() and any(q.is_dir() for q in p.iterdir()):
            return p
    return None


def _has_split_layout(root: Path) -> bool:
    return _split_subfolder(root, "train") is not None or _split_subfolder(root, "test") is not None


# ---------------------------------------------------------------------------- the dispatcher
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


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
    head = _head(path, 4)
    if head[:2] == _GZIP_MAGIC:
        try:
            with open_regular(path, "data file") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return f.read(4)
        except (OSError, EOFError, zlib.error):
            return b""
    return head


def _classify(path: Path) -> str:
    """The format of an existing path: idx-folder, cifar-folder, image-folder, npz, idx, cifar, pickle."""
    if path.is_dir():
        if any(_find_idx(path, s, k) for s in SPLITS for k in ("images", "labels")):
            return "idx-folder"
        if any(_cifar_batches(path, s) for s in SPLITS) or _pickled_cifar_folder(path):
            return "cifar-folder"
        return "image-folder"
    head = _head(path)
    if _is_pickle(head):
        return "pickle"
    if path.suffix.lower() == ".npz" or head.startswith(_ZIP_MAGIC) or head.startswith(_NPY_MAGIC):
        return "npz"
    size = path.stat().st_size
    if path.suffix.lower() == ".bin" and size and size % CIFAR_RECORD == 0:
        return "cifar"  # whole CIFAR records: their first bytes may look like an IDX magic by chance
    magic = _idx_magic(path)
    if magic[:3] == b"\0\0\x08" or _idx_partner(path) is not None:
        return "idx"
    if path.suffix.lower() == ".bin":
        return "cifar"
    return "unknown"


_FORMATS_TEXT = ("'digits', a .npz file (x, y), a CIFAR-10 .bin batch or folder, MNIST-format IDX files "
                 "or their folder, or a folder of class subfolders with images")


def dataset_splits(spec: str) -> tuple[str, ...]:
    """The splits `spec` provides: ('train', 'test') for digits and folders that hold both,
    ('train',) when a folder has only training data, () for a single file (the whole data set)."""
    if spec == "digits":
        return SPLITS
    path = Path(spec)
    if not path.exists():
        return ()
    kind = _classify(path)
    if kind == "idx-folder":
        return tuple(s for s in SPLITS if _find_idx(path, s, "images") and _find_idx(path, s, "labels"))
    if kind == "cifar-folder":
        return tuple(s for s in SPLITS if _cifar_batches(path, s))
    if kind == "image-folder":
        if _has_split_layout(path):
            return tuple(s for s in SPLITS if _split_subfolder(path, s) is not None)
        return ("train",)
    return ()


def load_dataset(spec: str, expected_shape, split: str = "train", *, resize: bool = False,
                 num_classes: int | None = None) -> Dataset:
    """Load the data set `spec` names, checked against the network input `expected_shape` (C, H, W).

    spec: 'digits' (the bundled digits), or a path:
      a folder with IDX files (train-images-idx3-ubyte[.gz], t10k-...) -> load_idx_folder
      a folder with data_batch_*.bin / test_batch.bin                  -> load_cifar10_folder
      a folder of class subfolders (optionally under train/ and test/) -> load_image_folder
      a .npz file -> load_npz_dataset;  a .bin file -> load_cifar10_bin
      an IDX images or labels file (its partner found by the MNIST naming) -> load_idx
    split: 'train' or 'test' for folders and digits; a single file is the whole data set.
    resize: image folders only: convert and resize images instead of rejecting them."""
    _check_split(split)
    if spec == "digits":
        from cnndsl.data.digits import INPUT_SHAPE, digits_dataset
        ds = digits_dataset(split)
        _check_shape("digits", INPUT_SHAPE, expected_shape, len(ds),
                     "or choose another data set")
        return ds
    path = Path(spec)
    if not path.exists():
        raise file_error(path, "data set not found", expected=_FORMATS_TEXT, found="no such file or folder",
                         code="data-missing")
    kind = _classify(path)
    if kind == "idx-folder":
        return load_idx_folder(path, split, expected_shape, num_classes)
    if kind == "cifar-folder":
        return load_cifar10_folder(path, split, expected_shape, num_classes)
    if kind == "image-folder":
        root = path
        if _has_split_layout(path):
            root = _split_subfolder(path, split)
            if root is None:
                raise file_error(path, f"the image folder has no {split} split",
                                 expected=f"a subfolder '{split}' holding one folder per class"
                                 + (" (or 'val')" if split == "test" else ""),
                                 found=_listing(path), code="data-no-split")
        elif split == "test":
            raise file_error(path, "the image folder has no test split",
                             expected="train/ and test/ subfolders, each holding one folder per class",
                             found="class folders only: " + _listing(path), code="data-no-split")
        if expected_shape is None:
            raise ValueError("load_dataset needs expected_shape for an image folder")
        return load_image_folder(root, expected_shape, resize=resize, num_classes=num_classes,
                                 name=f"{path.name}/{split}" if root != path else path.name)
    if kind == "pickle":
        raise _pickle_error(path)
    if kind == "npz":
        if expected_shape is None:
            raise ValueError("load_dataset needs expected_shape for a .npz file")
        return load_npz_dataset(path, expected_shape, num_classes)
    if kind == "idx":
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
                                 expected=f"'{p.name}' next to '{path.name}'", found=_listing(path.parent),
                                 code="data-missing")
        return load_idx(images, labels, expected_shape, num_classes)
    if kind == "cifar":
        return load_cifar10_bin(path, expected_shape, num_classes)
    raise file_error(path, "unknown data set format", expected=_FORMATS_TEXT,
                     found=f"{path.stat().st_size} bytes starting with {_head(path)!r}", code="data-format")
