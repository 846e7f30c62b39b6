"""`cnndsl train --data` on the data sets users bring: a tiny IDX folder and a tiny CIFAR-10 .bin,
each with a network written for its shape; a malformed file exits 1 naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cnndsl.cli.main import cli

GREY_NET = """network tiny_grey {
  input image: 1x8x8
  conv 4 kernel=3 padding=same relu
  maxpool 2
  flatten
  dense 10 -> logits
}
train {
  epochs 3
  batch 8
  optimizer sgd lr=0.05
  augment {
    rotate 10 p=0.5
    translate 0.1 p=0.5
  }
}
"""

RGB_NET = """network tiny_rgb {
  input image: 3x32x32
  conv 4 kernel=3 stride=2 padding=same relu
  global_avgpool
  dense 10 -> logits
}
train {
  epochs 3
  batch 4
  optimizer sgd lr=0.05
  augment {
    hflip
    random_crop padding=2
    color_jitter brightness=0.3 saturation=0.3 hue=0.05
  }
}
"""


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.train  # noqa: F401  (registers train/eval)

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_folder(folder, n_train=24, n_test=8, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (n, size, size))))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(n) % 10))
    return folder


def write_cifar_bin(path, n=10):
    rng = np.random.default_rng(1)
    records = np.empty((n, 3073), np.uint8)
    records[:, 0] = np.arange(n) % 10
    records[:, 1:] = rng.integers(0, 256, (n, 3072))
    path.write_bytes(records.tobytes())
    return path


def test_train_on_an_idx_folder(run, tmp_path):
    model = tmp_path / "grey.cnn"
    model.write_text(GREY_NET)
    data = write_idx_folder(tmp_path / "mnist_like")
    out = tmp_path / "run_idx"
    r = run("train", model, "--data", data, "--epochs", 1, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "24 images, augmented, 8 held out" in r.output  # the folder's own t10k split is held out
    records = json.loads((out / "metrics.json").read_text())
    records = records["epochs"] if isinstance(records, dict) else records
    assert len(records) == 1 and (out / "weights.safetensors").is_file()
    r = run("eval", model, "--weights", out / "weights.safetensors", "--data", data)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("8 held-out images:")


def test_train_on_a_cifar_bin_file(run, tmp_path):
    model = tmp_path / "rgb.cnn"
    model.write_text(RGB_NET)
    data = write_cifar_bin(tmp_path / "data_batch_1.bin")
    out = tmp_path / "run_cifar"
    r = run("train", model, "--data", data, "--epochs", 1, "--out", out, "--no-progress", "--no-augment")
    assert r.exit_code == 0, r.output
    assert "8 images, 2 held out" in r.output  # one file: 80/20 split
    assert (out / "weights.safetensors").is_file()


def test_malformed_idx_exits_1_naming_the_file(run, tmp_path):
    model = tmp_path / "grey.cnn"
    model.write_text(GREY_NET)
    data = write_idx_folder(tmp_path / "broken")
    images = data / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-20])  # cut off
    r = run("train", model, "--data", data, "--epochs", 1, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1
    assert str(images) in r.output and "truncated" in r.output
    assert "Traceback" not in r.output


def test_malformed_cifar_exits_1_naming_the_file(run, tmp_path):
    model = tmp_path / "rgb.cnn"
    model.write_text(RGB_NET)
    data = tmp_path / "batch.bin"
    data.write_bytes(bytes(3073 * 2 + 100))  # not whole records
    r = run("train", model, "--data", data, "--epochs", 1, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1
    assert str(data) in r.output and "error" in r.output


def test_data_of_the_wrong_shape_exits_1(run, tmp_path):
    model = tmp_path / "rgb.cnn"
    model.write_text(RGB_NET)
    data = write_idx_folder(tmp_path / "grey")  # 1x8x8 images for a 3x32x32 network
    r = run("train", model, "--data", data, "--epochs", 1, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1
    assert "do not match the network's input shape" in r.output and "train-images-idx3-ubyte" in r.output
