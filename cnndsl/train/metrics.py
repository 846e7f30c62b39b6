"""Classification metrics, per-epoch metric logs and their plot.

* `accuracy`, `top_k_accuracy` (and the counting versions `count_correct`,
  `count_top_k`) from logits (N, C) and integer labels (N,). Ties go to the
  lower class index, like `argmax`, so all-equal logits are not "all correct".
* `EpochMeter`: accumulates loss, correct predictions and images over the
  batches of one epoch and gives means and images/s.
* `MetricsLog(dir)`: one record per epoch (epoch, train_loss, train_accuracy,
  test_loss, test_accuracy, images_per_s, seconds, lr, plus any extra keys;
  `epoch` counts completed epochs, 1 for the first);
  `<dir>/metrics.json` (a JSON list of records) is rewritten atomically after
  each epoch. Values that are missing or not finite are stored as null.
* `plot(dir)`: `<dir>/curves.png`, one panel for the loss, one per metric (train and
  held-out lines) and one for the learning rate, against epoch, drawn with matplotlib's Agg canvas (no display,
  no global pyplot state) and written atomically.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from cnndsl.diagnostics import file_error
from cnndsl.io.atomic import atomic_writer
from cnndsl.io.files import read_regular
from cnndsl.tasks.metric_kinds import METRICS

METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
          "images_per_s", "seconds", "lr")


# ---------------------------------------------------------------------------- metric functions

def _ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of each sample's true class; ties broken towards lower indices."""
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"need logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}")
    true = logits[np.arange(len(labels)), labels][:, None]
    greater = (logits > true).sum(axis=1)
    tied_before = ((logits == true) & (np.arange(logits.shape[1])[None, :] < labels[:, None])).sum(axis=1)
    return greater + tied_before


