"""Per-op shape rules, parameter/FLOP counts and diagnostics, on hand-built graphs."""
from __future__ import annotations

from fractions import Fraction

import pytest

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import Span
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.build import make_node, resolve_attrs
from cnndsl.ops.registry import AttrError, get_op

FILE = "t.cnn"
NODE_SPAN = Span(FILE, 5, 3, 5, 40)


def attr_span(i: int) -> Span:
    return Span(FILE, 5, 10 + 5 * i, 5, 14 + 5 * i)


def run(op: str, *shapes, names=None, **attrs):
    """Graph: one input per shape (named x, y, ... or `names`) -> node 'n' of `op`; inferred."""
    g = Graph("t")
    names = names or ["x", "y", "z", "w"][: len(shapes)]
    for name, shape in zip(names, shapes):
        g.add(make_node("input", name, shape=shape))
        g.inputs.append(name)
    spans = {k: attr_span(i) for i, k in enumerate(attrs)}
    node = g.add(make_node(op, "n", span=NODE_SPAN, attr_spans=spans, **attrs), list(names))
    g.heads["out"] = "n"
    diags = infer_shapes(g)
    return node, diags


def shape_of(op, *shapes, **attrs):
    node, diags = run(op, *shapes, **attrs)
    assert not diags.errors, [d.render() for d in diags.errors]
    return node.type.shape


def error_of(op, *shapes, **attrs):
    node, diags = run(op, *shapes, **attrs)
    assert node.type is None
    assert len(diags.errors) == 1, [d.render() for d in diags.items]
    d = diags.errors[0]
    assert d.span is not None and d.span.file == FILE  # the node had a span, so the diagnostic has one
    return d


# -- input ------------------------------------------------------------------------------
def test_input_shapes():
    assert shape_of("relu", (3, 32, 32)) == (3, 32, 32)
    assert shape_of("relu", (784,)) == (784,)
    assert get_op("input").attr("shape").coerce(10) == (10,)


def test_input_two_sizes_suggests_channel():
    with pytest.raises(AttrError, match="1x28x28"):
        get_op("input").attr("shape").coerce((28, 28))
    with pytest.raises(AttrError, match="at least 1"):
        get_op("input").attr("shape").coerce((3, 0, 32))


def test_input_too_large():
    g = Graph()
    g.add(Node("x", "input", {"shape": (3, 100000, 100000)}, span=NODE_SPAN))
    g.inputs.append("x")
    diags = infer_shapes(g)
    assert [d.code for d in diags.errors] == ["input-too-large"]
    assert diags.errors[0].span == NODE_SPAN


def test_input_non_positive_is_error_without_coerce():
    g = Graph()
    g.add(Node("x", "input", {"shape": (3, -2, 4)}, span=NODE_SPAN))
    assert [d.code for d in infer_shapes(g).errors] == ["bad-shape"]


# -- conv -------------------------------------------------------------------------------
def test_conv_same_and_strided():
    assert shape_of("conv", (1, 28, 28), filters=6, kernel=5, padding="same") == (6, 28, 28)
    assert shape_of("conv", (3, 32, 32), filters=8, kernel=3, stride=2, padding="same") == (8, 16, 16)
    assert shape_of("conv", (3, 32, 32), filters=8, kernel=3, stride=1) == (8, 30, 30)


def test_conv_not_tiling_points_at_stride():
    d = error_of("conv", (16, 14, 14), filters=16, kernel=3, stride=3)
    assert d.code == "stride-does-not-tile"
    assert d.span == attr_span(2)
    assert "4.67" in d.details[0]


def test_conv_params_flops():
    node, _ = run("conv", (3, 8, 8), filters=4, kernel=3, padding=1)
    assert node.params == {"weight": (4, 3, 3, 3), "bias": (4,)}
    assert node.meta["flops"] == 2 * 4 * 8 * 8 * 3 * 9 + 4 * 8 * 8


# -- conv_transpose ----------------------------------------------------------------------
@pytest.mark.parametrize("w,k,s,p,op_,out", [
    (16, 4, 2, 1, 0, 32),   # DCGAN
    (7, 2, 2, 0, 0, 14),
    (7, 3, 2, 1, 1, 14),
    (5, 3, 1, 1, 0, 5),
    (1, 4, 1, 0, 0, 4),
])
def test_conv_transpose_sizes(w, k, s, p, op_, out):
    assert shape_of("conv_transpose", (8, w, w), filters=4, kernel=k, stride=s, padding=p,
                    output_padding=op_) == (4, out, out)


