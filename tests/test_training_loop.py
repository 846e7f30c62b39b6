"""The training loop's callbacks and records: early stopping, the best checkpoint, train.log, the
copy of the model and its settings, the learning rate, Model.fit's progress and Model.__call__,
load_digits' seeded shuffle."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl
from cnndsl.cli.main import cli
from cnndsl.data.dataset import Dataset
from cnndsl.diagnostics import CnnError
from cnndsl.io.weights import load_weights
from cnndsl.model import Model
from cnndsl.train.trainer import Trainer, best_epoch, watched_value, with_overrides

TINY = """
network Tiny(classes = 3) {
  input image: 1x6x6
  conv 2 kernel=3 padding=same relu
  flatten
  dense classes -> logits
}
train {
  epochs 6
  batch 8
  seed 3
  optimizer sgd lr=0.1 momentum=0.9
  loss logits cross_entropy
  metric logits accuracy
}
"""


def _data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3).astype(np.int64)
    x = rng.random((n, 1, 6, 6), dtype=np.float32) * 0.2
    x[np.arange(n), 0, y, y] += 1.0  # a learnable cue: a bright pixel on the diagonal at the class
    return x, y


def _trainer(tmp_path, text=TINY, **overrides):
    model = Model(cnndsl.loads(text))
    x, y = _data()
    ds = Dataset(x, y, "train")
    return Trainer(model, ds, ds, with_overrides(model.config, **overrides), tmp_path, progress=False)


def test_best_epoch_follows_the_direction_and_min_delta():
    records = [{"epoch": 1, "test_loss": 1.0, "test_accuracy": 0.5},
               {"epoch": 2, "test_loss": 0.5, "test_accuracy": 0.8},
               {"epoch": 3, "test_loss": 0.45, "test_accuracy": 0.7},
               {"epoch": 4, "test_loss": None, "test_accuracy": 0.81}]
    assert best_epoch(records, "loss") == (0.45, 3)  # lower is better
    assert best_epoch(records, "loss", min_delta=0.1) == (0.5, 2)  # 0.45 is not 0.1 better than 0.5
    assert best_epoch(records, "accuracy") == (0.81, 4)  # higher is better
    assert best_epoch(records, "accuracy", min_delta=0.05) == (0.8, 2)
    assert watched_value({"test_box_box_iou": 0.3}, "box_iou") == 0.3  # a head-prefixed name


def test_the_train_section_takes_early_stopping_and_checkpoint_best():
    text = TINY.replace("  metric logits accuracy", "  metric logits accuracy\n  early_stopping metric=accuracy "
                        "patience=2 min_delta=0.01\n  checkpoint best=loss")
    config = cnndsl.loads(text).training
    assert (config.early_stopping.metric, config.early_stopping.patience, config.early_stopping.min_delta) == \
        ("accuracy", 2, 0.01)
    assert config.checkpoint_best == "loss"
    with pytest.raises(CnnError) as e:
        cnndsl.loads(TINY.replace("  metric logits accuracy", "  metric logits accuracy\n  checkpoint best=acuracy"))
    d = e.value.diagnostics[0]
    assert d.message == "checkpoint best=acuracy watches a value this run does not record"
    assert "did you mean 'accuracy'?" in d.help and "it records: loss, train_loss, accuracy" in d.help
    with pytest.raises(CnnError) as e:
        cnndsl.loads(TINY.replace("  metric logits accuracy", "  early_stopping metric=map50 patience=0"))
    assert "patience must be at least 1 epochs, got 0" in str(e.value)


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    # an improvement must beat the best by more than 10: none ever does, so epoch 1 stays the best
    trainer = _trainer(tmp_path, early_stopping="loss", patience=2)
    trainer.settings = with_overrides(trainer.settings)
    from dataclasses import replace
    trainer.settings = replace(trainer.settings, early_stopping=replace(trainer.settings.early_stopping,
                                                                        min_delta=10.0))
    lines = []
    trainer.echo = lines.append
    records = trainer.fit()
    assert [r["epoch"] for r in records] == [1, 2, 3]  # of 6
    assert trainer.stop_reason.startswith("early stopping after epoch 3: the held-out loss has not improved "
                                          "by more than 10 for 2 epochs (best ")
    assert lines[-1] == trainer.stop_reason
    log = (tmp_path / "train.log").read_text().splitlines()
    assert log[-1] == trainer.stop_reason and log[0].startswith("epoch 1: train loss")


def test_checkpoint_best_keeps_the_best_epochs_weights(tmp_path):
    trainer = _trainer(tmp_path, epochs=4, checkpoint_best="loss")
    records = trainer.fit()
    losses = [r["test_loss"] for r in records]
    best = int(np.argmin(losses)) + 1
    tensors, meta = load_weights(tmp_path / "best.safetensors")
    assert meta["epoch"] == str(best) and meta["metric"] == "loss" and float(meta["value"]) == min(losses)
    if best == len(records):  # the last epoch was the best: the same weights as weights.safetensors
        last, _ = load_weights(tmp_path / "weights.safetensors")
        assert all(np.array_equal(tensors[k], last[k]) for k in last)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_flag_naming_an_unrecorded_value_is_an_error(tmp_path):
    with pytest.raises(CnnError) as e:
        _trainer(tmp_path, early_stopping="map50")
    d = e.value.diagnostics[0]
    assert d.message == "--early-stopping map50: this run records no such value"
    assert "expected: one of loss, train_loss, accuracy" in d.details[0]


def test_cli_run_folder_holds_log_model_copy_settings_and_best(tmp_path):
    import cnndsl.cli.train  # noqa: F401

    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY)
    x, y = _data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", str(model_file), "--data", str(tmp_path / "d.npz"), "--out", str(out),
                                 "--no-progress", "--epochs", "2", "--checkpoint-best", "accuracy",
                                 "--early-stopping", "loss", "--patience", "5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert {"train.log", "model.cnn", "settings.json", "best.safetensors", "weights.safetensors",
            "checkpoint.safetensors", "metrics.json", "curves.png"} <= names
    assert (out / "model.cnn").read_text() == TINY
    settings = json.loads((out / "settings.json").read_text())
    assert settings["network"] == "Tiny" and settings["training"]["epochs"] == 2
    # the kind and the options it declares (not those of the other kinds)
    assert settings["training"]["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
                                                 "weight_decay": 0.0, "dampening": 0.0}
    assert settings["training"]["schedule"] == {"kind": "constant", "warmup": 0.0}
    assert settings["training"]["checkpoint_best"] == "accuracy"
    assert settings["training"]["early_stopping"]["metric"] == "loss"
    assert settings["parameters"] == {"classes": 3}
    log = (out / "train.log").read_text()
    printed = [line for line in r.output.splitlines() if line.startswith(("training Tiny", "epoch ", "weights: "))]
    assert printed and log.splitlines() == printed  # what the console printed, line for line
    records = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(rec["lr"], float) and rec["lr"] > 0 for rec in records)
    assert " lr " in printed[1]
    # resumed with the flags left out: the saved ones are kept; the log grows
    r2 = CliRunner().invoke(cli, ["train", str(model_file), "--resume", str(out), "--epochs", "3", "--no-progress"],
                            catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    assert json.loads((out / "settings.json").read_text())["training"]["checkpoint_best"] == "accuracy"
    assert (out / "train.log").read_text().startswith(log) and "epoch 3:" in (out / "train.log").read_text()


def test_model_fit_shows_progress_on_a_terminal_and_is_silent_otherwise(monkeypatch, capsys):
    model = Model(cnndsl.loads(TINY))
    x, y = _data(16)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    model.fit(x, y, epochs=1, batch=8)
    shown = term.getvalue()
    assert "epoch 1/1" in shown and "epoch 1: train loss" in shown  # the bar and the epoch line
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    model.fit(x, y, epochs=1, batch=8)
    assert pipe.getvalue() == ""


def test_model_is_callable():
    model = Model(cnndsl.loads(TINY))
    x, _ = _data(5)
    out = model(x)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3)
    assert np.array_equal(out, model.predict(x)["logits"])


def test_load_digits_is_a_seeded_shuffle():
    from cnndsl.data.digits import load_digits

    x, y = load_digits("train")
    assert len(np.unique(y[:50])) == 10  # a first slice holds every class
    x2, y2 = load_digits("train")
    assert np.array_equal(y, y2) and np.array_equal(x, x2)
    _, y3 = load_digits("train", seed=1)
    assert not np.array_equal(y, y3) and np.array_equal(np.sort(y), np.sort(y3))
    _, stored = load_digits("train", shuffle=False)
    assert stored[:400].tolist() == [0] * 400  # the stored order, class by class
