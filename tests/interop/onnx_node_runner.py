"""The ONNX backend node-test cases (onnx.backend.test.case.node.collect_testcases) for the ONNX ops
cnndsl imports, run through `cnndsl import` and cnndsl's CPU kernels, compared with the expected
outputs the cases carry (the backend suite's tolerance: rtol 1e-3, atol 1e-7, as each case says).

    python tests/interop/onnx_node_runner.py          # the table of docs/interop.md

A case's weight-like inputs (a Conv's W and B, Gemm's B and C, BatchNormalization's statistics,
Reshape's shape, Resize's scales, ...) are baked in as initializers, because cnndsl layers hold
their weights; its data inputs stay graph inputs. Each case ends as one of
    pass                   imported and equal to the expected outputs
    fail                   imported, but the outputs differ (a bug: none expected)
    not importable: WHY    refused by the importer with a clear error (the first line is the reason)
"""
from __future__ import annotations

import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "Relu",
       "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Gemm", "MatMul", "BatchNormalization", "Concat", "Add", "Sum",
       "Sub", "Mul", "Div", "Flatten", "Reshape", "Squeeze", "Dropout", "Identity", "Upsample", "Resize", "Clip")
WEIGHT_INPUTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "BatchNormalization": 1, "Reshape": 1,
                 "Squeeze": 1, "Resize": 1, "Upsample": 1, "Clip": 1, "Dropout": 1}


def cases():
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = collect_testcases(None)
    out = []
    for case in found:
        nodes = [n for n in case.model.graph.node if n.op_type != "Constant"]
        if case.kind == "node" and len(nodes) == 1 and nodes[0].op_type in OPS and not nodes[0].domain:
            out.append(case)
    return out


def _baked(case):
    """The case's model with its weight-like inputs as initializers, and the feeds of the rest."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    op = model.graph.node[0].op_type
    inputs, outputs = case.data_sets[0]
    g = model.graph
    names = [i.name for i in g.input]
    values = dict(zip(names, inputs))
    first = values[names[0]] if names else None
    keep = []
    for k, name in enumerate(names):
        v = np.asarray(values[name])
        weight = k >= WEIGHT_INPUTS.get(op, 99) or (
            k > 0 and op in ("Add", "Sub", "Mul", "Div", "Sum", "Concat") and np.shape(v) != np.shape(first))
        if weight:
            g.initializer.append(numpy_helper.from_array(v, name))
        else:
            keep.append(name)
    for name in [i.name for i in g.input if i.name not in keep]:
        idx = next(j for j, i in enumerate(g.input) if i.name == name)
        del g.input[idx]
    feeds = {name: np.asarray(values[name]) for name in keep}
    return model, feeds, [np.asarray(o) for o in outputs]


def run_case(case, tmp: Path):
    """('pass' | 'fail' | 'not importable', reason)."""
    import onnx

    from cnndsl.diagnostics import CnnError
    from cnndsl.interop.cnn_writer import finish
    from cnndsl.interop.onnx_import import _head_name, import_onnx
    from cnndsl.model import Model

    model, feeds, expected = _baked(case)
    if any(v.dtype != np.float32 for v in feeds.values()) or any(o.dtype != np.float32 for o in expected):
        return "not importable", "not float32 (cnndsl computes in float32)"
    path = tmp / f"{case.name}.onnx"
    onnx.save(model, str(path))
    try:
        builder = import_onnx(str(path))
        _, program = finish(builder, str(tmp / f"{case.name}.cnn"))
        m = Model(program, init_from_file=False)
        m.store.load_state_dict(builder.weights)
    except Exception as e:  # noqa: BLE001  (any other exception is an importer bug: a failed case)
        if not isinstance(e, CnnError):
            return "fail", f"internal error {type(e).__name__}: {e}"
        d = e.diagnostics[0]
        return "not importable", d.message.split(": ", 1)[-1] if d.message.startswith("cannot import") else \
            d.message.replace(str(path), "the model")
    batch = len(next(iter(feeds.values())))
    exe = m.executable("infer", batch)
    graph = m._graph("infer")
    exe.run({program.graph.inputs[k]: np.ascontiguousarray(feeds[name], np.float32)
             for k, name in enumerate(feeds)}, training=False)
    for out, want in zip(model.graph.output, expected):
        got = exe.output(graph.heads[_head_name(out.name)])
        if got.size != want.size:
            return "fail", f"output {out.name} has {got.shape[1:]} per sample, expected {want.shape[1:]}"
        got = got.reshape(want.shape)
        if not np.allclose(got, want, rtol=case.rtol, atol=case.atol):
            err = float(np.abs(got - want).max())
            return "fail", f"output {out.name} differs by up to {err:.3g}"
    return "pass", ""


def run_all():
    results = []
    with tempfile.TemporaryDirectory() as d:
        for case in cases():
            status, reason = run_case(case, Path(d))
            op = next(n.op_type for n in case.model.graph.node if n.op_type != "Constant")
            results.append((op, case.name, status, reason))
    return results


def short(reason: str) -> str:
    """A refusal's reason as a table cell: the input-shape and dtype ones grouped by kind."""
    import re

    m = re.match(r"graph input '.*' is ([0-9x]+): ", reason)
    if m:
        rank = len(m.group(1).split("x"))
        return f"{rank}-D input (cnndsl: 4-D or 2-D)"
    if "not float32" in reason:
        return "not float32"
    m = re.match(r"(sizes|scales) \[.*\] ", reason)
    if m:
        return "a size that is not a whole multiple" if m.group(1) == "sizes" else "scales not one whole factor"
    m = re.match(r"(axis=-?\d+): cnndsl flattens", reason)
    if m:
        return "axis other than 1"
    return reason.split(": cnndsl")[0].split("; cnndsl")[0].replace("node 0 'y' (MaxPool): ", "").replace(
        "node 0 'y' (AveragePool): ", "")


def table(results) -> str:
    by_op = defaultdict(list)
    for op, name, status, reason in results:
        by_op[op].append((name, status, reason))
    lines = ["| ONNX op | cases | passed | failed | not importable: why |", "|---|---|---|---|---|"]
    for op in sorted(by_op):
        rows = by_op[op]
        count = Counter(s for _, s, _ in rows)
        why = Counter(short(r) for _, s, r in rows if s == "not importable")
        fails = [f"{n}: {r}" for n, s, r in rows if s == "fail"]
        text = "; ".join(f"{r} (x{c})" if c > 1 else r for r, c in why.most_common())
        if fails:
            text = "FAILED " + "; ".join(fails) + ("; " + text if text else "")
        lines.append(f"| {op} | {len(rows)} | {count['pass']} | {count['fail']} | {text.replace('|', '/')} |")
    total = Counter(s for _, _, s, _ in results)
    lines.append(f"| **all** | **{len(results)}** | **{total['pass']}** | **{total['fail']}** | "
                 f"{total['not importable']} not importable |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run_all()
    print(table(res))
    if "-v" in sys.argv:
        for op, name, status, reason in res:
            print(f"{status:15s} {name}: {reason}")
