"""The `cnndsl` command line: exit codes, output, and clean errors for bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnndsl.cli.main import cli, main  # noqa: F401  (main registers the commands)

ROOT = Path(__file__).resolve().parent.parent
LENET = str(ROOT / "examples" / "lenet5.cnn")


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.inspect  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)
    return invoke


def test_check_all_examples_is_clean(run):
    examples = sorted((ROOT / "examples").glob("*.cnn"))
    result = run("check", *map(str, examples))
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(examples) >= 7


def test_check_reports_errors_with_exit_1(run):
    result = run("check", str(ROOT / "examples/errors/stride_not_tile.cnn"))
    assert result.exit_code == 1
    assert "stride_not_tile.cnn:6:20: error: stride 3 does not tile" in result.output
    assert "help: padding=same gives 5; padding=2" in result.output


def test_shapes_shows_lenet_sizes(run):
    result = run("shapes", LENET)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.startswith("c1 ") and "6x28x28" in line for line in lines)
    assert any(line.startswith("maxpool2 ") and "16x5x5" in line for line in lines)
    assert "Total params: 61,706" in result.output
    assert "Planned activation memory, training step" in result.output


def test_shapes_json_records(run):
    result = run("shapes", LENET, "--json")
    records = json.loads(result.output)
    by_name = {r["name"]: r for r in records}
    assert by_name["c1"]["output"] == [6, 28, 28]
    assert by_name["c1"]["params"] == 156
    assert by_name["flatten1"]["output"] == [400]
    assert all({"name", "op", "output", "params", "flops"} <= set(r) for r in records)


def test_define_overrides_a_parameter(run):
    result = run("shapes", LENET, "--json", "-D", "classes=5")
    assert json.loads(result.output)[-1]["output"] == [5]
    bad = run("shapes", LENET, "-D", "clases=5")
    assert bad.exit_code == 1 and "did you mean 'classes'" in bad.output
    malformed = run("shapes", LENET, "-D", "classes")
    assert malformed.exit_code == 1 and "NAME=VALUE" in malformed.output


def test_graph_dot(run, tmp_path):
    result = run("graph", LENET)
    assert result.exit_code == 0 and result.output.startswith('digraph "LeNet5"')
    out = tmp_path / "net.dot"
    assert run("graph", LENET, "-o", str(out)).exit_code == 0
    assert '"c1" -> "c1.relu"' in out.read_text()


def test_graph_png_needs_graphviz(run, tmp_path):
    result = run("graph", LENET, "--format", "png", "-o", str(tmp_path / "net.png"))
    if shutil.which("dot"):
        assert result.exit_code == 0 and (tmp_path / "net.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert result.exit_code == 1 and "Graphviz" in result.output


@pytest.mark.parametrize("make", ["missing", "directory", "binary", "empty"])
def test_bad_model_files_exit_1_without_traceback(tmp_path, make):
    path = tmp_path / "model.cnn"
    if make == "directory":
        path.mkdir()
    elif make == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif make == "empty":
        path.write_text("")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(path)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 1
    assert "model.cnn" in r.stderr and "error" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_import_cut_short_by_ctrl_c_is_an_interrupt_not_an_internal_error(tmp_path, monkeypatch):
    """pybind11 turns a Ctrl-C during a module's initialization into "ImportError: initialization
    failed" (a sweep in CI reported it as an internal error): whatever escapes with a Ctrl-C as its
    cause ends as one, with exit status 130."""
    import cnndsl.cli.train  # noqa: F401
    from cnndsl.train.trainer import Trainer

    def cut_short(self, *args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    monkeypatch.setattr(Trainer, "fit", cut_short)
    result = CliRunner().invoke(cli, ["train", LENET, "--epochs", "1", "--no-progress",
                                      "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "internal error" not in result.output


def test_ctrl_c_in_an_in_process_train_gives_the_host_its_handler_back(tmp_path, monkeypatch):
    """`train` ignores a second Ctrl-C once it is stopping; run in-process (CliRunner here, a
    notebook for a user) it exits 130 and the host's SIGINT handler is back afterwards."""
    import signal

    import cnndsl.cli.train  # noqa: F401
    from cnndsl.train.trainer import Trainer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    mine = lambda signum, frame: None  # noqa: E731
    before = signal.signal(signal.SIGINT, mine)
    try:
        result = CliRunner().invoke(cli, ["train", LENET, "--epochs", "1", "--no-progress",
                                          "--out", str(tmp_path / "run")], catch_exceptions=False)
        assert result.exit_code == 130, result.output
        assert "stopped" in result.output
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("args, words", [
    (["augment", LENET, "--seed", "-5"], "'--seed': -5 is not in the range 0<=x<=4294967295"),
    (["bench", LENET, "--seed", "-1", "--no-train"], "'--seed': -1 is not in the range"),
    (["train", LENET, "--seed", "99999999999999999999999"], "'--seed': 99999999999999999999999 is not in the range"),
    (["sweep", LENET, "--trials", "1", "--seed", "4294967296"], "'--seed': 4294967296 is not in the range"),
    (["train", LENET, "--lr", "inf"], "'--lr': 'inf' is not a finite number"),
    (["train", LENET, "--lr", "nan"], "'--lr': 'nan' is not a finite number"),
    # the train section refuses `epochs 2000000`; --epochs 10**21 trained on for ever
    (["train", LENET, "--epochs", "1000000000000000000000"], "'--epochs': 1000000000000000000000 is not in the range 1<=x<=1000000"),
    (["sweep", LENET, "--trials", "1", "--epochs", "1000001"], "'--epochs': 1000001 is not in the range 1<=x<=1000000"),
])
def test_seeds_and_learning_rates_out_of_range_are_usage_errors(tmp_path, args, words):
    """A negative or over-64-bit --seed (NumPy's and Numba's refusal) and --lr inf/nan (click's
    FloatRange admits them; the schedule refused) were internal errors after the work had begun:
    a sweep had created its study.db. They are refused with the options, before anything runs."""
    import cnndsl.cli.augment  # noqa: F401
    import cnndsl.cli.bench  # noqa: F401
    import cnndsl.cli.sweep  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    out = tmp_path / "out"
    extra = [] if args[0] == "bench" else (["-o", str(tmp_path / "g.png")] if args[0] == "augment"
                                             else ["--out", str(out)])
    result = CliRunner().invoke(cli, args + extra, catch_exceptions=False)
    assert result.exit_code == 2 and words in result.output, result.output
    assert "internal error" not in result.output and not out.exists()


