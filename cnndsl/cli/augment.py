"""augment: a picture of what the network sees in training.

    cnndsl augment examples/lenet5.cnn -o grid.png
    cnndsl augment model.cnn --data data/mnist -n 8 -k 5 --seed 3 -o grid.png

One row per training image: the image as stored, then the same image as the
file's `augment { ... }` list turns it in epochs 1, 2, ... k (the pipeline of
the training run, with the same seed and the image's index in the data set, so
column `epoch e` is exactly the input of that epoch, before `normalize`).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import click
import numpy as np

from cnndsl.cli.main import cli
from cnndsl.cli.options import SEED, check_png_output, data_help, load_model, model_options
from cnndsl.diagnostics import CnnError, Diagnostic, file_error

CELL = 96  # target size of one picture, pixels (small images are enlarged by a whole factor)
MAX_CELL = 256  # larger images are shrunk to this
GAP = 4
LABEL_W = 120


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _to_pil(img: np.ndarray, scale: float):
    """A (C, H, W) float image in [0, 1] (clipped) as a PIL image enlarged/shrunk by `scale`."""
    from PIL import Image

    c, h, w = img.shape
    arr = np.clip(np.nan_to_num(img), 0.0, 1.0)
    arr = (arr * 255.0 + 0.5).astype(np.uint8)
    if c == 3:
        pic = Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), "RGB")
    else:  # grey; other channel counts show their first channel
        pic = Image.fromarray(np.ascontiguousarray(arr[0]), "L").convert("RGB")
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        pic = pic.resize(size, Image.NEAREST if scale >= 1 else Image.BILINEAR)
    return pic


def cell_scale(h: int, w: int) -> float:
    """Whole-number enlargement of small images to about CELL pixels; shrink large ones to MAX_CELL."""
    side = max(h, w)
    if side > MAX_CELL:
        return MAX_CELL / side
    return float(max(1, math.ceil(CELL / side)))


def augment_grid(originals: np.ndarray, versions: np.ndarray, row_labels: list[str], col_labels: list[str],
                 title: str = ""):
    """A PIL image: a header row (`col_labels`), then for each image i a row with its label,
    `originals[i]` and `versions[:, i]` (k versions). originals (N, C, H, W), versions (K, N, C, H, W)."""
    from PIL import Image, ImageDraw

    n, c, h, w = originals.shape
    k = versions.shape[0]
    scale = cell_scale(h, w)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    font, small = _font(14), _font(12)
    header_h = 22
    width = LABEL_W + (k + 1) * (cw + GAP) + GAP
    lines = _wrap(title, font, width - 2 * GAP) if title else []
    title_h = 20 * len(lines) + (6 if lines else 0)
    height = title_h + header_h + n * (ch + GAP) + GAP
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for j, line in enumerate(lines):
        draw.text((GAP, 5 + 20 * j), line, fill="black", font=font)
    x0 = LABEL_W + GAP
    for j, text in enumerate(col_labels):
        x = x0 + j * (cw + GAP)
        draw.text((x + cw / 2, title_h + header_h / 2), text, fill="black" if j else "#1f4e9e", font=small,
                  anchor="mm")
    if k:  # a line between the original and its versions
        xs = x0 + cw + GAP // 2
        draw.line([(xs, title_h), (xs, height - GAP)], fill="#1f4e9e", width=1)
    for i in range(n):
        y = title_h + header_h + i * (ch + GAP)
        draw.text((GAP, y + ch / 2), row_labels[i], fill="black", font=small, anchor="lm")
        grid.paste(_to_pil(originals[i], scale), (x0, y))
        for j in range(k):
            grid.paste(_to_pil(versions[j, i], scale), (x0 + (j + 1) * (cw + GAP), y))
    return grid


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken at spaces."""
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    lines: list[str] = []
    current = ""
    for word in (w + " " for w in text.split(" ")):
        if current and measure(current + word, font=font) > width:
            lines.append(current.rstrip())
            current = word
        else:
            current += word
    if current.strip():
        lines.append(current.rstrip())
    return lines


