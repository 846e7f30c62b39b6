"""`cnndsl predict` for localization, detection and segmentation models: text and a picture.

`task_of(model)` says which kind of model it is from its heads and losses:
    localization  a class head (cross_entropy) and a 4-number box head (smooth_l1 / mse)
    detection     a grid head trained with yolo / mse / smooth_l1 (decoded by cnndsl.tasks.detection)
    segmentation  a per-pixel head (pixel_cross_entropy)
    None          anything else (a classifier)

`predict_task(model, paths, x, out_image, echo)` prints the predictions and, with
`out_image`, writes a PNG (atomically) of the input, enlarged, with the boxes and classes
or the mask drawn over it; several inputs give `NAME-1.png`, `NAME-2.png`, ...
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
], np.uint8)


def task_of(model) -> str | None:
    from cnndsl.tasks.datasets import TASKS, heads_for

    dataset = model.config.dataset
    kinds = {s.kind for s in model.losses}
    if dataset in TASKS:
        return dataset.split("_")[0]
    for task in ("segmentation_digits", "localization_digits", "detection_digits"):
        try:
            heads_for(model, task)
        except Exception:
            continue
        if task == "detection_digits" and not any(m.kind == "map50" for m in model.config.metrics):
            continue
        return task.split("_")[0]
    return "classification" if kinds & {"cross_entropy"} else None


def _colour(k: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[1 + k % (len(PALETTE) - 1)])


def _canvas(image: np.ndarray, scale: int):
    from PIL import Image

    img = np.asarray(image, np.float32)
    if img.shape[0] == 1:
        rgb = np.repeat(img, 3, axis=0)
    else:
        rgb = img[:3]
    rgb = (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(rgb, "RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def draw_boxes(image: np.ndarray, boxes, classes, scores=None, scale: int = 4):
    """The image enlarged `scale` times with (cx, cy, w, h) boxes and their class (and score)."""
    from PIL import ImageDraw

    pil = _canvas(image, scale)
    d = ImageDraw.Draw(pil)
    W, H = pil.size
    for i, (b, c) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(classes).reshape(-1))):
        cx, cy, w, h = (float(v) for v in b)
        x0, y0, x1, y1 = (cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H
        col = _colour(int(c))
        d.rectangle([x0, y0, x1, y1], outline=col, width=2)
        label = str(int(c)) + (f" {float(scores[i]):.2f}" if scores is not None else "")
        d.text((x0 + 2, max(0, y0 - 11)), label, fill=col)
    return pil


def draw_mask(image: np.ndarray, mask: np.ndarray, scale: int = 4, alpha: float = 0.55):
    """The image enlarged with the class map (0 = background, k = digit k - 1) painted over it."""
    from PIL import Image

    base = np.asarray(_canvas(image, 1), np.float32)
    colours = PALETTE[np.asarray(mask) % len(PALETTE)].astype(np.float32)
    fg = (np.asarray(mask) > 0)[..., None]
    out = np.where(fg, (1 - alpha) * base + alpha * colours, base).astype(np.uint8)
    pil = Image.fromarray(out, "RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _save_png(pil, path) -> None:
    from cnndsl.io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def output_paths(out_image, count: int) -> list[Path]:
    p = Path(out_image)
    if count == 1:
        return [p]
    suffix = p.suffix or ".png"
    return [p.with_name(f"{p.stem}-{i + 1}{suffix}") for i in range(count)]


def predict_task(model, paths, x: np.ndarray, out_image=None, echo=print, top: int = 3) -> bool:
    """Print (and draw) the predictions of a task model; False for a classifier without --out-image
    (the caller prints its usual top classes)."""
    task = task_of(model)
    if task in (None, "classification") and out_image is None:
        return False
    from cnndsl.tasks.datasets import detection_layout, heads_for

    outs = model.predict_proba(x)
    targets = output_paths(out_image, len(x)) if out_image is not None else [None] * len(x)
    for i, (path, img, target) in enumerate(zip(paths, x, targets)):
        if task == "localization":
            roles = heads_for(model, "localization_digits")
            p, box = outs[roles["class"]][i], outs[roles["box"]][i]
            k = int(p.argmax())
            echo(f"{path}: class {k} ({p[k]:.3f}), box cx={box[0]:.3f} cy={box[1]:.3f} w={box[2]:.3f} h={box[3]:.3f}")
            pil = draw_boxes(img, [box], [k], [p[k]])
        elif task == "detection":
            from cnndsl.tasks import detection

            head = heads_for(model, "detection_digits")["grid"]
            classes, boxes = detection_layout(model, head)
            b, c, s = detection.decode(outs[head][i], classes, boxes, threshold=0.3,
                                       activation=detection.activation_for(model, head))
            shown = "; ".join(f"{int(ci)} ({si:.2f}) at cx={bi[0]:.2f} cy={bi[1]:.2f} w={bi[2]:.2f} h={bi[3]:.2f}"
                              for bi, ci, si in zip(b, c, s))
            echo(f"{path}: {len(b)} object{'s' if len(b) != 1 else ''}" + (f": {shown}" if shown else ""))
            pil = draw_boxes(img, b, c, s)
        elif task == "segmentation":
            head = heads_for(model, "segmentation_digits")["mask"]
            mask = outs[head][i].argmax(axis=0)
            counts = np.bincount(mask.reshape(-1), minlength=outs[head].shape[1])
            found = ", ".join(f"{k - 1} ({int(n)} px)" for k, n in enumerate(counts) if k > 0 and n > 0)
            echo(f"{path}: {found or 'background only'}")
            pil = draw_mask(img, mask)
        else:  # a classifier with --out-image: the image with its top class
            head = model.losses[0].head
            p = outs[head][i]
            order = np.argsort(-p)[:top]
            echo(f"{path}: " + ", ".join(f"{int(k)} ({p[k]:.3f})" for k in order))
            pil = draw_boxes(img, [], [])
            from PIL import ImageDraw

            ImageDraw.Draw(pil).text((2, 2), f"{int(order[0])} ({p[order[0]]:.2f})", fill=_colour(int(order[0])))
        if target is not None:
            _save_png(pil, target)
            echo(f"  wrote {target}")
    return True
