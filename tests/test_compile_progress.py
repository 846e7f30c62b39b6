"""The compile phase (issue 14): what a user sees while Numba compiles, what `cnndsl bench` reports
about it, and which changes to a model compile nothing new.

The cold tests run `cnndsl train` in a subprocess with NUMBA_CACHE_DIR set to an empty folder (a
user-set NUMBA_CACHE_DIR wins over cnndsl's fingerprinted cache: cnndsl/kernel_cache.py) on a
network of two dense layers, the smallest thing that trains: its cold compile took 15.7 s on the
2-core development machine at load 2.3 (61 functions). The `bench` and `warmup` tests reuse that
cache with one layer more, whose kernels are the only ones left to compile (one cold compile of
the whole network per test was 20 and 46 s of the cold suite at load 7).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cnndsl.backend.compile_events import CompileCounter, counting
from cnndsl.train.progress import CompileStatus

REPO = Path(__file__).resolve().parents[1]

TINY = """
network Tiny(classes = 10, width = 8) {
  input image: 1x28x28
  flatten
  dense width relu
  dense classes -> logits
}

train {
  dataset digits
  epochs 1
  batch 64
  optimizer sgd lr=0.05
  loss logits cross_entropy
  metric logits accuracy
}
"""

# The goal: the first line within 2 s of the command's start. The subprocess pays Python's start,
# cnndsl's imports (about 0.5 s), parsing and the pass pipeline (about 0.9 s) before the first
# compilation; on a loaded 2-core machine (CI, or the suite's own parallel work) those stretch,
# so a load above 1 per core adds a margin of 2 s.
FIRST_LINE_S = 2.0
LOADED_MARGIN_S = 2.0


def _load_per_core() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def _first_line_limit() -> float:
    load = _load_per_core()
    limit = FIRST_LINE_S + (LOADED_MARGIN_S if load > 0.5 else 0.0)
    # a machine shared far beyond its cores (a load of 10 per core was seen while six test suites
    # ran at once: Python's start and the imports alone took 6.4 s) stretches everything before the
    # compile phase as much; the compile phase's own delay is checked apart (COMPILE_LINE_GAP_S)
    return limit * max(1.0, load)


# The compile line follows the "training ..." line (printed once the model and the data are ready)
# at once: within this, times the load per core above 1
COMPILE_LINE_GAP_S = 1.0


def _env(cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    env.pop("NUMBA_BOUNDSCHECK", None)  # its own fingerprint; not this test's subject
    return env


def _timed_stderr(args, env, cwd) -> tuple[list[tuple[float, str]], int, str]:
    """Run `python -m cnndsl ARGS`; (seconds since the start, line) for each stderr line."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cnndsl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stderr]
    proc.wait(timeout=600)
    reader.join()
    return lines, proc.returncode, "".join(out)


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    """One cold `cnndsl train` of TINY (stderr is a pipe: the "lines" mode), and its cache."""
    tmp = tmp_path_factory.mktemp("cold")
    (tmp / "tiny.cnn").write_text(TINY)
    cache = tmp / "numba-cache"
    cache.mkdir()
    lines, rc, out = _timed_stderr(["train", "tiny.cnn", "--out", "run"], _env(cache), tmp)
    return {"dir": tmp, "cache": cache, "lines": lines, "rc": rc, "stdout": out}


def test_cold_train_says_it_is_compiling_within_two_seconds(cold_run):
    lines, rc = cold_run["lines"], cold_run["rc"]
    text = "\n".join(f"{t:6.2f} {line}" for t, line in lines)
    assert rc == 0, text
    # what is trained, then (the log form: stderr is a pipe) one line when compiling starts, one
    # at its end with the count and the seconds, then the epoch
    assert lines[0][1].startswith("training Tiny: 4000 images"), text
    first_t, first = lines[1]
    assert first == "compiling kernels for Tiny (first run only)...", text
    assert first_t <= _first_line_limit(), f"the compile line came after {first_t:.2f} s:\n{text}"
    gap = first_t - lines[0][0]
    assert gap <= COMPILE_LINE_GAP_S * max(1.0, _load_per_core()), f"{gap:.2f} s after the first line:\n{text}"
    end_t, end = lines[2]
    # "(2 processes)" when the compile pool ran (cnndsl/backend/compile_pool.py: more than one core)
    m = re.fullmatch(r"compiled (\d+) kernel functions for Tiny in ([\d.]+) s( \(\d+ processes\))?", end)
    assert m, text
    assert int(m.group(1)) > 0
    seconds = float(m.group(2))
    assert 0 < seconds <= end_t - first_t + 0.5, text
    assert lines[3][1].startswith("epoch 1:"), text


def test_warm_train_prints_no_compile_line(cold_run):
    lines, rc, _ = _timed_stderr(["train", "tiny.cnn", "--out", "run2"], _env(cold_run["cache"]), cold_run["dir"])
    text = "\n".join(line for _, line in lines)
    assert rc == 0, text
    assert lines[0][1].startswith("training Tiny:") and lines[1][1].startswith("epoch 1:"), text
    assert "compil" not in text


