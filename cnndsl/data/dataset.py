"""In-memory data sets and mini-batching.

A `Dataset` holds images `x` (float32, (N, C, H, W)) and labels `y`: an int64
array of N class indices, or a dict of such arrays (one per output head).

`Dataset.batches(batch_size, shuffle, seed, epoch, drop_last)` yields
`(x_batch, y_batch)` with C-contiguous float32 images. With shuffle, the order
of epoch `e` is the permutation drawn from `numpy.random.default_rng([seed, e])`:
it depends only on (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would have seen.

The readers of data-set files (`.npz`, IDX, CIFAR-10, image folders) are in
`cnndsl/data/formats/`.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Union

import numpy as np

Labels = Union[np.ndarray, Mapping[str, np.ndarray]]


class Dataset:
    """Images `x` (N, ...) float32 and labels `y` (array or dict of arrays, each length N)."""

    def __init__(self, x: np.ndarray, y: Labels, name: str = "data"):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim < 1:
            raise ValueError("x must have a leading sample axis")
        if isinstance(y, Mapping):
            y = {k: np.asarray(v) for k, v in y.items()}
            lengths = {k: len(v) for k, v in y.items()}
            bad = {k: n for k, n in lengths.items() if n != len(x)}
            if bad:
                raise ValueError(f"{name}: {len(x)} images but label arrays of lengths {bad}")
        else:
            y = np.asarray(y)
            if len(y) != len(x):
                raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
        self.x = x
        self.y = y
        self.name = name

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, n={len(self)}, x={tuple(self.x.shape[1:])})"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def _take_y(self, idx) -> Labels:
        if isinstance(self.y, dict):
            return {k: v[idx] for k, v in self.y.items()}
        return self.y[idx]

    def subset(self, indices) -> "Dataset":
        """A new data set holding the samples at `indices` (copies)."""
        idx = np.asarray(indices)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        return Dataset(self.x[idx], self._take_y(idx), self.name)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else math.ceil(n / batch_size)

    def order(self, shuffle: bool = True, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """The sample order of `epoch`: a permutation seeded by (seed, epoch), or 0..N-1."""
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        return np.random.default_rng([int(seed), int(epoch)]).permutation(len(self)).astype(np.int64)

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                drop_last: bool = False, start: int = 0, with_indices: bool = False) -> Iterator[tuple]:
        """Yield (x, y) batches of `batch_size` (the last may be smaller unless `drop_last`);
        (x, y, indices) with `with_indices`: the samples' positions in the data set, which
        per-image random augmentation is keyed on.

        `start` skips the first `start` batches of the epoch (to resume mid-epoch).
        Unshuffled batches are views into `x`: treat batches as read-only.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = self.order(shuffle, seed, epoch)
        stop = (n // batch_size) * batch_size if drop_last else n
        for i in range(start * batch_size, stop, batch_size):
            j = min(i + batch_size, n)
            idx = order[i:j]
            if shuffle:
                batch = (np.ascontiguousarray(self.x[idx]), self._take_y(idx))
            else:
                batch = (self.x[i:j], self._take_y(slice(i, j)))
            yield batch + (idx,) if with_indices else batch