def pick_images(labels, n: int, seed: int) -> np.ndarray:
    """`n` indices, shuffled by `seed`, one per class first (so the rows show different classes)."""
    total = len(labels) if not isinstance(labels, dict) else len(next(iter(labels.values())))
    order = np.random.default_rng(seed).permutation(total)
    y = labels if not isinstance(labels, dict) else None
    if y is None or y.ndim != 1:
        return np.sort(order[:n])
    chosen, seen = [], set()
    for i in order:  # first of each class, in shuffled order
        if int(y[i]) not in seen:
            seen.add(int(y[i]))
            chosen.append(int(i))
            if len(chosen) == n:
                break
    rest = [int(i) for i in order if int(i) not in set(chosen)][: n - len(chosen)]
    picked = chosen + rest
    return np.array(sorted(picked, key=lambda i: (int(y[i]), i)), dtype=np.int64)


def _label(ds, i: int) -> str:
    y = ds.y
    if isinstance(y, dict):
        return f"#{i}"
    value = y[i]
    if np.ndim(value) != 0:
        return f"#{i}"
    names = getattr(ds, "class_names", None)
    v = int(value)
    if names and 0 <= v < len(names):
        return f"#{i} {names[v]}"
    return f"#{i} class {v}"


@cli.command()
@click.argument("file")
@click.option("--data", default=None, help=data_help(generated=False))
@click.option("-n", "--images", "n_images", type=click.IntRange(min=1, max=100), default=6, show_default=True,
              help="Training images to show (rows).")
@click.option("-k", "--versions", "k_versions", type=click.IntRange(min=1, max=30), default=6, show_default=True,
              help="Augmented versions of each (columns: epochs 1..k).")
@click.option("--seed", type=SEED, default=None, help="Seed of the augmentation (default: the file's seed).")
@click.option("-o", "--output", default=None, help="PNG to write (default <file name>-augment.png).")
@model_options
def augment(file, data, n_images, k_versions, seed, output, load_kwargs):
    """A PNG grid: training images next to the augmented versions the network sees."""
    from cnndsl.augment import Pipeline
    from cnndsl.data.formats import load_dataset
    from cnndsl.io.atomic import atomic_write_bytes

    output = output or f"{Path(file).stem}-augment.png"
    check_png_output(output, "the grid", "cli-output")
    program = load_model(file, load_kwargs)
    config = program.training
    augs = config.augment if config is not None else ()
    if not augs:
        where = f" (profile '{config.profile}')" if config is not None and config.profile else ""
        raise CnnError([Diagnostic(
            "error", f"{file} declares no augmentation{where}: nothing to show", None,
            help="add to the train section, e.g.  augment { rotate 10 p=0.5 }", code="no-augment")])
    graph = program.graph
    shape = graph.node(graph.inputs[0]).type.shape
    if len(shape) != 3:
        raise CnnError([Diagnostic("error", f"augmentation needs an image input (CxHxW), but input "
                                   f"'{graph.inputs[0]}' has shape {graph.node(graph.inputs[0]).type}", None,
                                   code="no-augment")])
    spec = data or config.dataset or "digits"
    ds = load_dataset(spec, shape, "train")
    if len(ds) == 0:
        raise file_error(spec, "the data set holds no images", expected="at least one training image",
                         found="0 images", code="data-empty")
    seed = config.seed if seed is None else seed
    pipe = Pipeline.from_config(augs, seed)
    idx = pick_images(ds.y, min(n_images, len(ds)), seed)
    originals = ds.x[idx]
    versions = np.stack([pipe.apply(originals, idx, epoch) for epoch in range(k_versions)])
    steps = "; ".join(_step_text(a) for a in augs)
    title = f"{Path(file).name}: {steps}   (seed {seed}; before normalize)"
    cols = ["original"] + [f"epoch {e + 1}" for e in range(k_versions)]
    grid = augment_grid(originals, versions, [_label(ds, int(i)) for i in idx], cols, title)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    try:
        atomic_write_bytes(output, buf.getvalue())
    except OSError as e:
        raise file_error(output, "cannot write the picture", expected="a writable file",
                         found=e.strerror or str(e), code="cli-output") from None
    click.echo(f"wrote {output}: {len(idx)} images of {ds.name} x {k_versions} augmented versions")


def _step_text(a) -> str:
    from cnndsl.augment.ops import REGISTRY

    order = list(REGISTRY[a.kind].options) if a.kind in REGISTRY else []
    shown = []
    for key, value in sorted(a.params.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        if isinstance(value, tuple):
            value = "x".join(str(v) for v in value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        shown.append(f"{key}={value}")
    p = int(a.p) if float(a.p).is_integer() else a.p
    return f"{a.kind} {' '.join(shown + [f'p={p}'])}".replace("  ", " ")
