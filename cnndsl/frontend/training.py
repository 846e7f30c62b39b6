"""The training section: `train { ... }` and `profile NAME { ... }` -> a frozen TrainingConfig.

Each setting is one line shaped like a layer statement: a keyword, positional
values, key=value options. The schema below is the single source of truth for
the names, defaults, units and ranges; docs/language.md documents it.

A profile overrides settings of the train section: a setting written in the
profile replaces the same setting of `train` (for `loss` and `metric`, the
setting of the same head); `augment { ... }` replaces the whole augmentation list.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cnndsl.diagnostics import Diagnostic, Diagnostics, Span, did_you_mean
from cnndsl.frontend import ast
from cnndsl.frontend.values import EvalError, Evaluator, show
from cnndsl.ir.graph import Graph
from cnndsl.ops.registry import AttrError
from cnndsl.ops.training.optimizers import step_attrs

REQUIRED = object()


# ---- the result ----------------------------------------------------------------
@dataclass(frozen=True)
class Optimizer:
    name: str = "sgd"  # sgd | adam | adamw | rmsprop | lion (cnndsl/train/optim.py)
    lr: float = 0.01
    momentum: float = 0.0  # sgd, rmsprop
    nesterov: bool = False  # sgd
    beta1: float = 0.9  # adam, adamw, lion
    beta2: float = 0.999  # adam, adamw, lion
    eps: float = 1e-8  # adam, adamw, rmsprop
    weight_decay: float = 0.0
    alpha: float = 0.99  # rmsprop

    def hyper(self) -> dict:
        """The options its kind declares (OPTIMIZERS), as the optimizer's keyword arguments."""
        return {o.name: getattr(self, o.name) for o in OPTIMIZERS[self.name]}


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"  # constant | step | cosine | onecycle | plateau (cnndsl/train/schedule.py)
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: factor per decay
    min_lr: float = 0.0  # cosine: final learning rate; plateau: the floor
    warmup: float = 0.0  # epochs of linear warmup from 0 to lr (not onecycle)
    pct_start: float = 0.3  # onecycle: share of the run spent rising
    div_factor: float = 25.0  # onecycle: it starts at lr / div_factor
    final_div_factor: float = 1e4  # onecycle: it ends at lr / (div_factor * final_div_factor)
    factor: float = 0.1  # plateau: applied at each reduction
    patience: int = 10  # plateau: epochs without improvement before a reduction
    threshold: float = 1e-4  # plateau: relative improvement that counts
    metric: str = "loss"  # plateau: the held-out value watched


@dataclass(frozen=True)
class Loss:
    head: str
    kind: str  # cross_entropy | pixel_cross_entropy | mse | smooth_l1 | yolo
    weight: float = 1.0
    # the loss op's own options as written (yolo: noobj, coord, boxes); LOSS_OPTIONS lists them
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Metric:
    head: str
    kind: str


@dataclass(frozen=True)
class EarlyStopping:
    """`early_stopping metric=NAME patience=N [min_delta=D]`: stop when the held-out NAME has not
    improved by more than D for N epochs in a row (NAME as in metrics.json without `test_`)."""
    metric: str = "loss"
    patience: int = 5
    min_delta: float = 0.0


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Augmentation:
    kind: str  # grayscale | hflip | vflip | random_crop | color_jitter | rotate | translate | scale
    p: float
    params: dict[str, Any] = field(default_factory=dict)  # every option of the kind, defaults filled

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


@dataclass(frozen=True)
class TrainingConfig:
    dataset: str | None = None  # a dataset name (`digits`) or a path ("data/shapes")
    # `dataset digits classes=[5, 6, 7, 8, 9]`: keep these labels only, renumbered 0, 1, ... in this order
    dataset_classes: tuple[int, ...] | None = None
    epochs: int = 10
    batch: int = 32
    seed: int = 0
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    losses: tuple[Loss, ...] = ()
    metrics: tuple[Metric, ...] = ()
    normalize: Normalize | None = None
    augment: tuple[Augmentation, ...] = ()
    freeze: tuple[str, ...] = ()  # layer names or instance prefixes, as written
    freeze_stats: bool = True  # frozen batchnorm layers also keep their running statistics
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


