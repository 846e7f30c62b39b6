"""`cnndsl bench`: the figures it prints, its JSON, and clean errors. No timing comparisons:
the speeds depend on the machine, only their presence and sign are checked."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cnndsl.cli.main import cli

TINY = """
network Tiny {
  input image: 1x8x8
  conv 2 kernel=3 relu
  flatten
  dense 3 -> logits
}

train {
  batch 4
  optimizer sgd lr=0.01 momentum=0.9
  loss logits cross_entropy
}
"""

FIGURES = ("compile_s", "first_inference_s", "inference_latency_us_batch1", "inference_images_per_s",
           "first_train_step_s", "train_images_per_s")


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.bench  # noqa: F401  registers the command

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args))


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return str(path)


def test_table_shows_every_figure(run, tiny):
    result = run("bench", tiny, "--repeats", "1")
    assert result.exit_code == 0, result.output
    for label in ("compile", "inference latency, batch 1", "inference throughput, batch 4",
                  "training throughput, batch 4", "images/s", "us"):
        assert label in result.output


def test_json_has_positive_figures(run, tiny):
    result = run("bench", tiny, "--repeats", "1", "--json", "--batch", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["network"] == "Tiny" and data["batch"] == 2 and data["device"] == "cpu"
    for key in FIGURES:
        assert data[key] > 0, key


def test_no_train_skips_training(run, tiny):
    result = run("bench", tiny, "--repeats", "1", "--no-train", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "train_images_per_s" not in data and data["training_skipped"] == "--no-train"
    assert data["inference_images_per_s"] > 0


def test_file_without_train_section_is_inference_only(run, tmp_path):
    path = tmp_path / "no_train.cnn"
    path.write_text(TINY.split("train {")[0])
    result = run("bench", str(path), "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert "training not measured: the file has no train section" in result.output
    assert "batch 64" in result.output  # the default batch without a train section


def test_defines_and_opt_level_are_accepted(run, tmp_path):
    path = tmp_path / "param.cnn"
    path.write_text(TINY.replace("network Tiny {", "network Tiny(classes = 3) {").replace("dense 3", "dense classes"))
    result = run("bench", str(path), "--repeats", "1", "--no-train", "-O0", "-D", "classes=5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["opt_level"] == 0


def test_bad_file_exits_1_with_diagnostics(run, tmp_path):
    path = tmp_path / "bad.cnn"
    path.write_text(TINY.replace("kernel=3", "kernel=30"))
    result = run("bench", str(path), "--repeats", "1")
    assert result.exit_code == 1
    assert "error" in result.output and "Traceback" not in result.output


def test_per_kernel_profile_names_every_launch_of_the_step(run, tiny):
    result = run("bench", tiny, "--repeats", "1", "--json", "--per-kernel")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["profile_step"] == "training"
    ops = {row["op"] for row in data["profile"]}
    assert {"fused_conv", "fused_conv_grad", "optimizer_step"} <= ops, ops
    assert all(row["ms"] >= 0 for row in data["profile"])
    assert abs(sum(row["share"] for row in data["profile"]) - 1) < 1e-6
    table = run("bench", tiny, "--repeats", "1", "--no-train", "--per-kernel")
    assert table.exit_code == 0, table.output
    assert "inference step at batch 4" in table.output and "fused_conv" in table.output


def test_profiling_leaves_the_executable_unclocked(tiny):
    import cnndsl
    from cnndsl.cli.bench import profile_step

    model = cnndsl.compile(tiny)
    x = np.zeros((2, 1, 8, 8), np.float32)
    rows = profile_step(model, "infer", 2, lambda: model.predict(x, batch=2), 2)
    assert rows and model.executable("infer", 2).timings is None
