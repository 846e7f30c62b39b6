"""Which data a training run uses: the bundled digits by default, or a user's data set."""
from __future__ import annotations

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats import dataset_splits, load_dataset

HELD_OUT_FRACTION = 0.2  # of a data set that ships no test split


def resolve_datasets(model, data: str | None = None) -> tuple[Dataset, Dataset]:
    """(train, held-out) for `data` (the CLI's --data), else the training section's dataset, else
    the digits. A data set without a test split is split 80/20 with a fixed seed."""
    spec = data or model.config.dataset or "digits"
    from cnndsl.tasks.datasets import TASKS, task_dataset  # localization/detection/segmentation_digits

    if spec in TASKS:
        return task_dataset(spec, model, "train"), task_dataset(spec, model, "test")
    shape = model.input_shape
    if "test" in dataset_splits(spec):
        return load_dataset(spec, shape, "train"), load_dataset(spec, shape, "test")
    full = load_dataset(spec, shape, "train")
    order = full.order(shuffle=True, seed=0, epoch=0)
    cut = int(round(len(full) * (1 - HELD_OUT_FRACTION)))
    return full.subset(order[:cut]), full.subset(order[cut:])