def _matches(graph: Graph, name: str, node: str) -> bool:
    target = graph.heads.get(name, name)
    return node == target or node.startswith(name + ".")


def select_nodes(graph: Graph, names) -> list[str]:
    return [n for n in graph.topo_order() if any(_matches(graph, name, n) for name in names)]


# ---- the schema ---------------------------------------------------------------
@dataclass(frozen=True)
class Opt:
    """One value of a setting. kind: int | float | bool | word | text | floats | ints | pair."""

    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] = ()
    positional: bool = False

    def check(self, v: Any) -> Any:
        k = self.kind
        if k == "int":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                raise ValueError(f"{self.name} takes a whole number, got {_desc(v)}")
            v = int(v)
        elif k == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{self.name} takes a number, got {_desc(v)}")
            v = float(v)
        elif k == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"{self.name} takes true or false, got {_desc(v)}")
        elif k == "word":
            if not isinstance(v, str) or (self.choices and v not in self.choices):
                hint = did_you_mean(v, self.choices) if isinstance(v, str) else None
                msg = f"{self.name} takes one of {', '.join(self.choices)}, got {_desc(v)}" if self.choices \
                    else f"{self.name} takes a name, got {_desc(v)}"
                raise ValueError(msg + (f"; {hint}" if hint else ""))
        elif k == "text":
            if not isinstance(v, str):
                raise ValueError(f"{self.name} takes a name or a \"quoted path\", got {_desc(v)}")
        elif k == "floats":
            items = v if isinstance(v, tuple) else (v,)
            if not items or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in items):
                raise ValueError(f"{self.name} takes a number or a list [a, b, c], got {_desc(v)}")
            v = tuple(float(x) for x in items)
        elif k == "ints":
            items = v if isinstance(v, tuple) else (v,)
            if not items or any(isinstance(x, bool) or not isinstance(x, (int, float)) or float(x) != int(x)
                                for x in items):
                raise ValueError(f"{self.name} takes a whole number or a list [a, b, c], got {_desc(v)}")
            v = tuple(int(x) for x in items)
            if len(set(v)) != len(v):
                raise ValueError(f"{self.name} lists a value twice: {show(v)}")
        elif k == "pair":
            if isinstance(v, tuple) and len(v) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in v):
                pass
            elif isinstance(v, int) and not isinstance(v, bool):
                v = (v, v)
            else:
                raise ValueError(f"{self.name} takes a whole number or HxW, got {_desc(v)}")
        for x in (v if isinstance(v, tuple) else (v,)):
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                self._range(x)
        return v

    def _range(self, x: float) -> None:
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and x < self.minimum:
            raise ValueError(f"{self.name} must be at least {_num(self.minimum)}{unit}, got {_num(x)}")
        if self.maximum is not None and x > self.maximum:
            raise ValueError(f"{self.name} must be at most {_num(self.maximum)}{unit}, got {_num(x)}")
        if self.above is not None and x <= self.above:
            raise ValueError(f"{self.name} must be above {_num(self.above)}{unit}, got {_num(x)}")
        if self.below is not None and x >= self.below:
            raise ValueError(f"{self.name} must be below {_num(self.below)}{unit}, got {_num(x)}")