@pytest.mark.parametrize("w,k,s", [(7, 3, 2), (5, 1, 3), (4, 4, 2), (6, 2, 2), (3, 5, 1)])
def test_conv_transpose_same_is_w_times_s(w, k, s):
    node, diags = run("conv_transpose", (2, w, w), filters=2, kernel=k, stride=s, padding="same")
    assert not diags.errors
    assert node.type.shape == (2, w * s, w * s)
    top, bottom, _, _ = node.geometry.pads
    extra = node.meta["output_padding"][0]
    assert (w - 1) * s + k - top - bottom + extra == w * s


def test_conv_transpose_aliases_params_flops():
    node, _ = run("deconv", (6, 5, 5), filters=4, kernel=2, stride=2, groups=2)
    assert node.op == "conv_transpose"
    assert node.type.shape == (4, 10, 10)
    assert node.params == {"weight": (6, 2, 2, 2), "bias": (4,)}
    assert node.meta["flops"] == 2 * (6 * 25) * 2 * 4 + 4 * 100


def test_conv_transpose_errors():
    assert error_of("conv_transpose", (8, 4, 4), filters=4, kernel=3, stride=2, output_padding=2).code \
        == "output-padding"
    d = error_of("conv_transpose", (8, 4, 4), filters=4, kernel=3, padding=3)
    assert d.code == "padding-too-large" and d.help == "padding=2"
    assert error_of("conv_transpose", (8, 1, 1), filters=4, kernel=5, padding=4).code == "padding-too-large"
    assert error_of("conv_transpose", (6, 4, 4), filters=4, groups=3).code == "groups"
    assert error_of("conv_transpose", (6, 4, 4), filters=4, stride=2, output_padding=1, padding="same").code \
        == "output-padding"


def test_conv_transpose_undoes_conv():
    for w, k, s, p in [(31, 3, 2, 1), (28, 5, 1, 2), (15, 3, 2, 0)]:
        (_, o, _) = shape_of("conv", (1, w, w), filters=1, kernel=k, stride=s, padding=p)
        assert shape_of("conv_transpose", (1, o, o), filters=1, kernel=k, stride=s, padding=p)[1] == w


# -- pools ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["maxpool", "avgpool", "l2pool"])
def test_pool_stride_defaults_to_kernel(op):
    assert shape_of(op, (6, 28, 28), kernel=2) == (6, 14, 14)
    assert shape_of(op, (6, 28, 28), kernel=3, stride=1, padding=1) == (6, 28, 28)
    assert shape_of(op, (6, 28, 28), kernel=3, stride=2, padding=1, rounding="floor") == (6, 14, 14)


def test_pool_not_tiling():
    d = error_of("maxpool", (6, 5, 5), kernel=2)
    assert d.code == "stride-does-not-tile"
    assert "rounding=floor" in d.help


def test_pool_rounding():
    assert shape_of("maxpool", (6, 5, 5), kernel=2, rounding="ceil") == (6, 3, 3)
    node, diags = run("maxpool", (6, 5, 5), kernel=2, rounding="floor")
    assert node.type.shape == (6, 2, 2)
    (w,) = diags.warnings  # rows and columns in one warning
    assert w.code == "rounding-drops"
    assert w.message.startswith("rounding=floor leaves the last 1 input row and the last 1 input column of maxpool")
    assert w.help == "padding=same gives 3x3 and reads every input value"


def test_floor_says_nothing_when_only_padding_is_left_out():
    """The ResNet/AlexNet stem: maxpool 3 stride=2 padding=1 on 32x32 leaves out the last padding
    row, which changes nothing (setting the last real row to 5 reaches the output)."""
    node, diags = run("maxpool", (4, 32, 32), kernel=3, stride=2, padding=1, rounding="floor")
    assert node.type.shape == (4, 16, 16) and diags.warnings == []
    node, diags = run("conv", (3, 9, 9), filters=2, kernel=3, stride=2, padding=1, rounding="floor")
    assert node.type.shape == (2, 5, 5) and diags.warnings == []  # (9 - 3 + 2) / 2 + 1 = 5 exactly
    node, diags = run("conv", (3, 10, 8), filters=2, kernel=3, stride=3, padding=1, rounding="floor")
    # height: (10 - 3 + 2) / 3 + 1 = 4: exact; width: (8 - 3 + 2) / 3 + 1 = 3.33: 1 padding + 0 input left out
    assert diags.warnings == []
    node, diags = run("conv", (3, 8, 8), filters=2, kernel=2, stride=3, padding=1, rounding="floor")
    # (8 - 2 + 2) / 3 + 1 = 3.67: 2 positions left out, the last padding one and the last input one
    (w,) = diags.warnings
    assert "the last 1 input row and the last 1 input column" in w.message
    assert "1 input row and 1 padding row left out" in w.details[0]


