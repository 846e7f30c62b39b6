"""Which data a training run uses: the bundled digits by default, or a user's file."""
from __future__ import annotations

from pathlib import Path

from cnndsl.data.dataset import Dataset, load_npz_dataset
from cnndsl.data.digits import digits_dataset
from cnndsl.diagnostics import file_error


def resolve_datasets(model, data: str | None = None, test_fraction: float = 0.2) -> tuple[Dataset, Dataset]:
    """(train, held-out) for `data` (CLI), else the training section's dataset, else the digits."""
    name = data or model.config.dataset or "digits"
    if name == "digits":
        train, test = digits_dataset("train"), digits_dataset("test")
        _check_shape(model, train, "the bundled digits")
        return train, test
    path = Path(name)
    if path.suffix == ".npz":
        full = load_npz_dataset(path, model.input_shape)
        return _split(full, test_fraction, seed=0)
    raise file_error(path, "unknown dataset", expected="'digits' or a .npz file with x/y (or images/labels) arrays",
                     found=f"'{name}'", code="dataset")


def _check_shape(model, dataset: Dataset, what: str) -> None:
    if tuple(dataset.input_shape) != tuple(model.input_shape):
        want = "x".join(map(str, model.input_shape))
        got = "x".join(map(str, dataset.input_shape))
        raise file_error(what, f"the network's input '{model.input_name}' does not fit the data",
                         expected=f"images of {want}", found=f"images of {got}",
                         help=f"declare `input {model.input_name}: {got}` or choose another dataset",
                         code="dataset-shape")


def _split(full: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    order = full.order(shuffle=True, seed=seed, epoch=0)
    cut = int(round(len(full) * (1 - fraction)))
    return full.subset(order[:cut]), full.subset(order[cut:])
