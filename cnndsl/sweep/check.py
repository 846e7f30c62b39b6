"""Checking the points of a search space with the shape checker, before anything trains.

A point is valid when the file loads with its values (every diagnostic a `cnndsl check` gives:
language, shapes, training section) and the model fits in memory (cnndsl/analysis/memory.py).
Invalid points are grouped by reason: the code and location of their first error, so the
stride that does not tile for every k=5 point is one group with its count.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.ir.dump import show
from cnndsl.sweep.space import Space, apply_knobs, show_point


@dataclass
class PointResult:
    point: dict[str, Any]
    program: Any = None  # the loaded Program (valid points)
    errors: list[Diagnostic] = field(default_factory=list)
    params: int = 0
    flops: int = 0
    activation_bytes: int = 0

    @property
    def valid(self) -> bool:
        return not self.errors


def load_point(space: Space, text: str, point: dict[str, Any], profile=None, network=None):
    """The Program of one point (training knobs applied); raises CnnError when it is invalid."""
    from cnndsl.analysis.memory import check_model
    from cnndsl.frontend import loads

    defines, knobs = space.split(point)
    program = loads(text, space.file, defines=defines, profile=profile, network=network)
    if knobs and program.training is not None:
        program.training = apply_knobs(program.training, knobs)
    elif knobs:
        from cnndsl.frontend.training import TrainingConfig

        program.training = apply_knobs(TrainingConfig(), knobs)
    check_model(program)
    return program


def check_point(space: Space, text: str, point: dict[str, Any], profile=None, network=None) -> PointResult:
    from cnndsl.analysis.summary import summary_rows, totals

    try:
        program = load_point(space, text, point, profile, network)
    except CnnError as e:
        errors = [d for d in e.diagnostics if d.severity == "error"] or list(e.diagnostics)
        return PointResult(point, errors=errors)
    t = totals(summary_rows(program.graph))
    return PointResult(point, program, params=t["params"], flops=t["flops"], activation_bytes=t["activation_bytes"])


def reason_key(d: Diagnostic) -> tuple:
    span = d.span
    where = (span.file, span.line, span.column) if span is not None else ("", 0, 0)
    return (d.code, where)


def reason_text(d: Diagnostic) -> str:
    return f"{d.span}: {d.message}" if d.span else d.message


@dataclass
class SpaceReport:
    space: Space
    results: list[PointResult]
    exhaustive: bool
    seconds: float

    @property
    def valid(self) -> list[PointResult]:
        return [r for r in self.results if r.valid]

    @property
    def invalid(self) -> list[PointResult]:
        return [r for r in self.results if not r.valid]

    def groups(self) -> list[tuple[Diagnostic, list[PointResult]]]:
        """(first diagnostic of the reason, the invalid points with it as their first error), largest first."""
        by: dict[tuple, list[PointResult]] = {}
        first: dict[tuple, Diagnostic] = {}
        for r in self.invalid:
            key = reason_key(r.errors[0])
            by.setdefault(key, []).append(r)
            first.setdefault(key, r.errors[0])
        return sorted(((first[k], v) for k, v in by.items()), key=lambda kv: -len(kv[1]))

    def lines(self, full: bool = True) -> list[str]:
        """The report: what was checked, the counts, the invalid points grouped by reason."""
        sp = self.space
        n = len(self.results)
        out = [f"{sp.file}: search space {sp.describe()}"]
        continuous = [d.name for d in sp.dims if not d.discrete]
        drawn = f" ({', '.join(continuous)} drawn once per point, seed 0)" if continuous else ""
        if self.exhaustive:
            out.append(f"  checked all {n} point{'s' if n != 1 else ''}{drawn} in {self.seconds:.1f} s")
        else:
            out.append(f"  checked a seeded sample of {n} of {sp.discrete_size():,} points{drawn} "
                       f"in {self.seconds:.1f} s")
        out.append(f"  {len(self.valid)} valid, {len(self.invalid)} invalid")
        for diag, points in self.groups():
            out.append("")
            out.append(f"{len(points)} invalid point{'s' if len(points) != 1 else ''}, "
                       f"[{diag.code or 'error'}] (first with {show_point(points[0].point)}):")
            out.append(diag.render() if full else reason_text(diag))
            shared = _shared(points, sp)
            if shared:
                out.append(f"  every one of them has {shared}")
            out.append("  points:")
            out += [f"    {show_point(p.point)}" for p in points[:4]]
            if len(points) > 4:
                out.append(f"    ... and {len(points) - 4} more")
        return out

    def cost_table(self) -> list[str]:
        """The valid points with their parameters, FLOPs and activation memory, by FLOPs."""
        from cnndsl.analysis.summary import human

        names = self.space.names
        rows = [[show_point({k: r.point[k]}).split("=", 1)[1] for k in names] +
                [f"{r.params:,}", human(r.flops), human(r.activation_bytes, "B")]
                for r in sorted(self.valid, key=lambda r: (r.flops, r.params))]
        head = names + ["params", "FLOPs", "activations"]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        return [fmt(head)] + [fmt(r) for r in rows]


def _shared(points: list[PointResult], space: Space) -> str:
    """The values every point of a group has while the space has others (`k=5 s=2`)."""
    parts = []
    for d in space.dims:
        if not d.discrete or (d.size() or 0) < 2:
            continue
        values = Counter(show(p.point[d.name]) for p in points)
        if len(values) == 1:
            parts.append(f"{d.name}={next(iter(values))}")
    return " ".join(parts)


def check_space(space: Space, text: str, profile=None, network=None, limit: int | None = None,
                seed: int = 0) -> SpaceReport:
    from cnndsl.sweep.space import CHECK_LIMIT

    points, exhaustive = space.points(CHECK_LIMIT if limit is None else limit, seed)
    start = time.perf_counter()
    results = [check_point(space, text, p, profile, network) for p in points]
    return SpaceReport(space, results, exhaustive, time.perf_counter() - start)


def check_space_file(path: str, load_kwargs: dict, echo, table: bool = False) -> bool | None:
    """`cnndsl check` / `cnndsl shapes` on a file with a search space: the report; True when at
    least one point is valid. None when the file has no search space (checked as usual)."""
    from cnndsl.sweep.space import read_space

    found = read_space(path, load_kwargs.get("defines"), load_kwargs.get("network"))
    if found is None:
        return None
    space, text, _, _ = found
    report = check_space(space, text, load_kwargs.get("profile"), load_kwargs.get("network"))
    for line in report.lines():
        echo(line)
    if table and report.valid:
        echo("")
        echo("valid points, by FLOPs:")
        for line in report.cost_table():
            echo(line)
    if report.valid:
        echo(f"{path}: ok (search space: {len(report.valid)} of {len(report.results)} points checked are valid)")
        return True
    echo(f"{path}: no valid point among the {len(report.results)} checked")
    return False