def count_correct(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many argmax predictions equal the labels (logits (N, C), or predictions (N,))."""
    logits = np.asarray(logits)
    if logits.ndim == 1:
        return int(np.sum(logits.astype(np.int64) == np.asarray(labels, dtype=np.int64)))
    return int(np.sum(_ranks(logits, labels) < 1))


def count_top_k(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many labels are among the k highest logits."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(np.sum(_ranks(logits, labels) < k))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of argmax predictions equal to the labels (nan for no samples)."""
    n = len(labels)
    return count_correct(logits, labels) / n if n else float("nan")


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of labels among the k highest logits (nan for no samples)."""
    n = len(labels)
    return count_top_k(logits, labels, k) / n if n else float("nan")


class EpochMeter:
    """Running sums over one epoch's batches."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0
        self.start = time.perf_counter()

    def add(self, loss_mean: float, correct: int, n: int) -> None:
        """A batch of `n` images with mean loss `loss_mean` and `correct` right predictions."""
        self.loss_sum += float(loss_mean) * n
        self.correct += int(correct)
        self.count += int(n)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def images_per_s(self) -> float:
        s = self.seconds
        return self.count / s if s > 0 else float("nan")


# ---------------------------------------------------------------------------- the log

def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    return value


METRICS_LIMIT = 64 * 1024 * 1024  # one record per epoch is ~300 bytes: 200,000 epochs


def read_metrics(directory) -> list[dict[str, Any]]:
    """The records in `<directory>/metrics.json` ([] when there is none)."""
    path = Path(directory) / METRICS_FILE
    if not path.exists():
        return []
    try:
        # a FIFO or /dev/zero in its place is refused, not read forever (cnndsl.io.files)
        records = json.loads(read_regular(path, "metrics log", limit=METRICS_LIMIT).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise file_error(path, "cannot read the metrics log", expected="a JSON list of per-epoch records",
                         found=str(e), code="metrics-format") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise file_error(path, "the metrics log is not a list of records",
                         expected="a JSON list of objects", found=type(records).__name__,
                         code="metrics-format")
    for i, r in enumerate(records):  # a resumed run sorts and cuts the records by epoch
        epoch = r.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise file_error(path, f"record {i + 1} of the metrics log has no valid epoch",
                             expected="\"epoch\": a whole number >= 1 in every record", found=f"\"epoch\": {epoch!r}",
                             help="the file was damaged or edited: fix that record, or delete the file "
                                  "(a resumed run then logs from its checkpoint on)", code="metrics-format")
    return records


class MetricsLog:
    """Per-epoch records, persisted to `<dir>/metrics.json` after every `append`.

    With `resume=True` the existing records are kept (use `truncate(epoch)` to
    drop those after the checkpoint being resumed); otherwise the log starts empty.
    """

    def __init__(self, directory, resume: bool = False):
        self.dir = Path(directory)
        self.path = self.dir / METRICS_FILE
        self.records: list[dict[str, Any]] = read_metrics(self.dir) if resume else []

    def append(self, record: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Add one epoch's record and rewrite metrics.json.

        Either a dict or keywords (or both): `epoch` is required; the standard
        fields (epoch, train_loss, train_accuracy, test_loss, test_accuracy,
        images_per_s, seconds, lr) that are not given are stored as null, and
        extra keys are kept.
        """
        merged = {**(dict(record) if record else {}), **fields}
        if "epoch" not in merged:
            raise ValueError("a metrics record needs an 'epoch'")
        out = {k: merged.get(k) for k in FIELDS}
        out.update({k: v for k, v in merged.items() if k not in out})
        out = _clean(out)
        self.records.append(out)
        self.save()
        return out

    def load_existing(self, upto_epoch: int) -> None:
        """On resume: take the records already in metrics.json up to `upto_epoch` (inclusive)."""
        self.records = read_metrics(self.dir)
        self.truncate(upto_epoch)

    def truncate(self, last_epoch: int) -> None:
        """Keep only records with epoch <= last_epoch (and save)."""
        self.records = [r for r in self.records if r.get("epoch") is not None and r["epoch"] <= last_epoch]
        self.save()

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_writer(self.path, "w") as f:
            json.dump(self.records, f, indent=1, allow_nan=False)
            f.write("\n")

    def column(self, key: str) -> list[Any]:
        return [r.get(key) for r in self.records]

    def plot(self) -> Path:
        return plot(self.dir, self.records)


def _series(records: Iterable[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        x, y = r.get("epoch"), r.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            xs.append(x)
            ys.append(y)
    return xs, ys


METRIC_TITLES = {k: m.title for k, m in METRICS.items()}


def _numeric(records: Iterable[dict], key: str) -> bool:
    return any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in records)


def panel_metrics(records: list[dict[str, Any]]) -> list[str]:
    """The metrics a plot of these records shows when the caller does not name them: accuracy
    when a record holds one, then every other held-out value (`test_<name>`) in first-seen order."""
    names = []
    if _numeric(records, "train_accuracy") or _numeric(records, "test_accuracy"):
        names.append("accuracy")
    for r in records:
        for key in r:
            if key.startswith("test_") and key not in ("test_loss", "test_accuracy"):
                name = key[len("test_"):]
                if name not in names and _numeric(records, key):
                    names.append(name)
    return names


def metric_title(name: str) -> str:
    """`map50` -> `mAP@0.5`, `box_box_iou` -> `box_iou`'s title with its head (`box: box IoU`)."""
    if name in METRIC_TITLES:
        return METRIC_TITLES[name]
    for kind, title in METRIC_TITLES.items():
        if name.endswith("_" + kind):
            return f"{name[:-len(kind) - 1]}: {title}"
    return name


def _panels(records: list[dict[str, Any]], metrics: list[str] | None):
    names = panel_metrics(records) if metrics is None else list(metrics)
    names = [n for n in names if _numeric(records, f"test_{n}") or _numeric(records, f"train_{n}")]
    return [("loss", "loss")] + [(n, metric_title(n)) for n in names], _numeric(records, "lr")


def plot_panels(records: list[dict[str, Any]], metrics: list[str] | None = None) -> list[str]:
    """The titles of the panels `plot` draws for these records, in order."""
    panels, with_lr = _panels(records, metrics)
    return [title for _, title in panels] + (["learning rate"] if with_lr else [])


def plot(directory, records: list[dict[str, Any]] | None = None, title: str | None = None,
         metrics: list[str] | None = None) -> Path:
    """Draw `<directory>/curves.png` from the records (read from metrics.json if not given).

    One panel for the loss, one per metric (`metrics`: names as in the records, `test_<name>`
    held out and `train_<name>` when the training loop measures it; default: the metrics the
    records hold, see panel_metrics) and one for the learning rate when the records hold it.
    A metric without a value in any record gets no panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    if records is None:
        records = read_metrics(directory)
    panels, with_lr = _panels(records, metrics)
    count = len(panels) + (1 if with_lr else 0)
    columns = min(count, 3)
    rows = (count + columns - 1) // columns
    fig = Figure(figsize=(4.2 * columns, 3.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (metric, label) in zip(axes, panels):
        for split, name, style in (("train", "train", "-"), ("test", "held-out", "--")):
            xs, ys = _series(records, f"{split}_{metric}")
            if xs:
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
    if with_lr:
        ax = axes[len(panels)]
        xs, ys = _series(records, "lr")
        ax.plot(xs, ys, "-", color="tab:green", marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        ax.grid(True, alpha=0.3)
    for ax in axes[count:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = directory / CURVES_FILE
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out, "wb") as f:
        fig.savefig(f, format="png")
    return out


def _number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def epoch_line(r: dict, metrics: list[str] | None = None) -> str:
    """`epoch 3: train loss 0.41 accuracy 0.87  held-out loss 0.39 accuracy 0.88 map50 0.61  lr 0.05
    (1200 images/s, 2.1 s)`: every metric the train section declares (`metrics`, as named in
    the record; default: every held-out value the record holds)."""
    names = panel_metrics([r]) if metrics is None else metrics
    train = "".join(f" {n} {r[f'train_{n}']:.4f}" for n in names
                    if isinstance(r.get(f"train_{n}"), (int, float)))
    held = "".join(f" {n} {r[f'test_{n}']:.4f}" for n in names if isinstance(r.get(f"test_{n}"), (int, float)))
    lr = r.get("lr")
    lr_text = f"  lr {lr:.4g}" if isinstance(lr, (int, float)) else ""
    return (f"epoch {r['epoch']}: train loss {_number(r.get('train_loss'))}{train}  held-out loss "
            f"{_number(r.get('test_loss'))}{held}{lr_text}"
            f"  ({_number(r.get('images_per_s'), 0)} images/s, {_number(r.get('seconds'), 1)} s)")
