"""The training graph: autodiff as a graph transformation (the `autodiff` pass, cnndsl/passes/autodiff.py,
runs it inside the optimization pipeline; the memory estimates and evaluation use it directly).

From a shape-checked forward graph and the losses of the training section,
build one training graph: the forward nodes, a target input and a loss node per
head, the gradient nodes (added by each op's local `gradient` rule while the
pass walks the forward graph in reverse), and one optimizer step that runs once
every parameter gradient is written; its attributes are the optimizer and its hyperparameters
(cnndsl/ops/training/optimizers.py: `step_attrs`) and the per-layer learning-rate factors
(`lr_mult`: those given with the optimizer's attributes, and 0 for every frozen layer), the
learning rate is a run-time input.

Only gradients something needs are built: a tensor gets a gradient only when a
trainable parameter lies on some path into it (so never the input image), and a
frozen layer gets no parameter-gradient node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnndsl.analysis.infer import infer_shapes
from cnndsl.diagnostics import CnnError, Diagnostic, Diagnostics
from cnndsl.ir.graph import Graph, Node
from cnndsl.ops.registry import get_op
from cnndsl.ops.training.optimizers import LR_MULT, step_attrs


@dataclass
class LossSpec:
    head: str
    kind: str  # a loss op: cross_entropy, pixel_cross_entropy, mse, smooth_l1, yolo
    weight: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()  # the op's own attributes as written (yolo: noobj, coord, boxes)


@dataclass
class GradBuilder:
    """What a gradient rule uses to add nodes to the training graph."""

    graph: Graph
    frozen: set[str] = field(default_factory=set)
    requires_grad: dict[str, bool] = field(default_factory=dict)
    param_grad_nodes: list[str] = field(default_factory=list)

    def trains(self, node: Node) -> bool:
        """Does this node own parameters that the optimizer updates?"""
        return bool(node.params) and node.name not in self.frozen

    def needs(self, tensor: str) -> bool:
        """Does anything trainable feed this tensor (so its gradient is worth computing)?"""
        return self.requires_grad.get(tensor, False)

    def add(self, op: str, forward: Node, inputs: list[str], suffix: str, like: int = 0, **attrs) -> str:
        name = f"{forward.name}.{suffix}"
        node = Node(name, op, {"forward": forward.name, "like": like, **attrs}, span=forward.span, trace=forward.trace)
        self.graph.add(node, inputs)
        return name

    def writes_params(self, name: str) -> None:
        """Mark a node that writes parameter gradients: the optimizer step waits for it."""
        self.param_grad_nodes.append(name)

    def params_grad(self, op: str, forward: Node, inputs: list[str]) -> None:
        """Add the `*_grad_params` node of a layer unless the layer is frozen."""
        if self.trains(forward):
            self.writes_params(self.add(op, forward, inputs, "grad_params"))

    def input_grad(self, op: str, forward: Node, inputs: list[str], port: int = 0, like: int = 1) -> str | None:
        """Add the gradient of the forward node's input `port`, when that input needs one."""
        src = self.graph.inputs_of(forward.name)[port]
        if not self.needs(src):
            return None
        return self.add(op, forward, inputs, "grad_input" if port == 0 else f"grad_input{port}", like=like)


def loss_specs(program) -> list[LossSpec]:
    """The losses of the training section; by default cross-entropy on the first head."""
    if program.training is not None and program.training.losses:
        return [LossSpec(loss.head, loss.kind, loss.weight, loss.options) for loss in program.training.losses]
    graph = program.graph
    specs = []
    for head, node in graph.heads.items():
        rank = len(graph.node(node).type.shape)
        specs.append(LossSpec(head, "cross_entropy" if rank == 1 else "pixel_cross_entropy"))
    return specs[:1]


def build_loss_graph(forward: Graph, losses: list[LossSpec]) -> Graph:
    """The forward graph plus targets and losses, without gradients: what evaluation runs."""
    _check_losses(forward, losses)
    graph = forward.copy()
    graph.name = f"{forward.name}.eval"
    graph.attrs["losses"] = {spec.head: _add_loss(graph, forward, spec) for spec in losses}
    infer_shapes(graph, Diagnostics()).raise_if_errors()
    return graph


