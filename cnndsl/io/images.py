"""Reading single input images for `cnndsl predict` and friends.

`load_image(path, expected_shape)` returns a float32 (C, H, W) array in [0, 1]
matching the network's input, or raises a `CnnError` saying what was expected
and what was found. Supported:

* PNG / JPEG / anything Pillow reads (by content, not extension):
  mode L (grayscale) -> 1 channel, RGB -> 3 channels; 1-bit and 16-bit
  grayscale become 1 channel, palette images and CMYK become RGB; an alpha
  channel is dropped only when the image is fully opaque.
  EXIF orientation is applied. 8-bit values are divided by 255, 16-bit by 65535.
* `.npy` arrays (no pickles): (C, H, W), (H, W) when C == 1, (H, W, C)
  channels-last, or any of these with a leading batch axis of 1. uint8 is
  divided by 255, uint16 by 65535, bool becomes 0/1, floats must already lie
  in [0, 1].

Images are never resized or converted between grayscale and colour silently:
a wrong size or channel count is an error with the command that would fix it.
`resize=True` (`cnndsl predict --resize`) asks for both: RGB becomes grayscale by
ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, Pillow's convert('L')), grayscale
becomes RGB by repeating it, and the size is changed by Pillow's bilinear
resampling (antialiased when shrinking), channel by channel on float32 values.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from cnndsl.diagnostics import CnnError, file_error
from cnndsl.io.files import check_budget, file_size, need_file, open_regular
from cnndsl.io.npy import read_npy_header

_NPY_MAGIC = b"\x93NUMPY"
# An image with more than this many times the pixels of the network's input is refused from its
# header, before decoding: it cannot be used as it is (cnndsl never resizes silently), so decoding
# it would only spend memory to report a size error. Images up to this factor are decoded so that
# the message can name their channel count as well.
MUCH_LARGER = 4


def describe_shape(shape, mode: str | None = None) -> str:
    """'1x28x28 (grayscale 28x28)', '3x32x32 (RGB 32x32)', or with a Pillow mode '3x32x32 RGB'."""
    c, h, w = (int(d) for d in shape)
    dims = f"{c}x{h}x{w}"
    if mode is not None:
        return f"{dims} {mode}"
    kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c} channels")
    return f"{dims} ({kind} {h}x{w})"


def _check_shape(path: Path, arr: np.ndarray, expected, found_desc: str) -> np.ndarray:
    c, h, w = expected
    fc, fh, fw = arr.shape
    if (fc, fh, fw) == (c, h, w):
        return arr
    fixes = []
    if fc != c:
        if c == 1 and fc in (3, 4):
            fixes.append("convert it to grayscale, e.g. Image.open(p).convert('L')")
        elif c == 3 and fc == 1:
            fixes.append("convert it to RGB, e.g. Image.open(p).convert('RGB')")
        else:
            fixes.append(f"give it {c} channel{'s' if c != 1 else ''}")
    if (fh, fw) != (h, w):
        fixes.append(f"resize it to {w}x{h}, e.g. Image.open(p).resize(({w}, {h}))")
    what = "channel count" if fc != c and (fh, fw) == (h, w) else \
        "size" if fc == c else "size and channel count"
    raise file_error(path, f"image has the wrong {what} for the network's input",
                     expected=describe_shape(expected), found=found_desc,
                     help="; ".join(fixes), code="image-shape")


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert("L")


def _adapt(path: Path, arr: np.ndarray, expected, found_desc: str) -> np.ndarray:
    """`resize=True`: the image converted to the input's channel count and resized to its size."""
    from PIL import Image

    c, h, w = expected
    fc = arr.shape[0]
    if fc != c:
        if c == 1 and fc == 3:
            arr = np.tensordot(LUMA, arr, axes=1)[None]
        elif c == 3 and fc == 1:
            arr = np.repeat(arr, 3, axis=0)
        else:
            raise file_error(path, "cannot convert the image's channels to the network's input",
                             expected=describe_shape(expected), found=found_desc,
                             help="--resize converts grayscale <-> RGB only; give an image with "
                                  f"{c} channel{'s' if c != 1 else ''}", code="image-shape")
    if arr.shape[1:] != (h, w):
        arr = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(ch, np.float32), mode="F")
                                   .resize((w, h), Image.BILINEAR)) for ch in arr])
        arr = np.clip(arr, 0.0, 1.0)  # the antialiasing filter may overshoot a little
    return np.ascontiguousarray(arr, dtype=np.float32)


