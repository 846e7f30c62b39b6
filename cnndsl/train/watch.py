"""What a run can watch on the held-out split: early stopping, `checkpoint best=` and the plateau
schedule name a value the run records (the held-out loss, the training loss, a declared metric).

`early_stopping` and `checkpoint` declare their options here, beside the record the trainer reads
(cnndsl/train/trainer.py); the frontend checks a file's lines against them and checks the names
against `watched_names` once the network's heads are known.
"""
from __future__ import annotations

from dataclasses import dataclass

from cnndsl.ops.registry import REQUIRED, Attr, declare

EARLY_STOPPING = declare(
    Attr("metric", "name", "loss", "the held-out value watched: loss, or a metric of the `metric` lines "
         "(accuracy, map50, ...)"),
    Attr("patience", "int", 5, "epochs without improvement before stopping", unit="epochs", minimum=1,
         maximum=1_000_000),
    Attr("min_delta", "float", 0.0, "smallest change that counts as an improvement", minimum=0),
)
CHECKPOINT = declare(
    Attr("best", "name", REQUIRED, "the held-out value whose best epoch's weights go to best.safetensors"),
)

# Which direction is better for a watched value (the others: higher is better). `loss` is the
# held-out loss; `train_loss` the training loss.
LOWER_IS_BETTER = ("loss", "train_loss", "mae", "mse")


@dataclass(frozen=True)
class EarlyStopping:
    """`early_stopping metric=NAME patience=N [min_delta=D]`: stop when the held-out NAME has not
    improved by more than D for N epochs in a row (NAME as in metrics.json without `test_`)."""
    metric: str = EARLY_STOPPING["metric"].default
    patience: int = EARLY_STOPPING["patience"].default
    min_delta: float = EARLY_STOPPING["min_delta"].default


def watched_names(metrics, losses) -> list[str]:
    """What early_stopping and checkpoint best= may watch: the held-out loss, the training loss
    and every declared metric (by its kind, and HEAD_KIND)."""
    names = ["loss", "train_loss"]
    if any(loss.kind in ("cross_entropy", "pixel_cross_entropy") for loss in losses):
        names.append("accuracy")
    for m in metrics:
        for n in (m.kind, f"{m.head}_{m.kind}"):
            if n not in names:
                names.append(n)
    return names


def lower_is_better(name: str) -> bool:
    return name in LOWER_IS_BETTER or any(name.endswith("_" + k) for k in ("mae", "mse"))
