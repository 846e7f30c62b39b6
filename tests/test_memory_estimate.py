"""Models that are valid but cannot be built: memory estimates and refusals (issue 13).

`check` errors when the parameters (or one sample of inference) exceed this machine's memory and
warns with the figures when a training step at the file's batch will not fit; `train`, `bench`,
`Model`, `ParamStore` and `Executable` refuse before allocating. Nothing here allocates a large
array: every refusal happens before numpy is asked. CNNDSL_MEMORY_LIMIT makes the limit the same
on every machine.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from nets_testutil import WINOGRAD_NET

import cnndsl
from cnndsl.analysis import memory
from cnndsl.cli.main import cli, main  # noqa: F401  (main registers the commands)
from cnndsl.diagnostics import CnnError

ROOT = Path(__file__).resolve().parent.parent
TRAIN = """
train {
  dataset digits
  epochs 1
  batch 64
  optimizer adam lr=0.001
  loss logits cross_entropy
}
"""


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.bench  # noqa: F401
    import cnndsl.cli.inspect  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    runner = CliRunner()

    def invoke(*args, env=None):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env or {})
    return invoke


def net(tmp_path, body: str, train: bool = True, params: str = "classes = 10", name: str = "m.cnn") -> Path:
    path = tmp_path / name
    path.write_text(f"network N({params}) {{\n{textwrap.dedent(body).strip()}\n}}\n" + (TRAIN if train else ""))
    return path


def clean(result):
    """No internal error, no traceback: the project's standard for any input."""
    assert "internal error" not in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------- check: errors

def test_check_huge_conv_filters(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 1000000000000 kernel=3
        global_avgpool
        dense 1 -> logits
    """)
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert f"{path}:3:1: error: the parameters of this network need" in result.output
    assert "TiB of memory; this machine allows" in result.output
    assert "largest: conv 'conv1' with 10,000,000,000,000 parameters" in result.output
    assert "help: make conv 'conv1' smaller" in result.output


def test_check_huge_dense(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        flatten
        dense 999999999999
        dense classes -> logits
    """)
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert f"{path}:4:1: error: the parameters of this network need" in result.output
    assert "dense 'dense1' with 784,999,999,999,215 parameters" in result.output
    assert "its input, flatten 'flatten1', has 784 values per sample" in result.output
    assert "help: fewer units in dense 'dense1'" in result.output


def test_check_huge_kernel_with_same_padding(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 4 kernel=999999999 padding=same
        global_avgpool
        dense classes -> logits
    """)
    start = time.perf_counter()
    result = run("check", path)
    clean(result)
    assert time.perf_counter() - start < 30  # nothing loops over the kernel's size
    assert result.exit_code == 1
    assert "EiB of memory" in result.output
    assert "conv 'conv1' with 3,999,999,992,000,000,008 parameters" in result.output


def test_check_dense_after_huge_flatten_points_at_the_input(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 100000 kernel=3 padding=same
        flatten
        dense 100000
        dense classes -> logits
    """)
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert f"{path}:5:1: error: the parameters of this network need" in result.output
    assert "its input, flatten 'flatten1', has 78,400,000 values per sample" in result.output
    assert "or a smaller input to it" in result.output and "the largest output is conv 'conv1'" in result.output


def test_check_huge_upsample_one_sample_cannot_run(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        upsample 100000
        global_avgpool
        dense classes -> logits
    """)
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert f"{path}:3:1: error: one sample of inference needs" in result.output
    assert "largest output: upsample 'upsample1', 1x2800000x2800000" in result.output
    assert "help: make the output of upsample 'upsample1' smaller" in result.output


def test_check_concat_of_huge_maps(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x1000x1000
        a = conv(image) 100000 kernel=1
        b = conv(image) 100000 kernel=1
        cat = concat(a, b)
        global_avgpool
        dense classes -> logits
    """)
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert "error: one sample of inference needs" in result.output
    assert "largest output: concat 'cat', 200000x1000x1000" in result.output


