"""The training section: `train { ... }` and `profile NAME { ... }` -> a frozen TrainingConfig.

Each setting is one line shaped like a layer statement: a keyword, positional
values, key=value options. Every option is declared once, with the op registry's
`Attr` (kind, default, range, unit, doc), beside what implements it: optimizers in
cnndsl/ops/training/optimizers.py (the optimizer_step op's), schedules in cnndsl/train/schedule.py, augmentations in
cnndsl/augment/ops.py, a loss's options on its op (cnndsl/ops/training/),
early stopping and `checkpoint best=` in cnndsl/train/watch.py, and the plain
settings below (SETTING_OPTIONS). This module only looks them up, checks a file
against them and reports what does not fit; docs/language.md's option tables are
generated from the same declarations (cnndsl/docs_gen.py).

A profile overrides settings of the train section: a setting written in the
profile replaces the same setting of `train` (for `loss` and `metric`, the
setting of the same head); `augment { ... }` replaces the whole augmentation list.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from cnndsl.augment.ops import REGISTRY as AUGMENTATIONS
from cnndsl.diagnostics import Diagnostic, Diagnostics, Span, did_you_mean
from cnndsl.frontend import ast
from cnndsl.frontend.values import EvalError, Evaluator, show
from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import REQUIRED, Attr, AttrError, OpDef, declare, defaults, get_op, ops_of
from cnndsl.ops.training.optimizers import OPTIMIZERS as OPTIMIZER_DEFS
from cnndsl.ops.training.optimizers import step_attrs
from cnndsl.tasks.metric_kinds import METRICS
from cnndsl.train.schedule import OPTIONS as SCHEDULES
from cnndsl.train.watch import CHECKPOINT, EARLY_STOPPING, EarlyStopping, watched_names

# kind -> its declared options (lr, then the step's hyperparameters), as the checker (and docs_gen, and
# tests/test_training_options.py) look them up
OPTIMIZERS: dict[str, dict[str, Attr]] = {kind: declare(d.lr, *d.options) for kind, d in OPTIMIZER_DEFS.items()}


# ---- the result ----------------------------------------------------------------
class _Options:
    """A kind and its options (every option the kind declares, defaults filled), read as attributes:
    `cfg.optimizer.lr`, `cfg.schedule.warmup`."""

    def __getattr__(self, key: str):
        options = self.__dict__.get("options") or {}
        if key in options:
            return options[key]
        raise AttributeError(f"{type(self).__name__} has no option {key!r}")

    def _fill(self, declared: Mapping[str, Attr]) -> None:
        unknown = set(self.options) - set(declared)
        if unknown:
            raise TypeError(f"{self} has no option {', '.join(sorted(unknown))}")
        object.__setattr__(self, "options", {**defaults(declared), **self.options})

    def record(self) -> dict[str, Any]:
        """One flat object, as settings.json records it: the kind, then its options."""
        first = next(iter(self.__dataclass_fields__))  # `name` of an optimizer, `kind` of a schedule
        return {first: getattr(self, first), **self.options}

    def with_options(self, **changes):
        """A copy with these options changed; an option the kind does not declare is left out (a
        command line's --lr, a sweep's momentum on an optimizer without momentum)."""
        return replace(self, options={**self.options, **{k: v for k, v in changes.items() if k in self.options}})


@dataclass(frozen=True)
class Optimizer(_Options):
    name: str = "sgd"  # a kind of cnndsl/ops/training/optimizers.py (OPTIMIZERS)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self._fill(OPTIMIZERS[self.name])

    def hyper(self) -> dict:
        """The options its kind declares, as the optimizer's keyword arguments."""
        return dict(self.options)


@dataclass(frozen=True)
class Schedule(_Options):
    kind: str = "constant"  # a kind of cnndsl/train/schedule.py (SCHEDULES)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self._fill(SCHEDULES[self.kind])


@dataclass(frozen=True)
class Loss:
    head: str
    kind: str  # cross_entropy | pixel_cross_entropy | mse | smooth_l1 | yolo
    weight: float = 1.0
    # the loss op's own options as written (yolo: noobj, coord, boxes): its attrs besides head and weight
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Metric:
    head: str
    kind: str


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Augmentation:
    kind: str  # a step of cnndsl/augment/ops.py (AUGMENTATIONS)
    p: float
    params: dict[str, Any] = field(default_factory=dict)  # every option of the kind, defaults filled

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


# The plain settings' options (the kinds above declare theirs beside their implementations).
SETTING_OPTIONS = {
    "epochs": Attr("epochs", "int", 10, "passes over the training set", minimum=1, maximum=1_000_000),
    "batch": Attr("batch", "int", 32, "samples per step", minimum=1, maximum=1_000_000),
    "seed": Attr("seed", "int", 0, "seed of every random choice", minimum=0, maximum=2**32 - 1),
    "dataset": Attr("dataset", "text", REQUIRED, positional=True),
    "classes": Attr("classes", "ints", None, "the labels to keep, renumbered 0, 1, ... in the order listed",
                    minimum=0),
    "mean": Attr("mean", "floats", REQUIRED, "subtracted per channel"),
    "std": Attr("std", "floats", REQUIRED, "divides per channel", above=0),
    "stats": Attr("stats", "bool", True, "frozen batchnorm layers keep their running statistics"),
    "lr_mult": Attr("lr_mult", "float", REQUIRED, "learning-rate factor of a layer", minimum=0),
    "path": Attr("path", "text", REQUIRED, "a .safetensors weights file", positional=True),
    "head": Attr("head", "name", REQUIRED, positional=True),
}


