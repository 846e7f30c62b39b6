"""Image folders: PNG/JPEG/... images (anything Pillow reads) in one subfolder per class,
optionally under train/ and test/ (or val/) subfolders.

    load_image_folder(dir, shape)       one folder of class subfolders
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnndsl.data.formats.common import SPLITS, ClassDataset, check_labels, listing, shape_text
from cnndsl.diagnostics import CnnError, Diagnostic, abbreviated, file_error
from cnndsl.io.files import check_budget, need_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _image_files(folder: Path) -> list[Path]:
    # Not only regular files: a FIFO or a device named like an image is refused when it is read,
    # not skipped in silence.
    return sorted(p for p in folder.rglob("*")
                  if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _load_resized(path: Path, expected) -> np.ndarray:
    """Any image Pillow reads, converted to the expected channel count and resized (bilinear)."""
    from PIL import Image

    from cnndsl.io.images import decode_image, non_finite_error

    c, h, w = expected
    im = decode_image(path)  # FIFOs, devices, decompression bombs and corrupt files are refused
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # high bit depth grey: keep the precision
        arr = np.asarray(im).astype(np.float32)
        if not np.all(np.isfinite(arr)):  # a float TIFF can hold NaN, which clip() keeps
            raise non_finite_error(path, arr)
        if im.mode != "F":
            arr /= np.float32(255 if im.mode == "I" and arr.max(initial=0) <= 255 else 65535)
        arr = np.clip(arr, 0, 1)
        if arr.shape != (h, w):
            arr = np.asarray(Image.fromarray(arr, "F").resize((w, h), Image.Resampling.BILINEAR))
        arr = np.clip(arr, 0, 1)[None]
        return np.ascontiguousarray(np.repeat(arr, c, axis=0), dtype=np.float32)
    im = im.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(im).astype(np.float32) / np.float32(255)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    if arr.shape[0] != c:
        raise file_error(path, "cannot convert the image to the network's channel count",
                         expected=f"{c} channels", found=f"{arr.shape[0]} channels", code="image-shape")
    return np.ascontiguousarray(arr)


def load_image_folder(root, expected_shape, resize: bool = False, num_classes: int | None = None,
                      name: str | None = None) -> ClassDataset:
    """Images in class subfolders: root/<class>/<image>. Class index = position of the
    subfolder name in sorted order; `class_names` holds the names.

    expected_shape (C, H, W) is required: every image must have it, unless
    resize=True (then images are converted to grey/RGB and resized, bilinear)."""
    from cnndsl.io.images import load_image

    root = Path(root)
    need_dir(root, "image folder")
    expected = tuple(int(d) for d in expected_shape)
    classes = _class_folders(root)
    if not classes:
        loose = _image_files(root)
        raise file_error(root, "the image folder has no class subfolders",
                         expected="one subfolder per class holding its images, e.g. cat/001.png, dog/002.png",
                         found=(f"{len(loose)} images directly in the folder" if loose else listing(root)),
                         help="move the images of each class into a folder named after the class",
                         code="data-format")
    names = [p.name for p in classes]
    # a label is its class folder's position: checked before a single image is read
    check_labels(root, np.arange(len(classes), dtype=np.int64), num_classes,
                 message="the image folder has more classes than the network has outputs", unit=None, names=names,
                 help="the classes are the subfolders in sorted order: " + abbreviated(names))
    images: list[np.ndarray] = []
    labels: list[int] = []
    files_of = []
    for folder in classes:
        files = _image_files(folder)
        if not files:
            raise file_error(folder, f"class folder '{folder.name}' has no images",
                             expected=f"image files ({', '.join(IMAGE_SUFFIXES[:3])}, ...)",
                             found=listing(folder), help="remove the folder or add images", code="data-format")
        files_of.append(files)
    total = sum(len(files) for files in files_of)
    # each image twice (the list, then the stacked array), float32
    check_budget(root, "image folder", total * math.prod(expected) * 4 * 2,
                 f"{total:,} images of {shape_text(expected)}")
    for k, files in enumerate(files_of):
        for f in files:
            if resize:
                images.append(_load_resized(f, expected))
            else:
                try:
                    images.append(load_image(f, expected))
                except CnnError as e:
                    raise _with_resize_hint(e) from None
            labels.append(k)
    x = np.stack(images)
    return ClassDataset(x, np.asarray(labels, np.int64), name or root.name, names)


def _with_resize_hint(e: CnnError) -> CnnError:
    diags = []
    for d in e.diagnostics:
        if d.code == "image-shape":
            extra = ("or, from Python, load the folder with cnndsl.data.formats.load_dataset(..., resize=True), which "
                     "converts and resizes every image (the command line has no such flag for training data)")
            d = Diagnostic(d.severity, d.message, d.span, list(d.details),
                           f"{d.help}; {extra}" if d.help else extra, list(d.notes), d.code)
        diags.append(d)
    return CnnError(diags)


def _split_subfolder(root: Path, split: str) -> Path | None:
    names = ("train",) if split == "train" else ("test", "val", "valid", "validation")
    for n in names:
        p = root / n
        if p.is_dir() and any(q.is_dir() for q in p.iterdir()):
            return p
    return None


def _has_split_layout(root: Path) -> bool:
    return _split_subfolder(root, "train") is not None or _split_subfolder(root, "test") is not None


# ---------------------------------------------------------------------------- the record's functions
def image_folder_splits(root: Path) -> tuple[str, ...]:
    if _has_split_layout(root):
        return tuple(s for s in SPLITS if _split_subfolder(root, s) is not None)
    return ("train",)


def load_image_folder_split(path: Path, split: str, expected_shape, resize: bool = False,
                            num_classes: int | None = None) -> ClassDataset:
    """The `split` of an image folder: its train/ or test/ (val/) subfolder, or the folder itself
    (train only) when it holds the class folders directly."""
    root = path
    if _has_split_layout(path):
        root = _split_subfolder(path, split)
        if root is None:
            raise file_error(path, f"the image folder has no {split} split",
                             expected=f"a subfolder '{split}' holding one folder per class"
                             + (" (or 'val')" if split == "test" else ""),
                             found=listing(path), code="data-no-split")
    elif split == "test":
        raise file_error(path, "the image folder has no test split",
                         expected="train/ and test/ subfolders, each holding one folder per class",
                         found="class folders only: " + listing(path), code="data-no-split")
    if expected_shape is None:
        raise ValueError("load_dataset needs expected_shape for an image folder")
    return load_image_folder(root, expected_shape, resize=resize, num_classes=num_classes,
                             name=f"{path.name}/{split}" if root != path else path.name)