def _from_npy(path: Path, expected, resize: bool = False) -> np.ndarray:
    c, h, w = expected
    npy = np.lib.format
    with open_regular(path, "image file") as f:
        try:
            shape, fortran, dtype = read_npy_header(f)
            if dtype.hasobject:
                raise ValueError(f"an object array (dtype {dtype}): loading it would unpickle code")
            # The header's shape is checked against the file size before NumPy allocates it.
            nbytes = math.prod(shape) * dtype.itemsize
            if f.tell() + nbytes != file_size(f):
                raise ValueError(f"the header declares {dtype} {tuple(shape)} = {nbytes:,} data bytes, "
                                 f"the file holds {file_size(f) - f.tell():,}")
            if math.prod(shape) > MUCH_LARGER * c * h * w and not resize:
                raise file_error(path, "the .npy array is far larger than the network's input",
                                 expected=f"shape ({c}, {h}, {w}) for {describe_shape(expected)}",
                                 found=f"shape {tuple(shape)} (not loaded)", code="image-shape")
            check_budget(path, "image file", nbytes + math.prod(shape) * 4, f"an array of shape {tuple(shape)}")
            f.seek(0)  # read_array reads the header again
            arr = npy.read_array(f, allow_pickle=False)
        except CnnError:
            raise
        except (ValueError, EOFError, OverflowError, SyntaxError) as e:
            raise file_error(path, "cannot read .npy image", expected="a NumPy array file (no pickles)",
                             found=str(e)[:200], code="image-unreadable") from None
        except OSError as e:
            raise file_error(path, "cannot read .npy image", expected="a NumPy array file",
                             found=e.strerror or str(e), code="image-unreadable") from None
    if not isinstance(arr, np.ndarray):
        raise file_error(path, "cannot read .npy image", expected="a single array",
                         found=type(arr).__name__, code="image-unreadable")
    if arr.dtype.byteorder not in ("=", "|"):  # big-endian '>u2' is uint16 too
        arr = arr.astype(arr.dtype.newbyteorder("="))
    raw_shape = arr.shape
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape != (c, h, w) and (arr.shape == (h, w, c) or (
            resize and arr.shape[-1] in (1, 3) and arr.shape[0] not in (1, 3))):
        arr = np.moveaxis(arr, -1, 0)  # channels-last
    if arr.ndim != 3:
        raise file_error(path, "the .npy array is not an image",
                         expected=f"shape ({c}, {h}, {w}) for {describe_shape(expected)}",
                         found=f"shape {raw_shape}", code="image-shape")
    found = f"array of shape {raw_shape}"
    arr = _adapt(path, arr, expected, found) if resize else _check_shape(path, arr, expected, found)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / np.float32(65535)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif arr.dtype.kind == "f":
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
            out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise file_error(path, "image array contains NaN or infinity", expected="finite values in [0, 1]",
                             found=f"{int(np.sum(~np.isfinite(out)))} non-finite values", code="image-range")
        lo, hi = float(out.min(initial=0.0)), float(out.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise file_error(path, "image values are outside [0, 1]", expected="float values in [0, 1]",
                             found=f"values from {lo:g} to {hi:g}",
                             help="divide by 255 if these are 8-bit pixel values, or save as uint8",
                             code="image-range")
    else:
        raise file_error(path, "image array has an unsupported dtype",
                         expected="uint8, uint16, bool or float in [0, 1]", found=str(arr.dtype),
                         code="image-dtype")
    return np.ascontiguousarray(out, dtype=np.float32)


def non_finite_error(path: Path, arr: np.ndarray) -> CnnError:
    return file_error(path, "image contains NaN or infinity", expected="finite values in [0, 1]",
                      found=f"{int(arr.size - np.count_nonzero(np.isfinite(arr)))} non-finite values",
                      code="image-range")


def decode_image(path, expected=None):
    """Open and decode an image with Pillow (EXIF orientation applied), or raise a `CnnError`.

    Refused: a missing file, a directory, a FIFO or a device; a file Pillow cannot identify or
    decode; an image over Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, 89 million
    pixels; Pillow only warns between 1x and 2x that limit: here both are errors); and, when
    `expected` (C, H, W) is given, an image of another size with more than MUCH_LARGER times its
    pixels, from the header, before decoding."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    need_file(path, "image file", "a PNG, JPEG or .npy file", code="image-missing")
    with open_regular(path, "image file") as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:
                    if expected is not None:
                        _refuse_much_larger(path, im, expected)
                    im.load()
                    return ImageOps.exif_transpose(im)
        except CnnError:
            raise
        except UnidentifiedImageError:
            f.seek(0)
            start = f.read(8)
            raise file_error(path, "not an image file Pillow can read",
                             expected="a PNG or JPEG image (or a .npy array)",
                             found=f"{file_size(f)} bytes starting with {start!r}",
                             code="image-unreadable") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise file_error(path, "image is too large to decode safely (a decompression bomb?)",
                             expected=f"at most {Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's limit)",
                             found=str(e).split(" could be")[0], code="image-too-large") from None
        except Exception as e:  # noqa: BLE001 - Pillow's decoders parse hostile bytes and raise
            # more than OSError/SyntaxError/ValueError on them (struct.error, IndexError,
            # ZeroDivisionError, MemoryError, ...); each is a bad file, never our bug.
            raise file_error(path, "cannot decode image (corrupt or truncated?)",
                             expected="a complete PNG or JPEG image",
                             found=str(e) or type(e).__name__, code="image-unreadable") from None


def _refuse_much_larger(path: Path, im, expected) -> None:
    c, h, w = expected
    if (im.width, im.height) == (w, h) or im.width * im.height <= MUCH_LARGER * h * w:
        return
    raise file_error(path, "image has the wrong size for the network's input (refused before decoding)",
                     expected=describe_shape(expected),
                     found=f"{im.height}x{im.width} (height x width) {im.mode} image, "
                           f"{im.width * im.height / (h * w):,.0f} times the input's pixels",
                     help=f"resize it to {w}x{h}, e.g. Image.open(p).resize(({w}, {h}))", code="image-shape")


def _from_pillow(path: Path, expected, resize: bool = False) -> np.ndarray:
    im = decode_image(path, None if resize else expected)
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        a = np.asarray(im.getchannel("A"))
        if a.min() < 255:
            c, h, w = expected
            raise file_error(path, "image has transparent pixels",
                             expected=describe_shape(expected) + " without transparency",
                             found=f"{len(im.getbands())}x{im.height}x{im.width} {im.mode} "
                                   f"with {int(np.sum(a < 255))} non-opaque pixels",
                             help="flatten it onto a background, e.g. "
                                  + ("Image.open(p).convert('L')" if c == 1 else "Image.open(p).convert('RGB')"),
                             code="image-alpha")
        im = im.convert("L" if im.mode in ("LA", "La") else "RGB")
    arr = np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = arr.astype(np.float32) / np.float32(65535)
    elif im.mode == "I":
        arr = arr.astype(np.float32)
        arr /= np.float32(255 if arr.max(initial=0) <= 255 else 65535)
    elif im.mode == "F":
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):  # NaN compares false with every bound below
            raise non_finite_error(path, arr)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise file_error(path, "floating-point image values are outside [0, 1]",
                             expected="values in [0, 1]",
                             found=f"values from {arr.min():g} to {arr.max():g}", code="image-range")
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / np.float32(255)
    else:
        raise file_error(path, "unsupported image mode", expected="grayscale (L) or RGB",
                         found=f"mode {mode}", code="image-mode")
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    shown_mode = {"L": "grayscale", "I;16": "16-bit grayscale", "I": "grayscale", "F": "grayscale"}.get(im.mode, im.mode)
    if mode != im.mode and mode not in ("I;16", "I;16B", "I;16L", "I;16N"):
        shown_mode += f" (from mode {mode})"
    found = describe_shape(arr.shape, shown_mode)
    arr = _adapt(path, arr, expected, found) if resize else _check_shape(path, arr, expected, found)
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_image(path, expected_shape, resize: bool = False) -> np.ndarray:
    """Read one image as float32 (C, H, W) in [0, 1], matching `expected_shape` exactly
    (`resize=True`: converted between grayscale and RGB and resized to it, see above)."""
    path = Path(path)
    expected = tuple(int(d) for d in expected_shape)
    if len(expected) != 3:
        raise ValueError(f"expected_shape must be (C, H, W), got {expected_shape!r}")
    need_file(path, "image file", "a PNG, JPEG or .npy file", code="image-missing")
    with open_regular(path, "image file") as f:  # a FIFO or a device is refused here
        try:
            start = f.read(8)
        except OSError as e:
            raise file_error(path, "cannot read image file", expected="a readable file",
                             found=e.strerror or str(e), code="image-unreadable") from None
    if path.suffix.lower() == ".npz" or start.startswith(b"PK\x03\x04"):
        raise file_error(path, "this is an .npz archive, not a single image",
                         expected="a PNG, JPEG or .npy file",
                         found="a zip/.npz archive",
                         help="use it as a data set (--data) or save one image with np.save",
                         code="image-unreadable")
    if path.suffix.lower() == ".npy" or start.startswith(_NPY_MAGIC):
        return _from_npy(path, expected, resize)
    return _from_pillow(path, expected, resize)