@dataclass(frozen=True)
class TrainingConfig:
    dataset: str | None = None  # a dataset name (`digits`) or a path ("data/shapes")
    # `dataset digits classes=[5, 6, 7, 8, 9]`: keep these labels only, renumbered 0, 1, ... in this order
    dataset_classes: tuple[int, ...] | None = None
    epochs: int = SETTING_OPTIONS["epochs"].default
    batch: int = SETTING_OPTIONS["batch"].default
    seed: int = SETTING_OPTIONS["seed"].default
    optimizer: Optimizer = field(default_factory=Optimizer)
    schedule: Schedule = field(default_factory=Schedule)
    losses: tuple[Loss, ...] = ()
    metrics: tuple[Metric, ...] = ()
    normalize: Normalize | None = None
    augment: tuple[Augmentation, ...] = ()
    freeze: tuple[str, ...] = ()  # layer names or instance prefixes, as written
    freeze_stats: bool = SETTING_OPTIONS["stats"].default  # frozen batchnorm layers also keep their statistics
    lr_mult: dict[str, float] = field(default_factory=dict)  # layer name or prefix -> learning-rate factor
    # transfer learning: `init from "weights.safetensors"` (by layer name and shape), `reinit LAYER...`
    init_from: str | None = None  # a weights file, as written (resolved by cnndsl.tasks.transfer)
    reinit: tuple[str, ...] = ()  # layers initialized fresh even when the init file has their tensors
    freeze_up_to: tuple[str, ...] = ()  # the `freeze up_to X` boundaries, as written (already in `freeze`)
    profile: str | None = None  # the profile applied on top of `train`, if any
    early_stopping: EarlyStopping | None = None  # `early_stopping metric=... patience=N`
    checkpoint_best: str | None = None  # `checkpoint best=METRIC`: best.safetensors beside weights.safetensors
    spans: dict[str, Span] = field(default_factory=dict, compare=False)  # setting -> where it is written

    def frozen_nodes(self, graph: Graph) -> list[str]:
        """Node names selected by `freeze` (a name selects the node and every node under `name.`)."""
        return select_nodes(graph, self.freeze)

    def lr_factor(self, graph: Graph, node: str) -> float:
        """The learning-rate multiplier of a node (the longest matching lr_mult name wins)."""
        best, factor = -1, 1.0
        for name, f in self.lr_mult.items():
            if _matches(graph, name, node) and len(name) > best:
                best, factor = len(name), f
        return factor

    def lr_mults(self, graph: Graph) -> dict[str, float]:
        """The learning-rate factor of every layer with parameters whose factor is not 1 (lr_factor:
        the longest matching lr_mult name wins): what the optimizer step's `lr_mult` attribute
        carries before `freeze` sets the frozen layers' to 0 (Model, `cnndsl compile --train`)."""
        factors = ((n, self.lr_factor(graph, n)) for n in graph.topo_order() if graph.node(n).params)
        return {n: f for n, f in factors if f != 1.0}


def _matches(graph: Graph, name: str, node: str) -> bool:
    target = graph.heads.get(name, name)
    return node == target or node.startswith(name + ".")


def select_nodes(graph: Graph, names) -> list[str]:
    return [n for n in graph.topo_order() if any(_matches(graph, name, n) for name in names)]


# ---- what the settings look up ---------------------------------------------------------
def _desc(v: Any) -> str:
    return f"'{v}'" if isinstance(v, str) else show(v)


# Rules that depend on the input (channels, crop size) and between options (scale min <= max) live
# in cnndsl.augment (Augmentation.validate / Pipeline.problems); the checker maps them to spans.
FLIPS = ("hflip", "vflip")

# Looked up, not declared here: each loss is an op whose OpDef declares its head rank and options
# (cnndsl/ops/training/losses.py, yolo_loss.py), each metric a MetricDef (cnndsl/tasks/metric_kinds.py).
LOSSES: dict[str, OpDef] = ops_of("loss")
HEAD_OF_RANK = {1: "a vector of class scores", 3: "a KxHxW map"}  # how messages name a head of a rank


def loss_options(kind: str) -> dict[str, Attr]:
    """The options `loss HEAD KIND` takes: the loss op's attrs but its head (weight first). yolo's
    `boxes` defaults to what the network says (TrainingBuilder.yolo_layout), so None here."""
    op = get_op(kind)
    attrs = [a for a in op.attrs if a.name != "head"] if op is not None else []
    return declare(*(replace(a, default=None) if (kind, a.name) == ("yolo", "boxes") else a for a in attrs))


SETTINGS: dict[str, str] = {  # setting -> how it is written (for did-you-mean and docs)
    "dataset": "dataset NAME | dataset \"path\" [classes=[a, b, ...]]",
    "epochs": "epochs N",
    "batch": "batch N",
    "seed": "seed N",
    "optimizer": f"optimizer {'|'.join(OPTIMIZERS)} key=value...",
    "schedule": f"schedule {'|'.join(SCHEDULES)} key=value...",
    "loss": "loss HEAD KIND [weight=W] [yolo: noobj=N coord=C boxes=B]",
    "metric": "metric HEAD KIND...",
    "normalize": "normalize mean=M std=S",
    "augment": "augment { ... }",
    "freeze": "freeze LAYER... | freeze up_to LAYER [stats=false]",
    "lr_mult": "lr_mult LAYER=FACTOR...",
    "init": "init from \"weights.safetensors\"",
    "reinit": "reinit LAYER...",
    "early_stopping": "early_stopping metric=NAME patience=N [min_delta=D]",
    "checkpoint": "checkpoint best=METRIC",
}


