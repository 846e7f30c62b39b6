"""The pass manager: levels, modes, --disable-pass, requires, fixed point, errors, dumps, idempotence."""
from pathlib import Path

import pytest
from passes_testutil import graph_of

from cnndsl.ir.dump import dump
from cnndsl.passes.base import INFERENCE, Pass, PassContext, PassError
from cnndsl.passes.manager import FixedPoint, PassManager
from cnndsl.passes.pipeline import kernel_count, optimize, pass_names
from cnndsl.frontend import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))
NET = "network M {\n input x: 2x6x6\n c = conv(x) 3 padding=same\n b = batchnorm(c)\n r = relu(b)\n d = dropout(r) 0.2\n maxpool(d) 2 -> out\n}"


def test_levels():
    g = graph_of(NET)
    assert [n.op for n in optimize(g, INFERENCE, 0).nodes()] == [n.op for n in g.nodes()]
    assert [n.op for n in optimize(g, INFERENCE, 1).nodes()] == ["input", "conv", "batchnorm", "relu", "maxpool"]
    assert [n.op for n in optimize(g, INFERENCE, 2).nodes()] == ["input", "fused_conv", "maxpool"]
    assert dump(optimize(g, INFERENCE, 3)) == dump(optimize(g, INFERENCE, 2))


def test_disable_one_pass():
    ctx = PassContext()
    out = optimize(graph_of(NET), INFERENCE, 2, disabled=["fold_batchnorm"], ctx=ctx)
    # the batchnorm stays unfolded, so fuse_batchnorm_activation takes its relu
    assert [n.op for n in out.nodes()] == ["input", "conv", "fused_batchnorm", "maxpool"]
    assert "fold_batchnorm" not in ctx.ran
    with pytest.raises(ValueError, match="unknown pass"):
        optimize(graph_of(NET), INFERENCE, 2, disabled=["no_such_pass"])


def test_input_graph_is_not_modified():
    g = graph_of(NET)
    before = dump(g)
    optimize(g, INFERENCE, 3)
    assert dump(g) == before


class _Breaks(Pass):
    name = "breaks"

    def run(self, graph, ctx):
        graph.nx.add_edge("out", "c", port=1)  # a cycle and a second port on a one-input op
        return True


class _Raises(Pass):
    name = "raises"

    def run(self, graph, ctx):
        raise KeyError("boom")


def test_failure_names_the_pass_and_those_before_it():
    from cnndsl.passes.dce import DeadCodeElimination

    for bad in (_Breaks(), _Raises()):
        with pytest.raises(PassError) as e:
            PassManager([DeadCodeElimination(), bad]).run(graph_of(NET), PassContext(verify=True))
        assert e.value.pass_name == bad.name and e.value.ran_before == ["dce"]
        assert f"pass '{bad.name}' failed" in str(e.value) and "passes run before it: dce" in str(e.value)


class _NeedsNothingThere(Pass):
    name = "needs"
    requires = ("planned",)

    def run(self, graph, ctx):
        return False


def test_unmet_requirement_is_an_error():
    with pytest.raises(PassError, match="requires planned"):
        PassManager([_NeedsNothingThere()]).run(graph_of(NET), PassContext())


class _CountDown(Pass):
    """Changes the graph 3 times, then reports nothing to do; or never stops."""
    name = "count_down"

    def __init__(self, n):
        self.n = n

    def run(self, graph, ctx):
        self.n -= 1
        return self.n >= 0


def test_fixed_point_repeats_until_nothing_changes_and_is_capped():
    p = _CountDown(3)
    ctx = PassContext()
    PassManager([FixedPoint("g", [p])]).run(graph_of(NET), ctx)
    assert ctx.ran == ["count_down"] * 4 and "g" not in ctx.stats
    ctx = PassContext(max_steps=5)
    PassManager([FixedPoint("g", [_CountDown(10**6)])]).run(graph_of(NET), ctx)
    assert len(ctx.ran) == 5 and ctx.stats["g"]["hit the step cap"] == 1


def test_dump_after():
    seen = []
    ctx = PassContext()
    optimize(graph_of(NET), INFERENCE, 2, dump_after=["fold_batchnorm"], on_dump=lambda n, t: seen.append(n), ctx=ctx)
    assert seen == ["fold_batchnorm", "fold_batchnorm"]  # once per round of the fixed point
    assert "folded_bn=b" in ctx.dumps[0][1]


def test_verify_flag_from_environment(monkeypatch):
    monkeypatch.setenv("CNNDSL_VERIFY_PASSES", "1")
    assert PassContext().verify is True
    monkeypatch.setenv("CNNDSL_VERIFY_PASSES", "0")
    assert PassContext().verify is False


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_verify_and_second_run_changes_nothing(path):
    """Every example through the whole pipeline, verified after every pass, in both modes; running
    the passes again on the result finds nothing more to do."""
    from cnndsl.training_graph import loss_specs
    from cnndsl.passes.pipeline import default_pipeline

    program = load(path)
    losses = loss_specs(program)
    for mode, extra in (("inference", {}), ("training", {"disabled": ["autodiff"]})):  # forward rewrites
        once = optimize(program.graph, mode, 3, verify=True, **extra)
        ctx = PassContext()
        assert dump(optimize(once, mode, 3, verify=True, ctx=ctx, **extra)) == dump(once)
        assert not ctx.stats, ctx.stats
        assert kernel_count(once) <= kernel_count(program.graph)
    train = optimize(program.graph, "training", 3, verify=True, losses=losses)
    ctx = PassContext(mode="training", level=3, verify=True, properties={"typed", "training_graph"})
    again = train.copy()
    PassManager([p for p in default_pipeline().passes() if set(p.requires) <= ctx.properties
                 and p.name != "autodiff"]).run(again, ctx)
    assert dump(again) == dump(train) and not ctx.stats, ctx.stats
    assert kernel_count(train) <= kernel_count(optimize(program.graph, "training", 0, losses=losses))


def test_pass_names_are_unique_and_documented():
    names = pass_names()
    assert len(names) == len(set(names))
    doc = (ROOT / "docs" / "passes.md").read_text()
    for name in names:
        assert f"`{name}`" in doc, name
