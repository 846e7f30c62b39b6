"""What every data-set reader shares: `ClassDataset`, existence checks, the refusal of pickles,
and the two checks of what a file holds against the network: `check_shape` (the images) and
`check_labels` (the labels: the one label check of the format side)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnndsl.data.dataset import Dataset
from cnndsl.diagnostics import CnnError, file_error
from cnndsl.io.files import read_head
from cnndsl.ir.graph import TensorType
from cnndsl.ops.training.targets import ClassIndices

SPLITS = ("train", "test")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


class ClassDataset(Dataset):
    """A `Dataset` with the names of its classes (index order), or None when unknown."""

    def __init__(self, x, y, name: str = "data", class_names: Sequence[str] | None = None):
        super().__init__(x, y, name)
        self.class_names: tuple[str, ...] | None = tuple(class_names) if class_names is not None else None

    def subset(self, indices) -> "ClassDataset":
        d = super().subset(indices)
        return ClassDataset(d.x, d.y, d.name, self.class_names)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def channel_kind(c: int) -> str:
    return {1: "grayscale", 3: "RGB"}.get(int(c), f"{c}-channel")


def listing(folder: Path, limit: int = 8) -> str:
    """What a folder holds, for the 'found' line of an error."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        return e.strerror or str(e)
    if not names:
        return "an empty folder"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def head(path: Path, n: int = 8) -> bytes:
    """The first bytes of a data file; a FIFO or a device is refused (opening a FIFO blocks)."""
    return read_head(path, "data file", n)


def is_file(path: Path) -> bool:
    """An existing path that is not a folder: what a single-file format's `detect` may look into
    (a FIFO or a device passes, and is refused with its own error when its first bytes are read)."""
    return path.exists() and not path.is_dir()


def is_pickle(start: bytes) -> bool:
    return len(start) >= 2 and start[0] == 0x80 and 2 <= start[1] <= 5


def pickle_error(path: Path, what: str = "data file") -> CnnError:
    return file_error(
        path, f"{what} is a Python pickle; cnndsl does not unpickle data (loading a pickle can run arbitrary code)",
        expected="the CIFAR-10 binary version (data_batch_1.bin ... test_batch.bin), IDX files, a folder of "
                 "images, or a .npz file",
        found="a pickle (the CIFAR 'python version'?)",
        help=f"download the binary version (cifar-10-binary.tar.gz) from {CIFAR_URL} and point at its "
             "cifar-10-batches-bin folder, or save the arrays with np.savez(path, x=images, y=labels)",
        code="data-pickle")


def check_shape(path, shape, expected_shape, n: int, help_extra: str = "") -> None:
    """Refuse images of (C, H, W) `shape` when the network's input `expected_shape` differs."""
    if expected_shape is None:
        return
    want = tuple(int(d) for d in expected_shape)
    if tuple(shape) == want:
        return
    c, h, w = want
    fc, fh, fw = shape
    hint = f"the network's input is {shape_text(want)}: declare the input as {shape_text(shape)}" \
        + (help_extra and f", {help_extra}")
    raise file_error(path, "the images do not match the network's input shape",
                     expected=f"{channel_kind(c)} {h}x{w} images ({shape_text(want)})",
                     found=f"{n} {channel_kind(fc)} {fh}x{fw} images ({shape_text(shape)})", help=hint,
                     code="data-shape")


def check_labels(path, y: np.ndarray, num_classes: int | None, *, message: str = "labels are out of range",
                 unit: str | None = "sample", names: Sequence[str] | None = None, help: str | None = None) -> None:
    """The format side's one label check: every label of `y` (int64, one per sample) a class
    index in [0, num_classes) (num_classes None: any index >= 0), else a `CnnError` naming the
    file, the allowed range and the first bad label.

    The rule is the loss ops' own (`ClassIndices` of `cnndsl/ops/training/targets.py`), so a
    reader refuses exactly what `Model.check_targets` would; a reader checks here what it can
    say in the file's terms (`unit`: 'sample', 'record', None where the label says where it is;
    `names`: the class of each index),
    and the model checks again, against each loss, where the data enters training."""
    k = 2 ** 62 if num_classes is None else int(num_classes)
    bad = ClassIndices().first_bad(TensorType((k,)), y)
    if bad is None:
        return
    label = int(bad.value)
    name = f" ('{names[label]}')" if names is not None and 0 <= label < len(names) else ""
    where = f" in {unit} {bad.index[0]}" if unit is not None else ""
    first = f" (the first of {bad.count} out of {bad.total})" if bad.count > 1 else ""
    raise file_error(path, message,
                     expected=f"class indices 0..{k - 1}" if num_classes is not None else "class indices >= 0",
                     found=f"label {label}{name}{where}{first}; "
                           f"labels from {int(y.min())} to {int(y.max())}",
                     help=help, code="data-labels")
