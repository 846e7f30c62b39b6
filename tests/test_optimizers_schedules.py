"""The optimizers and schedules added by issue 16 (AdamW, RMSprop, Lion; onecycle, plateau) as a
.cnn file writes them: parsed and checked by the training section, built by the trainer, and
trained with. Their update rules against references: tests/test_optim.py (CPU) and
tests/cuda/test_kernels.py (simulator)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import cnndsl
from cnndsl.data.dataset import Dataset
from cnndsl.diagnostics import CnnError
from cnndsl.model import Model
from cnndsl.train.optim import AdamW, Lion, RMSprop
from cnndsl.train.schedule import Schedule
from cnndsl.train.trainer import Trainer, optimizer_for

NET = """
network Tiny(classes = 3) {
  input image: 1x6x6
  conv 2 kernel=3 padding=same relu
  flatten
  dense classes -> logits
}
"""


def _training(text: str):
    return cnndsl.loads(NET + "train {\n" + text + "\n loss logits cross_entropy\n}\n", "t.cnn").training


@pytest.mark.parametrize("line, cls, hyper", [
    ("optimizer adamw lr=0.002", AdamW, dict(lr=0.002, weight_decay=0.01, beta1=0.9, beta2=0.999)),
    ("optimizer rmsprop lr=0.01 alpha=0.9 momentum=0.5", RMSprop, dict(alpha=0.9, momentum=0.5, eps=1e-8)),
    ("optimizer lion weight_decay=0.1", Lion, dict(lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1)),
])
def test_new_optimizers_from_a_cnn_file(line, cls, hyper):
    config = _training(line)
    model = Model(cnndsl.loads(NET, "t.cnn"))
    opt = optimizer_for(config, model.store.params)
    assert type(opt) is cls
    for k, v in hyper.items():
        assert getattr(opt, k) == pytest.approx(v), k


def test_optimizer_options_are_checked_per_kind():
    with pytest.raises(CnnError) as e:
        _training("optimizer lion momentum=0.9")  # lion has no momentum option
    assert "momentum" in str(e.value)
    with pytest.raises(CnnError) as e:
        _training("optimizer rmsprop alpha=1.5")
    assert "alpha" in str(e.value)


def test_onecycle_follows_pytorch_one_cycle():
    s = Schedule("onecycle", lr=0.1, epochs=10)
    assert s.lr_at(0) == pytest.approx(0.1 / 25)
    assert s.lr_at(3) == pytest.approx(0.1)  # the peak at pct_start 0.3
    assert s.lr_at(1.5) == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) * 0.5)  # half-way up the cosine
    assert s.lr_at(10) == pytest.approx(0.1 / 25 / 1e4)
    assert s.lr_at(6.5) == pytest.approx(0.1 / 25e4 + (0.1 - 0.1 / 25e4) * 0.5)  # half-way down
    with pytest.raises(ValueError):
        Schedule("onecycle", lr=0.1, epochs=10, warmup=1)


def test_plateau_reduces_after_patience_epochs_without_improvement():
    s = Schedule("plateau", lr=1.0, epochs=20, factor=0.5, patience=2, threshold=0.01, min_lr=0.2)
    assert s.plateau_scale([1.0, 0.9, 0.8]) == 1.0
    assert s.plateau_scale([1.0, 0.995, 0.999]) == 1.0  # two bad epochs: not more than patience
    assert s.plateau_scale([1.0, 0.995, 0.999, 1.2]) == 0.5  # the third: a reduction, the count restarts
    assert s.plateau_scale([1.0, 1, 1, 1, 1, 1, 1]) == 0.25
    assert s.plateau_scale([0.5, 0.6, 0.7, 0.8], lower_is_better=False) == 1.0  # accuracy rising
    assert s.reduced(1.0, 0.25) == 0.25 and s.reduced(1.0, 0.125) == 0.2  # min_lr floors it
    assert Schedule("cosine", lr=1.0, epochs=5).plateau_scale([1, 1, 1, 1, 1]) == 1.0


def test_plateau_metric_must_be_recorded():
    with pytest.raises(CnnError) as e:
        _training("schedule plateau metric=map50")
    assert "schedule plateau metric=map50" in str(e.value)
    assert _training("schedule plateau metric=accuracy patience=3").schedule.patience == 3


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32) + y[:, None, None, None].astype(np.float32)
    return Dataset(x, y)


def test_training_with_lion_and_plateau_reduces_the_rate(tmp_path):
    """patience=0: every epoch whose held-out loss does not improve halves the rate of the next one;
    with an lr so small that nothing improves by the threshold, epochs 3 and 4 run at half the rate
    of the epoch before (epoch 2 runs at lr: epoch 1's loss is the first best)."""
    text = "epochs 4\n batch 8\n seed 1\n optimizer lion lr=1e-9\n schedule plateau factor=0.5 patience=0 threshold=0.5"
    model = Model(cnndsl.loads(NET + "train {\n" + text + "\n loss logits cross_entropy\n}\n", "t.cnn"))
    records = Trainer(model, _data(32, 0), _data(16, 1), model.config, tmp_path, progress=False).fit()
    lrs = [r["lr"] for r in records]
    assert lrs == pytest.approx([1e-9, 1e-9, 0.5e-9, 0.25e-9], rel=1e-6), lrs
    assert all(math.isfinite(r["test_loss"]) for r in records)


@pytest.mark.parametrize("kind", ["adamw", "rmsprop"])
def test_training_with_the_new_optimizers_learns(tmp_path, kind):
    text = f"epochs 3\n batch 8\n seed 1\n optimizer {kind} lr=0.01\n schedule onecycle"
    model = Model(cnndsl.loads(NET + "train {\n" + text + "\n loss logits cross_entropy\n}\n", "t.cnn"))
    records = Trainer(model, _data(64, 0), _data(32, 1), model.config, tmp_path, progress=False).fit()
    assert records[-1]["train_loss"] < records[0]["train_loss"]