def test_live_line_on_a_terminal_moves_then_the_summary(cold_run):
    """A terminal (a pseudo-terminal here): the line is rewritten in place while Numba compiles.
    With Adam instead of SGD only the new optimizer's kernel compiles (the rest is cached)."""
    pty = pytest.importorskip("pty")
    d = cold_run["dir"]
    (d / "adam.cnn").write_text(TINY.replace("optimizer sgd lr=0.05", "optimizer adam lr=0.001"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cnndsl", "train", "adam.cnn", "--out", "run3"],
                            stdout=subprocess.DEVNULL, stderr=slave, env=_env(cold_run["cache"]), cwd=d)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "training Tiny:" in text and "epoch 1" in text, text
    phase = text.split("training Tiny:", 1)[1].split("epoch 1", 1)[0]  # after what is trained, before the bar
    assert "\rcompiling kernels for Tiny (first run only): 1 function" in phase, repr(phase)
    summary = [part for part in phase.split("\r") if part.startswith("compiled ")]
    assert summary and " kernel function" in summary[-1] and "for Tiny in" in summary[-1], repr(phase)


def _with_layer(layer: str) -> str:
    """TINY with one more layer before `flatten`: a model whose other kernels the cold run compiled."""
    return TINY.replace("  flatten\n", f"  {layer}\n  flatten\n")


def test_bench_reports_functions_compiled_and_seconds(cold_run):
    """Cold (a layer whose kernels nobody compiled yet: the cold run's cache lacks them): functions
    compiled and seconds; warm (the cold run's own network and cache): none."""
    d = cold_run["dir"]
    (d / "tiny-avgpool.cnn").write_text(_with_layer("avgpool 2"))
    cold = subprocess.run([sys.executable, "-m", "cnndsl", "bench", "tiny-avgpool.cnn", "--no-train", "--repeats",
                           "1", "--json"], capture_output=True, text=True, env=_env(cold_run["cache"]), cwd=d,
                          timeout=600)
    assert cold.returncode == 0, cold.stderr
    figures = json.loads(cold.stdout)
    assert figures["kernels_compiled"] > 0 and figures["kernel_compile_s"] > 0
    warm = subprocess.run([sys.executable, "-m", "cnndsl", "bench", "tiny.cnn", "--repeats", "1"],
                          capture_output=True, text=True, env=_env(cold_run["cache"]), cwd=d, timeout=600)
    assert warm.returncode == 0, warm.stderr
    assert re.search(r"kernel functions compiled by Numba \(0: all cached\) +0\n", warm.stdout), warm.stdout
    assert re.search(r"seconds compiling them +0\.00 s\n", warm.stdout), warm.stdout


# -- a second model compiles nothing new --------------------------------------------------------------

NET = """
network Net(classes = 10, width = 6, drop = 0.5) {
  input image: 1x28x28
  c1 = conv width kernel=5 padding=same relu
  maxpool 2
  conv 16 kernel=5 relu
  maxpool 2
  flatten
  dense 120 relu
  dense 84 relu
  dropout drop
  dense classes -> logits
}

train {
  dataset digits
  epochs 1
  batch 64
  seed 1
  optimizer sgd lr=0.05 momentum=0.9 weight_decay=5e-4
  loss logits cross_entropy
  metric logits accuracy
  normalize mean=0.1307 std=0.3081
  augment {
    random_crop padding=2 p=0.5
    rotate degrees=10 p=0.5
  }
}
"""

# Builds the model with the given -D values, runs the compile phase (a training step, an evaluation
# step and the augmentation at the batch) and prints what Numba compiled, as JSON.
COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys
    import cnndsl
    from cnndsl.augment.pipeline import Pipeline
    from cnndsl.backend.compile_events import counting
    from cnndsl.model import Model
    from cnndsl.train.trainer import compile_kernels, with_overrides

    path, defines, batch = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    model = Model(cnndsl.load(path, defines=defines))
    config = with_overrides(model.config, batch=batch)
    from numba import njit

    @njit  # not cached: compiles in every process, so the counter is seen to count
    def probe(x):
        return x + 1

    with counting() as c:
        probe(1)
        phase = compile_kernels(model, config, augment=Pipeline.from_config(config.augment, config.seed))
    assert c.count >= 1 and c.records[0].name.endswith("probe"), "the compile counter saw nothing"
    # this process's compilations, and the compile pool's workers' (none when nothing compiles)
    records = c.records[1:] + [r for r in phase.records if r.worker]
    print(json.dumps([[r.qualname, r.signature, r.depth] for r in records]))
""")


def _compiled(path, defines: dict, batch: int) -> list:
    env = dict(os.environ)  # the suite's cache: cnndsl's fingerprinted folder unless NUMBA_CACHE_DIR is set
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(path), json.dumps(defines), str(batch)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_another_width_class_count_define_or_batch_compiles_nothing(tmp_path):
    path = tmp_path / "net.cnn"
    path.write_text(NET)
    _compiled(path, {}, 64)  # fills the cache if it is cold (the suite's other tests use these kernels too)
    assert _compiled(path, {}, 64) == []  # the same model again: everything from the cache
    variants = {"width 8": ({"width": "8"}, 64), "5 classes": ({"classes": "5"}, 64),
                "dropout 0.25": ({"drop": "0.25"}, 64), "batch 32": ({}, 32)}
    new = {name: _compiled(path, defines, batch) for name, (defines, batch) in variants.items()}
    assert new == {name: [] for name in variants}, json.dumps(new, indent=1)


# -- the pieces, without Numba's cold compile ------------------------------------------------------

class _Event:
    def __init__(self, start: bool, name: str = "f", module: str = "cnndsl.kernels.cpu.conv"):
        self.is_start, self.is_end = start, not start
        fn = type("F", (), {})()
        fn.__module__, fn.__qualname__ = module, name
        self.data = {"dispatcher": type("D", (), {"py_func": fn})(), "args": ("int64",)}


def test_counter_nests_callees_and_keeps_self_seconds():
    c = CompileCounter()
    c.notify(_Event(True, "outer"))
    time.sleep(0.05)
    c.notify(_Event(True, "inner", "cnndsl.kernels.cpu.blas"))
    time.sleep(0.05)
    c.notify(_Event(False))
    c.notify(_Event(False))
    outer, inner = c.records
    assert c.count == 2 and (outer.depth, inner.depth) == (0, 1)
    assert outer.seconds >= inner.seconds + 0.04 and inner.seconds >= 0.04
    assert abs(outer.self_seconds - (outer.seconds - inner.seconds)) < 1e-9
    assert abs(c.seconds - outer.seconds) < 1e-9  # top level only: the callee is inside
    assert {f: n for f, n, _ in c.by_family()} == {"conv": 1, "blas": 1}


def test_counting_sees_a_real_compilation():
    from numba import njit

    @njit
    def add_one(x):
        return x + 1

    with counting() as c:
        add_one(1)
        add_one(2)  # compiled already: no event
    assert c.count == 1 and c.records[0].name.endswith("add_one") and c.seconds > 0


def test_status_lines_mode_and_silence_when_nothing_compiles():
    out = io.StringIO()
    status = CompileStatus("Net", "lines", file=out)
    c = CompileCounter(status.on_change)
    status.finish(c)
    assert out.getvalue() == ""  # warm: not a word
    c.notify(_Event(True))
    c.notify(_Event(True))
    c.notify(_Event(False))
    c.notify(_Event(False))
    status.finish(c)
    first, last = out.getvalue().splitlines()
    assert first == "compiling kernels for Net (first run only)..."
    assert last.startswith("compiled 2 kernel functions for Net in ") and last.endswith(" s")


def test_status_live_mode_rewrites_its_line():
    out = io.StringIO()
    status = CompileStatus("Net", "live", file=out, tick=0.02)
    c = CompileCounter(status.on_change)
    c.notify(_Event(True, "im2col"))
    time.sleep(0.15)
    status.finish(c, failed=True)  # e.g. Ctrl-C in the middle: the line is ended, the thread stopped
    text = out.getvalue()
    assert text.count("\rcompiling kernels for Net (first run only): 1 function, ") >= 3, repr(text)
    assert "[conv.im2col]" in text and text.endswith("\n")
    assert "\rcompiling kernels for Net (first run only): stopped after 1 function" in text
    assert not any(t.name == "cnndsl-compile-status" for t in threading.enumerate())


def test_warmup_compiles_ahead_so_that_train_compiles_nothing(cold_run):
    """`cnndsl warmup FILE` runs train's compile phase alone: the kernels the training needs that the
    cache lacks (here a max-pooling layer's: the cold run compiled the rest) get compiled, and the
    `train` after it has nothing left to compile."""
    d, cache = cold_run["dir"], cold_run["cache"]
    (d / "tiny-maxpool.cnn").write_text(_with_layer("maxpool 2"))
    r = subprocess.run([sys.executable, "-m", "cnndsl", "warmup", "tiny-maxpool.cnn"], capture_output=True,
                       text=True, env=_env(cache), cwd=d, timeout=600)
    assert r.returncode == 0, r.stderr
    n = int(re.search(r"tiny-maxpool.cnn: (\d+) kernel functions? compiled", r.stdout).group(1))
    assert n > 0 and "compiling kernels for Tiny (first run only)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "cnndsl", "warmup", "tiny-maxpool.cnn", "--workers", "1"],
                       capture_output=True, text=True, env=_env(cache), cwd=d, timeout=600)
    assert "tiny-maxpool.cnn: 0 kernel functions compiled (all in the cache already)" in r.stdout, r.stdout + r.stderr
    lines, rc, _ = _timed_stderr(["train", "tiny-maxpool.cnn", "--out", "run-maxpool"], _env(cache), d)
    text = "\n".join(line for _, line in lines)
    assert rc == 0 and "compil" not in text, text