def test_check_define_that_makes_a_huge_layer(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv width kernel=3 padding=same
        global_avgpool
        dense width
        dense classes -> logits
    """, params="classes = 10, width = 8")
    assert run("check", path).exit_code == 0
    result = run("check", path, "-D", "width=10000000")
    clean(result)
    assert result.exit_code == 1
    assert "error: the parameters of this network need" in result.output
    assert "dense 'dense1' with 100,000,010,000,000 parameters" in result.output


def test_check_huge_repeat_is_refused_quickly(run, tmp_path):
    path = net(tmp_path, """
        input v: 1000
        repeat 2000 { dense 1000000 }
        dense classes -> logits
    """)
    start = time.perf_counter()
    result = run("check", path)
    clean(result)
    assert result.exit_code == 1
    assert "error: the parameters of this network need" in result.output
    assert "TiB of memory" in result.output or "PiB of memory" in result.output
    assert time.perf_counter() - start < 60  # the parameter check needs no training graph


# ---------------------------------------------------------------------------- check: warnings

def test_check_warns_when_training_at_the_files_batch_will_not_fit(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 16 kernel=3 padding=same relu
        flatten
        dense classes -> logits
    """)
    assert "warning" not in run("check", path).output
    result = run("check", path, env={"CNNDSL_MEMORY_LIMIT": "20M"})  # needs ~28 MiB, 16 MiB at batch 32
    clean(result)
    assert result.exit_code == 0
    assert f"{path}:3:1: warning: training at batch 64 would need about" in result.output
    assert "this machine allows 20.0 MiB" in result.output
    assert "adam state" in result.output and "training activations at batch 64" in result.output
    assert "held-out evaluation at batch 64" in result.output  # the trainer's min(256, batch)
    assert "memory limit: 20.0 MiB (CNNDSL_MEMORY_LIMIT)" in result.output
    assert "help: batch " in result.output and " fits" in result.output
    assert f"{path}: ok (" in result.output


def test_bad_memory_limit_variable_is_a_clear_error(run, tmp_path):
    path = net(tmp_path, "input image: 1x28x28\nflatten\ndense classes -> logits")
    result = run("check", path, env={"CNNDSL_MEMORY_LIMIT": "lots"})
    clean(result)
    assert result.exit_code == 1
    assert "CNNDSL_MEMORY_LIMIT must be a size such as 8G" in result.output


def test_address_space_limit_is_the_limit(tmp_path):
    """Under `ulimit -v` the message names it; 300M parameters (4.5 GiB held) pass the physical
    memory of the machines this runs on but not a 4 GiB address space."""
    path = net(tmp_path, "input v: 1\ndense 100000000\ndense 1 -> logits")

    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {k: v for k, v in os.environ.items() if k != "CNNDSL_MEMORY_LIMIT"}
    result = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(path)], capture_output=True, text=True,
                            timeout=120, preexec_fn=limit_address_space, env=env)
    assert result.returncode == 1, result.stderr
    assert "error: the parameters of this network need 4.5 GiB of memory" in result.stderr
    assert "(ulimit -v, less what this process maps already)" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- shapes

def test_shapes_footer_gives_the_estimate(run):
    result = run("shapes", ROOT / "examples" / "lenet5.cnn")
    assert result.exit_code == 0
    assert "Estimated memory, parameters: 964.2 KiB" in result.output  # 61,706 x 4 copies x 4 bytes
    assert "Estimated memory, training at batch 64:" in result.output
    assert "sgd with momentum state 241.0 KiB" in result.output
    assert "Memory limit:" in result.output
    assert "Does not fit" not in result.output


def test_shapes_of_an_unbuildable_model_says_so(run, tmp_path):
    path = net(tmp_path, "input image: 1x28x28\nflatten\ndense 999999999999\ndense classes -> logits")
    result = run("shapes", path)
    clean(result)
    assert result.exit_code == 0  # shapes shows the table of any valid file
    assert "Total params: 794,999,999,999,215" in result.output
    assert "Does not fit: this network cannot be built here" in result.output