def test_strict_help_offers_padding_same():
    d = error_of("maxpool", (4, 32, 32), kernel=3, stride=2, padding=1)
    assert d.help.startswith("padding=same gives 16; ")
    assert "or rounding=floor gives 16, reading every input row" in d.help


def test_pool_same():
    node, diags = run("maxpool", (6, 5, 7), kernel=2, padding="same")
    assert node.type.shape == (6, 3, 4)
    assert node.geometry.pads == (0, 1, 0, 1)


def test_pool_padding_at_most_half_kernel():
    d = error_of("maxpool", (6, 8, 8), kernel=2, padding=2)
    assert d.code == "padding-too-large"
    assert d.span == attr_span(1)
    assert d.help == "padding=1"


def test_pool_kernel_too_large():
    assert error_of("avgpool", (6, 3, 3), kernel=5).code == "kernel-too-large"


def test_pool_on_vector():
    assert error_of("maxpool", (10,), kernel=2).code == "needs-image"


def test_global_avgpool():
    node, _ = run("gap", (64, 7, 7))
    assert node.op == "global_avgpool"
    assert node.type.shape == (64,)
    assert node.meta["receptive_field"] is None


def test_pool_flops():
    node, _ = run("maxpool", (2, 4, 4), kernel=2)
    assert node.meta["flops"] == 2 * 2 * 2 * 4


# -- activations, dropout, batchnorm -------------------------------------------------------
@pytest.mark.parametrize("op", ["relu", "leaky_relu", "tanh", "sigmoid", "softmax", "dropout", "batchnorm"])
@pytest.mark.parametrize("shape", [(3, 5, 7), (12,)])
def test_shape_preserving(op, shape):
    assert shape_of(op, shape) == shape
    assert get_op(op).category == ("activation" if op not in ("dropout", "batchnorm") else "layer")


def test_activation_options():
    assert resolve_attrs(get_op("leaky_relu"), {})["alpha"] == 0.01
    with pytest.raises(AttrError):
        resolve_attrs(get_op("leaky_relu"), {"alpha": -0.1})
    with pytest.raises(AttrError, match="below 1"):
        resolve_attrs(get_op("dropout"), {"p": 1.0})
    assert get_op("dropout").training_only
    assert resolve_attrs(get_op("dropout"), {"p": 0})["p"] == 0.0


def test_batchnorm_params_and_buffers():
    node, _ = run("bn", (16, 4, 4))
    assert node.params == {"gamma": (16,), "beta": (16,)}
    assert node.meta["buffers"] == {"running_mean": (16,), "running_var": (16,)}
    node, _ = run("batchnorm", (84,))
    assert node.params["gamma"] == (84,)
    with pytest.raises(AttrError, match="above 0"):
        resolve_attrs(get_op("bn"), {"eps": 0.0})
    with pytest.raises(AttrError, match="at most 1"):
        resolve_attrs(get_op("bn"), {"momentum": 1.5})
    assert resolve_attrs(get_op("bn"), {}) == {"eps": 1e-5, "momentum": 0.1}


# -- dense, flatten, upsample -----------------------------------------------------------------
def test_dense():
    node, _ = run("fc", (400,), units=120)
    assert node.op == "dense" and node.type.shape == (120,)
    assert node.params == {"weight": (120, 400), "bias": (120,)}
    assert node.meta["flops"] == 2 * 400 * 120 + 120
    node, _ = run("linear", (400,), units=10, bias=False)
    assert node.params == {"weight": (10, 400)}


def test_dense_on_feature_map_says_flatten():
    d = error_of("dense", (16, 5, 5), units=120)
    assert d.code == "needs-vector"
    assert "flatten" in d.help and "400" in d.help
    assert "16x5x5" in d.message


def test_flatten():
    assert shape_of("flatten", (16, 5, 5)) == (400,)
    node, diags = run("flatten", (10,))
    assert node.type.shape == (10,)
    assert [d.code for d in diags.warnings] == ["flatten-vector"]


