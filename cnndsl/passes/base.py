"""What a pass is, what it sees, and the graph-rewriting helpers the passes share.

A pass (onnx-ir / torch.fx style) is a class with

    name         what --disable-pass, --dump-after and the error messages call it
    level        the lowest -O level that runs it
    modes        the compilation modes it is valid in: "inference", "training" or both
                 (a graph compiled for mode "either" gets only the passes valid in both)
    requires     graph properties that must hold before it runs ("typed", "forward", ...)
    ensures      properties that hold after it; `invalidates` those it breaks
    run(graph, ctx) -> bool   rewrites the graph in place; True when it changed anything

Properties used: "typed" (shape inference has run), "forward" (no gradient nodes yet:
forward rewrites must happen before autodiff, whose gradient nodes name forward nodes),
"training_graph" (autodiff has run), "planned" (the memory plan is computed).

Local rewrites (the fusions, remove_dropout) are `RewritePass`es: they declare their pattern
(`ops`, and `then` for an op followed by its sole reader), their `guards` (each returns the
reason it declines a match, or None) and their `rewrite`; the match loop, the statistics and
the reasons of declined matches (`cnndsl compile --pass-stats`) are written once, here.

Rewrites keep two promises every pass's guards enforce: a node that a head points at
is never removed or renamed (Model reads heads by node name), and a layer with
parameters keeps its name (weights are `<layer>.<param>`).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.ir.graph import Graph, Node

INFERENCE, TRAINING = "inference", "training"
BOTH = frozenset({INFERENCE, TRAINING})
# A forward graph that may be run in either mode (Model's evaluation graph, which the trainer
# also re-runs with training semantics to find the first non-finite layer): only the passes
# valid in both modes, and no autodiff.
EITHER = "either"
MAX_LEVEL = 3


class Pass:
    name: ClassVar[str] = ""
    level: ClassVar[int] = 1
    modes: ClassVar[frozenset[str]] = BOTH
    requires: ClassVar[tuple[str, ...]] = ("typed",)
    ensures: ClassVar[tuple[str, ...]] = ()
    invalidates: ClassVar[tuple[str, ...]] = ()

    def run(self, graph: Graph, ctx: "PassContext") -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name} -O{self.level} {'/'.join(sorted(self.modes))}>"


def verify_from_env() -> bool:
    return os.environ.get("CNNDSL_VERIFY_PASSES", "") not in ("", "0")


@dataclass
class PassContext:
    """Settings of one pipeline run, and what it records."""

    mode: str = INFERENCE
    level: int = 2
    disabled: frozenset[str] = frozenset()
    verify: bool = field(default_factory=verify_from_env)  # IR verifier + shape re-check after every pass
    dump_after: frozenset[str] = frozenset()
    on_dump: Callable[[str, str], None] | None = None  # (pass name, dump text); default: collect in `dumps`
    max_steps: int = 8  # cap of each fixed-point group
    losses: list = field(default_factory=list)  # for autodiff (training mode)
    frozen: frozenset[str] = frozenset()
    # the optimizer step's attributes (cnndsl/ops/training/optimizers.py: step_attrs); None: plain SGD
    optimizer: dict | None = None
    # the name of the (loaded) backend the graph will run on: a fusion fires only when its launchers
    # registered a kernel for the fused op in the op registry (ONNX Runtime's compatible execution
    # providers); None: no backend, a pure graph rewrite
    backend: str | None = None
    properties: set[str] = field(default_factory=lambda: {"typed", "forward"})
    ran: list[str] = field(default_factory=list)  # every pass run, in order (repeats included)
    stats: dict[str, Counter] = field(default_factory=dict)  # pass -> what fired -> how many times
    # pass -> the match it declined ("c1 -> r1") -> why (the last reason when a fixed point repeats it)
    declines: dict[str, dict[str, str]] = field(default_factory=dict)
    dumps: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # free-form results (e.g. the memory plan's size)

    def fired(self, pass_name: str, what: str, n: int = 1) -> None:
        self.stats.setdefault(pass_name, Counter())[what] += n

    def declined(self, pass_name: str, where: str, reason: str) -> None:
        self.declines.setdefault(pass_name, {})[where] = reason

    def enabled(self, p: Pass) -> bool:
        valid = p.modes == BOTH if self.mode == EITHER else self.mode in p.modes
        return valid and self.level >= p.level and p.name not in self.disabled


class PassError(CnnError):
    """A pass raised, or left a graph that fails verification; names the pass and those before it."""

    def __init__(self, pass_name: str, ran_before: list[str], cause: BaseException):
        self.pass_name, self.ran_before, self.cause = pass_name, list(ran_before), cause
        before = ", ".join(ran_before) if ran_before else "none"
        super().__init__([Diagnostic(
            "error", f"optimization pass '{pass_name}' failed: {type(cause).__name__}: {cause}",
            details=[f"passes run before it: {before}"],
            help=f"compile with --disable-pass {pass_name} (or -O0) to work around it, and please report it",
            code="pass-failed")])


# -- rewriting helpers ----------------------------------------------------------------
def is_head(graph: Graph, name: str) -> bool:
    return name in graph.heads.values()


def sole_consumer(graph: Graph, name: str) -> str | None:
    """The one node reading `name` through exactly one edge, when `name` is not a head; else None."""
    if is_head(graph, name) or graph.nx.out_degree(name) != 1:
        return None
    return next(iter(graph.nx.successors(name)))


def mark_rewritten(node: Node, pass_name: str) -> None:
    """Record in node.meta["rewritten_by"] (a column of `cnndsl shapes`) that `pass_name` changed it."""
    done = node.meta.get("rewritten_by")
    if not done:
        node.meta["rewritten_by"] = pass_name
    elif pass_name not in done.split(", "):
        node.meta["rewritten_by"] = f"{done}, {pass_name}"


def bypass(graph: Graph, name: str) -> None:
    """Remove a one-input node whose output equals its input: its readers read that input."""
    graph.replace_uses(name, graph.inputs_of(name)[0])
    graph.remove(name)


def absorb(graph: Graph, keep: str, gone: str) -> None:
    """`keep` now computes what `gone` did: gone's readers read keep, and gone is removed."""
    graph.replace_uses(gone, keep)
    graph.remove(gone)


