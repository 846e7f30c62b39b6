"""Reading the header of a NumPy .npy array without reading its data.

`read_npy_header(f)` returns the shape, Fortran order and dtype that an .npy stream declares, so
that readers can compare them with the file's size, the network's input and the memory budget
before NumPy allocates what the header says. Any problem is a `ValueError` with a message.
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np

_format = np.lib.format


def _version3_reader():
    try:  # NumPy >= 2: the private implementation module; NumPy 1.x: numpy.lib.format itself
        from numpy.lib import _format_impl as impl
    except ImportError:  # pragma: no cover - NumPy 1.x
        impl = _format
    return getattr(impl, "_read_array_header", None)


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy array starting at `f`'s position; `f` is left
    at the start of the data. Raises ValueError (never anything else) on a malformed header."""
    try:
        version = _format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = _format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = _format.read_array_header_2_0(f)
        else:
            reader = _version3_reader()
            if reader is None:  # pragma: no cover
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            shape, fortran, dtype = reader(f, version)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001
        # NumPy parses the header text with tokenize and ast.literal_eval: a hostile header also
        # raises tokenize.TokenError, SyntaxError, RecursionError, MemoryError, EOFError (measured:
        # a NUL byte in the header gave TokenError, which escaped as an internal error).
        raise ValueError(f"malformed .npy header: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(dtype, np.dtype) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"malformed .npy header: shape {shape!r}")
    return tuple(int(d) for d in shape), bool(fortran), dtype


__all__ = ["read_npy_header"]
