"""The pass manager: runs passes in order, in fixed-point groups, checked after each one.

    PassManager([RemoveDropout(), FixedPoint([Cse(), Dce(), ...]), Autodiff(), ...]).run(graph, ctx)

For each pass: skip it unless ctx.enabled(pass) (its level, its modes, --disable-pass);
check that its `requires` hold (a pass that needs what a user-disabled pass would have
ensured is skipped; any other missing requirement is a pipeline bug and an error); run it; re-infer shapes when it changed something (a
rewrite only edits ops and edges, shape inference refills types, params and meta);
with ctx.verify (tests, --verify-passes, CNNDSL_VERIFY_PASSES=1) run the IR verifier and
check that no shape error appeared and that no head changed type. Any failure becomes
a PassError naming the pass and every pass that ran before it (torch.fx PassManager).

A FixedPoint group repeats its passes until a whole round changes nothing, at most
ctx.max_steps rounds (Glow's UntilFixedPoint, Inductor's 10 rounds): one fusion
enabling another (batchnorm folding -> conv+relu fusion; CSE -> DCE) is found without
ordering every pair by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import Diagnostics
from cnndsl.ir.dump import dump
from cnndsl.ir.graph import Graph
from cnndsl.ir.verify import InvalidGraph, verify
from cnndsl.passes.base import Pass, PassContext, PassError


@dataclass
class FixedPoint:
    """Passes repeated, in order, until a round changes nothing (at most ctx.max_steps rounds)."""

    name: str
    passes: list[Pass]


class PassManager:
    def __init__(self, entries: list[Pass | FixedPoint]):
        self.entries = entries

    def passes(self) -> list[Pass]:
        """Every pass, in order, each once (fixed-point groups flattened)."""
        out: list[Pass] = []
        for entry in self.entries:
            for p in entry.passes if isinstance(entry, FixedPoint) else [entry]:
                if all(q.name != p.name for q in out):
                    out.append(p)
        return out

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        self._unavailable: set[str] = set()  # properties only a pass disabled by the user ensures
        heads = {h: graph.node(n).type for h, n in graph.heads.items()}
        changed = False
        for entry in self.entries:
            if isinstance(entry, FixedPoint):
                changed |= self._fixed_point(entry, graph, ctx, heads)
            else:
                changed |= self._run_one(entry, graph, ctx, heads)
        return changed

    def _fixed_point(self, group: FixedPoint, graph: Graph, ctx: PassContext, heads) -> bool:
        changed = False
        for _ in range(ctx.max_steps):
            round_changed = False
            for p in group.passes:
                round_changed |= self._run_one(p, graph, ctx, heads)
            changed |= round_changed
            if not round_changed:
                return changed
        ctx.fired(group.name, "hit the step cap")
        return changed

    def _run_one(self, p: Pass, graph: Graph, ctx: PassContext, heads) -> bool:
        if not ctx.enabled(p):
            if p.name in ctx.disabled:
                self._unavailable.update(p.ensures)
            return False
        missing = [r for r in p.requires if r not in ctx.properties]
        if missing and set(missing) <= self._unavailable:
            ctx.notes.setdefault("skipped", []).append(p.name)  # what it needs comes from a disabled pass
            return False
        before = list(ctx.ran)
        ctx.ran.append(p.name)
        try:
            if missing:
                raise RuntimeError(f"requires {', '.join(missing)}, which the passes before it do not ensure")
            changed = bool(p.run(graph, ctx))
            if changed:
                infer_shapes(graph, Diagnostics()).raise_if_errors()
            ctx.properties.difference_update(p.invalidates)
            ctx.properties.update(p.ensures)
            if ctx.verify:
                check_graph(graph, heads)
        except PassError:
            raise
        except Exception as e:
            raise PassError(p.name, before, e) from e
        if p.name in ctx.dump_after:
            text = dump(graph)
            ctx.dumps.append((p.name, text))
            if ctx.on_dump is not None:
                ctx.on_dump(p.name, text)
        return changed


def check_graph(graph: Graph, heads: dict) -> None:
    """The IR verifier, a fresh shape inference without errors, and unchanged head types."""
    problems = verify(graph, typed=True)
    if problems:
        raise InvalidGraph(problems)
    saved = {name: graph.node(name).type for name in graph.topo_order()}
    infer_shapes(graph, Diagnostics()).raise_if_errors()
    for name, t in saved.items():
        if graph.node(name).type != t:
            raise AssertionError(f"'{name}' had type {t} but shape inference now gives {graph.node(name).type}")
    for head, t in heads.items():
        node = graph.heads.get(head)
        if node is None or graph.node(node).type != t:
            raise AssertionError(f"head '{head}' changed: was {t}, now "
                                 f"{graph.node(node).type if node else 'missing'}")
