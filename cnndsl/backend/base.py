"""What an executable needs from a backend besides its launchers: where arrays live.

A backend object allocates buffers and moves arrays between the host (NumPy) and its
memory. The CPU backend's arrays ARE NumPy arrays, so every method is the identity or a
plain NumPy call and the CPU path costs nothing extra. A device backend (CUDA) returns its
own array type; launchers of that backend are the only code that touches those arrays,
everything else goes through `to_host` (outputs, loss values, checkpoints). See
docs/architecture.md, "Backends".
"""
from __future__ import annotations

import numpy as np

from cnndsl.ops.registry import get_op


def register_launcher(backend: str, ops, fn) -> None:
    """Make `fn` the launcher of each op named in `ops` on `backend` (`OpDef.kernels[backend]`);
    what both backends' `@launches` decorators do."""
    for name in ops:
        op = get_op(name)
        if op is None:
            raise KeyError(f"launcher for unknown op {name!r}")
        op.kernels[backend] = fn


class Backend:
    """The interface. `host` is True when arrays are NumPy arrays in host memory."""

    name = "?"
    host = True

    def zeros(self, shape, dtype=np.float32):
        """A zero-filled array of `shape` (an int or a tuple) in this backend's memory."""
        raise NotImplementedError

    def to_device(self, host: np.ndarray):
        """A new array in this backend's memory holding a copy of `host`."""
        raise NotImplementedError

    def to_host(self, arr) -> np.ndarray:
        """The array's values as a NumPy array (a copy for device memory, `arr` itself on the CPU)."""
        raise NotImplementedError

    def copy_in(self, dst, src: np.ndarray) -> None:
        """Overwrite the backend array `dst` with host values `src` (same size; cast to dst's dtype)."""
        raise NotImplementedError

    def copy_out(self, dst: np.ndarray, src) -> None:
        """Overwrite the host array `dst` with the values of the backend array `src`."""
        raise NotImplementedError

    def start_run(self, rc) -> None:
        """Called by Executable.run before the inputs are fed (e.g. bring parameters over)."""

    def finish_run(self, rc) -> None:
        """Called by Executable.run after the last launch (e.g. read the loss values back)."""

    def synchronize(self) -> None:
        """Wait until every launched kernel has finished (CPU kernels finish before they return)."""


class CpuBackend(Backend):
    name = "cpu"
    host = True

    def zeros(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype)

    def to_device(self, host):
        return host

    def to_host(self, arr):
        return arr

    def copy_in(self, dst, src):
        np.copyto(dst, src, casting="same_kind")

    def copy_out(self, dst, src):
        if dst is not src:
            np.copyto(dst, src)


CPU = CpuBackend()
