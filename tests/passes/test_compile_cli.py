"""`cnndsl compile`, `-O` on train/eval/predict, `shapes/graph --optimized`, and dumps of fused ops."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from passes_testutil import graph_of

from cnndsl.cli.main import cli
from cnndsl.frontend import load, loads
from cnndsl.ir.dump import dump
from cnndsl.kernels.cpu import microkernel
from cnndsl.passes.pipeline import optimize

ROOT = Path(__file__).resolve().parents[2]
RESNET = str(ROOT / "examples" / "resnet_tiny.cnn")
LENET = str(ROOT / "examples" / "lenet5.cnn")
EXAMPLES = sorted((ROOT / "examples").glob("*.cnn"))


@pytest.fixture(scope="module")
def run():
    import cnndsl.cli.compile  # noqa: F401
    import cnndsl.cli.inspect  # noqa: F401
    import cnndsl.cli.train  # noqa: F401

    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)


def test_compile_summary_and_stats(run):
    r = run("compile", RESNET, "--pass-stats", "--verify-passes")
    assert r.exit_code == 0, r.output
    assert "ResNetTiny: inference -O2: 56 kernels at -O0, 19 after" in r.output
    assert "fold_batchnorm" in r.output and "batchnorm folded into conv" in r.output and "x15" in r.output


def test_compile_print_ir_parses_back(run):
    r = run("compile", RESNET, "--print-ir")
    assert r.exit_code == 0
    text = r.output[r.output.index("network"):r.output.index("}\n") + 2]
    assert "fused_conv(residual1.conv1, stem)" in text and "folded_bn=residual1.y" in text
    assert dump(loads(text, "dumped.cnn").graph) == text


def test_compile_train_dump_after_and_disable(run):
    r = run("compile", LENET, "--train", "-O1", "--dump-after", "autodiff")
    assert r.exit_code == 0 and "# after autodiff" in r.output and "fused" not in r.output
    r = run("compile", LENET, "--train", "--disable-pass", "fuse_backward", "--pass-stats")
    assert r.exit_code == 0 and "fuse_backward" not in r.output.split("passes run:")[1].split("\n")[0]
    r = run("compile", LENET, "--disable-pass", "no_such_pass")
    assert r.exit_code == 2 and "no_such_pass" in r.output


@pytest.mark.parametrize("args, why, fix", [
    (["--dump-after", "autodiff"], "it runs only when compiling for training, this compile is for inference",
     "add --train"),
    (["--train", "--dump-after", "remove_dropout"],
     "it runs only when compiling for inference, this compile is for training", "leave out --train"),
    (["-O0", "--dump-after", "fuse_conv_activation"], "it runs from -O2, this compile is -O0", "compile with -O2"),
    (["--dump-after", "cse", "--disable-pass", "cse"], "it is disabled with --disable-pass",
     "leave out --disable-pass cse"),
])
def test_a_dump_after_a_pass_that_does_not_run_says_why(run, args, why, fix):
    """compile FILE --dump-after autodiff printed the summary and no dump, with no word why."""
    r = run("compile", LENET, *args)
    pass_name = args[args.index("--dump-after") + 1]
    assert r.exit_code == 1, r.output
    assert f"<command line>: error: --dump-after {pass_name}: the pass does not run in this compile: {why}" \
        in r.output and f"help: {fix}" in r.output and "kernels at -O0" not in r.output


def test_shapes_and_graph_optimized(run):
    r = run("shapes", RESNET, "--optimized")
    assert r.exit_code == 0 and "Rewritten by" in r.output and "fold_batchnorm, fuse_residual" in r.output
    r = run("graph", LENET, "--optimized", "-O2")
    assert r.exit_code == 0 and "fused_conv" in r.output
    assert "fused" not in run("graph", LENET).output


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_optimized_dump_round_trips(path):
    g = optimize(load(path).graph, "inference", 2)
    text = dump(g)
    again = loads(text, f"{path.stem}.opt.cnn").graph
    assert dump(again) == text
    for n in g.nodes():
        assert (again.node(n.name).op, again.node(n.name).attrs, again.node(n.name).type) == (n.op, n.attrs, n.type)


def test_eval_and_train_take_O(run, tmp_path):
    """-O0 and -O2 give the same held-out accuracy for the same weights."""
    r = run("train", LENET, "--profile", "quick", "--epochs", "1", "--batch", "256", "--out", str(tmp_path),
            "--no-progress", "--no-augment", "-O2")
    assert r.exit_code == 0, r.output
    weights = str(tmp_path / "weights.safetensors")
    lines = [run("eval", LENET, "--weights", weights, f"-O{level}").output for level in (0, 2)]
    assert [line.split("(")[0] for line in lines][0] == [line.split("(")[0] for line in lines][1]
    assert "accuracy" in lines[0]


def test_fused_op_written_by_hand_is_checked():
    g = graph_of("network H {\n input x: 2x6x6\n c = fused_conv(x) filters=3 activation=relu\n"
                 " maxpool(c) 2 -> out\n}")
    assert g.node("c").type.shape == (3, 4, 4)
    from cnndsl.diagnostics import CnnError
    with pytest.raises(CnnError, match="residual"):
        graph_of("network H {\n input x: 2x6x6\n c = fused_conv(x) filters=3 residual=true\n maxpool(c) 2 -> out\n}")


def test_print_ir_names_each_convs_cpu_algorithm(run, monkeypatch):
    lenet = str(ROOT / "examples" / "lenet5.cnn")
    out = run("compile", lenet, "--print-ir").output
    lines = [line for line in out.splitlines() if line.startswith("# cpu: ")]
    # the tiles follow the CPU's vector registers (microkernel.fit_rb): AVX-512's 32, else AVX2's 16
    avx512 = microkernel.VECTOR_LANES >= 16
    pv, pixels, taps = (32, 10, 13) if avx512 else (16, 5, 5)
    assert lines == [
        f"# cpu: c1 (fused_conv_pool): forward direct (6 channels x {pv}-pixel vectors); input gradient direct "
        f"(1 channels x {pv}-pixel vectors); "
        "weight gradient direct (4 channels x 4 taps x 16-pixel vectors)",
        f"# cpu: conv2 (fused_conv_pool): forward direct ({pixels} pixels x 16 channels); input gradient direct "
        "(6 channels x 16-pixel vectors); "
        f"weight gradient direct ({taps} taps x 16 channels)"], out
    monkeypatch.setenv("CNNDSL_CPU_CONV", "im2col")
    out = run("compile", lenet, "--print-ir").output
    assert "# cpu: c1 (fused_conv_pool): forward im2col + GEMM; input gradient im2col + GEMM; " \
           "weight gradient im2col + dot products" in out, out


def test_print_ir_names_winograd_where_the_rule_picks_it(run, monkeypatch):
    """vgg_small: its first conv (3 -> 32 channels) stays direct, its 3x3 convs from 32 channels on
    take Winograd for the forward and the input gradient (winograd.plan's rule); CNNDSL_CPU_CONV=
    direct leaves Winograd out."""
    vgg = str(ROOT / "examples" / "vgg_small.cnn")
    lines = [line for line in run("compile", vgg, "--print-ir").output.splitlines() if line.startswith("# cpu: ")]
    assert "forward direct" in lines[0] and "winograd" not in lines[0], lines
    # on AVX2 (winograd.AVX2_MIN_IN_CHANNELS) only 32 -> 32 at 32x32 and 64 -> 64 at 16x16: not 32 -> 64
    # at 16x16, nor stage 3's 8x8 maps at any batch
    wino = lines[1:] if microkernel.VECTOR_LANES >= 16 else [lines[1], lines[3]]
    assert all("forward winograd F(2x2,3x3)" in line and "input gradient winograd F(2x2,3x3)" in line
               for line in wino), lines
    if microkernel.VECTOR_LANES >= 16:
        # stage 3's 8x8 maps: Winograd from the batch where it pays, the direct kernel below it
        assert "from batch 8, below it direct" in lines[-1] and "from batch" not in lines[1], lines
    else:
        assert all("winograd" not in line for line in [lines[2], *lines[4:]]), lines
    monkeypatch.setenv("CNNDSL_CPU_CONV", "direct")
    out = run("compile", vgg, "--print-ir").output
    tile = "8 pixels x 32 channels" if microkernel.VECTOR_LANES >= 16 else "4 pixels x 16 channels"
    assert "winograd" not in out and f"forward direct ({tile})" in out, out