def test_option_ranges_match_the_train_section():
    from cnndsl.cli.options import EPOCHS, SEED_MAX
    from cnndsl.frontend.training import SETTING_OPTIONS

    assert (EPOCHS.min, EPOCHS.max) == (SETTING_OPTIONS["epochs"].minimum, SETTING_OPTIONS["epochs"].maximum)
    assert SEED_MAX == SETTING_OPTIONS["seed"].maximum


@pytest.mark.parametrize("args, option", [
    (["train", LENET, "--epochs", "1", "--out", ""], "'--out'"),  # trained into runs/lenet5
    (["train", LENET, "--epochs", "1", "--data", ""], "'--data'"),  # trained on the file's dataset
    (["augment", LENET, "-o", ""], "'-o' / '--output'"),  # wrote lenet5-augment.png here
    (["eval", LENET, "--weights", ""], "'--weights'"),  # '.: error: weights path is a directory'
    (["check", LENET, ""], "'FILES...'"),  # ': error:  is a directory, not a .cnn file'
    (["predict", LENET, "--weights", "w.safetensors", ""], "'IMAGES...'"),
])
def test_an_empty_value_is_a_usage_error(tmp_path, monkeypatch, args, option):
    """`--out "$OUT"` with OUT unset: "" was taken as not given, or as the current folder."""
    import cnndsl.cli.augment  # noqa: F401
    import cnndsl.cli.inspect  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}: the value is empty (an unset shell variable?)" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cuda_tune_option(run, monkeypatch):
    """--cuda-tune passes the GEMM tile policy on as CNNDSL_CUDA_TUNE for the command's duration,
    with --device cuda only; a bad CNNDSL_CUDA_TUNE is named before any work."""
    import click

    from cnndsl.cli.train import TUNE_ENV, device_option
    from cnndsl.kernels.cuda import tune

    seen = []

    @click.command()
    @device_option
    def probe():
        seen.append(os.environ.get(TUNE_ENV))

    monkeypatch.delenv(TUNE_ENV, raising=False)
    runner = CliRunner()
    assert runner.invoke(probe, ["--device", "cuda", "--cuda-tune", "on"]).exit_code == 0
    assert runner.invoke(probe, ["--device", "cuda"]).exit_code == 0
    assert seen == ["on", None] and TUNE_ENV not in os.environ  # set for the command, then restored
    # the choices are the policies tune.py knows
    choice = next(p for p in probe.params if p.name == "cuda_tune").type
    assert set(choice.choices) == set(tune.POLICIES)

    result = run("train", LENET, "--epochs", "1", "--cuda-tune", "on")
    assert result.exit_code == 2 and "--cuda-tune applies to --device cuda" in result.output
    monkeypatch.setenv(TUNE_ENV, "fast")
    result = run("train", LENET, "--epochs", "1", "--device", "cuda")
    assert result.exit_code == 1 and "CNNDSL_CUDA_TUNE='fast': expected one of cached, on, off" in result.output
    assert "Traceback" not in result.output


def test_bad_cuda_cache_setting_is_named_before_any_work(run, monkeypatch, tmp_path):
    """CNNDSL_CUDA_CACHE (cnndsl/kernels/cuda/shim.py) is read when a kernel is made; with --device
    cuda a bad value is a one-line error first, exit 1, nothing written."""
    from cnndsl.cli.train import CACHE_ENV
    from cnndsl.kernels.cuda import shim

    assert CACHE_ENV == shim.CACHE_ENV
    monkeypatch.setenv(CACHE_ENV, "sometimes")
    result = run("train", LENET, "--epochs", "1", "--device", "cuda", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "CNNDSL_CUDA_CACHE='sometimes': expected one of on, off" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
