"""The Python API of a compiled model: predict, evaluate, one training step, weights.

    import cnndsl
    model = cnndsl.compile("examples/lenet5.cnn")
    model.fit(x_train, y_train, validation=(x_test, y_test), epochs=5)   # the file's training settings
    probs = model.predict_proba(images)["logits"]
    model.save_weights("lenet5.safetensors")

One `Model` owns one set of parameters (a ParamStore) shared by its inference,
evaluation and training executables; each of those is compiled once per batch
size and cached.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnndsl.analysis.memory import check_model
from cnndsl.backend.executor import Executable, load_backend
from cnndsl.backend.params import ParamStore
from cnndsl.data.dataset import Dataset
from cnndsl.diagnostics import CnnError, Diagnostic, SourceFiles, Span, abbreviated
from cnndsl.frontend import load
from cnndsl.frontend.training import TrainingConfig
from cnndsl.io.weights import load_weights, match_weights, save_weights
from cnndsl.ir.graph import layers_matching
from cnndsl.ops.registry import get_op
from cnndsl.passes.pipeline import optimize
from cnndsl.tasks.metrics import MetricHook
from cnndsl.tasks import transfer
from cnndsl.training_graph import build_loss_graph, loss_specs


class Model:
    def __init__(self, program, device: str = "cpu", seed: int | None = None, opt_level: int = 2,
                 init_from_file: bool = True):
        """`init_from_file=False` skips the training section's `init from "..."` (for eval and
        predict, which load trained weights right after)."""
        check_model(program)  # parameters beyond this machine's memory: a located error, not MemoryError
        self.program = program
        self.opt_level = opt_level  # -O level of the pass pipeline (cnndsl/passes/pipeline.py)
        self.graph = program.graph
        self.config = program.training or TrainingConfig()
        self.device = device
        self.seed = seed if seed is not None else self.config.seed
        self.store = ParamStore(self.graph, load_backend(device))  # fails early without the device
        self.store.initialize(self.seed)
        self.losses = loss_specs(program)
        self.frozen = set(layers_matching(self.graph, self.config.freeze))
        # the training graph's optimizer step carries these factors (its lr_mult attribute): the store
        # keeps them for it (set_lr_mult, also the Python API's), frozen layers at 0
        for layer, mult in self.config.lr_mults(self.graph).items():
            self.store.set_lr_mult(layer, mult)
        for layer in self.frozen:
            self.store.set_lr_mult(layer, 0.0)
        # frozen batchnorm layers keep their running statistics too (unless `freeze ... stats=false`)
        transfer.check_frozen_statistics(self)
        self.init_report = None  # `init from "file"`: what was loaded (cnndsl.tasks.transfer.TransferReport)
        if self.config.init_from is not None and init_from_file:
            self.init_report = self.init_from(self.config.init_from, self.config.reinit,
                                              span=self.config.spans.get("init"))
        self._mean, self._std = _normalization(self.config.normalize, self.input_shape)
        self.comm = None  # set by a distributed Trainer (cnndsl.distributed); None: one process
        self._executables: dict[tuple[str, int], Executable] = {}
        self._graphs = {}
        self._train_lr_mult_version = self.store.lr_mult_version  # the store's factors the training graph has
        self.optimizer = None
        # The first train_step, predict or evaluate compiles its kernels through the compile pool
        # when the cache is cold (_compile_phase). compile_workers: processes compiling at once
        # (None: CNNDSL_COMPILE_WORKERS, else the cores; 1: no pool, kernels compile on first
        # call in this process as before). compile_report: the status line while Numba compiles
        # ("live", "lines" or None: cnndsl.train.progress.CompileStatus). compile_phases: each
        # phase's compile_pool.PoolCounter (functions and seconds over every process).
        self.compile_workers: int | None = None
        self.compile_report: str | None = None
        self.compile_phases: list = []
        self._compiled_kinds: set[str] = set()

    # -- graphs and executables ------------------------------------------------
    @property
    def input_name(self) -> str:
        return self.graph.inputs[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.node(self.input_name).type.shape

    def _graph(self, kind: str):
        """The graph an executable runs, through the optimization pipeline at self.opt_level:
          infer       the forward graph (inference passes: batchnorm folding, no dropout, fusions)
          eval        the forward graph with targets and losses, inference passes
          loss_train  the same with only the passes valid in training too: it is run with training
                      semantics to find where a loss became non-finite (and by gradient checks)
          train       forward passes, autodiff and backward passes
        Node names of heads and layers are never changed by a pass, so weights and outputs are
        found by the same names."""
        if kind not in self._graphs:
            if kind == "infer":
                graph = optimize(self.graph, "inference", self.opt_level, backend=self.store.backend)
            elif kind in ("eval", "loss_train"):
                mode = "inference" if kind == "eval" else "either"
                graph = optimize(build_loss_graph(self.graph, self.losses), mode, self.opt_level,
                                 backend=self.store.backend)
            else:
                self._train_lr_mult_version = self.store.lr_mult_version
                graph = optimize(self.graph, "training", self.opt_level, losses=self.losses, frozen=self.frozen,
                                 optimizer=self._step_attrs(), backend=self.store.backend)
            self._graphs[kind] = graph
        return self._graphs[kind]

    def executable(self, kind: str, batch: int) -> Executable:
        key = (kind, batch)
        if kind == "train" and self._train_lr_mult_version != self.store.lr_mult_version:
            self._drop_training_graph()  # store.set_lr_mult since it was built: its step's lr_mult is stale
        if key not in self._executables:
            exe = Executable(self._graph(kind), self.store, batch, self.device)
            if self.comm is not None:
                exe.rc.comm = self.comm
            self._executables[key] = exe
        return self._executables[key]

    def _step_attrs(self) -> dict:
        """The training graph's optimizer step attributes: the optimizer's given to set_optimizer,
        else the training section's; and the per-layer learning-rate factors the store keeps
        (`lr_mult`: the training section's lr_mult and freeze, and any set_lr_mult since)."""
        attrs = dict(self.optimizer.step_attrs) if self.optimizer is not None else optimizer_attrs(self.config)
        attrs["lr_mult"] = self.store.lr_mult_attr() or None
        return attrs

    def _drop_training_graph(self) -> None:
        """Forget the training graph and its executables: the next step builds them again (the
        kernels take everything that changes as arguments: nothing is recompiled)."""
        self._graphs.pop("train", None)
        for key in [k for k in self._executables if k[0] == "train"]:
            del self._executables[key]

    def _compile_phase(self, kind: str, batch: int) -> None:
        """Before the first step of a kind ("train", "infer", "eval"): compile its kernels with the
        compile pool (cnndsl/backend/compile_pool.py), so that a cold cache compiles on every core
        and not only in this process. The steps run on zeros at this batch and leave the model as
        it was; then the caller's own step loads them from the cache. Once per kind: kernels take
        shapes as run-time arguments, so another batch compiles nothing new. Not inside another
        compile phase (the trainer's runs these very steps), nor on another device or over MPI."""
        if kind in self._compiled_kinds:
            return
        self._compiled_kinds.add(kind)
        from cnndsl.backend import compile_pool

        if self.device != "cpu" or self.comm is not None or compile_pool.in_phase():
            return
        processes = compile_pool.pool_size(self.compile_workers)
        if processes <= 1:
            return
        from cnndsl.backend.compile_events import counting
        from cnndsl.train.optim import make_optimizer
        from cnndsl.train.progress import CompileStatus

        optimizer = None
        if kind == "train":
            try:  # a fresh one of the caller's kind and hyperparameters: the phase leaves its state be
                optimizer = make_optimizer(self.optimizer.kind, self.store.params, **self.optimizer.hyper)
            except (ValueError, TypeError, AttributeError):
                return  # an optimizer class of the caller's own: its kernels compile on first call
        status = CompileStatus(self.graph.name, self.compile_report)
        combined = None

        def on_change(main):
            status.on_change(combined)
            combined.main_changed(main)

        failed = True
        with counting(on_change) as counter:
            combined = compile_pool.PoolCounter(counter)
            try:
                compile_pool.compile_with_pool(self, batch, batch, optimizer, None, processes, combined,
                                               on_change=status.on_change, kinds=(kind,), final_pass=False)
                failed = False
            finally:
                status.finish(combined, failed=failed)
        self.compile_phases.append(combined)

    def set_optimizer(self, optimizer) -> None:
        """The optimizer train_step applies (cnndsl.train.optim: SGD, Adam, ...). Its kind and
        hyperparameters are the attributes of the training graph's `optimizer_step` node: a graph
        built for other ones is dropped and rebuilt on the next step (the kernels take them as
        scalars: nothing is recompiled); its state becomes the runtime's (`store.optimizer_state`);
        its `lr` is each step's learning rate, a run-time input (changing it rebuilds nothing)."""
        self.optimizer = optimizer
        self.store.optimizer_state = optimizer.slots if optimizer is not None else None
        from cnndsl.ops.training.optimizers import step_attrs_of

        graph = self._graphs.get("train")
        if optimizer is not None and graph is not None and \
                step_attrs_of(graph.node(graph.attrs["optimizer_step"])) != optimizer.step_attrs:
            self._drop_training_graph()

    def set_comm(self, comm) -> None:
        """Train data-parallel over `comm`'s ranks (cnndsl.distributed): steps average gradients."""
        self.comm = comm
        for exe in self._executables.values():
            exe.rc.comm = comm

    # -- running -----------------------------------------------------------------
    def predict(self, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Raw head outputs (e.g. logits) for images x of shape (N, *input_shape)."""
        x = self.prepare(x)
        if len(x):
            self._compile_phase("infer", min(batch, len(x)))
        outs = {h: [] for h in self.graph.heads}
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            exe = self.executable("infer", len(chunk))
            exe.run({self.input_name: chunk}, training=False)
            for head, node in self.graph.heads.items():
                outs[head].append(exe.output(node).copy())
        return {h: v[0] if len(v) == 1 else np.concatenate(v) for h, v in outs.items()}

    def predict_proba(self, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Softmax over class scores for heads trained with cross-entropy; raw outputs otherwise."""
        outs = self.predict(x, batch)
        for spec in self.losses:
            if spec.kind in ("cross_entropy", "pixel_cross_entropy"):
                outs[spec.head] = _softmax(outs[spec.head])
        return outs

    def evaluate(self, x: np.ndarray, y, batch: int = 256) -> dict[str, float]:
        """Mean loss and, for classification heads, accuracy over a data set; plus the metrics the
        train section declares beyond accuracy (box_iou, mean_iou, map50, ...: cnndsl.tasks.metrics)."""
        x = self.prepare(x)
        if not len(x):
            raise CnnError([Diagnostic("error", "evaluate() was given no images: a mean over none is undefined",
                                       code="data-too-small")])
        targets = self._targets(y)
        self._compile_phase("eval", min(batch, len(x)))
        hook = MetricHook.for_model(self)
        total, correct, n = 0.0, {}, len(x)
        for i in range(0, n, batch):
            j = min(i + batch, n)
            exe = self.executable("eval", j - i)
            exe.run(self._feeds(x[i:j], {h: t[i:j] for h, t in targets.items()}), training=False)
            total += self._loss_value(exe) * (j - i)
            for spec in self.losses:
                if spec.kind in ("cross_entropy", "pixel_cross_entropy"):
                    pred = exe.output(self.graph.heads[spec.head]).argmax(axis=1)
                    correct[spec.head] = correct.get(spec.head, 0) + int((pred == targets[spec.head][i:j]).sum())
            if hook is not None:
                hook.add({h: exe.output(self.graph.heads[h]) for h in hook.heads},
                         {h: targets[h][i:j] for h in hook.heads})
        result = {"loss": total / n}
        for head, c in correct.items():
            denom = n * int(np.prod(targets[head].shape[1:], dtype=np.int64))
            result["accuracy" if len(correct) == 1 else f"{head}_accuracy"] = c / denom
        if hook is not None:
            result.update({k: v for k, v in hook.result().items() if k not in result})
        return result

    def train_step(self, x: np.ndarray, y, step: int, share: float = 1.0,
                   lr: float | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """One optimizer step on a batch; returns the loss and the head outputs (views).

        In data-parallel training `x` is this rank's part of a global batch and `share` its
        fraction of the global batch's samples: the ranks sum their gradients weighted by it.
        `lr`: this step's learning rate (default the optimizer's `lr`), a run-time input of the step."""
        if self.optimizer is None:
            raise RuntimeError("set_optimizer() first")
        feeds = self._feeds(self.prepare(x), self._targets(y))  # bad input fails before any compiling
        self._compile_phase("train", len(x))
        exe = self.executable("train", len(x))
        exe.rc.share = share
        exe.run(feeds, training=True, step=step, seed=self.seed, lr=self.optimizer.lr if lr is None else lr)
        return self._loss_value(exe), {h: exe.output(n) for h, n in self.graph.heads.items()}

    def __call__(self, x: np.ndarray, batch: int = 256):
        """`model(x)`: the raw output of the network for images x (N, *input_shape): one array
        when the network has one head, else {head: array} (see predict)."""
        outs = self.predict(x, batch)
        return next(iter(outs.values())) if len(outs) == 1 else outs

    def fit(self, x, y, validation=None, epochs: int | None = None, batch: int | None = None,
            lr: float | None = None, out_dir=None, progress: bool | None = None, early_stopping: str | None = None,
            patience: int | None = None, checkpoint_best: str | None = None) -> list[dict]:
        """Train on arrays with the file's training settings (overridable); returns one record per
        epoch. With `out_dir`, checkpoints, weights and metrics are written there as `cnndsl train`
        does; otherwise into a temporary folder that is removed afterwards.

        `progress`: a progress bar and one line per epoch on stderr; by default when stderr is a
        terminal (False: silent; True: always). `early_stopping`/`patience`/`checkpoint_best`:
        as the train section's `early_stopping metric=... patience=N` and `checkpoint best=...`."""
        import sys
        import tempfile

        from cnndsl.train.progress import _is_tty
        from cnndsl.train.trainer import Trainer, with_overrides

        self.check_targets(y, "y")  # before any work: a bad label must never reach a loss kernel
        if validation:
            self.check_targets(validation[1], "validation labels")
        train_set = Dataset(self._check_input(x), y, "train")
        held_out = Dataset(self._check_input(validation[0]), validation[1], "validation") if validation else train_set
        config = with_overrides(self.config, epochs, batch, lr, early_stopping=early_stopping, patience=patience,
                                checkpoint_best=checkpoint_best)
        show = _is_tty(sys.stderr) if progress is None else bool(progress)
        echo = (lambda text: print(text, file=sys.stderr, flush=True)) if show else None
        if out_dir is not None:
            return Trainer(self, train_set, held_out, config, out_dir, show, echo=echo).fit()
        with tempfile.TemporaryDirectory(prefix="cnndsl-") as tmp:
            return Trainer(self, train_set, held_out, config, tmp, show, echo=echo).fit()

    def example_targets(self, n: int, rng=None) -> dict[str, np.ndarray]:
        """Targets of the right shape and type for every loss: zeros, or random valid ones from
        `rng` (class indices within range, normal values for regression) — for warm-ups,
        gradient checks and benchmarks."""
        targets = {}
        for spec in self.losses:
            head = self.graph.node(self.graph.heads[spec.head]).type
            shape, dtype = get_op(spec.kind).target(head)
            shape = (n,) + tuple(shape)
            if rng is None:
                targets[spec.head] = np.zeros(shape, dtype)
            else:  # random values the loss accepts, as its op declares them
                values = get_op(spec.kind).target_values.example(head, shape, rng, dict(spec.options))
                targets[spec.head] = values.astype(dtype, copy=False)
        return targets

    # -- helpers -----------------------------------------------------------------
    def _loss_value(self, exe: Executable) -> float:
        return sum(exe.rc.losses[name] for name in exe.graph.attrs["losses"].values())

    def _feeds(self, x, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {self.input_name: x}
        feeds.update({f"target.{h}": t for h, t in targets.items()})
        return feeds

    def _targets(self, y, source: str = "targets") -> dict[str, np.ndarray]:
        """Targets per head, checked: every value a loss kernel reads is valid (see check_targets)."""
        if isinstance(y, Mapping):
            missing = [spec.head for spec in self.losses if spec.head not in y]
            if missing:
                raise CnnError([Diagnostic(
                    "error", f"no targets for head{'s' if len(missing) > 1 else ''} "
                    f"{abbreviated(repr(h) for h in missing)}", Span(str(source), 0, 0),
                    details=[f"expected: a dict with the keys {abbreviated(repr(s.head) for s in self.losses)}",
                             f"found: the keys {abbreviated(repr(k) for k in y) or 'none'}"],
                    code="targets")])
            targets = {spec.head: np.asarray(y[spec.head]) for spec in self.losses}
        elif len(self.losses) != 1:
            raise CnnError([Diagnostic("error", "this model has several losses; give targets as a dict per head",
                                       code="targets")])
        else:
            targets = {self.losses[0].head: np.asarray(y)}
        self.check_targets(targets, source)
        return targets

    def check_targets(self, y, source: str = "targets", class_names=None) -> None:
        """Raise a CnnError unless every target holds values its loss accepts: class indices in
        [0, classes) (or the ignore value), finite numbers, ... (`OpDef.target_values`).

        Loss kernels index with class targets and Numba does not check bounds, so this is what
        stands between a bad label and memory corruption. `source` names the data in the
        message (a file, "y", "validation labels"); `class_names` (an image folder's class
        folders) names the classes in it."""
        for spec in self.losses:
            t = np.asarray(y[spec.head] if isinstance(y, Mapping) else y)
            node = self.graph.node(self.graph.heads[spec.head])
            op = get_op(spec.kind)
            want_shape, _ = op.target(node.type)
            if t.ndim != 1 + len(want_shape) or tuple(t.shape[1:]) != tuple(want_shape):
                raise CnnError([Diagnostic(
                    "error", f"the targets of head '{spec.head}' have the wrong shape for its {spec.kind} loss",
                    Span(str(source), 0, 0),
                    details=[f"expected: shape (N,{''.join(f' {d},' for d in want_shape)[:-1] if want_shape else ''})",
                             f"found: shape {tuple(t.shape)}"],
                    help="one-hot labels? convert them with y.argmax(axis=1)"
                    if op.target_values is not None and op.target_values.kind == "class" and t.ndim == 2 else None,
                    code="data-labels")])
            rule = op.target_values
            if rule is None:
                continue
            bad = rule.first_bad(node.type, t, dict(spec.options))
            if bad is not None:
                raise CnnError([_bad_target_diagnostic(self.program, spec, node, rule, t, bad, source, class_names)])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Images as the network sees them: float32, normalized as the training section says.
        The same in training, evaluation and prediction."""
        x = self._check_input(x)
        if self._mean is not None:
            x = (x - self._mean) / self._std
        return np.ascontiguousarray(x, dtype=np.float32)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            want = "x".join(map(str, self.input_shape))
            got = "x".join(map(str, x.shape[1:]))
            raise CnnError([Diagnostic("error", f"input images are {got}, but the network's input "
                                       f"'{self.input_name}' is {want}", code="input-shape")])
        finite = np.isfinite(x)  # 15 us for a LeNet-5 batch of 64: NaN in, NaN everywhere out
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise CnnError([Diagnostic(
                "error", f"input image {int(bad[0])} holds {x[tuple(bad)]} at position "
                f"({', '.join(str(int(i)) for i in bad[1:])}) (of {int((~finite).sum()):,} non-finite values)",
                details=["expected: finite pixel values"], help="fix or drop those images", code="data-range")])
        return x

    # -- weights -----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return self.store.state_dict()

    def save_weights(self, path, metadata: dict[str, str] | None = None) -> Path:
        meta = {"network": self.graph.name, **(metadata or {})}
        save_weights(path, self.store.state_dict(), meta)
        return Path(path)

    def load_weights(self, path) -> dict[str, str]:
        """Load by name; any missing, unexpected or mis-shaped tensor is an error listing all of them.
        Returns the file's metadata (network, epoch, and `class_names` as JSON when training knew them)."""
        tensors, meta = load_weights(path)
        match_weights(tensors, self.store.expected_shapes()).raise_if_mismatch(path)
        self.store.load_state_dict(tensors)
        return dict(meta or {})

    def class_names(self, metadata: dict | None) -> list[str] | None:
        """The class names a weights file's metadata holds for the first loss's head, when they
        are as many as its classes (stored by `cnndsl train` from an image folder or CIFAR-10)."""
        import json

        text = (metadata or {}).get("class_names")
        if not text or not self.losses:
            return None
        try:
            names = json.loads(text)
        except ValueError:
            return None
        head = self.graph.node(self.graph.heads[self.losses[0].head]).type
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not head.shape or \
                len(names) != head.shape[0]:
            return None
        return names

    def init_from(self, path, reinit=(), span=None):
        """Transfer learning: copy the tensors of a weights file that match this network by layer name
        and shape; tensors only in the network keep their fresh initialization, tensors only in the
        file are skipped, layers in `reinit` are not loaded. A shape mismatch is an error naming both
        shapes and the layer's line (nothing is loaded). Returns the report (TransferReport)."""
        return transfer.init_from_file(self, path, reinit, span)


def compile(path_or_program, defines=None, profile=None, device: str = "cpu", seed: int | None = None) -> Model:
    """Load (if given a path) and compile a model for `device`."""
    program = path_or_program
    if isinstance(path_or_program, (str, Path)):
        program = load(path_or_program, defines=defines, profile=profile)
    return Model(program, device=device, seed=seed)


def optimizer_attrs(config: TrainingConfig) -> dict:
    """The optimizer step's attributes for a training section: its optimizer and hyperparameters
    (the learning rate is not one: it is each step's run-time input)."""
    from cnndsl.ops.training.optimizers import step_attrs

    o = config.optimizer
    return step_attrs(o.name, **{k: v for k, v in o.hyper().items() if k != "lr"})


def _normalization(normalize, input_shape):
    """Per-channel (mean, std) arrays shaped to broadcast over (N, C, H, W), or (None, None)."""
    if normalize is None:
        return None, None
    shape = (1, len(normalize.mean)) + (1,) * (len(input_shape) - 1)
    return (np.asarray(normalize.mean, np.float32).reshape(shape),
            np.asarray(normalize.std, np.float32).reshape(shape))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _bad_target_diagnostic(program, spec, node, rule, t: np.ndarray, bad, source: str,
                           class_names=None) -> Diagnostic:
    """The error for a target value its loss cannot take: the data (file), the first bad
    value and where it is, the allowed range, the layer whose width sets it, and a fix."""
    allowed = rule.allowed(node.type)
    what = "label" if rule.kind == "class" else "target value"
    found = f"{what} {bad.value!r} at {bad.where()}"
    if bad.count > 1:
        found += f" (the first of {bad.count:,} out of {bad.total:,})"
    details = [f"expected: {allowed}", f"found: {found}"]
    notes, fixes = [], []
    if rule.kind == "class":
        classes = rule.classes(node.type)
        values = np.unique(t[(t < 0) | (t >= classes)] if t.dtype.kind in "iu" else np.asarray([bad.value]))
        if rule.ignore is not None:
            values = values[values != rule.ignore]
        names = list(class_names or [])
        if names:
            details.append(f"the data has {len(names)} classes, the network {classes}: out of range are "
                           + abbreviated(f"{v} ({names[v]!r})" for v in values.tolist() if 0 <= v < len(names)))
        elif len(values) > 1:
            details.append("found values: " + abbreviated(str(v) for v in values.tolist()))
        width, setter = _width_setter(program, node)
        layer = f"{node.op} '{node.name}'"
        notes.append((node.span, f"the {classes} classes of head '{spec.head}' are set by {layer}"
                      + (f": {setter} = {classes}" if setter else "")))
        hi = int(values.max()) if len(values) and t.dtype.kind in "iu" else None
        if hi is not None and hi >= classes and hi < 100_000:
            if setter in program.params:
                fixes.append(f"give the network the classes the data has: -D {setter}={hi + 1}")
            else:
                fixes.append(f"give {layer} {hi + 1} outputs")
        keep = ", ".join(map(str, range(min(classes, 6)))) + (", ..." if classes > 6 else "")
        fixes.append(("or " if fixes else "") + f"keep {classes} classes of the data with `dataset ... "
                     f"classes=[{keep}]` in the train section, or filter the data")
    else:
        fixes.append("fix or drop those samples in the data")
    message = (f"{what}s out of range for the {spec.kind} loss of head '{spec.head}'" if rule.kind == "class"
               else f"invalid target values for the {spec.kind} loss of head '{spec.head}'")
    return Diagnostic("error", message, Span(str(source), 0, 0), details, "; ".join(fixes), notes,
                      code="data-labels")


def _width_setter(program, node) -> tuple[str | None, str | None]:
    """(option, source text) of the option that sets a head's channel count, e.g.
    ('units', 'classes') for `dense classes -> logits`: the text is a network parameter
    when a -D can change it."""
    op = get_op(node.op)
    positional = op.positional if op is not None else []
    if not positional:
        return None, None
    attr = positional[0].name
    span = node.attr_spans.get(attr)
    if span is None or span.end_line != span.line or span.end_column is None:
        return attr, None
    line = SourceFiles.line(span.file, span.line)
    return attr, (line[span.column - 1:span.end_column - 1].strip() if line else None)
