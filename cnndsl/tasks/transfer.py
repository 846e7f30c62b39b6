"""Transfer learning: start a model from another model's weights, matched by layer name and shape.

    train {
      init from "runs/pretrain/weights.safetensors"   # tensors by name and shape
      freeze up_to conv2                              # conv2 and every layer feeding it
      reinit logits                                   # optional: a layer kept by name but trained afresh
    }

`init_from_file(model, path, reinit)` copies every tensor of the file whose name
(`<layer>.<param>`, running statistics included) and shape match the network, and
returns a `TransferReport`: tensors loaded, skipped (in the file, not in the network:
an old head), newly initialized (in the network, not in the file: a new head, which
keeps the seed's initialization) and re-initialized (`reinit`). A tensor present in
both with another shape is never loaded positionally and never silently dropped: it is
an error naming both shapes and the layer's line in the .cnn file, with the fix
(rename the layer, or `reinit` it). A file that shares no tensor with the network is
an error too (the wrong file).

`check_frozen_statistics(graph, frozen)` marks frozen batchnorm layers so that training
normalizes them with their running statistics and never updates them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnndsl.diagnostics import LIST_LIMIT, CnnError, Diagnostic, Span, abbreviated


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass
class TransferReport:
    path: str
    network: str | None = None  # the network the file was saved from (its metadata), if known
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple]] = field(default_factory=list)  # in the file only
    new: list[tuple[str, tuple]] = field(default_factory=list)  # in the network only: seed init
    reinit: list[tuple[str, tuple]] = field(default_factory=list)  # in both, initialized fresh (`reinit`)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (name, file, network)
    loaded_values: int = 0

    def lines(self, verb: str = "loaded") -> list[str]:
        src = f" (saved from network {self.network})" if self.network else ""
        out = [f"init from {self.path}{src}:",
               f"  {verb} {len(self.loaded)} tensors ({self.loaded_values:,} values)"
               + (": " + abbreviated(self.loaded) if self.loaded else "")]
        # every list is cut at LIST_LIMIT names: a file of 20,000 other tensors stays one readable line
        if self.new:
            out.append(f"  newly initialized {len(self.new)} (not in the file): "
                       + abbreviated(f"{n} {_shape(s)}" for n, s in self.new))
        if self.reinit:
            out.append(f"  re-initialized {len(self.reinit)} (reinit): "
                       + abbreviated(f"{n} {_shape(s)}" for n, s in self.reinit))
        if self.skipped:
            out.append(f"  skipped {len(self.skipped)} (in the file, not in this network): "
                       + abbreviated(f"{n} {_shape(s)}" for n, s in self.skipped))
        for n, f, e in self.mismatched[:LIST_LIMIT]:
            out.append(f"  shape mismatch {n}: file {_shape(f)}, network {_shape(e)}")
        if len(self.mismatched) > LIST_LIMIT:
            out.append(f"  ... and {len(self.mismatched) - LIST_LIMIT:,} more shape mismatches")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def resolve_path(path: str, program_path: str | None) -> Path:
    """A relative path is taken from the working directory, else from the .cnn file's folder."""
    p = Path(path)
    if p.is_absolute() or p.exists() or not program_path:
        return p
    beside = Path(program_path).parent / p
    return beside if beside.exists() else p


def _layer(tensor: str, owners: dict[str, str]) -> str:
    return owners.get(tensor) or tensor.rsplit(".", 1)[0]


