"""A user's `.npz` archive: images under `x` (or `images`), class labels under `y` (or `labels`).

    load_npz_dataset(path, shape)       checked against the network's input (C, H, W)

Read with `allow_pickle=False`, and each array's header checked against the zip directory and
the memory budget before anything is allocated (see `_read_npz`).
"""
from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cnndsl.data.formats.common import NPY_MAGIC, ClassDataset, channel_kind, check_labels
from cnndsl.diagnostics import abbreviated, file_error
from cnndsl.io.files import check_budget, need_file, open_regular
from cnndsl.io.npy import read_npy_header

npy_format = np.lib.format

_KEY_PAIRS = (("x", "y"), ("images", "labels"))


def _shape_text(shape) -> str:  # NumPy's spelling, as the user wrote the arrays
    return "(" + ", ".join(str(d) for d in shape) + ")"


# What reading a hostile zip member can raise: a bad archive, an unsupported compression method
# (NotImplementedError), an encrypted member (RuntimeError), a corrupt deflate stream, a short file.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error,
               EOFError, OSError, ValueError, OverflowError)


def _npy_header(path, f, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the .npy header at the start of `f`, without reading the
    data; object arrays (pickles) are refused."""
    try:
        shape, fortran, dtype = read_npy_header(f)
    except _ZIP_ERRORS as e:
        raise file_error(path, f"cannot read the NumPy array header of {where}",
                         expected="a .npy array header", found=str(e) or type(e).__name__,
                         code="data-format") from None
    if dtype.hasobject:
        raise file_error(path, f"cannot read the arrays in the data file: {where} is an object array",
                         expected="numeric arrays (not object arrays: loading those runs pickled code)",
                         found=f"dtype {dtype}", code="data-format")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _read_npz(path: Path, archive: zipfile.ZipFile) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(image key, label key, images, labels) of an open .npz archive.

    Before any array is read, each one's .npy header is checked against what the zip directory
    says the member holds once decompressed (they must agree to the byte: a header that lies
    would make NumPy allocate what it declares), and the two arrays, with the float32 images and
    int64 labels made from them, against the memory budget. Decompression then stops at the
    declared size (zipfile never returns more), so a zip bomb cannot grow beyond it."""
    members = {}
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        members.setdefault(key, info)
    keys = list(members)
    pair = next(((a, b) for a, b in _KEY_PAIRS if a in keys and b in keys), None)
    if pair is None:
        raise file_error(path, "data file lacks the image and label arrays",
                         expected="keys 'x' and 'y' (or 'images' and 'labels')",
                         found="keys " + (abbreviated(repr(k) for k in keys) if keys else "none"),
                         help="np.savez(path, x=images, y=labels)", code="data-keys")
    headers, need = {}, 0
    for key, out_size in zip(pair, (4, 8)):  # images become float32, labels int64
        info = members[key]
        where = f"member '{info.filename}'"
        with archive.open(info) as member:
            if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise file_error(path, f"data file {where} is not a NumPy array",
                                 expected="an .npy array (np.savez writes them)",
                                 found=f"{info.file_size:,} bytes of something else", code="data-format")
        with archive.open(info) as member:
            shape, fortran, dtype = _npy_header(path, member, where)
            header_len = member.tell()
        count = math.prod(shape)  # Python integers: a lying shape cannot overflow
        nbytes = count * dtype.itemsize
        if header_len + nbytes != info.file_size:
            raise file_error(path, f"data file is corrupt: {where} does not hold the array its header declares",
                             expected=f"{header_len + nbytes:,} bytes for {dtype} {_shape_text(shape)}",
                             found=f"{info.file_size:,} bytes (the zip directory's uncompressed size)",
                             code="data-format")
        headers[key] = (shape, fortran, dtype)
        need += nbytes + count * out_size
    check_budget(path, "data file", need,
                 f"'{pair[0]}' {_shape_text(headers[pair[0]][0])} and '{pair[1]}' "
                 f"{_shape_text(headers[pair[1]][0])} need that much once loaded")
    arrays = []
    for key in pair:
        with archive.open(members[key]) as member:
            arrays.append(npy_format.read_array(member, allow_pickle=False))
    return pair[0], pair[1], arrays[0], arrays[1]


def load_npz_dataset(path, expected_shape, num_classes: int | None = None,
                     name: str | None = None) -> ClassDataset:
    """Read a user's `.npz` data set and check it against the network input (C, H, W).

    Keys: `x` and `y`, or `images` and `labels`.
    Images: (N, C, H, W); (N, H, W) when C == 1; or channels-last (N, H, W, C).
      uint8 is scaled by 1/255; float32/float64 is used as is (converted to float32).
    Labels: integers 0..num_classes-1, shape (N,).
    Every problem raises a `CnnError` naming the file, what was expected and what was found.
    """
    path = Path(path)
    c, h, w = (int(d) for d in expected_shape)
    want_desc = f"images of shape (N, {c}, {h}, {w}) ({channel_kind(c)} {h}x{w})"
    need_file(path, "data file", "a .npz file with x and y arrays")
    with open_regular(path, "data file") as f:  # a FIFO or a device is refused here
        try:
            start = f.read(len(NPY_MAGIC))
            f.seek(0)
            if start == NPY_MAGIC:
                shape, _, _ = _npy_header(path, f, "the file")
                raise file_error(path, "data file is a single .npy array, not an .npz archive",
                                 expected="an .npz archive with x and y arrays",
                                 found=f"one array of shape {_shape_text(shape)}",
                                 help="save images and labels together: np.savez(path, x=images, y=labels)",
                                 code="data-format")
            with zipfile.ZipFile(f) as archive:
                xk, yk, x, y = _read_npz(path, archive)
        except _ZIP_ERRORS as e:
            raise file_error(path, "cannot read data file as .npz",
                             expected="a NumPy .npz archive (np.savez(path, x=images, y=labels))",
                             found=str(e) or type(e).__name__, code="data-format") from None

    # images
    if x.dtype == np.uint8:
        scale = np.float32(255)
    elif x.dtype in (np.float32, np.float64, np.float16):
        scale = None
    else:
        raise file_error(path, f"array '{xk}' has the wrong dtype",
                         expected="uint8 (0-255) or float32 images", found=str(x.dtype),
                         help=f"convert it, e.g. {xk}.astype(np.float32) / 255 for 8-bit pixel values",
                         code="data-dtype")
    if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
        x = np.moveaxis(x, -1, 1)
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        hint = None
        if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            hint = "the array looks channels-last (N, H, W, C)"
        if x.ndim >= 3:
            hint = ((hint + "; ") if hint else "") + \
                f"the network's input is {c}x{h}x{w}: change the model's input or resize the images"
        raise file_error(path, f"array '{xk}' does not match the network's input shape",
                         expected=want_desc, found=f"shape {_shape_text(x.shape)}", help=hint,
                         code="data-shape")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        x = x.astype(np.float32) / scale if scale is not None else x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise file_error(path, f"array '{xk}' contains NaN or infinity", expected="finite float32 values",
                         found=f"{int(np.sum(~np.isfinite(x)))} non-finite values (as float32)",
                         code="data-range")

    # labels
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = "one-hot labels? convert with y.argmax(axis=1)" if y.ndim == 2 else None
        raise file_error(path, f"array '{yk}' must be a vector of class indices",
                         expected=f"shape ({len(x)},)", found=f"shape {_shape_text(y.shape)}",
                         help=hint, code="data-shape")
    if y.dtype.kind not in "iu":
        whole = y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
        raise file_error(path, f"array '{yk}' has the wrong dtype",
                         expected="integer class indices (e.g. int64)", found=str(y.dtype),
                         help=f"{yk}.astype(np.int64)" if whole else None, code="data-dtype")
    if len(y) != len(x):
        raise file_error(path, f"'{xk}' and '{yk}' have different lengths",
                         expected="one label per image", found=f"{len(x)} images, {len(y)} labels",
                         code="data-shape")
    if y.dtype == np.uint64 and len(y) and int(y.max()) > np.iinfo(np.int64).max:
        # int64 would wrap these round to negative labels: 2**64 - 1 was reported as "label -1"
        big = y > np.iinfo(np.int64).max
        i, count = int(np.argmax(big)), int(big.sum())
        first = f" (the first of {count} out of {len(y)})" if count > 1 else ""
        raise file_error(path, f"labels in '{yk}' are out of range",
                         expected=f"class indices 0..{num_classes - 1}" if num_classes is not None
                         else "class indices >= 0",
                         found=f"label {int(y[i])} in sample {i}{first}; labels from {int(y.min())} to {int(y.max())}",
                         code="data-labels")
    y = y.astype(np.int64)
    check_labels(path, y, num_classes, message=f"labels in '{yk}' are out of range")
    return ClassDataset(x, y, name or path.name)
