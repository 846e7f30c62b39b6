"""The training loop: epochs of optimizer steps, held-out evaluation, checkpoints.

Everything a run writes goes into its output folder, atomically:
  checkpoint.safetensors   weights + optimizer state + position (epoch, batch), after every
                           epoch and on Ctrl-C, so `--resume` continues exactly where it stopped
  weights.safetensors      the latest weights alone (readable by other frameworks)
  metrics.json, curves.png one record per epoch, and their plot

Determinism: the data order of an epoch depends only on (seed, epoch), dropout
masks on (seed, step, element), so a resumed run ends with the same weights as
an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnndsl.augment.pipeline import Pipeline
from cnndsl.diagnostics import CnnError, Diagnostic
from cnndsl.distributed.comm import LocalComm, shard
from cnndsl.frontend.training import TrainingConfig
from cnndsl.io.weights import load_checkpoint, match_weights, save_checkpoint, save_weights
from cnndsl.train.metrics import MetricsLog, plot
from cnndsl.train.optim import make_optimizer
from cnndsl.train.progress import Progress
from cnndsl.train.schedule import Schedule


EVAL_BATCH = 256


def with_overrides(config: TrainingConfig, epochs=None, batch=None, lr=None, seed=None) -> TrainingConfig:
    """The training section with command-line overrides applied."""
    changes = {k: v for k, v in (("epochs", epochs), ("batch", batch), ("seed", seed)) if v is not None}
    if lr is not None:
        changes["optimizer"] = replace(config.optimizer, lr=lr)
    return replace(config, **changes)


def make_schedule(config: TrainingConfig) -> Schedule:
    """The learning-rate schedule. A warm-up as long as the run (e.g. `--epochs 1` on a file that
    warms up for 1 epoch) is shortened to half the run, so a short trial run still trains."""
    s = config.schedule
    warmup = min(float(s.warmup), config.epochs / 2)
    return Schedule(kind=s.kind, lr=config.optimizer.lr, epochs=float(config.epochs), warmup=warmup,
                    step_size=float(s.step_size), gamma=s.gamma, min_lr=s.min_lr)


def optimizer_for(config: TrainingConfig, params):
    o = config.optimizer
    if o.name == "adam":
        return make_optimizer("adam", params, lr=o.lr, beta1=o.beta1, beta2=o.beta2, eps=o.eps,
                              weight_decay=o.weight_decay)
    return make_optimizer("sgd", params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)


class NonFiniteLoss(Exception):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"loss became {loss} at step {step}")


@dataclass
class Position:
    """Where a run stands: epochs completed, batches done in the current epoch, running sums."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0

    def meta(self) -> dict:
        return dict(self.__dict__)