def test_shapes_json_keeps_exact_integers_beyond_int64(run, tmp_path):
    path = net(tmp_path, "input image: 1x28x28\nupsample 1000000000\nflatten\ndense classes -> logits")
    import json

    result = run("shapes", path, "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["flatten1"]["output"] == [784 * 10**18]
    assert rows["logits"]["params"] == 7_840_000_000_000_000_000_010  # > 2**63: no int64 wrap-around


# ---------------------------------------------------------------------------- train, bench

def test_train_refuses_huge_parameters_before_allocating(run, tmp_path):
    path = net(tmp_path, "input image: 1x28x28\nconv 1000000000000 kernel=3\nglobal_avgpool\ndense 1 -> logits")
    result = run("train", path, "--epochs", "1", "--out", tmp_path / "run")
    clean(result)
    assert result.exit_code == 1
    assert "error: the parameters of this network need" in result.output
    assert "help: make conv 'conv1' smaller" in result.output
    assert not (tmp_path / "run" / "weights.safetensors").exists()


def test_train_refuses_a_batch_that_does_not_fit(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 16 kernel=3 padding=same relu
        flatten
        dense classes -> logits
    """)
    result = run("train", path, "--epochs", "1", "--out", tmp_path / "run", env={"CNNDSL_MEMORY_LIMIT": "6M"})
    clean(result)
    assert result.exit_code == 1
    assert "at batch 64 needs" in result.output
    assert "this machine allows 6.0 MiB" in result.output
    assert " fits" in result.output  # the largest batch that fits
    assert "epoch 1:" not in result.output


def test_bench_refuses_before_allocating(run, tmp_path):
    path = net(tmp_path, """
        input image: 1x28x28
        conv 16 kernel=3 padding=same relu
        flatten
        dense classes -> logits
    """)
    result = run("bench", path, "--repeats", "1", env={"CNNDSL_MEMORY_LIMIT": "16M"})
    clean(result)
    assert result.exit_code == 1
    assert f"{path}:3:1: error: training at batch 64 needs about" in result.output
    assert "inference at batch 1" in result.output and "inference at batch 64" in result.output
    assert "help: --batch " in result.output and " fits" in result.output
    result = run("bench", path, "--repeats", "1", "--no-train", "--batch", "100000000")
    assert result.exit_code == 1
    assert "error: inference at batch 100,000,000 needs about" in result.output


# ---------------------------------------------------------------------------- Python API

def test_model_and_executable_refuse_before_allocating(tmp_path):
    from cnndsl.model import Model

    huge = cnndsl.load(net(tmp_path, "input image: 1x28x28\nflatten\ndense 999999999999\ndense classes -> logits"))
    with pytest.raises(CnnError) as e:
        Model(huge)
    assert e.value.diagnostics[0].code == "memory-parameters"

    small = net(tmp_path, "input image: 1x8x8\nflatten\ndense classes -> logits", name="s.cnn")
    model = Model(cnndsl.load(small))
    with pytest.raises(CnnError) as e:  # 10**18 images: bytes beyond 2**63, no OverflowError
        model.executable("infer", 10**18)
    d = e.value.diagnostics[0]
    assert d.code == "memory-executable"
    assert "inference of 'N' at batch 1,000,000,000,000,000,000 needs" in d.message
    assert d.help.startswith("a batch of ")
    assert model.predict(np.zeros((2, 1, 8, 8), np.float32))["logits"].shape == (2, 10)  # still usable


def test_param_store_refuses_shapes_beyond_int64():
    """np.prod of a shape in int64 wraps around at 2**63; the store's check sees Python ints."""
    from cnndsl.backend.params import ParamStore
    from cnndsl.ir.graph import Graph, Node, TensorType

    graph = Graph("g")
    node = Node("d", "dense", {"units": 10})
    node.type, node.params = TensorType((10,)), {"weight": (2**40, 2**40)}
    graph.add(node)
    with pytest.raises(CnnError) as e:
        ParamStore(graph)
    assert e.value.diagnostics[0].code == "memory-parameters"
    assert "dense 'd' with 1,208,925,819,614,629,174,706,176 parameters" in e.value.diagnostics[0].details[1]


# ---------------------------------------------------------------------------- the estimate itself

def test_constants_agree_with_the_code_they_mirror():
    from cnndsl.backend.cpu.conv import KEEP_COL_BUDGET_BYTES
    from cnndsl.train.trainer import EVAL_BATCH

    assert memory.EVAL_BATCH == EVAL_BATCH
    assert memory.KEEP_COL_BUDGET == KEEP_COL_BUDGET_BYTES


def test_parse_size():
    from cnndsl import machine

    assert machine.parse_size("8G") == 8 << 30
    assert machine.parse_size("512MiB") == 512 << 20
    assert machine.parse_size("1000") == 1000
    assert machine.parse_size("x") is None


@pytest.mark.parametrize("net", ["lenet5", "winograd"])
def test_estimate_bounds_the_real_allocation(net, tmp_path):
    """Parameter store and optimizer state exactly; activations and work buffers from above:
    the unoptimized graphs' plans are at least the optimized ones' (docs/reliability.md, section 3).
    A conv the inference passes fuse with its 2x2 max pool keeps its full map as a work buffer
    beside the plan's slots (the Winograd network's evaluation: 6.4 MB at batch 32, 64 x 28 x 28
    floats an image); the estimate counts it (memory._pooled_after). Measured: estimate / allocation
    1.34 (LeNet-5) and 1.26 (the Winograd network; 1.09 with its earlier 32-channel convs)."""
    from cnndsl.model import Model
    from cnndsl.train.trainer import optimizer_for

    path = ROOT / "examples" / "lenet5.cnn"
    if net == "winograd":
        path = tmp_path / "w.cnn"
        path.write_text(WINOGRAD_NET)
    program = cnndsl.load(path)
    est = memory.estimate(program)
    model = Model(program)
    model.set_optimizer(optimizer_for(model.config, model.store.params))
    rng = np.random.default_rng(0)
    batch, eval_batch = 16, 32

    def executables() -> dict:
        return {key: sum(s.nbytes for s in exe._slots) + sum(a.nbytes for a in exe.rc.workspace.values())
                for key, exe in model._executables.items()}

    model.train_step(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32), model.example_targets(batch, rng), 0)
    # counted now: the first evaluation's compile phase (trainer.warm_up) sets the optimizer again,
    # which drops the training graph and its executable (this check missed them until 2026-12-03)
    allocated = executables()
    model.evaluate(rng.standard_normal((eval_batch, 1, 28, 28)).astype(np.float32),
                   model.example_targets(eval_batch, rng), eval_batch)
    allocated.update(executables())
    assert set(allocated) == {("train", batch), ("eval", eval_batch)}, allocated
    p = model.store.params
    store = sum(a.nbytes for a in (p.data, p.grad, p.lr_mult, p.wd_mult)) + sum(
        b.nbytes for b in model.store.buffers.values())
    optimizer = sum(a.nbytes for a in model.optimizer.state.values())
    assert est.store_bytes == store and est.optimizer_bytes == optimizer
    real = store + optimizer + sum(allocated.values())
    estimated = est.training_step(batch, eval_batch)
    assert real <= estimated <= 2 * real, (real, estimated)


def test_optimizer_state_copies_follow_the_declarations():
    """The estimate counts the state arrays each optimizer's declaration keeps for its options
    (AdamW's two moments were once counted as none)."""
    from cnndsl.analysis.memory import optimizer_copies
    from cnndsl.frontend.training import Optimizer, TrainingConfig

    def copies(kind, **options):
        return optimizer_copies(TrainingConfig(optimizer=Optimizer(kind, options)))

    assert copies("sgd") == ("sgd", 0) and copies("sgd", momentum=0.9) == ("sgd with momentum", 1)
    assert copies("adam") == ("adam", 2) and copies("adamw") == ("adamw", 2)
    assert copies("rmsprop") == ("rmsprop", 1) and copies("rmsprop", momentum=0.5) == ("rmsprop", 2)
    assert copies("lion") == ("lion", 1)
