"""Localization, detection and segmentation data sets made from the bundled digits.

Deterministic (fixed seeds per task, split and canvas size), no download. Canvases are
grey (one channel), the size of the network's input; the digits of the `train` canvases
come from the digits' training split and those of the `test` canvases from the held-out
split, so held-out canvases show digits the network never saw.

Each digit is cut to its ink (pixels above 0.2), resized (bilinear, aspect kept) so that
its longer side is drawn from a range relative to the canvas, and pasted (pixel-wise
maximum) at a random position entirely inside the canvas. Its box is the pasted rectangle,
(cx, cy, w, h) normalized to the canvas.

    localization_digits   one digit per canvas; targets: class, box
    detection_digits      1 to 4 digits, boxes overlapping by at most IoU 0.05, never two
                          centres in one grid cell; target: the YOLO grid (cnndsl.tasks.detection)
    segmentation_digits   1 to 3 digits, boxes not overlapping; target: an HxW map of
                          0 (background) or 1 + digit (pixels of the resized digit >= 0.5)

`task_dataset(name, model, split)` returns a `Dataset(x, {head: targets})` whose target
arrays are keyed by the model's head names (which head gets what is read from the losses).
"""
from __future__ import annotations

import functools
import zlib

import numpy as np

from cnndsl.data.dataset import Dataset
from cnndsl.diagnostics import CnnError, Diagnostic

TASKS = ("localization_digits", "detection_digits", "segmentation_digits")
CLASSES = 10
INK = 0.2  # a digit's box is the rectangle of its pixels above this
MASK = 0.5  # a segmentation mask pixel is digit where the resized digit is at least this

# canvases per split (train, test)
COUNTS = {
    "localization_digits": (12000, 1000),  # every training digit 3 times (new position, size), held-out once
    "detection_digits": (4000, 1000),
    "segmentation_digits": (4000, 1000),
}
# the longer side of a pasted digit, as a fraction of the canvas's shorter side
SCALES = {
    "localization_digits": (0.25, 0.6),
    "detection_digits": (0.22, 0.42),
    "segmentation_digits": (0.3, 0.5),
}
PER_CANVAS = {"localization_digits": (1, 1), "detection_digits": (1, 4), "segmentation_digits": (1, 3)}


