"""The compile pool (cnndsl/backend/compile_pool.py, issue 14): worker processes compile a share of a
model's kernels into the on-disk cache, and the main process then compiles nothing more.

The cold test compiles a one-dense-layer network in a subprocess with an empty NUMBA_CACHE_DIR and
two processes (the main one and one worker), whatever the machine's cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cnndsl.backend import compile_pool
from cnndsl.backend.compile_pool import AUGMENT, pool_size, units_of
from cnndsl.diagnostics import CnnError

REPO = Path(__file__).resolve().parents[1]

ONE_DENSE = """
network OneDense(classes = 10) {
  input image: 1x28x28
  flatten
  dense classes -> logits
}

train {
  dataset digits
  epochs 1
  batch 32
  optimizer sgd lr=0.05
  loss logits cross_entropy
  metric logits accuracy
  augment {
    random_crop padding=2 p=0.5
  }
}
"""

# Two op families in training (a convolution, a dense layer), so that a pool of two has two units
# to share out at least.
SMALL_CONV = """
network SmallConv(classes = 10) {
  input image: 1x12x12
  conv 4 kernel=3 relu
  maxpool 2
  flatten
  dense classes -> logits
}

train {
  batch 32
  optimizer sgd lr=0.05
  loss logits cross_entropy
}
"""

# The compile phase with `processes` processes, then the first real training step; prints what
# each process compiled and what the main process compiled after the pool, as JSON.
PHASE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnndsl
    from cnndsl.augment.pipeline import Pipeline
    from cnndsl.backend.compile_events import counting
    from cnndsl.train.trainer import compile_kernels, optimizer_for

    model = cnndsl.compile(sys.argv[1])
    config = model.config
    augment = Pipeline.from_config(config.augment, config.seed)
    phase = compile_kernels(model, config, augment=augment, processes=int(sys.argv[2]))
    model.set_optimizer(optimizer_for(config, model.store.params))
    x = np.random.default_rng(0).random((config.batch,) + model.input_shape, dtype=np.float32)
    with counting() as step:
        model.train_step(augment.apply(x, np.arange(config.batch), 1), model.example_targets(config.batch), 1)
    print(json.dumps({"workers": phase.workers, "count": phase.count, "units": phase.units,
                      "by_process": [sum(1 for r in phase.records if r.worker == w) for w in range(phase.workers + 1)],
                      "after_pool": [r.qualname + r.signature for r in phase.after_pool],
                      "failed": phase.failed, "first_step": [r.qualname + r.signature for r in step.records]}))
""")


