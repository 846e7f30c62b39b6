"""`cnndsl sweep` (issue 19): trials on a tiny digits subset, 1 epoch, widths of 2 and 4.

The main suite runs one short sweep (module fixture) and checks what it wrote; resuming after
SIGKILL and two processes sharing a study start fresh processes and are marked slow."""
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
from click.testing import CliRunner

from cnndsl.cli.main import cli
from cnndsl.frontend import load
from cnndsl.frontend.parser import parse_text
from cnndsl.sweep.results import filled_source
from cnndsl.sweep.space import build_space
from tests.reliability_testutil import sigint_default_in_child

import cnndsl.cli.sweep  # noqa: E402,F401  registers the command
import cnndsl.cli.train  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]

# 28x28 digits: stride 2 tiles 28 - k only for k = 4, so the 2 points with k=3 s=2 of the 8 shape
# combinations are invalid.
TINY = """network T(width = choice(2, 4), k = choice(3, 4), s = choice(1, 2), lr = log(0.02, 0.2)) {
  input image: 1x28x28
  conv width kernel=k stride=s relu
  flatten
  dense 10 -> logits
}
train {
  epochs 1
  batch 32
  optimizer sgd lr=lr momentum=0.9
  metric logits accuracy
}
"""


def write_data(path: Path, n: int = 200) -> Path:
    from cnndsl.data.digits import load_digits

    x, y = load_digits("train")
    pick = np.random.default_rng(0).permutation(len(x))[:n]
    np.savez(path, x=x[pick], y=y[pick])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    model = d / "tiny.cnn"
    model.write_text(TINY)
    return model, write_data(d / "digits200.npz")