class Trainer:
    """Trains `model`; with a multi-rank `comm` (cnndsl.distributed) every rank runs one Trainer
    on its shard of each global batch, and the ranks average their gradients every step."""

    def __init__(self, model, train_set, test_set, config: TrainingConfig, out_dir, progress: bool = True,
                 augment: bool = True, comm=None):
        self.model = model
        self.train_set, self.test_set = train_set, test_set
        self.settings = config
        self.out = Path(out_dir)
        self.comm = comm or LocalComm()
        self.is_root = self.comm.rank == 0
        self.progress_enabled = progress and self.is_root
        self.schedule = make_schedule(config)
        self.optimizer = optimizer_for(config, model.store.params)
        self.pos = Position()
        self.log = MetricsLog(self.out)
        # training batches only, never evaluation; keyed on (seed, epoch, image index)
        self.augment = Pipeline.from_config(config.augment, config.seed) if augment and config.augment else None
        if self.comm.size > 1:
            self._join_ranks()
        model.set_optimizer(self.optimizer)

    # -- several ranks -------------------------------------------------------------
    def _join_ranks(self) -> None:
        if self.settings.batch % self.comm.size:
            raise CnnError([Diagnostic(
                "error", f"the batch of {self.settings.batch} does not split over {self.comm.size} processes",
                help=f"the batch is global: choose a multiple of {self.comm.size} (e.g. "
                     f"--batch {self.settings.batch // self.comm.size * self.comm.size or self.comm.size}) "
                     "or launch another number of processes", code="distributed-batch")])
        if self.is_root:  # compile once and fill the kernel cache, so the other ranks only load it
            warm_up(self.model, self.settings.batch // self.comm.size)
        self.comm.barrier()
        self.model.set_comm(self.comm)
        self._broadcast_state()

    def _broadcast_state(self) -> None:
        """Rank 0's weights, running statistics and optimizer state, on every rank."""
        store, comm = self.model.store, self.comm
        comm.bcast_(store.params.data)
        for buf in store.buffers.values():
            comm.bcast_(buf)
        for buf in self.optimizer.state.values():
            comm.bcast_(buf)
        self.optimizer.step_count = comm.bcast_object(self.optimizer.step_count)

    # -- checkpoints -------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the checkpoint in the output folder (read by rank 0, sent to the others)."""
        position = None
        if self.is_root:
            ckpt = load_checkpoint(self.out)
            match_weights(ckpt.tensors, self.model.store.expected_shapes()).raise_if_mismatch(ckpt.path)
            self.model.store.load_state_dict(ckpt.tensors)
            self.optimizer.load_state_dict(ckpt.optimizer_state, path=ckpt.path)
            position = ckpt.meta["position"]
            self.log.load_existing(upto_epoch=position["epoch"])
        position = self.comm.bcast_object(position)
        self.pos = Position(**{k: v for k, v in position.items() if k in Position.__annotations__})
        if self.comm.size > 1:
            self._broadcast_state()

    def save(self) -> None:
        """Checkpoint and weights, written by rank 0 (atomically); the others wait for it."""
        if self.is_root:
            meta = {"position": self.pos.meta(), "seed": self.settings.seed, "network": self.model.graph.name,
                    "world_size": self.comm.size}
            save_checkpoint(self.out, self.model.store.state_dict(), self.optimizer.state_dict(), meta)
            save_weights(self.out / "weights.safetensors", self.model.store.state_dict(),
                         {"network": self.model.graph.name, "epoch": str(self.pos.epoch)})
        self.comm.barrier()

    # -- the loop ----------------------------------------------------------------
    def fit(self, on_epoch=None) -> list[dict]:
        """Train to the last epoch; `on_epoch(record)` is called after each epoch's evaluation."""
        s = self.settings
        per_epoch = self.train_set.num_batches(s.batch)
        report = getattr(self.model, "init_report", None)
        if report is not None and self.is_root and self.pos.epoch == 0 and self.pos.batch == 0:
            import sys

            print("\n".join(report.lines()), file=sys.stderr)  # transfer learning: what was loaded
        try:
            while self.pos.epoch < s.epochs:
                self._run_epoch(per_epoch)
                if on_epoch:
                    on_epoch(self.log.records[-1])
        except KeyboardInterrupt:
            self.save()
            raise
        return self.log.records

    def _run_epoch(self, per_epoch: int) -> None:
        s, pos = self.settings, self.pos
        bar = Progress(total=per_epoch, desc=f"epoch {pos.epoch + 1}/{s.epochs}", initial=pos.batch,
                       enabled=self.progress_enabled)
        start = time.perf_counter()
        batches = self.train_set.batches(s.batch, shuffle=True, seed=s.seed, epoch=pos.epoch, start=pos.batch,
                                         with_indices=True)
        try:
            for x, y, indices in batches:
                n_global = len(x)
                if n_global < self.comm.size:  # an epoch's last, tiny batch: too small to share out
                    pos.batch += 1
                    continue
                x, y, indices = self._my_shard(x, y, indices)
                if self.augment is not None:
                    x = self.augment.apply(x, indices, pos.epoch)
                self.optimizer.lr = self.schedule.lr_for_step(pos.epoch, pos.batch, per_epoch)
                loss, outs = self.model.train_step(x, y, pos.step, share=len(x) / n_global)
                if not math.isfinite(loss):
                    raise self._non_finite(x, y, loss)
                pos.loss_sum += loss * n_global  # the loss is already the global batch's mean
                pos.correct += self._global_count(_correct(self.model, outs, y))
                pos.seen += n_global
                pos.batch += 1
                pos.step += 1
                elapsed = pos.seconds + time.perf_counter() - start
                bar.update(loss=pos.loss_sum / pos.seen, accuracy=pos.correct / pos.seen,
                           images_per_s=pos.seen / max(elapsed, 1e-9))
        finally:
            pos.seconds += time.perf_counter() - start
            bar.close()
        self._end_epoch()

    def _my_shard(self, x, y, indices):
        """This rank's part of a global batch (all of it in one process)."""
        if self.comm.size == 1:
            return x, y, indices
        part = shard(len(x), self.comm.rank, self.comm.size)
        y = {k: v[part] for k, v in y.items()} if isinstance(y, dict) else y[part]
        return x[part], y, indices[part]

    def _global_count(self, count: int) -> int:
        return count if self.comm.size == 1 else int(self.comm.allreduce_scalars([count])[0])

    def _end_epoch(self) -> None:
        pos = self.pos
        held_out = self.model.evaluate(self.test_set.x, self.test_set.y, EVAL_BATCH)
        record = {
            "epoch": pos.epoch + 1,
            "train_loss": pos.loss_sum / max(pos.seen, 1),
            "train_accuracy": pos.correct / max(pos.seen, 1),
            "test_loss": held_out["loss"],
            "test_accuracy": held_out.get("accuracy"),
            "images_per_s": pos.seen / max(pos.seconds, 1e-9),
            "seconds": pos.seconds,
            "lr": self.optimizer.lr,
        }
        # the train section's other metrics (box_iou, mean_iou, map50, ...: cnndsl.tasks.metrics)
        record.update({f"test_{k}": v for k, v in held_out.items() if f"test_{k}" not in record})
        self.log.append(record)
        self.pos = Position(epoch=pos.epoch + 1, step=pos.step)
        self.save()
        if self.is_root:
            plot(self.out)

    def _non_finite(self, x, y, loss: float) -> CnnError:
        """Name the step and the first layer whose output is not finite; the checkpoint stays the last good one."""
        culprit = first_non_finite_layer(self.model, x, y, self.pos.step)
        where = f"; the first non-finite value comes from layer '{culprit.name}'" if culprit else ""
        return CnnError([Diagnostic(
            "error", f"the loss became {loss} at step {self.pos.step} (epoch {self.pos.epoch + 1}, "
            f"batch {self.pos.batch + 1}){where}", culprit.span if culprit else None,
            help=f"lower the learning rate (now {self.optimizer.lr:.3g}); {self._checkpoint_note()}",
            code="non-finite")])

    def _checkpoint_note(self) -> str:
        if (self.out / "checkpoint.safetensors").exists():
            return f"the last good checkpoint in {self.out} is kept"
        return "no checkpoint had been written yet"


def warm_up(model, batch: int) -> None:
    """Compile (or load from the cache) every kernel of a training and an evaluation step, and
    leave the model exactly as it was: weights, running statistics and gradients restored."""
    from cnndsl.train.optim import SGD

    store = model.store
    saved = store.params.data.copy(), {k: v.copy() for k, v in store.buffers.items()}, store.params.grad.copy()
    previous = model.optimizer
    model.set_optimizer(SGD(store.params, lr=0.0))
    x = np.zeros((batch,) + model.input_shape, np.float32)
    targets = model.example_targets(batch)
    model.train_step(x, targets, step=0)
    model.evaluate(x, targets, batch)
    store.params.data[...] = saved[0]
    for k, v in saved[1].items():
        store.buffers[k][...] = v
    store.params.grad[...] = saved[2]
    model.set_optimizer(previous)


def first_non_finite_layer(model, x, y, step: int):
    """Re-run the forward pass of the failing batch node by node (parameters are those before
    the step: the optimizer step refuses to apply a non-finite loss) and return the first
    node whose output holds NaN or Inf."""
    exe = model.executable("loss_train", len(x))
    feeds = model._feeds(x, model._targets(y))
    rc, backend = exe.rc, exe.rc.backend
    rc.training, rc.step, rc.seed = True, step, model.seed
    backend.start_run(rc)
    for name, value in feeds.items():
        backend.copy_in(exe.arrays[name], value)
    for launch, node, ins, out in exe._steps:
        launch(rc, node, ins, out)
        if out is not None and out.dtype.kind == "f" and not np.isfinite(backend.to_host(out)).all():
            return node
    return None


def _correct(model, outs: dict, y) -> int:
    spec = model.losses[0]
    if spec.kind not in ("cross_entropy", "pixel_cross_entropy"):
        return 0
    target = y[spec.head] if isinstance(y, dict) else y
    return int((outs[spec.head].argmax(axis=1) == target).sum())
