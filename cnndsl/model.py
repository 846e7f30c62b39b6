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

from pathlib import Path

import numpy as np

from cnndsl.backend.executor import Executable, load_backend
from cnndsl.backend.params import ParamStore
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.frontend.training import TrainingConfig
from cnndsl.passes.autodiff import LossSpec, build_loss_graph


class Model:
    def __init__(self, program, device: str = "cpu", seed: int | None = None, opt_level: int = 2,
                 init_from_file: bool = True):
        """`init_from_file=False` skips the training section's `init from "..."` (for eval and
        predict, which load trained weights right after)."""
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
        for pattern, mult in self.config.lr_mult.items():
            for layer in layers_matching(self.graph, (pattern,)):
                self.store.set_lr_mult(layer, mult)
        for layer in self.frozen:
            self.store.set_lr_mult(layer, 0.0)
        # frozen batchnorm layers keep their running statistics too (unless `freeze ... stats=false`)
        from cnndsl.tasks.transfer import check_frozen_statistics
        check_frozen_statistics(self)
        self.init_report = None  # `init from "file"`: what was loaded (cnndsl.tasks.transfer.TransferReport)
        if self.config.init_from is not None and init_from_file:
            self.init_report = self.init_from(self.config.init_from, self.config.reinit,
                                              span=self.config.spans.get("init"))
        self._mean, self._std = _normalization(self.config.normalize, self.input_shape)
        self.comm = None  # set by a distributed Trainer (cnndsl.distributed); None: one process
        self._executables: dict[tuple[str, int], Executable] = {}
        self._graphs = {}
        self.optimizer = None

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
        from cnndsl.passes.pipeline import optimize

        if kind not in self._graphs:
            if kind == "infer":
                graph = optimize(self.graph, "inference", self.opt_level, backend=self.device)
            elif kind in ("eval", "loss_train"):
                mode = "inference" if kind == "eval" else "either"
                graph = optimize(build_loss_graph(self.graph, self.losses), mode, self.opt_level, backend=self.device)
            else:
                graph = optimize(self.graph, "training", self.opt_level, losses=self.losses, frozen=self.frozen,
                                 backend=self.device)
            self._graphs[kind] = graph
        return self._graphs[kind]

    def executable(self, kind: str, batch: int) -> Executable:
        key = (kind, batch)
        if key not in self._executables:
            exe = Executable(self._graph(kind), self.store, batch, self.device)
            exe.rc.optimizer = self.optimizer
            if self.comm is not None:
                exe.rc.comm = self.comm
            self._executables[key] = exe
        return self._executables[key]

    def set_optimizer(self, optimizer) -> None:
        self.optimizer = optimizer
        for exe in self._executables.values():
            exe.rc.optimizer = optimizer

    def set_comm(self, comm) -> None:
        """Train data-parallel over `comm`'s ranks (cnndsl.distributed): steps average gradients."""
        self.comm = comm
        for exe in self._executables.values():
            exe.rc.comm = comm

    # -- running -----------------------------------------------------------------
    def predict(self, x: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
        """Raw head outputs (e.g. logits) for images x of shape (N, *input_shape)."""
        x = self.prepare(x)
        outs = {h: [] for h in self.graph.heads}
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            exe = self.executable("infer", len(chunk))
            exe.run({self.input_name: chunk}, training=False)
            for head, node in self.graph.heads.items():
                outs[head].append(exe.output(node).copy())
        return {h: np.concatenate(v) for h, v in outs.items()}

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
        from cnndsl.tasks.metrics import MetricHook

        x = self.prepare(x)
        targets = self._targets(y)
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

    def train_step(self, x: np.ndarray, y, step: int, share: float = 1.0) -> tuple[float, dict[str, np.ndarray]]:
        """One optimizer step on a batch; returns the loss and the head outputs (views).

        In data-parallel training `x` is this rank's part of a global batch and `share` its
        fraction of the global batch's samples: the ranks sum their gradients weighted by it."""
        if self.optimizer is None:
            raise RuntimeError("set_optimizer() first")
        exe = self.executable("train", len(x))
        exe.rc.share = share
        exe.run(self._feeds(self.prepare(x), self._targets(y)), training=True, step=step, seed=self.seed)
        return self._loss_value(exe), {h: exe.output(n) for h, n in self.graph.heads.items()}

    def fit(self, x, y, validation=None, epochs: int | None = None, batch: int | None = None,
            lr: float | None = None, out_dir=None, progress: bool = False) -> list[dict]:
        """Train on arrays with the file's training settings (overridable); returns one record per
        epoch. With `out_dir`, checkpoints, weights and metrics are written there as `cnndsl train`
        does; otherwise into a temporary folder that is removed afterwards."""
        import tempfile

        from cnndsl.data.dataset import Dataset
        from cnndsl.train.trainer import Trainer, with_overrides

        train_set = Dataset(self._check_input(x), y, "train")
        held_out = Dataset(self._check_input(validation[0]), validation[1], "validation") if validation else train_set
        config = with_overrides(self.config, epochs, batch, lr)
        if out_dir is not None:
            return Trainer(self, train_set, held_out, config, out_dir, progress).fit()
        with tempfile.TemporaryDirectory(prefix="cnndsl-") as tmp:
            return Trainer(self, train_set, held_out, config, tmp, progress).fit()

    def example_targets(self, n: int, rng=None) -> dict[str, np.ndarray]:
        """Targets of the right shape and type for every loss: zeros, or random valid ones from
        `rng` (class indices within range, normal values for regression) — for warm-ups,
        gradient checks and benchmarks."""
        from cnndsl.ops.registry import get_op

        targets = {}
        for spec in self.losses:
            head = self.graph.node(self.graph.heads[spec.head]).type
            shape, dtype = get_op(spec.kind).target(head)
            shape = (n,) + tuple(shape)
            if rng is None:
                targets[spec.head] = np.zeros(shape, dtype)
            elif dtype == "int64":
                targets[spec.head] = rng.integers(0, head.shape[0], size=shape)
            else:
                targets[spec.head] = rng.standard_normal(shape).astype(np.float32)
        return targets

    # -- helpers -----------------------------------------------------------------
    def _loss_value(self, exe: Executable) -> float:
        return sum(exe.rc.losses[name] for name in exe.graph.attrs["losses"].values())

    def _feeds(self, x, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {self.input_name: x}
        feeds.update({f"target.{h}": t for h, t in targets.items()})
        return feeds

    def _targets(self, y) -> dict[str, np.ndarray]:
        if isinstance(y, dict):
            return {spec.head: np.asarray(y[spec.head]) for spec in self.losses}
        if len(self.losses) != 1:
            raise CnnError([Diagnostic("error", "this model has several losses; give targets as a dict per head",
                                       code="targets")])
        return {self.losses[0].head: np.asarray(y)}

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
        return x

    # -- weights -----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return self.store.state_dict()

    def save_weights(self, path, metadata: dict[str, str] | None = None) -> Path:
        from cnndsl.io.weights import save_weights

        meta = {"network": self.graph.name, **(metadata or {})}
        save_weights(path, self.store.state_dict(), meta)
        return Path(path)

    def load_weights(self, path) -> None:
        """Load by name; any missing, unexpected or mis-shaped tensor is an error listing all of them."""
        from cnndsl.io.weights import load_weights, match_weights

        tensors, _ = load_weights(path)
        match_weights(tensors, self.store.expected_shapes()).raise_if_mismatch(path)
        self.store.load_state_dict(tensors)

    def init_from(self, path, reinit=(), span=None):
        """Transfer learning: copy the tensors of a weights file that match this network by layer name
        and shape; tensors only in the network keep their fresh initialization, tensors only in the
        file are skipped, layers in `reinit` are not loaded. A shape mismatch is an error naming both
        shapes and the layer's line (nothing is loaded). Returns the report (TransferReport)."""
        from cnndsl.tasks.transfer import init_from_file

        return init_from_file(self, path, reinit, span)


def compile(path_or_program, defines=None, profile=None, device: str = "cpu", seed: int | None = None) -> Model:
    """Load (if given a path) and compile a model for `device`."""
    program = path_or_program
    if isinstance(path_or_program, (str, Path)):
        from cnndsl.frontend import load

        program = load(path_or_program, defines=defines, profile=profile)
    return Model(program, device=device, seed=seed)


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


def layers_matching(graph, patterns) -> list[str]:
    """Layers named by `patterns`: a layer's own name, or a prefix such as a block instance ("stage1")."""
    names = [n for n in graph.topo_order() if graph.node(n).params]
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in patterns)]


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
