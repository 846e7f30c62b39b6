"""A sweep's results: the table of trials (printed, sweep.json, sweep.csv), the plot of accuracy
against FLOPs (or parameters) with the Pareto front, and the best point as a plain .cnn file with
its weights. Every file is written atomically (cnndsl/io/atomic.py)."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnndsl.frontend import ast
from cnndsl.ir.dump import show
from cnndsl.io.atomic import atomic_write_bytes, atomic_write_text
from cnndsl.sweep.space import Space

JSON_FILE, CSV_FILE, PLOT_FILE = "sweep.json", "sweep.csv", "sweep.png"
BEST_FILE, BEST_WEIGHTS = "best.cnn", "best.safetensors"


@dataclass
class Row:
    number: int
    state: str  # complete | pruned | invalid | failed | repeat | interrupted | running | waiting
    point: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    flops: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    epochs: int | None = None
    seconds: float | None = None
    reason: str | None = None
    dir: str | None = None
    compiled: int | None = None  # Numba compilations during the trial (0: every kernel was reused)
    latency_ms: float | None = None  # --minimize latency: one single-image prediction, median


def rows_of(study, space: Space) -> list[Row]:
    from cnndsl.sweep.study import state_of

    out = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        point = {d.name: d.from_stored(t.params[d.name]) for d in space.dims if d.name in t.params}
        out.append(Row(t.number, state_of(t), point, ua.get("params"), ua.get("flops"), ua.get("accuracy"),
                       ua.get("loss"), ua.get("epochs"), ua.get("seconds"), ua.get("reason"), ua.get("dir"), ua.get("compiled"),
                       ua.get("latency_ms")))
    return out


def counts_of(rows: list[Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return out


def best_of(rows: list[Row], objective: str = "accuracy") -> Row | None:
    """The completed trial with the best held-out objective; ties go to fewer FLOPs, then the earlier."""
    done = [r for r in rows if r.state == "complete" and (r.accuracy if objective == "accuracy" else r.loss) is not None]
    if not done:
        return None
    if objective == "accuracy":
        return min(done, key=lambda r: (-r.accuracy, r.flops or 0, r.number))
    return min(done, key=lambda r: (r.loss, r.flops or 0, r.number))


def pareto_of(rows: list[Row], x: str = "flops") -> list[Row]:
    """Completed trials that no other beats on both held-out accuracy (higher) and cost (lower)."""
    done = sorted((r for r in rows if r.state == "complete" and r.accuracy is not None and getattr(r, x) is not None),
                  key=lambda r: (getattr(r, x), -r.accuracy, r.number))
    front, best = [], -math.inf
    for r in done:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


def _cell(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not isinstance(v, bool):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return show(v) if not isinstance(v, int) or isinstance(v, bool) else str(v)


def table_lines(rows: list[Row], space: Space, best: Row | None = None) -> list[str]:
    from cnndsl.analysis.summary import human

    latency = any(r.latency_ms is not None for r in rows)
    head = ["trial"] + space.names + ["params", "FLOPs"] + (["ms/image"] if latency else []) + \
        ["accuracy", "loss", "epochs", "seconds", "state"]
    body = []
    for r in rows:
        cells = [str(r.number) + ("*" if best is not None and r.number == best.number else "")]
        cells += [_cell(r.point.get(n)) for n in space.names]
        cells += [f"{r.params:,}" if r.params is not None else "-", human(r.flops) if r.flops is not None else "-"]
        if latency:
            cells.append(f"{r.latency_ms:.3f}" if r.latency_ms is not None else "-")
        cells += [f"{r.accuracy:.4f}" if r.accuracy is not None else "-",
                  f"{r.loss:.4f}" if r.loss is not None else "-", _cell(r.epochs),
                  f"{r.seconds:.1f}" if r.seconds is not None else "-",
                  f"repeat of {r.reason}" if r.state == "repeat" and r.reason else r.state]
        body.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i < len(cells) - 1 else c for i, (c, w) in  # noqa: E731
                                  enumerate(zip(cells, widths))).rstrip()
    return [fmt(head)] + [fmt(c) for c in body]


def summary_line(counts: dict[str, int]) -> str:
    trained = sum(counts.get(k, 0) for k in ("complete", "pruned", "failed"))
    parts = [f"{counts.get('complete', 0)} complete", f"{counts.get('pruned', 0)} pruned"]
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    line = f"{trained} trial{'s' if trained != 1 else ''} trained ({', '.join(parts)}); " \
           f"{counts.get('invalid', 0)} invalid point{'s' if counts.get('invalid', 0) != 1 else ''} rejected " \
           "by the checker before training"
    if counts.get("repeat"):
        line += f"; {counts['repeat']} point{'s' if counts['repeat'] != 1 else ''} proposed again (result reused)"
    for k in ("interrupted", "running", "waiting"):
        if counts.get(k):
            line += f"; {counts[k]} {k}"
    return line


def write_tables(out: Path, rows: list[Row], space: Space, objective: str, extra: dict | None = None) -> None:
    best = best_of(rows, objective)
    doc = {"space": {d.name: d.text() for d in space.dims}, "defines": space.defines, "objective": objective,
           "counts": counts_of(rows), "best": best.number if best else None,
           "pareto_flops": [r.number for r in pareto_of(rows, "flops")],
           "trials": [_json_row(r) for r in rows]}
    doc.update(extra or {})
    atomic_write_text(out / JSON_FILE, json.dumps(doc, indent=2, default=_json_default) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial"] + space.names + ["params", "flops", "accuracy", "loss", "epochs", "seconds", "state",
                                          "reason", "latency_ms"])
    for r in rows:
        w.writerow([r.number] + [_csv_value(r.point.get(n)) for n in space.names] +
                   [_csv_value(v) for v in (r.params, r.flops, r.accuracy, r.loss, r.epochs, r.seconds)] +
                   [r.state, r.reason or "", _csv_value(r.latency_ms)])
    atomic_write_text(out / CSV_FILE, buf.getvalue())


def _json_row(r: Row) -> dict:
    d = asdict(r)
    d["point"] = {k: list(v) if isinstance(v, tuple) else v for k, v in r.point.items()}
    return d


def _json_default(v):
    if isinstance(v, tuple):
        return list(v)
    return str(v)


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, tuple, str)):
        return show(v)
    return repr(v) if isinstance(v, float) else str(v)


def write_plot(out: Path, rows: list[Row], x: str = "flops", title: str = "") -> bool:
    """accuracy against FLOPs (or params, or latency_ms): completed trials, pruned ones at their last epoch, the
    Pareto front as a step line, the best trial circled. False when no trial has an accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.state == "complete" and r.accuracy is not None and getattr(r, x) is not None]
    pruned = [r for r in rows if r.state == "pruned" and r.accuracy is not None and getattr(r, x) is not None]
    if not done and not pruned:
        return False
    front = pareto_of(rows, x)
    best = best_of(rows, "accuracy")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    if pruned:
        ax.scatter([getattr(r, x) for r in pruned], [r.accuracy for r in pruned], marker="x", color="0.6",
                   label=f"pruned ({len(pruned)}, at their last epoch)")
    ax.scatter([getattr(r, x) for r in done], [r.accuracy for r in done], color="tab:blue",
               label=f"complete ({len(done)})")
    if front:
        xs = [getattr(r, x) for r in front]
        ys = [r.accuracy for r in front]
        ax.step(xs, ys, where="post", color="tab:red", label="Pareto front")
        ax.scatter(xs, ys, color="tab:red", zorder=3)
        for r in front:
            ax.annotate(str(r.number), (getattr(r, x), r.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=7, color="tab:red")
    if best is not None:
        ax.scatter([getattr(best, x)], [best.accuracy], s=160, facecolors="none", edgecolors="black",
                   label=f"best (trial {best.number})")
    ax.set_xscale("log")
    ax.set_xlabel({"flops": "FLOPs per image (forward)", "params": "parameters",
                   "latency_ms": "milliseconds per image (batch 1, this machine)"}[x])
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title or "sweep", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out / PLOT_FILE, buf.getvalue())
    return True