def init_from_file(model, path, reinit=(), span: Span | None = None) -> TransferReport:
    """Copy the matching tensors of a weights file into `model` (see the module docstring)."""
    from cnndsl.io.weights import load_weights

    graph, store = model.graph, model.store
    program_path = getattr(model.program, "path", None)
    real = resolve_path(str(path), program_path)
    try:
        tensors, metadata = load_weights(real)
    except CnnError as e:
        if span is not None:
            for d in e.diagnostics:
                d.notes.append((span, "the weights file named here (init from)"))
        raise
    expected = store.expected_shapes()
    owners = {**store.owner, **{b: b.rsplit(".", 1)[0] for b in store.buffers}}
    fresh = set()
    for name in reinit:
        fresh.update(t for t in expected if _layer(t, owners) == name or _layer(t, owners).startswith(name + "."))
    report = TransferReport(str(path), metadata.get("network"))
    take = {}
    for name, shape in expected.items():
        want = tuple(int(d) for d in shape)
        if name not in tensors:
            report.new.append((name, want))
            continue
        found = tuple(int(d) for d in np.shape(tensors[name]))
        if name in fresh:
            report.reinit.append((name, want))
        elif found != want:
            report.mismatched.append((name, found, want))
        else:
            report.loaded.append(name)
            report.loaded_values += math.prod(want)
            take[name] = tensors[name]
    report.skipped = [(n, tuple(np.shape(v))) for n, v in tensors.items() if n not in expected]
    if report.mismatched:
        raise CnnError(_mismatch_diagnostics(report, graph, owners, span))
    if not report.loaded:
        raise CnnError([Diagnostic(
            "error", f"init from {path}: the file shares no tensor with network '{graph.name}'",
            span, details=report.lines()[1:],
            help="weights are matched by layer name (`c1.weight`): keep the pretrained layers' names "
                 "in the new model file", code="init-nothing")])
    store.load_state_dict(take)
    return report


def _mismatch_diagnostics(report: TransferReport, graph, owners, span) -> list[Diagnostic]:
    n = len(report.mismatched)
    diags = [Diagnostic(
        "error", f"init from {report.path}: {n} tensor{'s' if n != 1 else ''} of network '{graph.name}' "
        f"{'have' if n != 1 else 'has'} another shape in the file (nothing was loaded)", span,
        details=report.lines("matching (not loaded):")[1:],
        help="a layer whose shape changed (a new head) is initialized fresh only when it is renamed "
             "or listed in `reinit`", code="init-mismatch")]
    seen = set()
    for name, found, want in report.mismatched:
        layer = _layer(name, owners)
        if layer in seen:
            continue
        seen.add(layer)
        if len(seen) > LIST_LIMIT:  # one located error per layer, for the first LIST_LIMIT layers
            break
        node = graph.node(layer) if layer in graph else None
        diags.append(Diagnostic(
            "error", f"layer '{layer}': tensor '{name}' is {_shape(want)} here but {_shape(found)} in "
            f"{report.path}", node.span if node is not None else None,
            help=f"rename the layer (a new name starts from fresh weights), or add `reinit {layer}` "
                 "to the train section", code="init-mismatch"))
    return diags


def check_frozen_statistics(model) -> list[str]:
    """Mark frozen batchnorm layers `frozen_statistics` (normalize with the running statistics while
    training and never update them) unless the train section says `freeze ... stats=false`.
    Returns the marked layers. A gradient through such a layer to a trainable layer before it is
    not implemented (the backward kernel uses batch statistics): that is an error."""
    import networkx as nx

    graph, config = model.graph, model.config
    marked = []
    for layer in sorted(model.frozen):
        node = graph.node(layer)
        if node.op not in ("batchnorm", "fused_batchnorm"):  # runs on the source graph: fused only if written so
            continue
        if not config.freeze_stats:
            node.meta.pop("frozen_statistics", None)
            continue
        trainable = [a for a in nx.ancestors(graph.nx, layer) if graph.node(a).params and a not in model.frozen]
        if trainable:
            order = [n for n in graph.topo_order() if n in trainable]
            raise CnnError([Diagnostic(
                "error", f"batchnorm '{layer}' is frozen with its statistics, but layer '{order[0]}' before it "
                "still trains", config.spans.get("freeze"),
                help=f"freeze up_to {layer} (freezes the layers before it too), or write `stats=false` to let "
                     "frozen batchnorm layers keep updating their statistics", code="freeze-stats")])
        node.meta["frozen_statistics"] = True
        marked.append(layer)
    return marked