def test_upsample():
    node, _ = run("upsample", (8, 7, 5), scale=3)
    assert node.type.shape == (8, 21, 15)
    with pytest.raises(AttrError, match="nearest, bilinear"):
        resolve_attrs(get_op("upsample"), {"mode": "bicubic"})
    with pytest.raises(AttrError):
        resolve_attrs(get_op("upsample"), {"scale": 0})


# -- merges -------------------------------------------------------------------------------
def test_add():
    assert shape_of("add", (4, 8, 8), (4, 8, 8), (4, 8, 8)) == (4, 8, 8)
    node, _ = run("add", (4, 8, 8), (4, 8, 8), (4, 8, 8))
    assert node.meta["flops"] == 2 * 4 * 64


def test_add_mismatch_names_both_and_proposes_projection():
    node, diags = run("add", (32, 16, 16), (16, 32, 32), names=["r1.conv2", "stem"])
    d = diags.errors[0]
    assert d.code == "add-shape"
    assert d.message == "add 'n' cannot add 'r1.conv2' (32x16x16) and 'stem' (16x32x32)"
    assert "1x1 conv" in d.help and "stride=2" in d.help and "'stem'" in d.help
    assert d.span == NODE_SPAN


def test_add_needs_two_inputs():
    g = Graph()
    g.add(make_node("input", "x", shape=(3,)))
    g.inputs.append("x")
    g.add(make_node("add", "a", span=NODE_SPAN), ["x"])
    assert [d.code for d in infer_shapes(g).errors] == ["arity"]


def test_concat():
    assert shape_of("concat", (4, 8, 8), (6, 8, 8)) == (10, 8, 8)
    assert shape_of("cat", (4,), (6,), (1,)) == (11,)


def test_concat_spatial_mismatch():
    node, diags = run("concat", (64, 28, 28), (32, 27, 27), names=["up1", "skip"])
    d = diags.errors[0]
    assert d.code == "concat-shape"
    assert "'up1' (64x28x28)" in d.message and "'skip' (32x27x27)" in d.message
    assert "crop" in d.help and "pad" in d.help


def test_concat_scale_mismatch_suggests_upsample():
    node, diags = run("concat", (16, 64, 64), (32, 16, 16), names=["u", "c"])
    assert "`upsample 4` on 'c'" in diags.errors[0].help


def test_concat_map_and_vector():
    d = error_of("concat", (4, 2, 2), (8,))
    assert d.code == "concat-shape" and "flatten" in d.help


# -- the driver ------------------------------------------------------------------------
def test_unknown_op_and_missing_option_are_diagnostics():
    g = Graph()
    g.add(make_node("input", "x", shape=(3, 8, 8)))
    g.inputs.append("x")
    g.add(Node("c", "convv", {}, span=NODE_SPAN), ["x"])
    g.add(Node("d", "conv", {}, span=NODE_SPAN), ["x"])
    diags = infer_shapes(g)
    assert [d.code for d in diags.errors] == ["unknown-op", "missing-option"]
    assert "conv" in diags.errors[0].help


def test_defaults_are_filled_by_the_driver():
    g = Graph()
    g.add(make_node("input", "x", shape=(3, 8, 8)))
    g.inputs.append("x")
    g.add(Node("c", "conv", {"filters": 4}), ["x"])
    g.add(Node("p", "maxpool", {"kernel": (2, 2)}), ["c"])
    assert not infer_shapes(g).errors
    assert g.node("c").type.shape == (4, 6, 6)
    assert g.node("p").type.shape == (4, 3, 3)


