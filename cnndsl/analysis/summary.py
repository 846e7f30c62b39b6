"""The layer table: Keras's model.summary() plus Darknet's FLOPs and receptive field.

    Layer   Op       Output     Params   FLOPs   RF
    x       input    1x28x28         0       0   1x1
    c1      conv     6x28x28       156  235.2K   5x5
    ...
    Total params: 61,706 (241.0 KiB as float32)

summary_rows() gives the same data as dicts (for --json and tests). Run shape
inference first; rows of nodes without a type show "?".
"""
from __future__ import annotations

import math
from typing import Any

from cnndsl.ir.graph import Graph
from cnndsl.machine import human_bytes

BYTES = 4  # float32


def _count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def summary_rows(graph: Graph) -> list[dict[str, Any]]:
    rows = []
    for node in graph.nodes():
        rf = node.meta.get("receptive_field") if node.type is not None else None
        rows.append({
            "name": node.name,
            "op": node.op,
            "inputs": graph.inputs_of(node.name),
            "output": list(node.type.shape) if node.type is not None else None,
            "params": _count(node.params),
            "buffers": _count(node.meta.get("buffers") or {}),
            "flops": int(node.meta.get("flops") or 0),
            # in input pixels, rounded up after upsampling; None once flattened
            "receptive_field": [math.ceil(rf[0][0]), math.ceil(rf[0][1])] if rf else None,
            "trainable": bool(node.meta.get("trainable", True)),
            "rewritten_by": node.meta.get("rewritten_by"),
        })
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    params = sum(r["params"] for r in rows)
    trainable = sum(r["params"] for r in rows if r["trainable"])
    return {
        "layers": len(rows),
        "params": params,
        "trainable_params": trainable,
        "non_trainable_params": params - trainable,
        "buffers": sum(r["buffers"] for r in rows),
        "flops": sum(r["flops"] for r in rows),
        "activation_bytes": BYTES * sum(math.prod(r["output"]) for r in rows if r["output"] is not None),
    }


def human(n: float, unit: str = "") -> str:
    """1234 -> 1.23K, 2.5e6 -> 2.50M (powers of 1000)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}"


def _shape(shape) -> str:
    return "?" if shape is None else "x".join(map(str, shape))


def _is_chain(rows) -> bool:
    for i, r in enumerate(rows):
        expected = [] if i == 0 else [rows[i - 1]["name"]]
        if r["inputs"] != expected and r["inputs"]:
            return False
        if i > 0 and not r["inputs"]:
            return False
    return True


def format_table(rows: list[dict[str, Any]], graph: Graph) -> str:
    cols = ["Layer", "Op", "Output", "Params", "FLOPs", "RF"]
    right = {"Params", "FLOPs"}
    show_inputs = not _is_chain(rows)
    show_trainable = any(not r["trainable"] for r in rows)
    show_rewritten = any(r["rewritten_by"] for r in rows)
    if show_inputs:
        cols.append("Inputs")
    if show_trainable:
        cols.append("Trainable")
    if show_rewritten:
        cols.append("Rewritten by")

    table = []
    for r in rows:
        rf = r["receptive_field"]
        cells = {
            "Layer": r["name"],
            "Op": r["op"],
            "Output": _shape(r["output"]),
            "Params": f"{r['params']:,}",
            "FLOPs": human(r["flops"]),
            "RF": "-" if rf is None else f"{rf[0]}x{rf[1]}",
            "Inputs": ", ".join(r["inputs"]),
            "Trainable": "yes" if r["trainable"] else "no",
            "Rewritten by": r["rewritten_by"] or "",
        }
        table.append([cells[c] for c in cols])
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(cols)]

    def line(cells):
        return "  ".join(c.rjust(w) if name in right else c.ljust(w)
                         for c, w, name in zip(cells, widths, cols)).rstrip()

    rule = "-" * len(line(["x" * w for w in widths]))
    t = totals(rows)
    out = [f'Network "{graph.name}"', rule, line(cols), rule]
    out += [line(row) for row in table]
    out.append(rule)
    out.append(f"Total params: {t['params']:,} ({human_bytes(BYTES * t['params'])} as float32)")
    out.append(f"Trainable params: {t['trainable_params']:,}")
    out.append(f"Non-trainable params: {t['non_trainable_params']:,}")
    if t["buffers"]:
        out.append(f"Buffers (batchnorm running statistics, not learned): {t['buffers']:,}")
    unit, scale = ("GFLOPs", 1e9) if t["flops"] >= 1e9 else ("MFLOPs", 1e6)
    out.append(f"Total FLOPs: {t['flops'] / scale:.3f} {unit} per sample (a multiply-add counts 2)")
    by_name = {r["name"]: r for r in rows}
    ins = [f"{n} {_shape(by_name[n]['output'])}" for n in graph.inputs if n in by_name]
    heads = graph.heads or {n: n for n in graph.nx if graph.nx.out_degree(n) == 0}
    outs = [(f"{h} = {n}" if h != n else n) + f" {_shape(by_name[n]['output'])}"
            for h, n in heads.items() if n in by_name]
    out.append(f"Input: {', '.join(ins) or '-'}")
    out.append(f"Output: {', '.join(outs) or '-'}")
    out.append(f"Activation memory: {human_bytes(t['activation_bytes'])} per sample "
               f"(float32 outputs of every layer, no reuse)")
    return "\n".join(out)