# ---- the best point as a plain .cnn file -----------------------------------------------------------------
def _offsets(text: str):
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return lambda line, column: starts[line - 1] + column - 1


def filled_source(text: str, module: ast.Module, net: ast.Network, values: dict[str, Any], knobs: dict[str, Any],
                  profile: str | None = None) -> str:
    """The file with `values` (network parameters) as the parameters' defaults and `knobs` (lr,
    batch, weight_decay, momentum) written into the training section: a plain file, no space left."""
    at = _offsets(text)
    edits: list[tuple[int, int, str]] = []
    params = {p.name: p for p in net.params}
    for name, v in values.items():
        p = params[name]
        if p.default is not None:
            s = p.default.span
            edits.append((at(s.line, s.column), at(s.end_line, s.end_column), show(v)))
        else:
            end = at(p.span.end_line, p.span.end_column)
            edits.append((end, end, f" = {show(v)}"))
    lines: list[str] = []
    for name, v in knobs.items():
        setting_name, key = ("batch", None) if name == "batch" else ("optimizer", name)
        s = _setting(module, setting_name, profile)
        if s is None:
            lines.append(f"batch {show(v)}" if key is None else f"optimizer sgd {key}={show(v)}")
            continue
        arg = next((a for a in s.args if a.key == key), None) if key else (s.args[0] if s.args else None)
        if arg is not None:
            vs = arg.value.span
            edits.append((at(vs.line, vs.column), at(vs.end_line, vs.end_column), show(v)))
        else:
            end = at(s.span.end_line, s.span.end_column)
            edits.append((end, end, f" {key}={show(v)}"))
    if lines:
        if module.trains:
            sp = module.trains[0].span
            brace = at(sp.end_line, sp.end_column) - 1
            line_start = text.rfind("\n", 0, brace) + 1
            if text[line_start:brace].strip() == "":
                edits.append((line_start, line_start, "".join(f"  {x}\n" for x in lines)))
            else:
                edits.append((brace, brace, "\n" + "".join(f"  {x}\n" for x in lines)))
        else:
            tail = "" if text.endswith("\n") else "\n"
            edits.append((len(text), len(text), tail + "\ntrain {\n" + "".join(f"  {x}\n" for x in lines) + "}\n"))
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _setting(module: ast.Module, name: str, profile: str | None) -> ast.Setting | None:
    if profile is not None:
        for p in module.profiles:
            if p.name == profile:
                for s in p.settings:
                    if s.name == name:
                        return s
    for t in module.trains[:1]:
        for s in t.settings:
            if s.name == name:
                return s
    return None