def sweep(*args):
    return CliRunner().invoke(cli, ["sweep", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def swept(files, tmp_path_factory):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path_factory.mktemp("out") / "s"
    result = sweep(model, "--data", data, "--trials", 3, "--sampler", "random", "--seed", 9, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def study_trials(out: Path):
    import optuna

    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}").get_trials()


def test_sweep_counts_invalid_points_apart_and_never_trains_them(swept, files):
    from cnndsl.sweep.check import check_point

    out, output = swept
    doc = json.loads((out / "sweep.json").read_text())
    counts = doc["counts"]
    assert counts.get("complete", 0) + counts.get("pruned", 0) == 3
    rows = doc["trials"]
    assert len(rows) == sum(counts.values())
    invalid = [r for r in rows if r["state"] == "invalid"]
    assert f"{counts.get('invalid', 0)} invalid point" in output
    text = files[0].read_text()
    module = parse_text(text, str(files[0]))
    space = build_space(module, module.networks[0], file=str(files[0]))
    for r in rows:  # the checker's verdict, again: invalid ones are really invalid, trained ones valid
        assert check_point(space, text, r["point"]).valid == (r["state"] != "invalid"), r
    for r in invalid:
        assert r["params"] is None and r["accuracy"] is None and r["dir"] is None and "does not tile" in r["reason"]
        assert not (out / "trials" / f"{r['number']:04d}").exists()  # nothing was written for it
    for t in study_trials(out):
        if t.user_attrs.get("state") != "invalid":
            assert sorted(t.intermediate_values) == [1]  # the pruner was fed the epoch's held-out accuracy
        else:
            assert t.intermediate_values == {}


def test_trials_after_the_first_compile_nothing(swept):
    out, _ = swept
    trained = [r for r in json.loads((out / "sweep.json").read_text())["trials"] if r["params"] is not None]
    shapes = {(r["point"]["width"], r["point"]["k"], r["point"]["s"]) for r in trained}
    assert len({k for _, k, _ in shapes}) == 2 and len(shapes) >= 3  # other widths, kernels (seeded draws) ...
    assert [r["compiled"] for r in trained[1:]] == [0] * (len(trained) - 1)  # ... and no new compilation,
    # and nothing compiled twice: a later trial compiles at most a kernel variant no earlier trial
    # needed (the direct convolution's tiles by output channels), never one compiled before
    seen: set[str] = set()
    for t in sorted((t for t in study_trials(out) if "compiled_functions" in t.user_attrs), key=lambda t: t.number):
        functions = set(t.user_attrs["compiled_functions"])
        assert not functions & seen, functions & seen
        seen |= functions


def test_sweep_writes_table_csv_plot_and_best(swept):
    out, output = swept
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["space"] == {"width": "choice(2, 4)", "k": "choice(3, 4)", "s": "choice(1, 2)",
                            "lr": "log(0.02, 0.2)"}
    done = [r for r in doc["trials"] if r["state"] == "complete"]
    assert done and all(r["params"] > 0 and r["flops"] > 0 and 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
                        for r in done)
    best = max(done, key=lambda r: (r["accuracy"], -r["flops"]))
    assert doc["best"] == best["number"]
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    assert csv_lines[0] == "trial,width,k,s,lr,params,flops,accuracy,loss,epochs,seconds,state,reason,latency_ms"
    assert len(csv_lines) == 1 + len(doc["trials"])
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = output.splitlines()
    assert any(line.split()[:2] == ["trial", "width"] for line in header)
    assert f"best: trial {best['number']}" in output
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary


def test_best_file_parses_trains_and_its_weights_load(swept, files):
    from cnndsl.model import Model
    from cnndsl.train.data import resolve_datasets

    out, _ = swept
    doc = json.loads((out / "sweep.json").read_text())
    best = next(r for r in doc["trials"] if r["number"] == doc["best"])
    text = (out / "best.cnn").read_text()
    assert "choice(" not in text and "log(" not in text
    program = load(out / "best.cnn")  # a plain file: no -D needed
    assert program.params["width"] == best["point"]["width"] and program.params["k"] == best["point"]["k"]
    assert program.training.optimizer.lr == pytest.approx(best["point"]["lr"])
    model = Model(program)
    model.load_weights(out / "best.safetensors")
    _, test = resolve_datasets(model, str(files[1]))
    assert model.evaluate(test.x, test.y)["accuracy"] == pytest.approx(best["accuracy"])
    result = CliRunner().invoke(cli, ["train", str(out / "best.cnn"), "--data", str(files[1]), "--out",
                                      str(out / "retrain"), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "retrain" / "metrics.json").read_text())  # it trained


def test_a_changed_setting_is_refused_on_the_same_study(swept, files):
    out, _ = swept
    result = sweep(files[0], "--data", files[1], "--trials", 2, "--epochs", 2, "--out", out)
    assert result.exit_code == 1
    assert "this study was started with another epochs" in result.output
    changed = files[0].parent / "changed" / files[0].name
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(TINY.replace("dense 10", "dense 10  # a comment"))
    result = sweep(changed, "--data", files[1], "--trials", 2, "--out", out)  # another path is refused too
    assert result.exit_code == 1 and "this study was started with another file" in result.output
    saved = files[0].read_text()
    try:
        files[0].write_text(saved.replace("dense 10", "dense 10  # a comment"))
        result = sweep(files[0], "--data", files[1], "--trials", 2, "--out", out)
        assert result.exit_code == 1 and "tiny.cnn has changed since this study was started" in result.output
    finally:
        files[0].write_text(saved)


def test_sweep_without_a_space_and_without_optuna(files, tmp_path, monkeypatch):
    plain = tmp_path / "plain.cnn"
    plain.write_text(TINY.split("(", 1)[0] + " {" + TINY.split("{", 1)[1].replace("width", "2").replace(
        "kernel=k stride=s", "kernel=3").replace("lr=lr", "lr=0.1"))
    if __import__("importlib").util.find_spec("optuna") is not None:
        result = sweep(plain, "--trials", 1, "--out", tmp_path / "o")
        assert result.exit_code == 1 and "has no search space: nothing to sweep" in result.output
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    result = sweep(files[0], "--trials", 1, "--out", tmp_path / "o2")
    assert result.exit_code == 1
    assert "cnndsl sweep needs Optuna" in result.output and "pip install 'cnndsl[sweep]'" in result.output


def test_filled_source_writes_values_and_training_knobs():
    text = ("network N(width = choice(2, 4), k = 3, c) {\n  input x: 1x8x8\n  conv width kernel=k\n}\n"
            "train {\n  optimizer sgd lr=0.1\n}\n")
    module = parse_text(text, "f.cnn")
    out = filled_source(text, module, module.networks[0], {"width": 4, "k": 5, "c": 7},
                        {"lr": 0.02, "weight_decay": 1e-4, "batch": 16})
    assert out.splitlines()[0] == "network N(width = 4, k = 5, c = 7) {"
    assert "  optimizer sgd lr=0.02 weight_decay=0.0001\n" in out and "  batch 16\n}" in out
    bare = "network N(w = choice(1, 2)) {\n  input x: 1x8x8\n  conv w\n}\n"
    module = parse_text(bare, "g.cnn")
    out = filled_source(bare, module, module.networks[0], {"w": 2}, {"batch": 8})
    assert out.endswith("}\n\ntrain {\n  batch 8\n}\n") and "network N(w = 2)" in out
    assert load.__module__  # the result loads:
    from cnndsl.frontend import loads

    assert loads(out, "g.cnn").training.batch == 8


def test_multi_objective_sweep_and_training_knob_space(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "m"
    result = sweep(model, "--data", data, "--trials", 1, "--minimize", "params", "--space", "batch=16,32",
                   "-D", "k=3", "-D", "s=1", "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "sweep.json").read_text())
    assert set(doc["space"]) == {"width", "lr", "batch"} and doc["minimize"] == "params"
    done = [r for r in doc["trials"] if r["state"] == "complete"]
    assert len(done) == 1 and not any(r["state"] == "invalid" for r in doc["trials"])  # k=3 s=1 is valid
    (t,) = [t for t in study_trials(out) if t.state.name == "COMPLETE"]
    assert t.values[1] == done[0]["params"]  # the second objective
    best = load(out / "best.cnn")
    assert best.training.batch == done[0]["point"]["batch"] and best.params["k"] == 3


def test_minimize_latency_measures_each_trial(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "lat"
    result = sweep(model, "--data", data, "--trials", 1, "--minimize", "latency", "-D", "k=3", "-D", "s=1",
                   "-D", "width=2", "--out", out)
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads((out / "sweep.json").read_text())["trials"] if r["state"] == "complete"]
    assert row["latency_ms"] > 0
    (t,) = [t for t in study_trials(out) if t.state.name == "COMPLETE"]
    assert t.values[1] == row["latency_ms"]
    assert "ms/image" in result.output and (out / "sweep.png").exists()


def test_a_storage_url_and_max_invalid(files, tmp_path):
    optuna = pytest.importorskip("optuna")
    model, data = files
    db = tmp_path / "shared.db"
    out = tmp_path / "out"
    # k=3 with stride 2 never tiles 28x28: every point is invalid, the sweep stops at --max-invalid
    result = sweep(model, "--data", data, "--trials", 2, "-D", "k=3", "-D", "s=2", "--max-invalid", 3,
                   "--storage", f"sqlite:///{db}", "--study", "shared", "--out", out)
    assert result.exit_code == 0, result.output
    assert "stopping: 3 invalid points proposed (--max-invalid 3)" in result.output
    assert "no trial has completed yet" in result.output
    trials = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}").get_trials()
    assert [t.user_attrs["state"] for t in trials] == ["invalid"] * 3
    assert not (out / "study.db").exists() and json.loads((out / "sweep.json").read_text())["counts"] == {"invalid": 3}


@pytest.mark.parametrize("url, shown, found", [
    ("foo://bar", "foo://bar", "NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:foo"),
    ("notaurl", "notaurl", "ArgumentError: Could not parse SQLAlchemy URL"),
    ("sqlite:////no/such/folder/study.db", "sqlite:////no/such/folder/study.db",
     "OperationalError: unable to open database file"),
])
def test_a_storage_url_that_cannot_be_opened_is_an_error_about_storage(files, tmp_path, url, shown, found):
    """A --storage URL SQLAlchemy does not know or cannot open was 'cnndsl: internal error:
    NoSuchModuleError' (or OperationalError), exit 2."""
    pytest.importorskip("optuna")
    model, data = files
    result = sweep(model, "--data", data, "--trials", 1, "--storage", url, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert f"<command line>: error: --storage {shown}: cannot open the database" in result.output
    assert f"found: {found}" in result.output and "internal error" not in result.output
    assert not (tmp_path / "out").exists()  # checked before the --out folder is made


def test_a_storage_url_hides_its_password(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    result = sweep(model, "--data", data, "--trials", 1, "--storage", "postgresql://me:secret@localhost:1/db",
                   "--out", tmp_path / "out")
    assert result.exit_code == 1 and "--storage postgresql://me:***@localhost:1/db" in result.output, result.output
    assert "secret" not in result.output


def test_a_small_space_is_not_trained_twice(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "small"
    # two points (k = 3 or 4), both valid; --trials 5 asks for more than the space holds
    result = sweep(model, "--data", data, "--trials", 5, "-D", "width=2", "-D", "s=1", "-D", "lr=0.05",
                   "--sampler", "random", "--seed", 2, "--out", out)  # seed 2 proposes k = 3, 3, 3, 4
    assert result.exit_code == 0, result.output
    assert "stopping: every one of the 2 points of the space has been tried" in result.output
    rows = json.loads((out / "sweep.json").read_text())["trials"]
    trained = [r for r in rows if r["state"] == "complete"]
    assert sorted(r["point"]["k"] for r in trained) == [3, 4]  # each point trained once
    assert [r["state"] for r in rows] == ["complete", "repeat", "repeat", "complete"]
    assert "2 points proposed again (result reused)" in result.output
    for r in rows:
        if r["state"] == "repeat":  # a point proposed again: the earlier result, not a second training
            first = next(t for t in trained if t["point"] == r["point"])
            assert r["accuracy"] == first["accuracy"] and r["reason"] == f"trial {first['number']}"
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(f"{r['number']:04d}" for r in trained)


def test_tables_created_by_another_process_at_the_same_moment(files, tmp_path, monkeypatch):
    """A process that does not take the sweep's lock (optuna.load_study in a script, a dashboard)
    creates the database's tables as the sweep does: the sweep's CREATE TABLE fails with 'already
    exists' (an internal error before), and it opens the study again."""
    optuna = pytest.importorskip("optuna")
    import sqlalchemy.exc

    model, data = files
    real = optuna.storages.RDBStorage
    calls = []

    class Racing(real):
        def __init__(self, url, **kwargs):
            calls.append(url)
            if len(calls) == 1:
                real(url)  # the other process's tables, created first
                raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {},
                                                      Exception("table studies already exists"))
            super().__init__(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    out = tmp_path / "race"
    result = sweep(model, "--data", data, "--trials", 1, "-D", "width=2", "-D", "s=1", "-D", "lr=0.05", "--seed", 1,
                   "--out", out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and json.loads((out / "sweep.json").read_text())["counts"] == {"complete": 1}


def test_recover_queues_only_whole_points(tmp_path):
    """Two trials left RUNNING by a dead process: one had drawn its whole point (queued again, with
    that point), one only some of its parameters (failed, not queued: its point never existed)."""
    optuna = pytest.importorskip("optuna")
    from cnndsl.sweep.study import HOST, recover

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}", study_name="r")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    whole, part = study.ask(), study.ask()
    for t in (whole, part):
        t.set_user_attr("host", HOST)
        t.set_user_attr("pid", pid)
        t.set_user_attr("pid_start", "never")  # not a start time: a reused pid is not this process
        t.suggest_int("k", 3, 4)
    whole.suggest_categorical("s", [1, 2])
    lines = []
    assert recover(study, lines.append, ["k", "s"]) == 1
    assert lines == ["1 trial interrupted earlier will run again"]
    trials = study.get_trials()
    assert [(t.state.name, t.user_attrs.get("state")) for t in trials[:2]] == [("FAIL", "interrupted")] * 2
    assert len(trials) == 3 and trials[2].state.name == "WAITING"
    assert trials[2].user_attrs["requeued_from"] == whole.number
    assert recover(study, lines.append, ["k", "s"]) == 0  # once


# ---- several processes -------------------------------------------------------------------------------------
def _cmd(model, data, out, trials):
    return [sys.executable, "-m", "cnndsl", "sweep", str(model), "--data", str(data), "--trials", str(trials),
            "--seed", "1", "--out", str(out)]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_same_study(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "k"
    proc = subprocess.Popen(_cmd(model, data, out, 5), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # The kill must land while a trial is running with its point recorded. Polling and then killing
    # raced with the sweep: a trial of this tiny model ends within the poll, or the next one has its
    # pid but no point yet (nothing to queue again), and CI failed that way twice. So the sweep is
    # frozen (SIGSTOP) before the study is read: what is read is what the kill finds. A write it
    # held half-done is rolled back by SQLite, which leaves the trial RUNNING, as read.
    deadline = time.time() + 600
    killed_running = False
    while time.time() < deadline and not killed_running:
        time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        if not (out / "study.db").exists():
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            trials = study_trials(out)
        except Exception:  # the study is being created, or the frozen sweep holds the write lock
            trials = []
        done_before = [t for t in trials if t.state.name == "COMPLETE"]
        # with its whole point: a trial draws its parameters one at a time (the one killed before it
        # had drawn them all is not queued again: test_recover_queues_only_whole_points)
        running = [t for t in trials if t.state.name == "RUNNING" and set(t.params) == {"width", "k", "s", "lr"}]
        if len(done_before) >= 2 and running:
            os.kill(proc.pid, signal.SIGKILL)
            killed_running = True
        os.kill(proc.pid, signal.SIGCONT)
    assert killed_running, "no trial was running with its point within 600 s"
    proc.wait()
    before = {t.number: (t.params, t.values) for t in study_trials(out) if t.state.name == "COMPLETE"}
    assert len(before) >= 2
    killed = [t for t in study_trials(out) if t.state.name == "RUNNING"]
    result = subprocess.run(_cmd(model, data, out, 5), env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "interrupted earlier will run again" in result.stderr
    after = study_trials(out)
    for number, (params, values) in before.items():  # the completed trials are kept as they were
        t = after[number]
        assert t.state.name == "COMPLETE" and (t.params, t.values) == (params, values)
    trained = [t for t in after if t.user_attrs.get("state") not in ("invalid", "interrupted", "repeat")
               and t.state.name in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(trained) == 5
    for k in killed:  # the killed trial is marked, and its point trained again
        assert after[k.number].user_attrs["state"] == "interrupted"
        assert any(t.user_attrs.get("requeued_from") == k.number and t.params == k.params for t in after)
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["counts"].get("interrupted", 0) == len(killed)


@pytest.mark.slow
def test_ctrl_c_marks_the_trial_interrupted_and_the_next_run_trains_it(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "c"
    # trials of 15 epochs (about 3 s here), so the Ctrl-C sent when one is seen running lands in
    # it, not after it (1-epoch trials took 0.2 s, as long as two polls)
    cmd = _cmd(model, data, out, 3) + ["--epochs", "15", "--pruner", "none"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default_in_child)
    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            running = [t for t in study_trials(out) if t.state.name == "RUNNING" and t.user_attrs.get("pid")]
        except Exception:  # the study is being created
            continue
        if running and (out / "trials" / f"{running[0].number:04d}").exists():
            proc.send_signal(signal.SIGINT)
            break
        assert proc.poll() is None, proc.stderr.read()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    (stopped,) = [t for t in study_trials(out) if t.state.name == "FAIL"]
    assert stopped.user_attrs["state"] == "interrupted"
    assert json.loads((out / "sweep.json").read_text())["counts"]["interrupted"] == 1
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "1 trial interrupted earlier will run again" in result.stderr
    assert any(t.user_attrs.get("requeued_from") == stopped.number and t.params == stopped.params
               and t.state.name == "COMPLETE" for t in study_trials(out))


@pytest.mark.slow
def test_two_processes_share_one_study(files, tmp_path):
    pytest.importorskip("optuna")
    model, data = files
    out = tmp_path / "two"
    procs = [subprocess.Popen(_cmd(model, data, out, 6), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (o, e) in zip(procs, outputs):
        assert p.returncode == 0, e
    trials = study_trials(out)
    trained = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")
               and t.user_attrs.get("state") not in ("invalid", "repeat")]
    assert 6 <= len(trained) <= 7  # both stop at 6; one may have started its last as the other finished
    pids = {t.user_attrs["pid"] for t in trained}
    assert pids == {p.pid for p in procs}  # both processes trained trials of the one study
    assert len({t.number for t in trials}) == len(trials)
