"""A list of augmentations applied, in order, to each training batch.

    pipe = Pipeline([RandomCrop(size=28, padding=2, p=0.5), Rotate(degrees=10, p=0.5)], seed=cfg.seed)
    problems = pipe.validate((1, 28, 28))          # [] or sentences for diagnostics
    xb = pipe.apply(xb, idx, epoch)                 # idx: the images' indices in the data set

Op number j of the pipeline draws its random numbers from the hash of
(seed, epoch, idx[i], j) (see cnndsl.augment.rng): the same seed, epoch and
indices give the same batch, bit for bit, whatever the batch composition or
thread count. Training only: never apply it at evaluation.

Each op is one (serial) Numba kernel over the images; intermediate results go
to buffers the pipeline keeps between calls, the last op writes the result.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from cnndsl.augment.ops import Augmentation, Shape, from_config


class Pipeline:
    def __init__(self, ops: Iterable[Augmentation], seed: int = 0):
        self.ops: list[Augmentation] = list(ops)
        for op in self.ops:
            if not isinstance(op, Augmentation):
                raise TypeError(f"Pipeline takes Augmentation objects, got {op!r}")
        self.seed = int(seed)
        self._checked: set[Shape] = set()
        self._buffers: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, augs: Sequence, seed: int = 0) -> "Pipeline":
        """From the model file's augment list (items with .kind, .p, .params)."""
        return cls([from_config(a) for a in augs], seed)

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(map(repr, self.ops))}], seed={self.seed})"

    # ---- checks ------------------------------------------------------------------
    def problems(self, input_shape) -> list[tuple[int, str]]:
        """(op position, problem) pairs; each op is checked on the shape its predecessor outputs."""
        out: list[tuple[int, str]] = []
        shape = tuple(int(d) for d in input_shape)
        for j, op in enumerate(self.ops):
            found = op.validate(shape)
            out += [(j, msg) for msg in found]
            if found:
                break  # later shapes are unknown
            shape = op.output_shape(shape)
        return out

    def validate(self, input_shape) -> list[str]:
        """Problems of the whole pipeline on (C, H, W) inputs, as sentences; [] when fine."""
        return [msg for _, msg in self.problems(input_shape)]

    def output_shape(self, input_shape) -> Shape:
        """(C, H, W) of the augmented images: the network's input must have this shape."""
        shape = tuple(int(d) for d in input_shape)
        for op in self.ops:
            shape = op.output_shape(shape)
        return shape  # type: ignore[return-value]

    # ---- running -------------------------------------------------------------------
    def _buffer(self, j: int, shape: tuple[int, ...]) -> np.ndarray:
        n, rest = shape[0], shape[1:]
        buf = self._buffers.get(j)
        if buf is None or buf.shape[1:] != rest or buf.shape[0] < n:
            buf = np.empty(shape, np.float32)
            self._buffers[j] = buf
        return buf[:n]

    def apply(self, batch: np.ndarray, indices, epoch: int, out: np.ndarray | None = None, *,
              op_offset: int = 0) -> np.ndarray:
        """Augment `batch` (float32 (N, C, H, W) in [0, 1]; not modified).

        `indices`: the N images' indices in the data set (int); `epoch`: the epoch
        (or step) number. Returns `out` (float32 (N, *output_shape)) or a new array.
        `op_offset` shifts the op numbers used in the hash (to run one op of a
        longer pipeline on its own)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"augmentation needs a batch (N, C, H, W), got shape {x.shape}")
        shape = tuple(int(d) for d in x.shape[1:])
        if shape not in self._checked:
            problems = self.validate(shape)
            if problems:
                raise ValueError("; ".join(problems))
            self._checked.add(shape)  # type: ignore[arg-type]
        n = x.shape[0]
        idx = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if idx.shape[0] != n:
            raise ValueError(f"{n} images but {idx.shape[0]} indices")
        final = (n,) + self.output_shape(shape)
        if out is None:
            out = np.empty(final, np.float32)
        elif out.shape != final or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {final}, "
                             f"got {out.dtype} {out.shape}")
        elif np.shares_memory(out, x):
            raise ValueError("out must not overlap the input batch")
        if not self.ops:
            out[...] = x
            return out
        src = x
        for j, op in enumerate(self.ops):
            oshape = op.output_shape(shape)
            dst = out if j == len(self.ops) - 1 else self._buffer(j, (n,) + oshape)
            table = op.draw(idx, self.seed, int(epoch), op_offset + j, shape)
            op.run(src, dst, table)
            src, shape = dst, oshape
        return out

    __call__ = apply