def write_best(out: Path, best: Row, space: Space, text: str, module: ast.Module, net: ast.Network,
               profile: str | None, network: str | None, header: str) -> tuple[Path, Path | None]:
    """best.cnn (checked: it loads, with the trial's parameter count) and best.safetensors."""
    from cnndsl.analysis.summary import summary_rows, totals
    from cnndsl.diagnostics import CnnError
    from cnndsl.frontend import loads

    values = {k: v for k, v in best.point.items() if not _is_knob(space, k)}
    for k, v in space.defines.items():  # -D values are baked in too: the file needs no flags
        if k not in values:
            from cnndsl.frontend.values import parse_define

            values[k] = parse_define(v)
    knobs = {k: v for k, v in best.point.items() if _is_knob(space, k)}
    source = filled_source(text, module, net, values, knobs, profile)
    source = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + source
    try:
        program = loads(source, str(out / BEST_FILE), profile=profile, network=network)
    except CnnError as e:  # pragma: no cover - a bug in filled_source
        raise RuntimeError(f"best.cnn does not load: {e}") from None
    count = totals(summary_rows(program.graph))["params"]
    if best.params is not None and count != best.params:  # pragma: no cover
        raise RuntimeError(f"best.cnn has {count} parameters, trial {best.number} had {best.params}")
    atomic_write_text(out / BEST_FILE, source)
    weights = None
    if best.dir:
        src = Path(best.dir) / "weights.safetensors"
        if src.is_file():
            weights = out / BEST_WEIGHTS
            atomic_write_bytes(weights, src.read_bytes())
    return out / BEST_FILE, weights


def _is_knob(space: Space, name: str) -> bool:
    return any(d.name == name and d.knob for d in space.dims)
