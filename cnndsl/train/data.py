"""Which data a training run uses: the bundled digits by default, or a user's data set.

Every data set is checked against the model before any work starts: its labels (or other
targets) must be values the model's losses accept (`Model.check_targets`: class indices in
[0, classes), ...). Loss kernels index with class labels and Numba does not check bounds, so
an unchecked label past the class count corrupts memory.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats import dataset_splits, load_dataset
from cnndsl.diagnostics import CnnError, Diagnostic, Span, abbreviated
from cnndsl.tasks.datasets import TASKS, task_dataset

HELD_OUT_FRACTION = 0.2  # of a data set that ships no test split


def resolve_datasets(model, data: str | None = None) -> tuple[Dataset, Dataset]:
    """(train, held-out) for `data` (the CLI's --data), else the training section's dataset, else
    the digits. A data set without a test split is split 80/20 with a fixed seed. With
    `dataset ... classes=[...]` only those labels are kept, renumbered in the order listed."""
    spec = data or model.config.dataset or "digits"
    classes = model.config.dataset_classes
    if spec in TASKS:
        if classes is not None:
            raise _classes_error(model, f"the generated '{spec}' data set has no class selection",
                                 "remove classes=[...] from the dataset setting")
        train, test = task_dataset(spec, model, "train"), task_dataset(spec, model, "test")
        check_dataset_targets(model, train, f"{spec} (train split)")
        check_dataset_targets(model, test, f"{spec} (test split)")
        return train, test
    shape = model.input_shape
    load = load_dataset  # labels are checked here, against every loss, with the model's own words
    if "test" in dataset_splits(spec):
        splits = []
        for split in ("train", "test"):
            part = select_classes(load(spec, shape, split), classes, model)
            # sample numbers in messages count within this split's file(s)
            check_dataset_targets(model, part, f"{spec} ({split} split)")
            splits.append(part)
        return splits[0], splits[1]
    full = select_classes(load(spec, shape, "train"), classes, model)
    check_dataset_targets(model, full, spec)  # before the split: sample numbers count in the file
    order = full.order(shuffle=True, seed=0, epoch=0)
    cut = int(round(len(full) * (1 - HELD_OUT_FRACTION)))
    return full.subset(order[:cut]), full.subset(order[cut:])


def check_dataset_targets(model, dataset: Dataset, source: str) -> None:
    """Every label of `dataset` is one the model's losses accept, else a CnnError naming `source`."""
    model.check_targets(dataset.y, source, class_names=getattr(dataset, "class_names", None))


def select_classes(dataset: Dataset, classes, model) -> Dataset:
    """The samples labelled with one of `classes`, relabelled by position (classes[0] -> 0, ...)."""
    if classes is None:
        return dataset
    if isinstance(dataset.y, Mapping):
        raise _classes_error(model, f"{dataset.name} has several label arrays; classes=[...] selects "
                             "from a single class label per image", "remove classes=[...]")
    y = np.asarray(dataset.y)
    absent = [c for c in classes if not np.any(y == c)]
    if absent:
        present = np.unique(y)
        raise _classes_error(model, f"{dataset.name}: classes=[...] names label"
                             f"{'s' if len(absent) > 1 else ''} {abbreviated(map(str, absent))} that no image has",
                             f"the labels in the data are {abbreviated(map(str, present.tolist()))}")
    kept = dataset.subset(np.flatnonzero(np.isin(y, classes)))
    wanted = np.asarray(classes)
    order = np.argsort(wanted)  # each kept label's position in `classes`, without a Python loop
    kept.y = order[np.searchsorted(wanted[order], kept.y)].astype(np.int64)
    names = getattr(dataset, "class_names", None)
    if names is not None:
        kept.class_names = [names[c] for c in classes if c < len(names)]
    return kept


def _classes_error(model, message: str, help: str) -> CnnError:
    span = model.config.spans.get("dataset") if hasattr(model.config, "spans") else None
    return CnnError([Diagnostic("error", message, span or Span("<data>", 0, 0), help=help, code="data-classes")])
