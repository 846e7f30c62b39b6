"""The data-set formats, one `Format` record each, in the order they are tried.

A record says how to recognise the format (`detect`, given an existing path; a bundled data set
has none: it is named), which splits a path of it provides (`splits`: () for a single file, the
whole data set whatever split is asked for), and how to load it (`load`). `load_dataset` and
`dataset_splits` only walk `FORMATS`: adding a format is a reader module, its record here and
its tests (see docs/architecture.md, "Where a change goes").

Detection order matters where formats overlap: the IDX and CIFAR-10 folders before the image
folder (any folder), a pickle before the zip/.npz test, and CIFAR-10 whole-record .bin files
before IDX (their first bytes may look like an IDX magic by chance).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats.cifar import (cifar_folder_splits, is_cifar_file, is_cifar_folder, load_cifar10_bin,
                                       load_cifar10_folder)
from cnndsl.data.formats.common import (NPY_MAGIC, SPLITS, ZIP_MAGIC, check_labels, check_shape, check_split, head,
                                        is_file, is_pickle, pickle_error)
from cnndsl.data.formats.idx import idx_folder_splits, is_idx_file, is_idx_folder, load_idx_file, load_idx_folder
from cnndsl.data.formats.image_folder import image_folder_splits, load_image_folder_split
from cnndsl.data.formats.npz import load_npz_dataset
from cnndsl.diagnostics import file_error

# load(path, split, expected_shape, resize, num_classes) -> Dataset
Loader = Callable[[Path, str, "tuple[int, int, int] | None", bool, "int | None"], Dataset]


@dataclass(frozen=True)
class Format:
    name: str
    describe: str  # what the user points at, for messages and the CLI's --data help ("": nothing to point at)
    detect: Callable[[Path], bool] | None  # None: a bundled data set, chosen by its name
    splits: Callable[[Path], tuple[str, ...]]
    load: Loader


def _whole(path: Path) -> tuple[str, ...]:
    return ()


def _needs_shape(what: str, expected_shape) -> None:
    if expected_shape is None:
        raise ValueError(f"load_dataset needs expected_shape for {what}")


def _load_digits(path, split, expected_shape, resize, num_classes) -> Dataset:
    from cnndsl.data.digits import INPUT_SHAPE, digits_dataset

    ds = digits_dataset(split)
    check_shape("digits", INPUT_SHAPE, expected_shape, len(ds), "or choose another data set")
    check_labels("digits", ds.y, num_classes)
    return ds


def _load_npz(path, split, expected_shape, resize, num_classes) -> Dataset:
    _needs_shape("a .npz file", expected_shape)
    return load_npz_dataset(path, expected_shape, num_classes)


def _load_image_folder(path, split, expected_shape, resize, num_classes) -> Dataset:
    _needs_shape("an image folder", expected_shape)
    return load_image_folder_split(path, split, expected_shape, resize, num_classes)


def _refuse_pickle(path, split, expected_shape, resize, num_classes) -> Dataset:
    raise pickle_error(path)


def _is_pickle(path: Path) -> bool:
    return is_file(path) and is_pickle(head(path))


def _is_npz(path: Path) -> bool:
    return is_file(path) and (path.suffix.lower() == ".npz" or head(path).startswith((ZIP_MAGIC, NPY_MAGIC)))


FORMATS: tuple[Format, ...] = (
    Format("digits", "'digits' (bundled)", None, lambda path: SPLITS, _load_digits),
    Format("idx-folder", "a folder of MNIST-format IDX files", is_idx_folder, idx_folder_splits,
           lambda path, split, shape, resize, k: load_idx_folder(path, split, shape, k)),
    Format("cifar-folder", "a folder of CIFAR-10 binary batches", is_cifar_folder, cifar_folder_splits,
           lambda path, split, shape, resize, k: load_cifar10_folder(path, split, shape, k)),
    Format("image-folder", "a folder of PNG/JPEG images, one subfolder per class", Path.is_dir, image_folder_splits,
           _load_image_folder),
    # recognised to be refused: unpickling a data file can run arbitrary code
    Format("pickle", "", _is_pickle, _whole, _refuse_pickle),
    Format("npz", "a .npz file with x/y arrays", _is_npz, _whole, _load_npz),
    Format("cifar", "a CIFAR-10 binary batch (.bin)", lambda path: is_file(path) and is_cifar_file(path), _whole,
           lambda path, split, shape, resize, k: load_cifar10_bin(path, shape, k)),
    Format("idx", "an MNIST-format IDX file (its partner found by name)", lambda path: is_file(path) and is_idx_file(path), _whole,
           lambda path, split, shape, resize, k: load_idx_file(path, shape, k)),
)

FORMATS_TEXT = "; ".join(f.describe for f in FORMATS if f.describe)


def find_format(spec: str) -> Format | None:
    """The record of the data set `spec` names, or None (no such path, or no format claims it)."""
    for fmt in FORMATS:
        if fmt.detect is None:
            if spec == fmt.name:
                return fmt
        elif fmt.detect(Path(spec)):
            return fmt
    return None


def dataset_splits(spec: str) -> tuple[str, ...]:
    """The splits `spec` provides: ('train', 'test') for digits and folders that hold both,
    ('train',) when a folder has only training data, () for a single file (the whole data set)."""
    fmt = find_format(spec)
    return fmt.splits(Path(spec)) if fmt is not None else ()


def load_dataset(spec: str, expected_shape, split: str = "train", *, resize: bool = False,
                 num_classes: int | None = None) -> Dataset:
    """Load the data set `spec` names, checked against the network input `expected_shape` (C, H, W)
    and, with `num_classes`, its labels against the class count.

    spec: a bundled data set's name ('digits') or a path of one of `FORMATS`.
    split: 'train' or 'test' for folders and digits; a single file is the whole data set.
    resize: image folders only: convert and resize images instead of rejecting them."""
    check_split(split)
    fmt = find_format(spec)
    path = Path(spec)
    if fmt is None:
        if not path.exists():
            # a relative path (`dataset "data.npz"` in a model file elsewhere) is taken from the
            # current folder, not the model file's: say where it was looked for
            where = "" if path.is_absolute() else f" in {Path.cwd()} (a relative path is taken from the current folder)"
            raise file_error(path, "data set not found", expected=FORMATS_TEXT, found=f"no such file or folder{where}",
                             code="data-missing")
        raise file_error(path, "unknown data set format", expected=FORMATS_TEXT,
                         found=f"{path.stat().st_size} bytes starting with {head(path)!r}", code="data-format")
    return fmt.load(path, split, expected_shape, resize, num_classes)
