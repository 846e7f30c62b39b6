"""Training end to end on small real data: learning, checkpoints, resume, kill, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.data.dataset import Dataset
from cnndsl.data.digits import digits_dataset
from cnndsl.diagnostics import CnnError
from cnndsl.io.weights import load_checkpoint, load_weights
from cnndsl.model import Model
from cnndsl.train.trainer import Trainer, with_overrides

ROOT = Path(__file__).resolve().parent.parent

TINY = """
network Tiny(classes = 10) {
  input image: 1x28x28
  conv 4 kernel=5 stride=2 padding=same relu    # 4x14x14
  maxpool 2                                     # 4x7x7
  flatten
  dense 32 relu
  dropout 0.2
  dense classes -> logits
}
train {
  epochs 3
  batch 32
  seed 7
  optimizer sgd lr=0.1 momentum=0.9
  schedule cosine
  loss logits cross_entropy
}
"""


def _subset(ds: Dataset, n: int) -> Dataset:
    return ds.subset(np.arange(n))


@pytest.fixture(scope="module")
def small_digits():
    return _subset(digits_dataset("train"), 640), _subset(digits_dataset("test"), 200)


def _train(tmp_path, data, epochs=3, **kw) -> tuple[Model, list[dict]]:
    model = Model(cnndsl.loads(TINY))
    config = with_overrides(model.config, epochs=epochs, **kw)
    trainer = Trainer(model, data[0], data[1], config, tmp_path, progress=False)
    return model, trainer.fit()


def _interrupt(record):
    raise KeyboardInterrupt  # what Ctrl-C does: the trainer saves, then stops


def test_training_learns_and_writes_its_files(tmp_path, small_digits):
    model, records = _train(tmp_path, small_digits)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["test_accuracy"] > 0.6  # chance is 0.1
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    records_on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert len(records_on_disk) == 3
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_s", "seconds"):
        assert key in records_on_disk[-1]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    weights, _ = load_weights(tmp_path / "weights.safetensors")
    assert set(weights) == set(model.store.expected_shapes())


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, small_digits):
    full, _ = _train(tmp_path / "full", small_digits, epochs=3)

    first = Model(cnndsl.loads(TINY))
    with pytest.raises(KeyboardInterrupt):
        Trainer(first, *small_digits, first.config, tmp_path / "split", progress=False).fit(on_epoch=_interrupt)
    model = Model(cnndsl.loads(TINY))
    trainer = Trainer(model, *small_digits, with_overrides(model.config, epochs=3), tmp_path / "split", progress=False)
    trainer.resume()
    assert trainer.pos.epoch == 1
    records = trainer.fit()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    np.testing.assert_array_equal(model.store.params.data, full.store.params.data)


def _interrupted_import(record):
    # what pybind11 makes of a Ctrl-C during a module's initialization (matplotlib's Agg backend,
    # imported by the first epoch's plot): an ImportError whose cause is the KeyboardInterrupt
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        raise ImportError("initialization failed") from e


def test_a_ctrl_c_that_became_an_import_error_stops_like_a_ctrl_c(tmp_path, small_digits):
    model = Model(cnndsl.loads(TINY))
    with pytest.raises(KeyboardInterrupt) as stop:
        Trainer(model, *small_digits, model.config, tmp_path, progress=False).fit(on_epoch=_interrupted_import)
    assert isinstance(stop.value.__cause__, ImportError)
    assert load_checkpoint(tmp_path).meta  # saved as for a Ctrl-C: the next run resumes after epoch 1
    trainer = Trainer(Model(cnndsl.loads(TINY)), *small_digits, model.config, tmp_path, progress=False)
    trainer.resume()
    assert trainer.pos.epoch == 1


def test_interrupted_reads_the_cause_and_context_chain():
    from cnndsl.diagnostics import interrupted

    assert interrupted(KeyboardInterrupt())
    assert not interrupted(ImportError("initialization failed"))
    with pytest.raises(ImportError) as cut:
        _interrupted_import(None)
    assert interrupted(cut.value)
    with pytest.raises(ValueError) as later:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("while stopping")  # noqa: B904 (the implicit context is what is read)
    assert interrupted(later.value)
    loop = ValueError("a cycle")
    loop.__context__ = ValueError("back")
    loop.__context__.__context__ = loop
    assert not interrupted(loop)


def test_dropout_is_exactly_the_identity_at_inference(small_digits):
    with_dropout = Model(cnndsl.loads(TINY))
    without = Model(cnndsl.loads(TINY.replace("  dropout 0.2\n", "")))
    without.store.load_state_dict(with_dropout.store.state_dict())
    x = small_digits[1].x[:50]
    np.testing.assert_array_equal(with_dropout.predict(x)["logits"], without.predict(x)["logits"])


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path, small_digits):
    model = Model(cnndsl.loads(TINY))
    config = model.config
    # one good epoch, then an absurd learning rate
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, *small_digits, config, tmp_path, progress=False).fit(on_epoch=_interrupt)
    good = load_checkpoint(tmp_path).tensors
    trainer = Trainer(model, *small_digits, with_overrides(config, epochs=2, lr=1e30), tmp_path, progress=False)
    trainer.resume()
    with pytest.raises(CnnError) as err:
        trainer.fit()
    message = err.value.diagnostics[0].message
    assert "at step" in message and "became" in message
    after = load_checkpoint(tmp_path).tensors
    for name in good:
        np.testing.assert_array_equal(good[name], after[name])


def test_weights_of_another_model_are_refused_with_a_report(tmp_path, small_digits):
    model, _ = _train(tmp_path, small_digits, epochs=1)
    other = Model(cnndsl.loads(TINY.replace("dense 32 relu", "dense 16 relu")))
    with pytest.raises(CnnError) as err:
        other.load_weights(tmp_path / "weights.safetensors")
    text = str(err.value)
    assert "dense1.weight" in text and "32" in text and "16" in text


# -- the command line, in a separate process -----------------------------------------

def _cli(*args, cwd=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cnndsl", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits_small.npz"
    ds = _subset(digits_dataset("all"), 1000)
    np.savez(path, x=ds.x, y=ds.y)
    return path


def test_cli_train_eval_predict(tmp_path, digits_npz):
    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY)
    out = tmp_path / "run"
    r = _cli("train", str(model_file), "--data", str(digits_npz), "--epochs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "epoch 2" in r.stderr
    weights = out / "weights.safetensors"
    r = _cli("eval", str(model_file), "--weights", str(weights), "--data", str(digits_npz))
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout
    image = tmp_path / "digit.npy"
    np.save(image, digits_dataset("test").x[0])
    r = _cli("predict", str(model_file), "--weights", str(weights), str(image))
    assert r.returncode == 0, r.stderr
    assert str(image) in r.stdout and "(" in r.stdout


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 10, b"{not json"])
def test_cli_bad_weights_file_is_a_clean_error(tmp_path, content):
    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    r = _cli("eval", str(model_file), "--weights", str(bad))
    assert r.returncode == 1
    assert "bad.safetensors" in r.stderr and "Traceback" not in r.stderr


def test_cli_image_of_the_wrong_size_is_a_clean_error(tmp_path, digits_npz):
    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY)
    out = tmp_path / "run"
    assert _cli("train", str(model_file), "--data", str(digits_npz), "--epochs", "1", "--out", str(out)).returncode == 0
    image = tmp_path / "big.npy"
    np.save(image, np.zeros((1, 32, 32), np.float32))
    r = _cli("predict", str(model_file), "--weights", str(out / "weights.safetensors"), str(image))
    assert r.returncode == 1
    assert "big.npy" in r.stderr and "28" in r.stderr and "Traceback" not in r.stderr


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path, digits_npz):
    EPOCHS = 12
    model_file = tmp_path / "tiny.cnn"
    model_file.write_text(TINY)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cnndsl", "train", str(model_file), "--data", str(digits_npz),
                             "--epochs", str(EPOCHS), "--out", str(killed), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint.safetensors").exists():
        time.sleep(0.02)
    time.sleep(0.1)  # into the next epoch
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(killed)  # loadable, whatever moment the kill hit
    assert 1 <= ckpt.meta["position"]["epoch"] < EPOCHS
    r = _cli("train", str(model_file), "--data", str(digits_npz), "--epochs", str(EPOCHS), "--resume", str(killed))
    assert r.returncode == 0, r.stderr
    straight = tmp_path / "straight"
    r = _cli("train", str(model_file), "--data", str(digits_npz), "--epochs", str(EPOCHS), "--out", str(straight))
    assert r.returncode == 0, r.stderr
    a, _ = load_weights(killed / "weights.safetensors")
    b, _ = load_weights(straight / "weights.safetensors")
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_python_api_fit_predict_save_load(tmp_path, small_digits):
    model = cnndsl.compile(cnndsl.loads(TINY), seed=1)
    train, test = small_digits
    records = model.fit(train.x, train.y, validation=(test.x, test.y), epochs=2)
    assert len(records) == 2 and records[-1]["test_accuracy"] > 0.5
    probs = model.predict_proba(test.x[:8])["logits"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save_weights(tmp_path / "w.safetensors")
    again = cnndsl.compile(cnndsl.loads(TINY), seed=99)
    again.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(again.predict(test.x[:8])["logits"], model.predict(test.x[:8])["logits"])
