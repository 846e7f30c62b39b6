"""CIFAR-10, binary version: batches of 3,073-byte records (1 label byte, then 3x32x32 pixel
bytes, channel by channel), alone or as the cifar-10-batches-bin folder.

    load_cifar10_bin(path)              one batch file, or several concatenated
    load_cifar10_folder(dir, split)     data_batch_*.bin (train) / test_batch.bin (test)

The "python version" (pickles) is recognised and refused: unpickling can run code.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cnndsl.data.formats.common import (GZIP_MAGIC, SPLITS, ClassDataset, check_labels, check_shape, check_split,
                                        head, is_pickle, listing, pickle_error)
from cnndsl.data.formats.idx import is_idx_file
from cnndsl.diagnostics import CnnError, file_error
from cnndsl.io.files import check_budget, file_size, need_dir, need_file, open_regular, read_head

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_RECORD = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    need_file(path, "CIFAR-10 batch file")
    start = read_head(path, "CIFAR-10 batch file", 8)
    if is_pickle(start):
        raise pickle_error(path, "CIFAR-10 batch file")
    if start[:2] == GZIP_MAGIC:
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
    labels = rec[:, 0].astype(np.int64)
    # a label byte past 9 is not CIFAR-10 at all, whatever the network's class count
    check_labels(path, labels, len(CIFAR10_CLASSES), message="CIFAR-10 batch file has labels outside 0..9",
                 unit="record", help="is this really a CIFAR-10 binary batch?")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


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
    check_shape(paths[0], (3, 32, 32), expected_shape, len(x),
                 "or resize the images and save them as .npz")
    check_labels(paths[0], y, num_classes)
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
        if p.is_file() and is_pickle(head(p)):
            return p
    return None


def load_cifar10_folder(folder, split: str = "train", expected_shape=None,
                        num_classes: int | None = None) -> ClassDataset:
    """The cifar-10-batches-bin folder: train = data_batch_*.bin (in number order), test = test_batch.bin."""
    folder = Path(folder)
    check_split(split)
    need_dir(folder, "CIFAR-10 folder")
    files = _cifar_batches(folder, split)
    if not files:
        pickled = _pickled_cifar_folder(folder)
        if pickled is not None:
            raise pickle_error(pickled, "CIFAR-10 batch file")
        raise file_error(folder, f"the folder has no CIFAR-10 {split} batches",
                         expected="test_batch.bin" if split == "test" else "data_batch_1.bin ... data_batch_5.bin",
                         found=listing(folder), code="data-no-split")
    return load_cifar10_bin(files, expected_shape, num_classes, name=f"{folder.name}/{split}")



# ---------------------------------------------------------------------------- the two records' functions
def is_cifar_folder(path: Path) -> bool:
    return path.is_dir() and (any(_cifar_batches(path, s) for s in SPLITS) or _pickled_cifar_folder(path) is not None)


def cifar_folder_splits(folder: Path) -> tuple[str, ...]:
    return tuple(s for s in SPLITS if _cifar_batches(folder, s))


def is_cifar_file(path: Path) -> bool:
    """A .bin file of whole records (their first bytes may look like an IDX magic by chance), or
    any other .bin file that is not an IDX file."""
    if path.suffix.lower() != ".bin":
        return False
    size = path.stat().st_size
    return bool(size and size % CIFAR_RECORD == 0) or not is_idx_file(path)