def _num(x: float) -> str:
    return show(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _desc(v: Any) -> str:
    return f"'{v}'" if isinstance(v, str) else show(v)


DATASET_CLASSES = Opt("classes", "ints", None, "the labels to keep, renumbered 0, 1, ... in the order listed",
                      minimum=0)

P = lambda default: Opt("p", "float", default, "probability of applying it to a sample", minimum=0, maximum=1)  # noqa: E731

OPTIMIZERS: dict[str, tuple[Opt, ...]] = {
    "sgd": (
        Opt("lr", "float", 0.01, "learning rate", above=0),
        Opt("momentum", "float", 0.0, "momentum factor", minimum=0, below=1),
        Opt("nesterov", "bool", False, "Nesterov momentum"),
        Opt("weight_decay", "float", 0.0, "L2 penalty added to the gradient", minimum=0),
    ),
    "adam": (
        Opt("lr", "float", 0.001, "learning rate", above=0),
        Opt("beta1", "float", 0.9, "decay of the first-moment average", minimum=0, below=1),
        Opt("beta2", "float", 0.999, "decay of the second-moment average", minimum=0, below=1),
        Opt("eps", "float", 1e-8, "added to the denominator", above=0),
        Opt("weight_decay", "float", 0.0, "L2 penalty added to the gradient", minimum=0),
    ),
    "adamw": (
        Opt("lr", "float", 0.001, "learning rate", above=0),
        Opt("beta1", "float", 0.9, "decay of the first-moment average", minimum=0, below=1),
        Opt("beta2", "float", 0.999, "decay of the second-moment average", minimum=0, below=1),
        Opt("eps", "float", 1e-8, "added to the denominator", above=0),
        Opt("weight_decay", "float", 0.01, "decoupled decay: weights shrink by lr * weight_decay per step",
            minimum=0),
    ),
    "rmsprop": (
        Opt("lr", "float", 0.01, "learning rate", above=0),
        Opt("alpha", "float", 0.99, "decay of the squared-gradient average", minimum=0, below=1),
        Opt("eps", "float", 1e-8, "added to the denominator", above=0),
        Opt("momentum", "float", 0.0, "momentum factor", minimum=0, below=1),
        Opt("weight_decay", "float", 0.0, "L2 penalty added to the gradient", minimum=0),
    ),
    "lion": (
        Opt("lr", "float", 0.0001, "learning rate (typically 3-10x smaller than AdamW's)", above=0),
        Opt("beta1", "float", 0.9, "interpolation of momentum and gradient for the update's sign",
            minimum=0, below=1),
        Opt("beta2", "float", 0.99, "decay of the momentum", minimum=0, below=1),
        Opt("weight_decay", "float", 0.0, "decoupled decay: weights shrink by lr * weight_decay per step",
            minimum=0),
    ),
}

WARMUP = Opt("warmup", "float", 0.0, "epochs of linear warmup from 0 to lr (may be fractional)", "epochs",
             minimum=0)
SCHEDULES: dict[str, tuple[Opt, ...]] = {
    "constant": (WARMUP,),
    "step": (Opt("step_size", "int", 10, "epochs between decays", "epochs", minimum=1),
             Opt("gamma", "float", 0.1, "factor applied to lr at each decay", above=0, maximum=1), WARMUP),
    "cosine": (Opt("min_lr", "float", 0.0, "learning rate at the last epoch", minimum=0), WARMUP),
    "onecycle": (Opt("pct_start", "float", 0.3, "share of the run spent rising to lr", above=0, below=1),
                 Opt("div_factor", "float", 25.0, "the run starts at lr / div_factor", minimum=1),
                 Opt("final_div_factor", "float", 1e4, "the run ends at lr / (div_factor * final_div_factor)",
                     minimum=1)),
    "plateau": (Opt("factor", "float", 0.1, "applied to lr at each reduction", above=0, below=1),
                Opt("patience", "int", 10, "epochs without improvement before a reduction", "epochs", minimum=0,
                    maximum=1_000_000),
                Opt("threshold", "float", 1e-4, "relative improvement of the best value that counts", minimum=0),
                Opt("metric", "word", "loss", "the held-out value watched: loss, or a metric of the `metric` "
                    "lines (accuracy, ...)"),
                Opt("min_lr", "float", 0.0, "the reductions stop there", minimum=0), WARMUP),
}

AUGMENTATIONS: dict[str, tuple[Opt, ...]] = {
    "grayscale": (P(0.5),),
    "hflip": (P(0.5),),
    "vflip": (P(0.5),),
    "random_crop": (
        Opt("size", "pair", None, "crop size, S or HxW; must equal the input's HxW (default: that size)",
            "pixels", minimum=1, positional=True),
        Opt("padding", "int", 0, "zeros added on each side before cropping", "pixels", minimum=0),
        P(1.0),
    ),
    "color_jitter": (
        # as torchvision: any value >= 0, the factor drawn from [max(0, 1-v), 1+v]
        Opt("brightness", "float", 0.0, "brightness factor drawn from [max(0, 1-b), 1+b]", minimum=0),
        Opt("contrast", "float", 0.0, "contrast factor drawn from [max(0, 1-c), 1+c]", minimum=0),
        Opt("saturation", "float", 0.0, "saturation factor drawn from [max(0, 1-s), 1+s] (RGB only)",
            minimum=0),
        Opt("hue", "float", 0.0, "hue shift drawn from [-h, h] (fraction of the colour wheel; RGB only)",
            minimum=0, maximum=0.5),
        P(1.0),
    ),
    "rotate": (
        Opt("degrees", "float", REQUIRED, "angle drawn from [-d, d]", "degrees", minimum=0, maximum=180,
            positional=True),
        Opt("fill", "float", 0.0, "value of the pixels rotated in from outside"),
        P(1.0),
    ),
    "translate": (
        Opt("fraction", "float", REQUIRED, "shift drawn from [-f, f] times the image size per axis",
            minimum=0, below=1, positional=True),
        Opt("fill", "float", 0.0, "value of the pixels shifted in from outside"),
        P(1.0),
    ),
    "scale": (
        Opt("min", "float", 0.9, "smallest zoom factor", above=0, maximum=10),
        Opt("max", "float", 1.1, "largest zoom factor", above=0, maximum=10),
        Opt("fill", "float", 0.0, "value of the pixels outside the image when zooming out"),
        P(1.0),
    ),
}
# Rules that depend on the input (channels, crop size) and between options (scale min <= max) live
# in cnndsl.augment (Augmentation.validate / Pipeline.problems); the checker maps them to spans.
FLIPS = ("hflip", "vflip")

LOSSES: dict[str, int | None] = {  # loss -> rank of the head it needs (None: any)
    "cross_entropy": 1,
    "pixel_cross_entropy": 3,
    "mse": None,
    "smooth_l1": None,
    "yolo": 3,  # a YOLO-style detection grid (cnndsl/ops/training/yolo_loss.py)
}
# options of a loss besides weight=, per kind (defaults as the op declares them)
LOSS_OPTIONS: dict[str, dict[str, "Opt"]] = {}
METRICS: dict[str, int | None] = {
    "accuracy": 1,
    "top5": 1,
    "mean_iou": 3,
    "pixel_accuracy": 3,
    "mae": None,
    "mse": None,
    "box_iou": 1,
    "map50": 3,  # a YOLO-style detection grid: mAP at IoU 0.5 (cnndsl.tasks.detection)
}

def _loss_options() -> dict[str, dict[str, "Opt"]]:
    """The options of each loss op besides weight (declared by the op, e.g. yolo's noobj, coord, boxes)."""
    if not LOSS_OPTIONS:
        from cnndsl.ops.training.yolo_loss import OPTIONS

        kinds = {"float": "float", "int": "int"}
        LOSS_OPTIONS["yolo"] = {a.name: Opt(a.name, kinds[a.kind], None if a.name == "boxes" else a.default, a.doc,
                                    minimum=a.minimum) for a in OPTIONS}
    return LOSS_OPTIONS


SETTINGS: dict[str, str] = {  # setting -> how it is written (for did-you-mean and docs)
    "dataset": "dataset NAME | dataset \"path\" [classes=[a, b, ...]]",
    "epochs": "epochs N",
    "batch": "batch N",
    "seed": "seed N",
    "optimizer": "optimizer sgd|adam|adamw|rmsprop|lion key=value...",
    "schedule": "schedule constant|step|cosine|onecycle|plateau key=value...",
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
# Which direction is better for a metric watched by early_stopping / checkpoint best= (the
# others: higher is better). `loss` is the held-out loss; `train_loss` the training loss.
LOWER_IS_BETTER = ("loss", "train_loss", "mae", "mse")
EARLY_STOPPING = {
    "metric": Opt("metric", "word", "loss", "the held-out value watched: loss, or a metric of the `metric` lines "
                  "(accuracy, map50, ...)"),
    "patience": Opt("patience", "int", 5, "epochs without improvement before stopping", "epochs", minimum=1,
                    maximum=1_000_000),
    "min_delta": Opt("min_delta", "float", 0.0, "smallest change that counts as an improvement", minimum=0),
}
CHECKPOINT = {
    "best": Opt("best", "word", REQUIRED, "the held-out value whose best epoch's weights go to best.safetensors"),
}


def watched_names(metrics, losses) -> list[str]:
    """What early_stopping and checkpoint best= may watch: the held-out loss, the training loss
    and every declared metric (by its kind, and HEAD_KIND)."""
    names = ["loss", "train_loss"]
    if any(loss.kind in ("cross_entropy", "pixel_cross_entropy") for loss in losses):
        names.append("accuracy")
    for m in metrics:
        for n in (m.kind, f"{m.head}_{m.kind}"):
            if n not in names:
                names.append(n)
    return names


def lower_is_better(name: str) -> bool:
    return name in LOWER_IS_BETTER or any(name.endswith("_" + k) for k in ("mae", "mse"))
_SCALARS = {
    "epochs": Opt("epochs", "int", 10, "passes over the training set", minimum=1, maximum=1_000_000),
    "batch": Opt("batch", "int", 32, "samples per step", minimum=1, maximum=1_000_000),
    "seed": Opt("seed", "int", 0, "seed of every random choice", minimum=0, maximum=2**32 - 1),
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
            (v,), opts = self.values(s, [Opt("dataset", "text", REQUIRED, positional=True)],
                                     {"classes": DATASET_CLASSES})
            cfg["dataset"] = v
            if "classes" in opts:
                cfg["dataset_classes"] = opts["classes"]
        elif name in _SCALARS:
            (v,), _ = self.values(s, [replace(_SCALARS[name], default=REQUIRED, positional=True)], {})
            cfg[name] = v
        elif name == "optimizer":
            kind, opts = self.kind_and_options(s, "optimizer", OPTIMIZERS)
            cfg["optimizer"] = Optimizer(name=kind, **opts)
            try:  # what no single option's range says (nesterov needs a momentum): the optimizer's own check
                step_attrs(kind, **{k: v for k, v in cfg["optimizer"].hyper().items() if k != "lr"})
            except AttrError as e:
                self.error(f"optimizer {kind}: {e}", s.span, code="bad-setting")
                raise _Fail from None
        elif name == "schedule":
            kind, opts = self.kind_and_options(s, "schedule", SCHEDULES)
            cfg["schedule"] = Schedule(kind=kind, **opts)
        elif name == "loss":
            head_opt = Opt("head", "word", REQUIRED, positional=True)
            kind_opt = Opt("kind", "word", REQUIRED, choices=tuple(LOSSES), positional=True)
            written = s.args[1].value.name if (len(s.args) > 1 and s.args[1].key is None
                                               and isinstance(s.args[1].value, ast.Name)) else None
            extra = _loss_options().get(written, {})
            (head, kind), opts = self.values(s, [head_opt, kind_opt],
                                             {"weight": Opt("weight", "float", 1.0, minimum=0), **extra},
                                             what=f"loss {written}" if extra else None)
            self.check_head(s, head, kind, LOSSES[kind], "loss")
            if kind == "yolo":
                self.yolo_layout(s, head, opts)
            losses.append(Loss(head, kind, opts["weight"], tuple((k, opts[k]) for k in extra)))
        elif name == "metric":
            self.metric(s, metrics)
        elif name == "normalize":
            _, opts = self.values(s, [], {"mean": Opt("mean", "floats", REQUIRED),
                                          "std": Opt("std", "floats", REQUIRED, above=0)})
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
    def values(self, s: ast.Setting, positional: list[Opt], options: dict[str, Opt], what: str | None = None):
        """(positional values, {option: value}) of a setting, checked; raises _Fail after reporting.

        A positional value may also be written as key=value (`rotate degrees=10`)."""
        what = what or s.name
        ev = Evaluator(self.params)
        by_name = {o.name: o for o in positional}
        given: dict[str, Any] = {}
        ok = True
        slot = 0
        for a in s.args:
            try:
                v = ev.value(a.value)
            except EvalError as e:
                if e.diagnostic is not None:
                    self.error(e.diagnostic.message, e.diagnostic.span, e.diagnostic.help, e.diagnostic.code)
                ok = False
                continue
            if a.key is None:
                while slot < len(positional) and positional[slot].name in given:
                    slot += 1
                if slot >= len(positional):
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
                opt = positional[slot]
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
                given[opt.name] = opt.check(v)
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

    def kind_and_options(self, s: ast.Setting, what: str, table: dict[str, tuple[Opt, ...]]):
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
        opts = {o.name: o for o in table[kind]}
        sub = ast.Setting(s.name, s.args[1:], s.span, s.name_span)
        _, values = self.values(sub, [], opts, what=f"{what} {kind}")
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
            need = {1: "a vector of class scores", 3: "a KxHxW map"}[rank]
            alt = [k for k, r in (LOSSES if what == "loss" else METRICS).items() if r in (len(t.shape), None)]
            self.error(f"{what} {kind} needs {need}, but head '{head}' is {t}", s.span,
                       help=f"for a {len(t.shape)}-D head use {' or '.join(alt)}" if alt else None,
                       code=f"{what}-head")
            raise _Fail
        if kind == "box_iou" and t is not None and t.shape != (4,):
            self.error(f"metric box_iou needs a head of 4 box numbers, but head '{head}' is {t}", s.span,
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
        head_opt = Opt("head", "word", REQUIRED, positional=True)
        (head,), _ = self.values(ast.Setting(s.name, s.args[:1], s.span, s.name_span), [head_opt], {})
        kind_opt = Opt("metric", "word", REQUIRED, choices=tuple(METRICS), positional=True)
        bad = False
        for a in s.args[1:]:
            try:
                (kind,), _ = self.values(ast.Setting(s.name, [a], s.span, s.name_span), [kind_opt], {})
                self.check_head(s, head, kind, METRICS[kind], "metric")
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
        spec = AUGMENTATIONS.get(a.name)
        if spec is None:
            hint = did_you_mean(a.name, AUGMENTATIONS)
            self.error(f"unknown augmentation '{a.name}'", a.name_span,
                       help=hint or f"augmentations: {', '.join(AUGMENTATIONS)}", code="unknown-augmentation")
            raise _Fail
        if a.children is not None:
            self.error(f"{a.name} takes no {{ ... }} block", a.span, code="bad-setting")
            raise _Fail
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
                    stats = Opt("stats", "bool", True).check(Evaluator(self.params).value(a.value))
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
        (path,), _ = self.values(sub, [Opt("path", "text", REQUIRED, "a .safetensors weights file",
                                           positional=True)], {}, what="init from")
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
        opt = Opt("lr_mult", "float", REQUIRED, minimum=0)
        for a in s.args:
            if a.key is None:
                self.error("lr_mult takes LAYER=FACTOR pairs", a.span, help="for example `lr_mult c1=0.1 c2=0`",
                           code="bad-value")
                bad = True
                continue
            try:
                values[a.key] = opt.check(Evaluator(self.params).value(a.value))
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
