import io
import json

import numpy as np
import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.train.metrics import (EpochMeter, MetricsLog, accuracy, count_correct, count_top_k,
                                  plot, read_metrics, top_k_accuracy)
from cnndsl.train.progress import Progress


def test_accuracy_and_top_k():
    logits = np.array([[0.1, 0.9, 0.0],
                       [0.8, 0.1, 0.1],
                       [0.2, 0.3, 0.5],
                       [0.0, 0.0, 0.0]], np.float32)
    y = np.array([1, 2, 1, 0])
    assert count_correct(logits, y) == 2  # rows 0 and 3 (ties go to the lower index, like argmax)
    assert accuracy(logits, y) == 0.5
    assert count_top_k(logits, y, 2) == 3
    assert top_k_accuracy(logits, y, 3) == 1.0
    assert count_correct(np.zeros((3, 4)), np.array([1, 1, 1])) == 0
    assert count_correct(np.array([1, 2, 0]), np.array([1, 2, 2])) == 2  # predictions
    assert np.isnan(accuracy(np.zeros((0, 3)), np.zeros(0, int)))
    with pytest.raises(ValueError):
        accuracy(logits, np.array([1, 2, 3, 0]))


def test_top_k_matches_argsort():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 10))
    y = rng.integers(0, 10, 200)
    for k in (1, 3, 5):
        top = np.argsort(-logits, axis=1)[:, :k]
        assert count_top_k(logits, y, k) == int((top == y[:, None]).any(1).sum())
    assert count_correct(logits, y) == int((logits.argmax(1) == y).sum())


def test_epoch_meter():
    m = EpochMeter()
    m.add(1.0, 3, 4)
    m.add(2.0, 1, 4)
    assert m.loss == 1.5 and m.accuracy == 0.5 and m.count == 8
    assert m.images_per_s > 0


def test_metrics_log_appends_and_rewrites(tmp_path):
    log = MetricsLog(tmp_path / "run")
    log.append({"epoch": 1, "train_loss": np.float32(2.0), "train_accuracy": 0.3, "test_loss": 1.9,
                "test_accuracy": 0.35, "images_per_s": 1000.0, "seconds": 1.5, "lr": 0.01})
    log.append(epoch=2, train_loss=1.0, train_accuracy=0.6, test_loss=float("nan"), test_accuracy=None,
               images_per_s=1100.0, seconds=1.4, lr=0.005, grad_norm=3.2)
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["epoch"] for r in data] == [1, 2]
    assert data[0]["train_loss"] == 2.0 and data[1]["test_loss"] is None
    assert data[1]["grad_norm"] == 3.2
    assert set(data[0]) >= {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                            "images_per_s", "seconds", "lr"}
    resumed = MetricsLog(tmp_path / "run", resume=True)
    assert len(resumed.records) == 2
    resumed.truncate(1)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1]
    again = MetricsLog(tmp_path / "run")
    again.load_existing(upto_epoch=1)
    again.append(epoch=2, train_loss=0.5)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    with pytest.raises(ValueError):
        again.append(train_loss=1.0)
    fresh = MetricsLog(tmp_path / "run")
    assert fresh.records == []


def test_corrupt_metrics_on_resume(tmp_path):
    (tmp_path / "metrics.json").write_text("[{]")
    with pytest.raises(CnnError, match="metrics log"):
        MetricsLog(tmp_path, resume=True)


def test_plot_writes_png(tmp_path):
    log = MetricsLog(tmp_path)
    for e in range(1, 4):
        log.append(epoch=e, train_loss=1 / e, train_accuracy=1 - 1 / (e + 1), test_loss=1.1 / e,
                   test_accuracy=0.9 - 1 / (e + 1), images_per_s=10.0, seconds=1.0, lr=0.1)
    out = log.plot()
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "metrics.json"]
    # from the file alone, and with no held-out data
    (tmp_path / "curves.png").unlink()
    plot(tmp_path)
    assert (tmp_path / "curves.png").exists()
    log2 = MetricsLog(tmp_path / "b")
    log2.append(epoch=1, train_loss=1.0, train_accuracy=0.5)
    log2.plot()


def test_progress_disabled_when_not_a_tty():
    buf = io.StringIO()
    with Progress(100, desc="epoch 1/2", file=buf) as bar:
        assert not bar.enabled
        bar.update(loss=1.0, accuracy=0.5, images_per_s=100.0)
    assert buf.getvalue() == ""
    with Progress(10, file=buf, enabled=False) as bar:
        bar.update()
        assert bar._bar is None
    assert buf.getvalue() == ""


def test_progress_enabled_shows_stats():
    buf = io.StringIO()
    with Progress(4, desc="epoch 1/2", file=buf, enabled=True, initial=1) as bar:
        bar.update(loss=0.75, accuracy=0.65, images_per_s=1234.0)
        bar._bar.refresh()
        assert bar._bar.n == 2
    out = buf.getvalue()
    assert "epoch 1/2" in out and "loss=0.7500" in out and "acc=0.650" in out and "img/s=1234" in out