class _Fail(Exception):
    pass


# ---- building --------------------------------------------------------------------
class TrainingBuilder:
    """Validates settings against the schema and the graph; one instance per program."""

    def __init__(self, graph: Graph | None, params: dict[str, Any], diagnostics: Diagnostics,
                 failed_heads: set[str] = frozenset()):
        self.graph = graph
        self.params = params
        self.diags = diagnostics
        self.failed_heads = set(failed_heads)

    def error(self, message: str, span: Span | None, help: str | None = None, code: str = "training",
              notes=()) -> None:
        for d in self.diags.items:  # settings shared by several profiles are checked once per profile
            if d.message == message and d.span == span:
                return
        self.diags.add(Diagnostic("error", message, span, help=help, notes=list(notes), code=code))

    # -- merging ------------------------------------------------------------------
    @staticmethod
    def _key(s: ast.Setting):
        if s.name in ("loss", "metric") and s.args and s.args[0].key is None and isinstance(s.args[0].value, ast.Name):
            return (s.name, s.args[0].value.name)
        return (s.name,)

    def merge(self, base: list[ast.Setting], override: list[ast.Setting]) -> list[ast.Setting]:
        keys = {self._key(s) for s in override}
        return [s for s in base if self._key(s) not in keys] + list(override)

    # -- one config ------------------------------------------------------------------
    def build(self, settings: list[ast.Setting], profile: str | None = None) -> TrainingConfig:
        cfg: dict[str, Any] = {"spans": {}}
        seen: dict[Any, Span] = {}
        losses: list[Loss] = []
        metrics: list[Metric] = []
        lr_mult: dict[str, float] = {}
        self._augment_lines: list[ast.Setting] = []
        for s in settings:
            key = self._key(s) if s.name in ("loss", "metric") else (s.name,)
            if s.name in SETTINGS and s.name not in ("metric", "lr_mult") and key in seen:
                self.error(f"{' '.join(key)} is set twice", s.span, notes=[(seen[key], "first set here")],
                           code="duplicate-setting")
                continue
            seen.setdefault(key, s.span)
            try:
                self.setting(s, cfg, losses, metrics, lr_mult)
            except _Fail:
                pass
        self.check_flips(cfg)
        if not losses and self.graph is not None and self.graph.heads:
            head, node = next(iter(self.graph.heads.items()))
            t = self.graph.node(node).type if node in self.graph else None
            kind = "pixel_cross_entropy" if t is not None and len(t.shape) == 3 else "cross_entropy"
            losses.append(Loss(head, kind))
        self.check_watched(cfg, metrics, losses)
        self.check_double_softmax(losses, cfg["spans"])
        cfg["losses"] = tuple(losses)
        cfg["metrics"] = tuple(metrics)
        cfg["lr_mult"] = lr_mult
        cfg["profile"] = profile
        return TrainingConfig(**cfg)

    def setting(self, s: ast.Setting, cfg, losses, metrics, lr_mult) -> None:
        name = s.name
        if name not in SETTINGS:
            hint = did_you_mean(name, list(SETTINGS) + list(AUGMENTATIONS))
            if hint and any(a in hint for a in AUGMENTATIONS) and not any(x in hint for x in SETTINGS):
                hint = f"'{name}' looks like an augmentation: put it inside augment {{ ... }}"
            self.error(f"unknown training setting '{name}'", s.name_span,
                       help=hint or f"settings: {', '.join(SETTINGS)}", code="unknown-setting")
            raise _Fail
        if s.children is not None and name != "augment":
            self.error(f"{name} takes no {{ ... }} block", s.span, code="bad-setting")
            raise _Fail
        cfg["spans"][name if name not in ("loss", "metric") else f"{name}:{self._head_name(s)}"] = s.span
        if name == "dataset":
            (v,), opts = self.values(s, [SETTING_OPTIONS["dataset"]], {"classes": SETTING_OPTIONS["classes"]})
            cfg["dataset"] = v
            if "classes" in opts:
                cfg["dataset_classes"] = opts["classes"]
        elif name in ("epochs", "batch", "seed"):
            (v,), _ = self.values(s, [replace(SETTING_OPTIONS[name], default=REQUIRED, positional=True)], {})
            cfg[name] = v
        elif name == "optimizer":
            kind, opts = self.kind_and_options(s, "optimizer", OPTIMIZERS)
            cfg["optimizer"] = Optimizer(kind, opts)
            try:  # what no single option's range says (nesterov needs a momentum): the optimizer's own check
                step_attrs(kind, **{k: v for k, v in opts.items() if k != "lr"})
            except AttrError as e:
                self.error(f"optimizer {kind}: {e}", s.span, code="bad-setting")
                raise _Fail from None
        elif name == "schedule":
            kind, opts = self.kind_and_options(s, "schedule", SCHEDULES)
            cfg["schedule"] = Schedule(kind, opts)
        elif name == "loss":
            losses.append(self.loss(s))
        elif name == "metric":
            self.metric(s, metrics)
        elif name == "normalize":
            _, opts = self.values(s, [], {k: SETTING_OPTIONS[k] for k in ("mean", "std")})
            self.check_channels(s, opts)
            cfg["normalize"] = Normalize(opts["mean"], opts["std"])
        elif name == "augment":
            cfg["augment"] = self.augment(s)
        elif name == "freeze":
            self.freeze(s, cfg)
        elif name == "lr_mult":
            self.lr_mult(s, lr_mult)
        elif name == "init":
            self.init_from(s, cfg)
        elif name == "reinit":
            self.reinit(s, cfg)
        elif name == "early_stopping":
            _, opts = self.values(s, [], EARLY_STOPPING)
            cfg["early_stopping"] = EarlyStopping(**opts)
        elif name == "checkpoint":
            _, opts = self.values(s, [], CHECKPOINT)
            cfg["checkpoint_best"] = opts["best"]

    def loss(self, s: ast.Setting) -> Loss:
        """`loss HEAD KIND [options]`: the options are the loss op's attrs (weight, yolo's noobj...)."""
        kind_opt = Attr("kind", "enum", REQUIRED, choices=tuple(LOSSES), positional=True)
        written = s.args[1].value.name if (len(s.args) > 1 and s.args[1].key is None
                                           and isinstance(s.args[1].value, ast.Name)) else None
        options = loss_options(written if written in LOSSES else "cross_entropy")
        extra = [k for k in options if k != "weight"]
        (head, kind), opts = self.values(s, [SETTING_OPTIONS["head"], kind_opt], options,
                                         what=f"loss {written}" if extra else None)
        self.check_head(s, head, kind, LOSSES[kind].head_rank, "loss")
        if kind == "yolo":
            self.yolo_layout(s, head, opts)
        return Loss(head, kind, opts["weight"], tuple((k, opts[k]) for k in extra))

    def check_double_softmax(self, losses: list[Loss], spans: dict) -> None:
        """A head that ends in softmax, trained with a cross-entropy loss (which applies its own
        softmax): the loss then sees probabilities as scores (a double softmax), a warning."""
        if self.graph is None:
            return
        for loss in losses:
            if loss.kind not in ("cross_entropy", "pixel_cross_entropy") or loss.head not in self.graph.heads:
                continue
            node_name = self.graph.heads[loss.head]
            if node_name not in self.graph:
                continue
            node = self.graph.node(node_name)
            channels = node.op == "softmax_axis" and node.attrs.get("axis", "channels") == "channels"
            if node.op != "softmax" and not channels:
                continue
            message = (f"head '{loss.head}' ends in a softmax, and its {loss.kind} loss applies softmax itself: "
                       "the loss would see probabilities as scores (a double softmax), which shrinks the gradients "
                       "and stalls training")
            if any(d.message == message for d in self.diags.items):
                continue  # once, though several profiles share the loss
            where = spans.get(f"loss:{loss.head}")
            self.diags.add(Diagnostic(
                "warning", message, node.span, help="remove the softmax: the loss takes raw scores (logits), and "
                "`predict_proba` / `cnndsl predict` apply the softmax for you",
                notes=[(where, "the loss is declared here")] if where else [], code="double-softmax"))

    def check_watched(self, cfg: dict, metrics: list[Metric], losses: list[Loss]) -> None:
        """early_stopping metric=, checkpoint best= and schedule plateau metric= name a value the run records."""
        names = watched_names(metrics, losses)
        plateau = cfg.get("schedule") if cfg.get("schedule") is not None and cfg["schedule"].kind == "plateau" else None
        for setting, value in (("early_stopping", cfg.get("early_stopping") and cfg["early_stopping"].metric),
                               ("checkpoint", cfg.get("checkpoint_best")),
                               ("schedule", plateau and plateau.metric)):
            if value is None or value in names:
                continue
            if setting == "schedule":
                hint = did_you_mean(value, names)
                self.error(f"schedule plateau metric={value} watches a value this run does not record",
                           cfg["spans"][setting], help=(hint + "; " if hint else "") + f"it records: "
                           f"{', '.join(names)}", code="unknown-metric")
                cfg.pop("schedule")
                continue
            option = "metric" if setting == "early_stopping" else "best"
            hint = did_you_mean(value, names)
            self.error(f"{setting} {option}={value} watches a value this run does not record", cfg["spans"][setting],
                       help=(hint + "; " if hint else "") + f"it records: {', '.join(names)} (declare a metric "
                            "with `metric HEAD KIND` to watch it)", code="unknown-metric")
            cfg.pop("early_stopping" if setting == "early_stopping" else "checkpoint_best")

    @staticmethod
    def _head_name(s: ast.Setting) -> str:
        if s.args and isinstance(s.args[0].value, ast.Name):
            return s.args[0].value.name
        return "?"

    # -- values -------------------------------------------------------------------
    def values(self, s: ast.Setting, positional: list[Attr], options: Mapping[str, Attr], what: str | None = None):
        """(positional values, {option: value}) of a setting, checked; raises _Fail after reporting.

        A positional value may also be written as key=value (`rotate degrees=10`)."""
        what = what or s.name
        ev = Evaluator(self.params)
        by_name = {o.name: o for o in positional}
        given: dict[str, Any] = {}
        ok = True
        slot = 0

        def free_slot() -> Attr | None:
            """The next positional value not given yet."""
            nonlocal slot
            while slot < len(positional) and positional[slot].name in given:
                slot += 1
            return positional[slot] if slot < len(positional) else None

        for a in s.args:
            try:
                v = ev.value(a.value)
            except EvalError as e:
                if e.diagnostic is not None:
                    self.error(e.diagnostic.message, e.diagnostic.span, e.diagnostic.help, e.diagnostic.code)
                ok = False
                # the value was written, if wrong: not also "needs epochs" (`epochs 99999999999999999999999`)
                opt = free_slot() if a.key is None else options.get(a.key) or by_name.get(a.key)
                if opt is not None:
                    given[opt.name] = None
                continue
            if a.key is None:
                opt = free_slot()
                if opt is None:
                    pos_names = ", ".join(o.name for o in positional)
                    opt_names = list(options)
                    hint = did_you_mean(v, opt_names) if isinstance(v, str) else None
                    n = len(positional)
                    self.error(f"{what} takes {n or 'no'} value{'s' if n != 1 else ''} without a name"
                               f"{f' ({pos_names})' if pos_names else ''}; {_desc(v)} is one too many",
                               a.span, help=hint or (f"write options as key=value: {', '.join(opt_names)}"
                                                     if opt_names else None), code="too-many-values")
                    ok = False
                    continue
            else:
                opt = options.get(a.key) or by_name.get(a.key)
                if opt is None:
                    names = list(options) + list(by_name)
                    hint = did_you_mean(a.key, names)
                    self.error(f"'{a.key}' is not an option of {what}", a.key_span or a.span,
                               help=hint or (f"{what} options: {', '.join(names)}" if names
                                             else f"{what} has no options"), code="unknown-option")
                    ok = False
                    continue
                if opt.name in given:
                    self.error(f"{opt.name} is given twice", a.span, code="duplicate-option")
                    ok = False
                    continue
            try:
                given[opt.name] = opt.coerce(v)
            except ValueError as e:
                self.error(str(e), a.span, code="bad-value")
                given[opt.name] = None
                ok = False
        for opt in list(positional) + list(options.values()):
            if opt.name in given:
                continue
            if opt.default is REQUIRED:
                if opt.positional:
                    self.error(f"{what} needs {opt.name}" + (f" ({opt.doc})" if opt.doc else ""), s.span,
                               help=f"write `{SETTINGS[s.name]}`" if s.name in SETTINGS else None,
                               code="missing-option")
                else:
                    self.error(f"{what} needs {opt.name}=...", s.span, code="missing-option")
                ok = False
            else:
                given[opt.name] = opt.default
        if not ok:
            raise _Fail
        return [given[o.name] for o in positional], {k: given[k] for k in options}

    def kind_and_options(self, s: ast.Setting, what: str, table: Mapping[str, Mapping[str, Attr]]):
        if not s.args or s.args[0].key is not None:
            self.error(f"{what} needs a kind: {' | '.join(table)}", s.span,
                       help=f"for example `{what} {next(iter(table))}`", code="missing-option")
            raise _Fail
        first = s.args[0]
        try:
            kind = Evaluator(self.params).value(first.value)
        except EvalError as e:
            if e.diagnostic is not None:
                self.error(e.diagnostic.message, e.diagnostic.span, code=e.diagnostic.code)
            raise _Fail from None
        if kind not in table:
            hint = did_you_mean(str(kind), table)
            self.error(f"unknown {what} {_desc(kind)}", first.span, help=hint or f"{what}s: {', '.join(table)}",
                       code="unknown-kind")
            raise _Fail
        sub = ast.Setting(s.name, s.args[1:], s.span, s.name_span)
        _, values = self.values(sub, [], table[kind], what=f"{what} {kind}")
        return kind, values

    # -- checks against the graph ------------------------------------------------------
    def head_type(self, head: str):
        if self.graph is None or head not in self.graph.heads:
            return None
        node = self.graph.heads[head]
        return self.graph.node(node).type if node in self.graph else None

    def check_head(self, s: ast.Setting, head: str, kind: str, rank: int | None, what: str) -> None:
        if self.graph is None:
            return
        span = s.args[0].span if s.args else s.span
        if head not in self.graph.heads:
            if head in self.failed_heads:
                raise _Fail
            hint = did_you_mean(head, self.graph.heads)
            heads = ", ".join(self.graph.heads) or "none"
            in_graph = head in self.graph
            self.error(f"{what} refers to '{head}', which is not an output of network '{self.graph.name}'", span,
                       help=hint or (f"declare it with `-> {head}` on its layer" if in_graph else f"outputs: {heads}"),
                       code="unknown-head")
            raise _Fail
        t = self.head_type(head)
        if rank is not None and t is not None and len(t.shape) != rank:
            alt = [k for k, d in (LOSSES if what == "loss" else METRICS).items() if d.head_rank in (len(t.shape), None)]
            self.error(f"{what} {kind} needs {HEAD_OF_RANK[rank]}, but head '{head}' is {t}", s.span,
                       help=f"for a {len(t.shape)}-D head use {' or '.join(alt)}" if alt else None,
                       code=f"{what}-head")
            raise _Fail
        exact = METRICS[kind].head_shape if what == "metric" else None
        if exact is not None and t is not None and t.shape != exact:
            self.error(f"metric {kind} needs a head of {METRICS[kind].head_what}, but head '{head}' is {t}", s.span,
                       code="metric-head")
            raise _Fail

    def yolo_layout(self, s: ast.Setting, head: str, opts: dict) -> None:
        """Fill yolo's `boxes` (unless written: the network parameter `boxes`, else the head's
        channels over `classes` + 5, else 1) and check the head is (classes + 5) * boxes wide."""
        t = self.head_type(head)
        channels = t.shape[0] if t is not None and len(t.shape) == 3 else None
        if opts.get("boxes") is None:
            boxes, classes = self.params.get("boxes"), self.params.get("classes")
            if not isinstance(boxes, int) or isinstance(boxes, bool):
                boxes = 1
                if channels and isinstance(classes, int) and classes > 0 and channels % (classes + 5) == 0:
                    boxes = channels // (classes + 5)
            opts["boxes"] = boxes
        if channels is not None and (channels % opts["boxes"] or channels // opts["boxes"] < 6):
            self.error(f"loss yolo: head '{head}' has {channels} channels, which is not (classes + 5) * boxes "
                       f"with boxes={opts['boxes']} and at least one class", s.span,
                       help="make the head `conv (classes + 5) * boxes kernel=1` or set boxes=B on the loss",
                       code="loss-head")
            raise _Fail

    def metric(self, s: ast.Setting, metrics: list[Metric]) -> None:
        if len(s.args) < 2:
            self.error("metric needs a head and a kind", s.span, help="for example `metric logits accuracy`",
                       code="missing-option")
            raise _Fail
        (head,), _ = self.values(ast.Setting(s.name, s.args[:1], s.span, s.name_span), [SETTING_OPTIONS["head"]], {})
        kind_opt = Attr("metric", "enum", REQUIRED, choices=tuple(METRICS), positional=True)
        bad = False
        for a in s.args[1:]:
            try:
                (kind,), _ = self.values(ast.Setting(s.name, [a], s.span, s.name_span), [kind_opt], {})
                self.check_head(s, head, kind, METRICS[kind].head_rank, "metric")
            except _Fail:
                bad = True
                continue
            if any(m.head == head and m.kind == kind for m in metrics):
                self.error(f"metric {kind} of '{head}' is given twice", a.span, code="duplicate-setting")
                continue
            metrics.append(Metric(head, kind))
        if bad:
            raise _Fail

    def image_input(self):
        if self.graph is None:
            return None, None
        for name in self.graph.inputs:
            t = self.graph.node(name).type
            if t is not None and len(t.shape) == 3:
                return name, t
        return None, None

    def check_channels(self, s: ast.Setting, opts: dict) -> None:
        name, t = self.image_input()
        if t is None:
            return
        c = t.shape[0]
        for key in ("mean", "std"):
            n = len(opts[key])
            if n != c:
                arg = next((a for a in s.args if a.key == key), None)
                example = "[" + ", ".join(["0.5"] * c) + "]" if c > 1 else "0.5"
                self.error(f"normalize {key} has {n} value{'s' if n != 1 else ''}, but input '{name}' has "
                           f"{c} channel{'s' if c != 1 else ''} ({t})", arg.span if arg else s.span,
                           help=f"one value per channel, e.g. {key}={example}", code="normalize-channels")
                raise _Fail

    def augment(self, s: ast.Setting) -> tuple[Augmentation, ...]:
        if s.args:
            self.error("augment takes its steps in a block: augment { hflip p=0.5 }", s.args[0].span,
                       code="bad-setting")
            raise _Fail
        out: list[Augmentation] = []
        lines: list[ast.Setting] = []
        failed = False
        for a in s.children or []:
            try:
                out.append(self.augmentation(a))
                lines.append(a)
            except _Fail:
                failed = True
        try:
            self.check_pipeline(out, lines)
        except _Fail:
            failed = True
        if failed:
            raise _Fail
        self._augment_lines = lines
        return tuple(out)

    def augmentation(self, a: ast.Setting) -> Augmentation:
        """One augment line checked against the schema (names, kinds, ranges of single options)."""
        step = AUGMENTATIONS.get(a.name)
        if step is None:
            hint = did_you_mean(a.name, AUGMENTATIONS)
            self.error(f"unknown augmentation '{a.name}'", a.name_span,
                       help=hint or f"augmentations: {', '.join(AUGMENTATIONS)}", code="unknown-augmentation")
            raise _Fail
        if a.children is not None:
            self.error(f"{a.name} takes no {{ ... }} block", a.span, code="bad-setting")
            raise _Fail
        spec = step.options.values()
        first = ([o for o in spec if o.positional] or [o for o in spec if o.name == "p"])[0]
        pos, opts = self.values(a, [first], {o.name: o for o in spec if o is not first})
        opts[first.name] = pos[0]
        _, t = self.image_input()
        if a.name == "random_crop" and t is not None and opts["size"] is None:
            opts["size"] = tuple(t.shape[1:])
        p = opts.pop("p")
        return Augmentation(a.name, p, opts)

    def check_pipeline(self, augs: list[Augmentation], lines: list[ast.Setting]) -> None:
        """The rules of cnndsl.augment (channels, crop against the padded input, scale min <= max) on
        the network's image input, each problem reported on its augment line; then the augmented
        images must have the input's shape (a crop of another size would not fit the network)."""
        name, t = self.image_input()
        if not augs or t is None:
            return
        from cnndsl.augment import Pipeline  # imports Numba: only for files that augment

        shape = tuple(int(d) for d in t.shape)
        bad = False
        for aug, line in zip(augs, lines):
            pipe = Pipeline.from_config([aug])
            problems = pipe.problems(shape)
            for _, msg in problems:
                channels = "channel" in msg
                self.error(msg, _problem_span(line, aug, msg), help=_problem_help(aug, msg, t),
                           code="augment-channels" if channels else "augment-range")
                bad = True
            if problems:
                continue
            out = pipe.output_shape(shape)
            if out != shape:
                hw = shape[1:]
                size = out[1:]
                arg = next((x for x in line.args if x.key in (None, "size")), None)
                self.error(f"random_crop size {show(size)} does not match the {show(hw)} input of the network",
                           arg.span if arg else line.span,
                           help=f"size={show(hw)} (or leave size out: it defaults to the input size)",
                           code="augment-range")
                bad = True
        if bad:
            raise _Fail

    def check_flips(self, cfg: dict) -> None:
        """Warn about flips on data whose labels a mirror image changes: the digits (the bundled set,
        also the default when no dataset is named and the input is 1x28x28) and MNIST-like paths."""
        lines = getattr(self, "_augment_lines", None)
        if not lines or not any(a.name in FLIPS for a in lines):
            return
        dataset = cfg.get("dataset")
        _, t = self.image_input()
        if dataset is None:
            sensitive = t is not None and tuple(t.shape) == (1, 28, 28)
        else:
            low = str(dataset).replace("\\", "/").rsplit("/", 1)[-1].lower()
            sensitive = dataset == "digits" or (("mnist" in low or "digit" in low) and "fashion" not in low)
        if not sensitive:
            return
        what = f"'{dataset}'" if dataset is not None else "digits (the default dataset)"
        for a in lines:
            if a.name not in FLIPS:
                continue
            mirror = "left-right" if a.name == "hflip" else "upside down"
            self.warn(f"{a.name} mirrors the images of {what} {mirror}, and a mirrored digit is not the same "
                      f"digit", a.span, help=f"remove {a.name}: flips suit data whose labels survive a mirror "
                      "image (objects, scenes, clothes); for digits use small rotate, translate and scale steps",
                      code="augment-flip-label")

    def warn(self, message: str, span: Span | None, help: str | None = None, code: str = "training") -> None:
        for d in self.diags.items:  # settings shared by several profiles are checked once per profile
            if d.message == message and d.span == span:
                return
        self.diags.add(Diagnostic("warning", message, span, help=help, code=code))

    def names(self, s: ast.Setting, names: list[tuple[str, Span]]) -> None:
        if self.graph is None:
            return
        nodes = list(self.graph.nx.nodes)
        prefixes = {n.rsplit(".", k)[0] for n in nodes for k in range(1, n.count(".") + 1)}
        candidates = set(nodes) | prefixes | set(self.graph.heads)
        bad = False
        for name, span in names:
            if name not in candidates:
                hint = did_you_mean(name, candidates)
                self.error(f"{s.name} refers to '{name}', which is not a layer of network '{self.graph.name}'",
                           span, help=hint, code="unknown-layer")
                bad = True
        if bad:
            raise _Fail

    def freeze(self, s: ast.Setting, cfg: dict) -> None:
        names: list[tuple[str, Span]] = []
        up_to: list[tuple[str, Span]] = []
        stats = True
        bad = False
        after_up_to = False
        for a in s.args:
            if a.key is None:
                if isinstance(a.value, ast.Name) and a.value.name == "up_to" and not after_up_to:
                    after_up_to = True
                    continue
                if isinstance(a.value, ast.Name):
                    (up_to if after_up_to else names).append((a.value.name, a.value.span))
                    after_up_to = False
                else:
                    self.error("freeze takes layer names", a.span, help="for example `freeze c1 c2 stage1`",
                               code="bad-value")
                    bad = True
            elif a.key == "stats":
                try:
                    stats = SETTING_OPTIONS["stats"].coerce(Evaluator(self.params).value(a.value))
                except (ValueError, EvalError) as e:
                    if str(e):
                        self.error(str(e), a.span, code="bad-value")
                    bad = True
            else:
                hint = did_you_mean(a.key, ["stats"])
                self.error(f"'{a.key}' is not an option of freeze", a.key_span or a.span,
                           help=hint or "freeze options: stats", code="unknown-option")
                bad = True
        if after_up_to and not bad:
            self.error("freeze up_to needs a layer name after it", s.span,
                       help="for example `freeze up_to conv2` (conv2 and every layer before it)",
                       code="missing-option")
            bad = True
        if not names and not up_to and not bad:
            self.error("freeze needs at least one layer name", s.span, help="for example `freeze c1 c2`",
                       code="missing-option")
            bad = True
        if bad:
            raise _Fail
        self.names(s, names + up_to)
        cfg["freeze"] = tuple(n for n, _ in names) + self.layers_up_to([n for n, _ in up_to])
        cfg["freeze_up_to"] = tuple(n for n, _ in up_to)
        cfg["freeze_stats"] = stats

    def layers_up_to(self, boundaries: list[str]) -> tuple[str, ...]:
        """`freeze up_to X`: X (a layer, head or block instance) and every layer that feeds it, i.e. the
        layers with parameters among X's ancestors, in topological order."""
        if not boundaries or self.graph is None:
            return ()
        import networkx as nx

        chosen: set[str] = set()
        for b in boundaries:
            roots = select_nodes(self.graph, (b,))
            chosen.update(roots)
            for r in roots:
                chosen.update(nx.ancestors(self.graph.nx, r))
        return tuple(n for n in self.graph.topo_order() if n in chosen and self.graph.node(n).params)

    def init_from(self, s: ast.Setting, cfg: dict) -> None:
        """`init from "runs/pretrain/weights.safetensors"` (the word `from` may be left out)."""
        args = list(s.args)
        if args and args[0].key is None and isinstance(args[0].value, ast.Name) and args[0].value.name == "from":
            args = args[1:]
        sub = ast.Setting(s.name, args, s.span, s.name_span)
        (path,), _ = self.values(sub, [SETTING_OPTIONS["path"]], {}, what="init from")
        if not path:
            self.error("init from needs a weights file", s.span, help='for example `init from "runs/pretrain/'
                       'weights.safetensors"`', code="missing-option")
            raise _Fail
        cfg["init_from"] = path

    def reinit(self, s: ast.Setting, cfg: dict) -> None:
        """`reinit head`: initialize these layers fresh although the init file has tensors for them."""
        names: list[tuple[str, Span]] = []
        for a in s.args:
            if a.key is None and isinstance(a.value, ast.Name):
                names.append((a.value.name, a.value.span))
            else:
                self.error("reinit takes layer names", a.span, help="for example `reinit logits`",
                           code="bad-value")
                raise _Fail
        if not names:
            self.error("reinit needs at least one layer name", s.span, help="for example `reinit logits`",
                       code="missing-option")
            raise _Fail
        self.names(s, names)
        cfg["reinit"] = tuple(n for n, _ in names)

    def lr_mult(self, s: ast.Setting, lr_mult: dict[str, float]) -> None:
        names: list[tuple[str, Span]] = []
        values: dict[str, float] = {}
        bad = False
        opt = SETTING_OPTIONS["lr_mult"]
        for a in s.args:
            if a.key is None:
                self.error("lr_mult takes LAYER=FACTOR pairs", a.span, help="for example `lr_mult c1=0.1 c2=0`",
                           code="bad-value")
                bad = True
                continue
            try:
                values[a.key] = opt.coerce(Evaluator(self.params).value(a.value))
                names.append((a.key, a.key_span or a.span))
            except (ValueError, EvalError) as e:
                if str(e):
                    self.error(str(e), a.span, code="bad-value")
                bad = True
        if not s.args:
            self.error("lr_mult needs LAYER=FACTOR pairs", s.span, help="for example `lr_mult c1=0.1`",
                       code="missing-option")
            bad = True
        if bad:
            raise _Fail
        self.names(s, names)
        lr_mult.update(values)


def _problem_span(line: ast.Setting, aug: Augmentation, msg: str) -> Span:
    """The option a problem sentence of cnndsl.augment names (`color_jitter hue needs ...`), else the line."""
    for key in aug.params:
        if msg.startswith(f"{aug.kind} {key} "):
            arg = next((x for x in line.args if x.key == key), None)
            if arg is None and key == "size":
                arg = next((x for x in line.args if x.key is None), None)
            if arg is not None:
                return arg.span
    return line.span


def _problem_help(aug: Augmentation, msg: str, t) -> str | None:
    c = t.shape[0]
    if aug.kind == "grayscale" and c == 1:
        return "grayscale does nothing on a one-channel image (it is grey already): remove it"
    if aug.kind == "grayscale":
        return "grayscale works on RGB (3-channel) images only"
    if aug.kind == "color_jitter" and "channel" in msg:
        return "saturation and hue need RGB: remove them (brightness and contrast work on any image)"
    if aug.kind == "random_crop" and "larger" in msg:
        return f"size must equal the network input {show(tuple(t.shape[1:]))} (or leave size out)"
    return None


def build_training(module: ast.Module, graph: Graph | None, params: dict[str, Any], diagnostics: Diagnostics,
                   profile: str | None = None, failed_heads: set[str] = frozenset()):
    """(the selected TrainingConfig or None, {profile name: TrainingConfig})."""
    b = TrainingBuilder(graph, params, diagnostics, failed_heads)
    if len(module.trains) > 1:
        for t in module.trains[1:]:
            b.error("the file has two train sections", t.span, notes=[(module.trains[0].span, "the first one")],
                    code="duplicate-train")
    base = module.trains[0].settings if module.trains else []
    profiles: dict[str, TrainingConfig] = {}
    seen: dict[str, ast.Profile] = {}
    for p in module.profiles:
        if p.name in seen:
            b.error(f"profile '{p.name}' is defined twice", p.name_span,
                    notes=[(seen[p.name].name_span, "first defined here")], code="duplicate-profile")
            continue
        seen[p.name] = p
        profiles[p.name] = b.build(b.merge(base, p.settings), p.name)
    selected = None
    if profile is not None:
        if profile not in profiles:
            hint = did_you_mean(profile, profiles)
            b.error(f"--profile {profile}: the file has no profile '{profile}'", Span("<command line>", 0, 0),
                    help=hint or (f"profiles: {', '.join(profiles)}" if profiles else "the file defines no profile"),
                    code="unknown-profile")
        else:
            selected = profiles[profile]
    elif module.trains:
        selected = b.build(base)
    return selected, profiles