def _phase(path: Path, cache: Path, processes: int) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NUMBA_BOUNDSCHECK", None)
    env.pop(compile_pool.ENV_WORKERS, None)
    done = subprocess.run([sys.executable, "-c", PHASE_SCRIPT, str(path), str(processes)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cold_pool_compiles_in_two_processes_and_leaves_nothing_to_the_main_one(tmp_path):
    path = tmp_path / "one.cnn"
    path.write_text(ONE_DENSE)
    cache = tmp_path / "cache"
    cache.mkdir()
    cold = _phase(path, cache, 2)
    assert cold["workers"] == 1, cold
    assert all(n > 0 for n in cold["by_process"]), cold  # both processes compiled a share
    assert cold["failed"] == [], cold
    # the workers reproduced every signature the main process dispatches: its whole compile phase
    # after the pool, and the first real step, loaded everything from the cache
    assert cold["after_pool"] == [] and cold["first_step"] == [], cold
    assert f"{AUGMENT}0" in cold["units"]
    warm = _phase(path, cache, 2)
    assert warm["workers"] == 0 and warm["count"] == 0 and warm["first_step"] == [], warm  # no pool when warm


# The Python API's first steps (Model._compile_phase): train_step, then predict, each the first of
# its kind, in a fresh process; prints each phase's processes and what the real calls compiled.
MODEL_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnndsl
    from cnndsl.backend.compile_events import counting
    from cnndsl.train.optim import SGD

    model = cnndsl.compile(sys.argv[1])
    model.set_optimizer(SGD(model.store.params, lr=0.01, momentum=0.9))
    x = np.random.default_rng(0).random((32,) + model.input_shape, dtype=np.float32)
    before = model.store.params.data.copy()
    out = {}
    for kind, call in (("train", lambda: model.train_step(x, model.example_targets(32), 0)),
                       ("infer", lambda: model.predict(x))):
        with counting() as whole:
            call()
        phase = model.compile_phases[-1] if model.compile_phases else None
        own = phase.main.count if phase is not None else 0
        out[kind] = {"workers": phase.workers if phase else 0, "count": phase.count if phase else 0,
                     "by_process": [sum(1 for r in phase.records if r.worker == w) for w in range(phase.workers + 1)]
                     if phase else [], "failed": phase.failed if phase else [],
                     "in_the_call": [r.qualname + r.signature for r in whole.records[own:]]}
        model.compile_phases.clear()
    # the phase ran on zeros with its own optimizer: the user's step alone moved the weights
    out["momentum_steps"] = model.optimizer.step_count
    print(json.dumps(out))
""")


def _model_run(path: Path, cache: Path, workers: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), **{compile_pool.ENV_WORKERS: workers})
    env.pop("NUMBA_BOUNDSCHECK", None)
    done = subprocess.run([sys.executable, "-c", MODEL_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_model_first_steps_compile_through_the_pool(tmp_path):
    """Model.train_step's and predict's first calls compile through the pool on a cold cache (the
    Python API, and vs_pytorch.py's cold figure), and the call itself then compiles nothing; warm,
    no worker starts and nothing compiles."""
    path = tmp_path / "small.cnn"
    path.write_text(SMALL_CONV)
    cache = tmp_path / "cache"
    cache.mkdir()
    cold = _model_run(path, cache, "2")
    train = cold["train"]
    assert train["workers"] == 1 and all(n > 0 for n in train["by_process"]) and train["failed"] == [], cold
    assert train["in_the_call"] == [], cold  # the real step loaded everything the pool compiled
    assert cold["infer"]["failed"] == [] and cold["infer"]["in_the_call"] == [], cold
    assert cold["momentum_steps"] == 1, cold
    warm = _model_run(path, cache, "2")
    for kind in ("train", "infer"):
        assert warm[kind]["workers"] == 0 and warm[kind]["count"] == 0 and warm[kind]["in_the_call"] == [], warm


def test_model_without_the_pool_compiles_on_first_call(tmp_path):
    """CNNDSL_COMPILE_WORKERS=1: no phase at all; the first call compiles in this process, as before."""
    path = tmp_path / "one.cnn"
    path.write_text(ONE_DENSE)
    cache = tmp_path / "cache"
    cache.mkdir()
    run = _model_run(path, cache, "1")
    assert run["train"]["count"] == 0 and run["train"]["in_the_call"] != [], run


def test_pool_size_from_the_environment_and_the_cores(monkeypatch):
    monkeypatch.delenv(compile_pool.ENV_WORKERS, raising=False)
    monkeypatch.setattr(compile_pool, "available_cores", lambda: 1)
    assert pool_size() == 1  # one core: no pool
    monkeypatch.setattr(compile_pool, "available_cores", lambda: 16)
    assert pool_size() == 16 and pool_size(3) == 3
    monkeypatch.setenv(compile_pool.ENV_WORKERS, "0")
    assert pool_size() == 1  # switched off
    monkeypatch.setenv(compile_pool.ENV_WORKERS, "4")
    assert pool_size() == 4 and pool_size(2) == 2  # an explicit request (--workers) wins
    monkeypatch.setenv(compile_pool.ENV_WORKERS, "many")
    with pytest.raises(CnnError, match="CNNDSL_COMPILE_WORKERS is not an integer") as e:
        pool_size()
    assert e.value.diagnostics[0].code == "compile-workers" and "found: 'many'" in str(e.value)


def test_units_group_the_ops_of_one_kernel_family():
    """Ops that call the same kernels are one unit (run apart, two processes compiled them both):
    LeNet-5's training `fused_conv` and evaluation `fused_conv_pool`; vgg_small's `conv` and
    `fused_conv`, and its two convolution gradients. The augmentations are units of their own."""
    import cnndsl
    from cnndsl.augment.pipeline import Pipeline
    from cnndsl.backend.compile_pool import op_family

    assert [op_family(op) for op in ("conv", "fused_conv", "fused_conv_pool", "fused_conv_grad", "conv_grad_params",
                                     "cross_entropy", "pool_grad", "optimizer_step")] == \
        ["conv", "conv", "conv", "conv/grad", "conv/grad", "cross", "pool/grad", "optimizer"]
    for name, together in (("lenet5", ["fused_conv+fused_conv_pool"]),
                           ("vgg_small", ["conv+fused_conv+fused_conv_pool", "conv_grad_input+conv_grad_params"])):
        model = cnndsl.compile(REPO / "examples" / f"{name}.cnn")
        augment = Pipeline.from_config(model.config.augment, model.config.seed)
        units = units_of(model, model.config.batch, 64, augment)
        normalized = ["+".join(sorted(u.split("+"))) for u in units]
        assert normalized[0] == together[0], units  # the costliest first
        assert set(together) <= set(normalized), units
        assert [u for u in units if u.startswith(AUGMENT)] == [f"{AUGMENT}{j}" for j in range(len(augment))]
        ops = [op for u in units if not u.startswith(AUGMENT) for op in u.split("+")]
        assert len(ops) == len(set(ops))  # each op in one unit
        for kind in ("train", "eval"):
            graph = model._graph(kind)
            assert {node.op for node in graph.nodes()} - {"input", "target"} <= set(ops)


# Two processes save two signatures of one cached function into one cache at the same moment. Each
# marks its arrival in Numba's save (".arrived", before the lock when there is one) and, once it has
# read the index (".loaded"), waits for the other: without a lock until the other has read the index
# too, so both rewrite it from what they read and one signature is lost; with locked_cache_saves until
# the other has arrived, which then waits for the lock and reads the index the first one wrote. (A
# wait of at most 5 s for the other to read the index made the lock's case wait those 5 s, and missed
# the race when the other process took longer to get there: under load, running beside other tests.)
SAVE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from numba.core import caching
    me, other, locked, value = sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]
    original_load, original_save = caching.IndexDataCacheFile._load_index, caching.IndexDataCacheFile.save
    state = {"in_save": False}

    def load_index(self):
        found = original_load(self)
        if state["in_save"]:
            open(me + ".loaded", "w").close()
            wait_for = other + (".arrived" if locked else ".loaded")
            deadline = time.time() + 120
            while not os.path.exists(wait_for) and time.time() < deadline:
                time.sleep(0.01)
        return found

    def save(self, key, data):
        state["in_save"] = True
        try:
            return original_save(self, key, data)
        finally:
            state["in_save"] = False

    caching.IndexDataCacheFile._load_index = load_index
    caching.IndexDataCacheFile.save = save
    if locked:
        from cnndsl.backend.compile_pool import locked_cache_saves
        locked_cache_saves()
    inner = caching.IndexDataCacheFile.save

    def arrive(self, key, data):
        open(me + ".arrived", "w").close()
        return inner(self, key, data)

    caching.IndexDataCacheFile.save = arrive
    import twosigs
    twosigs.f(int(value) if value.isdigit() else float(value))
""")

LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from cnndsl.backend.compile_events import counting
    import twosigs
    with counting() as c:
        twosigs.f(1)
        twosigs.f(1.5)
    print(json.dumps([r.signature for r in c.records]))
""")


@pytest.mark.parametrize("locked", [False, True], ids=["numba alone", "locked saves"])
def test_concurrent_saves_of_one_function_keep_both_signatures_only_with_the_lock(tmp_path, locked):
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "twosigs.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x * 2\n")
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join([str(REPO), str(mod)]))
    env.pop("NUMBA_BOUNDSCHECK", None)
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(mod), str(x), str(y), "1" if locked else "0",
                               value], env=env, stderr=subprocess.PIPE, text=True)
             for x, y, value in ((a, b, "1"), (b, a, "1.5"))]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    load = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(mod)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert load.returncode == 0, load.stderr
    recompiled = json.loads(load.stdout.strip().splitlines()[-1])
    if locked:
        assert recompiled == []  # both signatures loaded from the cache
    else:
        assert len(recompiled) == 1  # the race this lock exists for: one index entry was lost


SLOW_MODULE = """
import os, time
from numba import njit
from numba.extending import overload


def slow(x):
    pass


@overload(slow)
def _slow(x):  # runs while f is typed: f's compilation takes 3 s more, with a mark when it starts
    open(os.environ["CNNDSL_TEST_MARK"], "w").close()
    time.sleep(3)
    return lambda x: x + 1


@njit(cache=True)
def f(x):
    return slow(x) * 2
"""

COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from cnndsl.backend.compile_events import counting
    from cnndsl.backend.compile_pool import locked_cache_saves
    locked_cache_saves()
    import slowmod
    with counting() as c:
        value = slowmod.f(1)
    print(json.dumps([value, [r.name for r in c.records]]))
""")


def test_two_processes_needing_one_function_compile_it_once(tmp_path):
    """The pool's processes share callees; the second to need one waits for the first's compilation
    and loads it from the cache instead of compiling it again (compile_pool._one_compiler_per_signature)."""
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "slowmod.py").write_text(SLOW_MODULE)
    mark = tmp_path / "compiling"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), CNNDSL_TEST_MARK=str(mark),
               PYTHONPATH=os.pathsep.join([str(REPO), str(mod)]))
    env.pop("NUMBA_BOUNDSCHECK", None)
    run = [sys.executable, "-c", COMPILE_SCRIPT, str(mod)]
    first = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not mark.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert mark.exists(), first.communicate()[1]
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)  # starts while f compiles
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    value_1, compiled_1 = json.loads(out.strip().splitlines()[-1])
    value_2, compiled_2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert value_1 == value_2 == 4
    assert "f" in compiled_1
    assert "f" not in compiled_2, compiled_2  # waited, then loaded the first process's f


def test_workers_import_this_cnndsl_whatever_the_current_folder(tmp_path):
    """A worker started from a folder that holds another `cnndsl` (a checkout beside the installed
    one) imports the main process's, not that one: with `python -m` it imported the folder's, filed
    its kernels under another source fingerprint, and the two processes shared nothing."""
    decoy = tmp_path / "cnndsl"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy cnndsl of the current folder')\n")
    missing_job = str(tmp_path / "no-such-job.pickle")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(compile_pool.worker_command(missing_job), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert "decoy" not in done.stderr, done.stderr
    assert "FileNotFoundError" in done.stderr and "no-such-job" in done.stderr, done.stderr  # the real worker ran