# -- declarative local rewrites -------------------------------------------------------------
@dataclass
class Match:
    """One occurrence of a RewritePass's pattern: `node`, of one of the pass's `ops`, and for a
    two-node pattern `consumer`, a reader of `node` of one of its `then` kinds."""

    node: str
    consumer: str | None = None

    def __str__(self) -> str:
        return self.node if self.consumer is None else f"{self.node} -> {self.consumer}"


Guard = Callable[[Graph, Match, "PassContext"], "str | None"]


def sole_reader(graph: Graph, m: Match, ctx: PassContext) -> str | None:
    """The first guard of every two-node pattern: `node` must stay materialized when anything else
    reads it, or when it is a head (the caller reads it by name)."""
    if is_head(graph, m.node):
        return f"'{m.node}' is a head: its value must stay"
    readers = graph.nx.out_degree(m.node)
    if readers != 1:
        return f"'{m.node}' has {readers} readers: its value must stay"
    return None


def consumer_not_head(graph: Graph, m: Match, ctx: PassContext) -> str | None:
    """The absorbed reader's name is what the caller reads when it is a head."""
    if m.consumer is not None and is_head(graph, m.consumer):
        return f"'{m.consumer}' is a head: its name must stay"
    return None


class RewritePass(Pass):
    """A local rewrite declared, not hand-looped (ONNX Runtime's RewriteRule: SatisfyCondition/Apply).

        ops      the op kinds a match starts at
        then     the op kinds of its reader, for "an op followed by its sole reader" (the match
                 is declined, by `sole_reader`, when that reader is not the only one); () for a
                 one-node pattern
        guards   functions (graph, match, ctx) -> the reason the match is declined, or None;
                 run in order, the first reason is recorded (ctx.declines) and nothing changes
        rewrite  (graph, match, ctx) -> what fired (ctx.stats, `--pass-stats`)

    Matches are visited in topological order; a node removed by an earlier rewrite is skipped."""

    ops: ClassVar[tuple[str, ...]] = ()
    then: ClassVar[tuple[str, ...]] = ()
    guards: ClassVar[tuple[Guard, ...]] = ()

    def rewrite(self, graph: Graph, m: Match, ctx: PassContext) -> str:
        raise NotImplementedError

    def matches(self, graph: Graph, name: str) -> list[Match]:
        if not self.then:
            return [Match(name)]
        readers = dict.fromkeys(r for r in graph.consumers(name) if graph.node(r).op in self.then)
        return [Match(name, r) for r in readers]

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        guards = ((sole_reader,) if self.then else ()) + tuple(self.guards)
        for name in graph.topo_order():
            if name not in graph or graph.node(name).op not in self.ops:
                continue
            for m in self.matches(graph, name):
                reason = next((r for r in (g(graph, m, ctx) for g in guards) if r), None)
                if reason:
                    ctx.declined(self.name, str(m), reason)
                    continue
                ctx.fired(self.name, self.rewrite(graph, m, ctx))
                ctx.declines.get(self.name, {}).pop(str(m), None)
                changed = True
                break  # the node changed: its other readers are looked at in the next round
        return changed