@functools.lru_cache(maxsize=2)
def _crops(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The digits of a split cut to their ink."""
    from cnndsl.data.digits import load_digits

    x, y = load_digits(split, shuffle=False)  # the task data sets are built from the stored order
    crops = []
    for img in x[:, 0]:
        rows = np.flatnonzero((img > INK).any(axis=1))
        cols = np.flatnonzero((img > INK).any(axis=0))
        crops.append(np.ascontiguousarray(img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]))
    return crops, y


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    out = Image.fromarray(np.asarray(img, np.float32), mode="F").resize((w, h), Image.BILINEAR)
    return np.clip(np.asarray(out, np.float32), 0, 1)


def _seed(task: str, split: str, size: tuple[int, int], extra: int = 0) -> list[int]:
    return [zlib.crc32(task.encode()), zlib.crc32(split.encode()), size[0], size[1], extra]


def _place(rng, crops, labels, size, scale, count, taken, max_iou, grid=None):
    """Choose and resize digits and their positions: [(class, image, (top, left))] for one canvas."""
    from cnndsl.tasks.boxes import iou

    H, W = size
    out, boxes, cells = [], [], set()
    for _ in range(count):
        for _attempt in range(40):
            k = int(rng.integers(len(crops)))
            crop = crops[k]
            side = rng.uniform(*scale) * min(H, W)
            f = side / max(crop.shape)
            h, w = max(1, int(round(crop.shape[0] * f))), max(1, int(round(crop.shape[1] * f)))
            top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            box = np.array([(left + w / 2) / W, (top + h / 2) / H, w / W, h / H])
            if boxes and np.max(iou(np.asarray(boxes), box)) > max_iou:
                continue
            if grid is not None:
                cell = (min(int(box[1] * grid[0]), grid[0] - 1), min(int(box[0] * grid[1]), grid[1] - 1))
                if cell in cells:
                    continue
                cells.add(cell)
            out.append((int(labels[k]), _resize(crop, h, w), (top, left), box))
            boxes.append(box)
            break
    return out


@functools.lru_cache(maxsize=6)
def make_task(task: str, split: str, size: tuple[int, int], grid: tuple[int, int] | None = None, count=None):
    """Canvases of `task` for `split`: (x (N, 1, H, W) float32, objects per canvas
    [[(class, (cx, cy, w, h)), ...], ...], masks (N, H, W) int64 or None)."""
    if task not in TASKS:
        raise ValueError(f"unknown task data set {task!r}; one of {', '.join(TASKS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    crops, labels = _crops(split)
    n = count if count is not None else COUNTS[task][split == "test"]
    H, W = size
    rng = np.random.default_rng(_seed(task, split, size))
    x = np.zeros((n, 1, H, W), np.float32)
    masks = np.zeros((n, H, W), np.int64) if task == "segmentation_digits" else None
    objects = []
    lo, hi = PER_CANVAS[task]
    max_iou = 0.05 if task == "detection_digits" else 0.0
    for i in range(n):
        if task == "localization_digits":  # every digit of the split in turn, each `copies` times
            k = i % len(crops)
            placed = _place(_Fixed(rng, k), crops, labels, size, SCALES[task], 1, None, 1.0)
        else:
            placed = _place(rng, crops, labels, size, SCALES[task], int(rng.integers(lo, hi + 1)), None,
                            max_iou, grid if task == "detection_digits" else None)
        objs = []
        for cls, img, (top, left), box in placed:
            h, w = img.shape
            region = x[i, 0, top:top + h, left:left + w]
            np.maximum(region, img, out=region)
            if masks is not None:
                masks[i, top:top + h, left:left + w][img >= MASK] = cls + 1
            objs.append((cls, tuple(float(v) for v in box)))
        objects.append(objs)
    x.setflags(write=False)
    if masks is not None:
        masks.setflags(write=False)
    return x, objects, masks


class _Fixed:
    """An rng whose first integers() call returns a given index (a chosen digit), the rest random."""

    def __init__(self, rng, first: int):
        self.rng, self.first = rng, first

    def integers(self, *args, **kw):
        if self.first is not None:
            k, self.first = self.first, None
            return k
        return self.rng.integers(*args, **kw)

    def uniform(self, *args, **kw):
        return self.rng.uniform(*args, **kw)


# ---------------------------------------------------------------------------- datasets for a model

def _fail(message: str, help: str | None = None) -> CnnError:
    return CnnError([Diagnostic("error", message, help=help, code="task-dataset")])


def _head_type(model, head: str):
    return model.graph.node(model.graph.heads[head]).type.shape


def canvas_size(model, task: str) -> tuple[int, int]:
    shape = model.input_shape
    if len(shape) != 3 or shape[0] != 1:
        raise _fail(f"{task} makes grey 1xHxW canvases, but the network's input is "
                    f"{'x'.join(map(str, shape))}", help="declare the input as `input image: 1x64x64` (any HxW)")
    if min(shape[1:]) < 16:
        raise _fail(f"{task} needs canvases of at least 16x16, but the network's input is "
                    f"{'x'.join(map(str, shape))}")
    return int(shape[1]), int(shape[2])


def detection_layout(model, head: str) -> tuple[int, int]:
    """(classes, boxes) of a detection head, from the network parameters `boxes` or `classes`."""
    from cnndsl.tasks.detection import layout

    channels = _head_type(model, head)[0]
    params = getattr(model.program, "params", {}) or {}
    boxes = params.get("boxes") if isinstance(params.get("boxes"), int) else None
    classes = params.get("classes") if boxes is None and isinstance(params.get("classes"), int) else None
    try:
        return layout(channels, classes, boxes)
    except ValueError as e:
        raise _fail(f"head '{head}': {e}") from None


def heads_for(model, task: str) -> dict[str, str]:
    """Which head gets which target: {"class"|"box"|"grid"|"mask": head name}."""
    roles = {}
    for spec in model.losses:
        shape = _head_type(model, spec.head)
        if spec.kind == "cross_entropy":
            roles.setdefault("class", spec.head)
        elif spec.kind == "pixel_cross_entropy":
            roles.setdefault("mask", spec.head)
        elif spec.kind in ("mse", "smooth_l1") and shape == (4,):
            roles.setdefault("box", spec.head)
        elif spec.kind == "yolo" or (spec.kind in ("mse", "smooth_l1") and len(shape) == 3):
            roles.setdefault("grid", spec.head)
    need = {"localization_digits": ("class", "box"), "detection_digits": ("grid",),
            "segmentation_digits": ("mask",)}[task]
    missing = [r for r in need if r not in roles]
    if missing:
        what = {"class": "a class head with `loss HEAD cross_entropy`",
                "box": "a 4-number box head with `loss HEAD smooth_l1` (or mse)",
                "grid": "a (classes+5)*boxes x GH x GW grid head with `loss HEAD yolo` (or mse, smooth_l1)",
                "mask": "a per-pixel head (classes x H x W) with `loss HEAD pixel_cross_entropy`"}
        raise _fail(f"{task} needs " + " and ".join(what[r] for r in missing),
                    help="see examples/localizer.cnn, examples/detector.cnn, examples/unet_tiny.cnn")
    return {r: roles[r] for r in need}


def task_dataset(task: str, model, split: str) -> Dataset:
    """The `split` of a task data set, with targets keyed by the model's heads."""
    from cnndsl.tasks import detection

    size = canvas_size(model, task)
    roles = heads_for(model, task)
    if task == "detection_digits":
        head = roles["grid"]
        _, gh, gw = _head_type(model, head)
        classes, boxes = detection_layout(model, head)
        if classes != CLASSES:
            raise _fail(f"detection_digits has {CLASSES} classes, but head '{head}' has {classes} class scores "
                        f"per box", help="-D classes=10 (or classes = 10 in the network's parameters)")
        x, objects, _ = make_task(task, split, size, (gh, gw))
        grid = np.stack([detection.encode(o, (gh, gw), classes, boxes) for o in objects])
        return Dataset(x, {head: grid}, f"{task}/{split}")
    x, objects, masks = make_task(task, split, size)
    if task == "localization_digits":
        cls_head = roles["class"]
        if _head_type(model, cls_head) != (CLASSES,):
            raise _fail(f"localization_digits has {CLASSES} classes, but head '{cls_head}' has "
                        f"{_head_type(model, cls_head)[0]} scores", help="-D classes=10")
        y = np.array([o[0][0] for o in objects], np.int64)
        b = np.array([o[0][1] for o in objects], np.float32)
        return Dataset(x, {cls_head: y, roles["box"]: b}, f"{task}/{split}")
    head = roles["mask"]
    k, h, w = _head_type(model, head)
    if (h, w) != size or k != CLASSES + 1:
        raise _fail(f"segmentation_digits needs a {CLASSES + 1}x{size[0]}x{size[1]} head (background + 10 "
                    f"digits at the input's size), but head '{head}' is {k}x{h}x{w}",
                    help="-D classes=11" if k != CLASSES + 1 else None)
    return Dataset(x, {head: np.asarray(masks)}, f"{task}/{split}")
