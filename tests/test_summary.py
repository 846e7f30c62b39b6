"""The layer table on a hand-built classic LeNet-5."""
from __future__ import annotations

from cnndsl.analysis.infer import infer_shapes
from cnndsl.analysis.summary import format_table, human, summary_rows, totals
from cnndsl.ir.graph import Graph
from cnndsl.ops.build import make_node

LENET = [
    ("conv1", "conv", {"filters": 6, "kernel": 5, "padding": "same"}),
    ("relu1", "relu", {}),
    ("pool1", "maxpool", {"kernel": 2}),
    ("conv2", "conv", {"filters": 16, "kernel": 5}),
    ("relu2", "relu", {}),
    ("pool2", "maxpool", {"kernel": 2}),
    ("flat", "flatten", {}),
    ("fc1", "dense", {"units": 120}),
    ("fc2", "dense", {"units": 84}),
    ("fc3", "dense", {"units": 10}),
]


def lenet() -> Graph:
    g = Graph("lenet5")
    g.add(make_node("input", "image", shape=(1, 28, 28)))
    g.inputs.append("image")
    prev = "image"
    for name, op, attrs in LENET:
        g.add(make_node(op, name, **attrs), [prev])
        prev = name
    g.heads["logits"] = prev
    assert not infer_shapes(g).errors
    return g


def test_lenet_rows():
    rows = {r["name"]: r for r in summary_rows(lenet())}
    assert rows["conv1"]["output"] == [6, 28, 28]
    assert rows["pool2"]["output"] == [16, 5, 5]
    assert rows["flat"]["output"] == [400]
    assert rows["fc1"]["inputs"] == ["flat"]
    assert rows["conv1"]["params"] == 6 * 25 + 6
    assert rows["conv2"]["params"] == 16 * 6 * 25 + 16
    assert rows["conv1"]["flops"] == 2 * 6 * 28 * 28 * 25 + 6 * 28 * 28
    assert rows["conv1"]["receptive_field"] == [5, 5]
    assert rows["pool1"]["receptive_field"] == [6, 6]
    assert rows["conv2"]["receptive_field"] == [14, 14]
    assert rows["pool2"]["receptive_field"] == [16, 16]
    assert rows["flat"]["receptive_field"] is None
    assert rows["fc3"]["trainable"] is True and rows["fc3"]["rewritten_by"] is None


def test_lenet_totals():
    t = totals(summary_rows(lenet()))
    assert t["params"] == 61_706
    assert t["trainable_params"] == 61_706 and t["non_trainable_params"] == 0
    assert t["buffers"] == 0
    outputs = [1 * 28 * 28, 6 * 28 * 28, 6 * 28 * 28, 6 * 14 * 14, 16 * 10 * 10, 16 * 10 * 10, 16 * 5 * 5,
               400, 120, 84, 10]
    assert t["activation_bytes"] == 4 * sum(outputs)


def test_lenet_table():
    g = lenet()
    text = format_table(summary_rows(g), g)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("Layer"))
    assert header.split() == ["Layer", "Op", "Output", "Params", "FLOPs", "RF"]
    conv1 = next(line for line in lines if line.startswith("conv1"))
    assert conv1.split()[:4] == ["conv1", "conv", "6x28x28", "156"]
    assert conv1.split()[-1] == "5x5"
    assert next(line for line in lines if line.startswith("flat")).split()[-1] == "-"
    assert "Total params: 61,706" in text
    assert "Trainable params: 61,706" in text
    assert "Non-trainable params: 0" in text
    assert "MFLOPs" in text
    assert "Input: image 1x28x28" in text
    assert "Output: logits = fc3 10" in text
    assert "Activation memory:" in text
    assert "Inputs" not in header  # a chain needs no connection column


def test_frozen_rewritten_branches_and_buffers():
    g = Graph("res")
    g.add(make_node("input", "x", shape=(3, 8, 8)))
    g.inputs.append("x")
    g.add(make_node("conv", "c", filters=3, padding=1), ["x"])
    g.add(make_node("bn", "bn"), ["c"])
    g.add(make_node("add", "a"), ["bn", "x"])
    g.heads["out"] = "a"
    infer_shapes(g)
    g.node("c").meta["trainable"] = False
    g.node("bn").meta["rewritten_by"] = "fold-bn"
    rows = summary_rows(g)
    t = totals(rows)
    assert t["params"] == 84 + 6
    assert t["trainable_params"] == 6 and t["non_trainable_params"] == 84
    assert t["buffers"] == 6
    text = format_table(rows, g)
    header = next(line for line in text.splitlines() if line.startswith("Layer"))
    assert header.split()[6:] == ["Inputs", "Trainable", "Rewritten", "by"]
    assert "fold-bn" in text
    assert "Buffers (batchnorm running statistics, not learned): 6" in text
    a = next(line for line in text.splitlines() if line.startswith("a "))
    assert "bn, x" in a


def test_failed_nodes_show_question_marks():
    g = Graph()
    g.add(make_node("input", "x", shape=(3, 5, 5)))
    g.inputs.append("x")
    g.add(make_node("maxpool", "p", kernel=2), ["x"])
    assert infer_shapes(g).errors
    rows = summary_rows(g)
    assert rows[1]["output"] is None
    assert "?" in format_table(rows, g)


def test_human():
    assert human(999) == "999"
    assert human(1234) == "1.23K"
    assert human(2.5e9) == "2.50G"
