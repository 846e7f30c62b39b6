"""The public front-end API: load(path) / loads(text) -> Program.

    program = load("examples/lenet5.cnn", defines={"classes": "5"}, profile="deploy")
    program.graph        # the shape-checked IR graph
    program.training     # TrainingConfig (None without a train section)

Any problem with the input raises CnnError carrying every diagnostic of the
run (errors and warnings); warnings of a clean run are in program.diagnostics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import CnnError, Diagnostic, Diagnostics, Span, abbreviated, did_you_mean
from cnndsl.frontend import ast
from cnndsl.frontend.lower import Lowerer
from cnndsl.frontend.parser import parse_text, read_source
from cnndsl.frontend.training import TrainingConfig, build_training
from cnndsl.ir.graph import Graph, layers_matching


@dataclass
class Program:
    graph: Graph
    training: TrainingConfig | None
    profiles: dict[str, TrainingConfig] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)  # warnings
    path: str = "<string>"
    params: dict[str, Any] = field(default_factory=dict)  # resolved network parameters
    profile: str | None = None  # the profile applied to `training`
    module: ast.Module | None = None  # the syntax tree (blocks, other networks)
    source: str | None = None  # the text compiled (a training run keeps a copy: model.cnn)


def load(path, defines: dict[str, str] | None = None, profile: str | None = None,
         network: str | None = None) -> Program:
    """Read, parse, lower and shape-check a .cnn file."""
    text = read_source(path)
    return loads(text, str(path), defines=defines, profile=profile, network=network)


def loads(text: str, filename: str = "<string>", defines: dict[str, str] | None = None,
          profile: str | None = None, network: str | None = None) -> Program:
    """Like load(), from a string."""
    if not isinstance(text, str):
        raise CnnError([Diagnostic("error", f"{filename}: expected text, got {type(text).__name__}",
                                   Span(filename, 0, 0), code="file")])
    try:
        return _compile(text, filename, defines, profile, network)
    except RecursionError:
        raise CnnError([Diagnostic("error", "the model nests too deeply to compile", Span(filename, 0, 0),
                                   help="flatten deeply nested expressions or blocks", code="too-deep")]) from None


def _compile(text, filename, defines, profile, network) -> Program:
    module = parse_text(text, filename)
    diags = Diagnostics()
    net = _choose_network(module, network, filename)
    lowerer = Lowerer(module, diags)
    graph, params = lowerer.network(net, defines)
    _infer(graph, diags)
    training, profiles = build_training(module, graph, params, diags, profile, lowerer.failed_heads)
    items = _dedup(diags.items)
    if any(d.severity == "error" for d in items):
        raise CnnError(items)
    program = Program(graph, training, profiles, [d for d in items if d.severity != "error"], filename, params,
                      profile, module, text)
    mark_trainable(program)  # frozen layers show as not trainable in `cnndsl shapes`
    return program


def _choose_network(module: ast.Module, network: str | None, filename: str) -> ast.Network:
    nets = module.networks
    names = [n.name for n in nets]
    seen: dict[str, ast.Network] = {}
    for n in nets:
        if n.name in seen:
            raise CnnError([Diagnostic("error", f"network '{n.name}' is defined twice", n.name_span,
                                       notes=[(seen[n.name].name_span, "first defined here")],
                                       code="duplicate-network")])
        seen[n.name] = n
    if not nets:
        raise CnnError([Diagnostic("error", f"{filename} defines no network", Span(filename, 0, 0),
                                   help="add `network NAME { ... }`; blocks alone cannot be checked",
                                   code="no-network")])
    if network is not None:
        if network not in seen:
            hint = did_you_mean(network, names)
            raise CnnError([Diagnostic("error", f"--network {network}: {filename} has no network '{network}'",
                                       Span("<command line>", 0, 0),
                                       help=hint or f"its networks: {abbreviated(names)}", code="unknown-network")])
        return seen[network]
    if len(nets) > 1:
        raise CnnError([Diagnostic("error", f"{filename} defines {len(nets)} networks; choose one",
                                   Span(filename, 0, 0), help=f"--network {names[0]} (networks: {abbreviated(names)})",
                                   code="choose-network")])
    return nets[0]


def _infer(graph: Graph, diags: Diagnostics) -> None:
    try:
        infer_shapes(graph, diags)
    except Exception as e:  # a bug in a shape rule must still surface as a diagnostic
        diags.error(f"internal error while inferring shapes: {type(e).__name__}: {e}", None,
                    help="please report this together with the model file", code="internal")


def _dedup(items: list[Diagnostic]) -> list[Diagnostic]:
    """Drop repeats: the same mistake inside a block used several times is shown once (at its first use)."""
    out, seen = [], set()
    for d in items:
        key = (d.severity, d.message, d.span, d.help)
        if key in seen:
            continue
        seen.add(key)
        out.append(d)
    return out


def mark_trainable(program) -> None:
    """`node.meta["trainable"] = False` on the layers the training section freezes (for `cnndsl shapes`)."""
    config = program.training
    if config is None or not config.freeze:
        return
    for n in layers_matching(program.graph, config.freeze):
        program.graph.node(n).meta["trainable"] = False