def test_receptive_field_with_upsampling():
    g = Graph()
    g.add(make_node("input", "x", shape=(1, 32, 32)))
    g.inputs.append("x")
    chain = [("c1", "conv", {"filters": 2, "kernel": 3, "padding": 1}),   # rf 3, jump 1
             ("p1", "maxpool", {"kernel": 2}),                             # rf 4, jump 2
             ("c2", "conv", {"filters": 2, "kernel": 3, "padding": 1}),   # rf 8, jump 2
             ("u", "upsample", {"scale": 2}),                              # rf 8, jump 1
             ("c3", "conv", {"filters": 2, "kernel": 3, "padding": 1}),   # rf 10, jump 1
             ("u2", "upsample", {"scale": 2}),                             # rf 10, jump 1/2
             ("c4", "conv", {"filters": 2, "kernel": 2, "padding": "same"}),  # rf 10.5, jump 1/2
             ("t", "conv_transpose", {"filters": 2, "kernel": 4, "stride": 2, "padding": 1})]
    prev = "x"
    for name, op, kw in chain:
        g.add(make_node(op, name, **kw), [prev])
        prev = name
    assert not infer_shapes(g).errors
    rf = {n.name: n.meta["receptive_field"] for n in g.nodes()}
    assert rf["c1"] == ((3, 3), (1, 1))
    assert rf["p1"] == ((4, 4), (2, 2))
    assert rf["c2"] == ((8, 8), (2, 2))
    assert rf["u"] == ((8, 8), (1, 1))
    assert rf["c3"] == ((10, 10), (1, 1))
    assert rf["u2"][1] == (Fraction(1, 2),) * 2
    assert rf["c4"][0] == (Fraction(21, 2),) * 2
    # transposed conv k4 s2: upsample by 2 (jump 1/4), then 4 taps: + 3/4
    assert rf["t"] == ((Fraction(45, 4),) * 2, (Fraction(1, 4),) * 2)


def test_errors_in_blocks_carry_notes_and_do_not_cascade():
    g = Graph()
    g.add(make_node("input", "x", shape=(3, 5, 5)))
    g.inputs.append("x")
    node = make_node("maxpool", "p", span=NODE_SPAN, kernel=2)
    node.trace = (Span(FILE, 9, 1),)
    g.add(node, ["x"])
    g.add(make_node("relu", "r"), ["p"])
    diags = infer_shapes(g)
    assert len(diags.errors) == 1
    assert diags.errors[0].notes == [(Span(FILE, 9, 1), "in the block used here")]


# -- help hints in closed form: huge options must not hang `check` (issue 13) -------------------

def _old_common_divisor(a, b, near):
    return min([g for g in range(1, min(a, b) + 1) if a % g == 0 and b % g == 0], key=lambda g: abs(g - near))


def _old_tiling(w, k_eff, p, s, max_pad):
    from cnndsl.ops.spatial import formula

    fixes = []
    for p2 in range(0, max_pad + 1):
        if p2 != p and (w - k_eff + 2 * p2) >= 0 and (w - k_eff + 2 * p2) % s == 0:
            fixes.append(f"padding={p2} gives {formula(w, k_eff, p2, s).split(' = ')[0]} = {(w - k_eff + 2 * p2) // s + 1}")
            break
    for s2 in range(s - 1, 0, -1):
        if (w - k_eff + 2 * p) % s2 == 0:
            fixes.append(f"stride={s2} gives {(w - k_eff + 2 * p) // s2 + 1}")
            break
    return fixes


def test_closed_form_hints_give_the_answers_of_the_search_loops():
    import random

    from cnndsl.ops.conv import _common_divisor
    from cnndsl.ops.spatial import _tiling_fixes

    rng = random.Random(1)
    for _ in range(3000):
        a, b, near = rng.randint(1, 600), rng.randint(1, 600), rng.randint(1, 700)
        assert _common_divisor(a, b, near) == _old_common_divisor(a, b, near), (a, b, near)
    checked = 0
    while checked < 5000:
        w, k, s = rng.randint(1, 60), rng.randint(1, 70), rng.randint(1, 20)
        max_pad = rng.randint(0, 40)
        p = rng.randint(0, max_pad)
        span = w - k + 2 * p
        if span < 0 or span % s == 0:
            continue  # asked only when the padding given does not tile
        checked += 1
        assert _tiling_fixes(w, k, p, s, max_pad) == _old_tiling(w, k, p, s, max_pad), (w, k, p, s, max_pad)


@pytest.mark.parametrize("layer", [
    "conv 9999999999\n  conv 9999999998 groups=7",
    "conv 4 kernel=3 stride=999999999",
    "avgpool kernel=3 stride=999999999",
    "conv 4 kernel=999999999 stride=2 padding=499999990",
])
def test_huge_options_are_diagnosed_at_once(layer):
    import time

    from cnndsl.diagnostics import CnnError
    from cnndsl.frontend import loads

    start = time.perf_counter()
    with pytest.raises(CnnError):
        loads(f"network n {{\n  input image: 1x28x28\n  {layer}\n  flatten\n  dense 2\n}}\n", "huge.cnn")
    assert time.perf_counter() - start < 5  # these loops ran for hours before
