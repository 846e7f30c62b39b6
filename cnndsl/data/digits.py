"""The bundled handwritten digits: 5,000 MNIST images (500 per digit), 28x28 grayscale.

Split (fixed, stored in the file as index arrays): 4,000 train (400 per
class) and 1,000 test (100 per class). See `make_digits.py` for the source
and how the file is rebuilt.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from cnndsl.data.dataset import Dataset

DIGITS_PATH = Path(__file__).with_name("digits.npz")
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def _raw() -> dict[str, np.ndarray]:
    with np.load(DIGITS_PATH, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for v in out.values():
        v.setflags(write=False)
    return out


def source() -> str:
    """Where the bundled data came from."""
    return str(_raw()["source"])


def split_indices(split: str) -> np.ndarray:
    """Indices into the 5,000 images for `split` ('train', 'test' or 'all')."""
    raw = _raw()
    if split == "train":
        return raw["train_idx"].copy()
    if split == "test":
        return raw["test_idx"].copy()
    if split == "all":
        return np.arange(len(raw["labels"]), dtype=np.int64)
    raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def load_digits(split: str = "train", shuffle: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,)) for 'train', 'test' or 'all'.

    The images are stored sorted by class; by default they come in a random order fixed by
    `seed` (the same for the same seed), so that a slice `x[:500]` holds every class.
    `shuffle=False`: the stored order (class by class)."""
    idx = split_indices(split)
    if shuffle:
        idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    raw = _raw()
    x = raw["images"][idx].astype(np.float32)[:, None] / np.float32(255)
    y = raw["labels"][idx].astype(np.int64)
    return np.ascontiguousarray(x), y


def digits_dataset(split: str = "train") -> Dataset:
    """`load_digits(split)` as a `Dataset`, in the stored order (training shuffles every epoch itself)."""
    x, y = load_digits(split, shuffle=False)
    return Dataset(x, y, name=f"digits/{split}")