def build_training_graph(forward: Graph, losses: list[LossSpec], frozen: set[str] = frozenset(),
                         optimizer: dict | None = None) -> Graph:
    """The training graph for `forward` (which must already be shape-checked); `forward` is left as
    it is. `optimizer`: the optimizer step's attributes (`step_attrs(kind, **hyper)`, e.g. from the
    training section); default plain SGD, the training section's default."""
    graph = forward.copy()
    add_training(graph, losses, frozen, optimizer)
    return graph


def add_training(graph: Graph, losses: list[LossSpec], frozen: set[str] = frozenset(),
                 optimizer: dict | None = None) -> None:
    """Make the shape-checked forward `graph` its training graph, in place (what a pass does)."""
    _check_losses(graph, losses)
    forward = graph.copy()  # the rules read the forward graph while nodes are added to `graph`
    graph.name = f"{forward.name}.train"
    builder = GradBuilder(graph, set(frozen))
    for name in forward.topo_order():
        node = forward.node(name)
        builder.requires_grad[name] = builder.trains(node) or any(
            builder.requires_grad[s] for s in forward.inputs_of(name))

    contributions: dict[str, list[str]] = {}
    loss_nodes = {}
    for spec in losses:
        loss_nodes[spec.head] = _add_loss(graph, forward, spec)
        contributions.setdefault(forward.heads[spec.head], []).append(loss_nodes[spec.head])

    for name in reversed(forward.topo_order()):
        grads = contributions.get(name)
        if not grads or not builder.needs(name):
            continue
        dy = _sum(graph, name, grads)
        node = forward.node(name)
        rule = get_op(node.op).gradient
        if rule is None:
            raise CnnError([Diagnostic("error", f"op '{node.op}' of layer '{name}' has no gradient rule, "
                                       "so it cannot be trained", node.span, code="no-gradient")])
        for port, (src, dx) in enumerate(zip(forward.inputs_of(name), rule(builder, node, dy))):
            if dx is not None:
                contributions.setdefault(src, []).append(dx)

    attrs = dict(optimizer) if optimizer is not None else step_attrs("sgd")
    # a frozen layer's learning-rate factor is 0 on the step node (besides having no gradient node):
    # the kernels skip its elements, weight decay included, and the node says so
    frozen_params = {n: 0.0 for n in frozen if n in forward and forward.node(n).params}
    mults = {**dict(attrs.get(LR_MULT.name) or ()), **frozen_params}
    attrs[LR_MULT.name] = tuple(sorted(mults.items())) or None
    step = Node("optimizer_step", "optimizer_step", attrs)
    graph.add(step, builder.param_grad_nodes)
    graph.attrs["losses"] = loss_nodes
    graph.attrs["optimizer_step"] = step.name
    infer_shapes(graph, Diagnostics()).raise_if_errors()


def _check_losses(forward: Graph, losses: list[LossSpec]) -> None:
    problems = []
    for spec in losses:
        if spec.head not in forward.heads:
            problems.append(Diagnostic("error", f"a loss names head '{spec.head}', but the network's heads are "
                                       f"{', '.join(forward.heads)}", code="loss-head"))
        elif get_op(spec.kind) is None or get_op(spec.kind).category != "loss":
            problems.append(Diagnostic("error", f"'{spec.kind}' is not a loss", code="loss-kind"))
    if not losses:
        problems.append(Diagnostic("error", "training needs at least one loss", code="no-loss",
                                   help="add e.g. `loss logits cross_entropy` to the train section"))
    if problems:
        raise CnnError(problems)


def _add_loss(graph: Graph, forward: Graph, spec: LossSpec) -> str:
    head_node = forward.node(forward.heads[spec.head])
    shape, dtype = get_op(spec.kind).target(head_node.type)
    target = Node(f"target.{spec.head}", "target", {"head": spec.head},
                  meta={"target_shape": shape, "target_dtype": dtype})
    graph.add(target)
    graph.inputs.append(target.name)
    loss = Node(f"loss.{spec.head}", spec.kind, {**dict(spec.options), "weight": spec.weight, "head": spec.head},
                span=head_node.span)
    graph.add(loss, [head_node.name, target.name])
    return loss.name


def _sum(graph: Graph, tensor: str, grads: list[str]) -> str:
    """The total gradient of `tensor`: its single contribution, or an add node."""
    if len(grads) == 1:
        return grads[0]
    name = f"grad.{tensor}"
    graph.add(Node(name, "add", {}, meta={"gradient_of": tensor}), grads)
    return name
