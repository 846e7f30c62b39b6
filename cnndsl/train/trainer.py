"""The training loop: epochs of optimizer steps, held-out evaluation, checkpoints.

Everything a run writes goes into its output folder, atomically:
  checkpoint.safetensors   weights + optimizer state + position (epoch, batch), after every
                           epoch and on Ctrl-C, so `--resume` continues exactly where it stopped
  weights.safetensors      the latest weights alone (readable by other frameworks)
  metrics.json, curves.png one record per epoch, and their plot

Determinism: the data order of an epoch depends only on (seed, epoch), dropout
masks on (seed, step, element), so a resumed run ends with the same weights as
an uninterrupted one.

Safety: the data is checked before the first step (at least one batch of training images, a
non-empty held-out split); `fit` holds the folder's lock (cnndsl.train.run_dir) and removes
temporary files of writes killed mid-way; a non-finite held-out loss stops the run like a
non-finite training loss; nothing non-finite is ever written to a checkpoint or weights file; a
failed write (a full disk) is an error naming the file, and every file keeps its last complete
version; a second Ctrl-C while the checkpoint is being saved waits for the save to finish.
"""
from __future__ import annotations

import errno
import math
import signal
import sys
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnndsl.augment.pipeline import Pipeline
from cnndsl.diagnostics import CnnError, Diagnostic, abbreviated, file_error, interrupted
from cnndsl.distributed.comm import LocalComm, shard
from cnndsl.io.weights import (CHECKPOINT_FILE, check_checkpoint_meta, load_checkpoint, match_weights,
                               save_checkpoint, save_weights)
from cnndsl.train.metrics import MetricsLog, epoch_line, plot
from cnndsl.train.run_dir import BEST_FILE, LOG_FILE, MODEL_COPY, SETTINGS_FILE
from cnndsl.train.optim import make_optimizer
from cnndsl.train.progress import Progress, _is_tty
from cnndsl.train.schedule import Schedule
from cnndsl.train.watch import EarlyStopping, lower_is_better, watched_names

if TYPE_CHECKING:  # the frontend builds it; train/ does not import the frontend (it imports train/'s declarations)
    from cnndsl.frontend.training import TrainingConfig


# The held-out split is evaluated in batches of this size, or of the training batch when that is
# smaller (as Keras's fit evaluates at its batch_size): a smaller --batch then shrinks evaluation's
# memory too, which is what a user out of memory reaches for (cnndsl.analysis.memory counts it).
EVAL_BATCH = 256


def with_overrides(config: TrainingConfig, epochs=None, batch=None, lr=None, seed=None, early_stopping=None,
                   patience=None, checkpoint_best=None) -> TrainingConfig:
    """The training section with command-line overrides applied (`early_stopping`: the metric
    watched, `patience`: its epochs; either one alone switches early stopping on)."""
    changes = {k: v for k, v in (("epochs", epochs), ("batch", batch), ("seed", seed),
                                 ("checkpoint_best", checkpoint_best)) if v is not None}
    if lr is not None:
        changes["optimizer"] = config.optimizer.with_options(lr=lr)
    if early_stopping is not None or patience is not None:
        base = config.early_stopping or EarlyStopping()
        changes["early_stopping"] = replace(base, **{k: v for k, v in (("metric", early_stopping),
                                                                       ("patience", patience)) if v is not None})
    return replace(config, **changes)



def watched_value(record: dict, name: str):
    """The value early stopping or `checkpoint best=` watches in an epoch's record: `loss` is
    the held-out loss, `train_loss` the training loss, any other name the held-out metric
    (`test_<name>`, or `test_<head>_<name>` when a head prefixes it)."""
    if name == "train_loss":
        return record.get("train_loss")
    key = f"test_{name}"
    if key in record:
        return record[key]
    return next((v for k, v in record.items() if k.startswith("test_") and k.endswith("_" + name)), None)


def best_epoch(records: list[dict], name: str, min_delta: float = 0.0) -> tuple[float | None, int | None]:
    """(best value, its epoch) of `name` over the records: a value counts as better only when it
    beats the best so far by more than `min_delta` (higher is better, except for losses, mae, mse)."""
    lower = lower_is_better(name)
    best, epoch = None, None
    for r in records:
        v = watched_value(r, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            continue
        if best is None or (v < best - min_delta if lower else v > best + min_delta):
            best, epoch = float(v), r.get("epoch")
    return best, epoch


def make_schedule(config: TrainingConfig) -> Schedule:
    """The learning-rate schedule. A warm-up as long as the run (e.g. `--epochs 1` on a file that
    warms up for 1 epoch) is shortened to half the run, so a short trial run still trains."""
    s = config.schedule
    options = dict(s.options)
    if "warmup" in options:
        options["warmup"] = min(float(options["warmup"]), config.epochs / 2)
    return Schedule(kind=s.kind, lr=config.optimizer.lr, epochs=float(config.epochs), **options)


def optimizer_for(config: TrainingConfig, params):
    """The optimizer the training section names, with the options its kind declares."""
    o = config.optimizer
    return make_optimizer(o.name, params, **o.hyper())


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


class _Interrupts:
    """SIGINT (Ctrl-C) during `fit`: the first raises KeyboardInterrupt, as Python's own handler
    does (the loop then saves a checkpoint and stops); one arriving while a checkpoint is being
    written waits until the write is complete; once the run is stopping, more are ignored. So a
    second Ctrl-C cannot cut the save of the first one short. Installed only in the main thread
    and only over Python's default handler (an ignored or custom SIGINT stays as it is).

    A handler's exception lands wherever Python code runs, and Python swallows one raised in a
    finalizer (`__del__`) or a weakref callback with an "Exception ignored" message. Seen in CI: the
    Ctrl-C met llvmlite's `ObjectRef.__del__` during a garbage collection, the run went on to its
    end and exited 0, and as `stopping` was set, a second Ctrl-C was ignored too. So the raise is
    also a request: `check()`, called between steps, delivers one that was swallowed, and while
    installed the unraisable hook keeps that KeyboardInterrupt's traceback off the terminal."""

    def __init__(self):
        self.stopping = False
        self.saving = 0
        self.pending = False
        self.requested = False  # a Ctrl-C was raised by _handle and has not reached the loop yet
        self._previous = None
        self._previous_hook = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._previous_hook
            self._previous = self._previous_hook = None

    def _handle(self, signum, frame) -> None:
        if self.stopping:
            return
        if self.saving:
            self.pending = True
            return
        self.stopping = self.requested = True
        raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        """A finalizer swallowed our KeyboardInterrupt: `check()` delivers it, say nothing here."""
        if not (self.requested and unraisable.exc_type is KeyboardInterrupt):
            self._previous_hook(unraisable)

    def delivered(self) -> None:
        """The loop has caught the interrupt (or is stopping for another reason)."""
        self.requested = False
        self.stopping = True

    def check(self) -> None:
        """Between steps: a Ctrl-C that a finalizer swallowed takes effect now."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    def begin_save(self) -> None:
        self.saving += 1

    def end_save(self) -> None:
        """After a save: an interrupt that came during it takes effect now."""
        self.saving -= 1
        if not self.saving and self.pending and not self.stopping:
            self.pending = False
            self.stopping = True
            raise KeyboardInterrupt


def check_batch_splits(batch: int, ranks: int) -> None:
    """The global batch must split evenly over the ranks (`cnndsl train` checks it before compiling)."""
    if batch % ranks:
        raise CnnError([Diagnostic(
            "error", f"the batch of {batch} does not split over {ranks} processes",
            help=f"the batch is global: choose a multiple of {ranks} (e.g. --batch {batch // ranks * ranks or ranks}) "
                 "or launch another number of processes", code="distributed-batch")])


def _jsonable(value):
    """Dataclasses, tuples, spans-free: the resolved settings as JSON values."""
    import dataclasses

    if hasattr(type(value), "record"):  # a kind and its options (optimizer, schedule): one flat object
        return _jsonable(value.record())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "spans"}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Trainer:
    """Trains `model`; with a multi-rank `comm` (cnndsl.distributed) every rank runs one Trainer
    on its shard of each global batch, and the ranks average their gradients every step.

    `data_name` names the data in messages (e.g. the --data file); `run_settings` adds settings
    the trainer cannot know (the CLI's -D values, --data, --profile, --network) to those saved
    in every checkpoint, which `cnndsl train --resume` restores. `compile_report`: how the compile
    phase before the first step shows itself ("live", "lines", None: see compile_kernels; "auto":
    live on a terminal when `progress` is on, else silent)."""

    def __init__(self, model, train_set, test_set, config: TrainingConfig, out_dir, progress: bool = True,
                 augment: bool = True, comm=None, data_name: str | None = None, run_settings: dict | None = None,
                 compile_report: str | None = "auto", echo=None):
        self.model = model
        self.train_set, self.test_set = train_set, test_set
        self.settings = config
        self.eval_batch = min(EVAL_BATCH, config.batch)
        self.out = Path(out_dir)
        self.comm = comm or LocalComm()
        self.is_root = self.comm.rank == 0
        self.progress_enabled = progress and self.is_root
        # the compile phase's status line (compile_kernels): "auto" follows `progress`
        self.compile_report = compile_report
        self.data_name = data_name
        self.run_settings = dict(run_settings or {})
        self.augment_flag = bool(augment)
        self._check_data()
        self.schedule = make_schedule(config)
        self.optimizer = optimizer_for(config, model.store.params)
        self.pos = Position()
        self._saved_pos: Position | None = None
        self._interrupts = _Interrupts()
        self.log = MetricsLog(self.out)
        # the metrics the train section declares, as named in the records (test_<name>), in the
        # epoch line and in the plot's panels (cnndsl.tasks.metrics.metric_names)
        from cnndsl.tasks.metrics import metric_names, train_metric_name

        self.metric_names = metric_names(model)
        self.train_metric = train_metric_name(model)
        self.values_per_target = _values_per_target(model)
        self._check_watched()
        self.stop_reason: str | None = None  # set when early stopping ends the run
        # console(text): a line for the user, printed by `echo` (None: not printed) and kept in train.log
        self.echo = echo
        # extra metadata of the weights files (class names of the data, by cnndsl train)
        self.weights_metadata: dict[str, str] = {}
        # training batches only, never evaluation; keyed on (seed, epoch, image index)
        self.augment = Pipeline.from_config(config.augment, config.seed) if augment and config.augment else None
        if self.comm.size > 1:
            self._join_ranks()
        model.set_optimizer(self.optimizer)

    # -- the compile phase -------------------------------------------------------------
    def compile_kernels(self):
        """Compile (or load from the cache) every kernel of this run's steps before the first one,
        with the status line `compile_report` asks for (rank 0 only). See compile_kernels below."""
        report = self.compile_report if self.is_root else None
        if report == "auto":
            report = (("live" if _is_tty(sys.stderr) else "lines") if self.progress_enabled else None)
        # over MPI, no worker processes (rank 0 compiles alone; a child of an MPI rank inherits its
        # launcher's environment)
        return compile_kernels(self.model, self.settings, batch=self.settings.batch // self.comm.size,
                               eval_batch=self.eval_batch, augment=self.augment, report=report,
                               processes=1 if self.comm.size > 1 else None)

    # -- the data ------------------------------------------------------------------
    def _data_error(self, message: str, expected: str, found: str, help: str, code: str) -> CnnError:
        if self.data_name:
            return file_error(self.data_name, message, expected=expected, found=found, help=help, code=code)
        return CnnError([Diagnostic("error", message, None, [f"expected: {expected}", f"found: {found}"], help,
                                    code=code)])

    def _check_data(self) -> None:
        """Enough data for one batch and a held-out evaluation, before anything runs (an empty
        held-out split was a ZeroDivisionError after the first epoch)."""
        s, n_train, n_test = self.settings, len(self.train_set), len(self.test_set)
        what = "the data" if self.data_name else "the training data"  # a data_name is the message's location
        if n_train == 0:
            raise self._data_error(f"{what} holds no training images", expected="at least one batch of images",
                                   found="0 training images", help="train on a data set with images",
                                   code="data-too-small")
        if n_train < s.batch:
            raise self._data_error(
                f"{what} has fewer training images than one batch", expected=f"at least {s.batch} training images "
                f"(the batch size)", found=f"{n_train} training image{'s' if n_train != 1 else ''}",
                help=f"a smaller batch (--batch {n_train}), or more data", code="data-too-small")
        if n_test == 0:
            total = n_train + n_test
            raise self._data_error(
                f"{what} leaves no held-out images to evaluate on", expected="at least one held-out image",
                found=f"{n_train} training and 0 held-out images",
                help=(f"more data: a data set without a test split is split 80/20, and {total} image"
                      f"{'s' if total != 1 else ''} leave{'s' if total == 1 else ''} none held out")
                if self.data_name else "give a validation set of at least one image",
                code="data-too-small")

    # -- several ranks -------------------------------------------------------------
    def _join_ranks(self) -> None:
        check_batch_splits(self.settings.batch, self.comm.size)
        if self.is_root:  # compile once and fill the kernel cache, so the other ranks only load it
            self.compile_kernels()
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
    def _check_running_sums(self, ckpt, position: dict) -> None:
        """The position's counts agree with each other and with the run: images seen this epoch
        at most the batches done times the batch, correct predictions at most the values those
        images hold, an epoch not past the run's saved epoch count (a damaged or edited checkpoint
        otherwise resumed into nonsense accuracies, or "finished its 1000000000 epochs")."""
        seen_max = min(position["batch"] * self.settings.batch, len(self.train_set))
        spec = self.model.losses[0]
        head = self.model.graph.node(self.model.graph.heads[spec.head]).type
        per_image = math.prod(head.shape[1:]) if spec.kind == "pixel_cross_entropy" else 1
        saved_epochs = (ckpt.meta.get("settings") or {}).get("epochs")
        problems = []
        if position.get("seen", 0) > seen_max:
            problems.append(("position.seen", f"at most {seen_max:,} (images in {position['batch']} batches of "
                             f"{self.settings.batch})", position["seen"]))
        if position.get("correct", 0) > position.get("seen", 0) * per_image:
            problems.append(("position.correct", f"at most position.seen x {per_image} = "
                             f"{position.get('seen', 0) * per_image:,}", position["correct"]))
        if isinstance(saved_epochs, int) and position["epoch"] > saved_epochs:
            problems.append(("position.epoch", f"at most the run's {saved_epochs} epochs", position["epoch"]))
        if problems:
            field, expected, found = problems[0]
            raise file_error(ckpt.path, f"checkpoint metadata field '{field}' does not agree with the run",
                             expected=expected, found=f"{found}",
                             help="the checkpoint was damaged or edited; start a new run (--overwrite)",
                             code="checkpoint-format")

    def resume(self, checkpoint=None) -> None:
        """Continue from the checkpoint in the output folder (read by rank 0, sent to the others);
        `checkpoint`: one already read with `load_checkpoint` (the CLI reads it for its settings)."""
        position = None
        if self.is_root:
            ckpt = checkpoint if checkpoint is not None else load_checkpoint(self.out)
            position = check_checkpoint_meta(ckpt.path, ckpt.meta)["position"]  # types and ranges
            per_epoch = self.train_set.num_batches(self.settings.batch)
            if position["batch"] > per_epoch:
                raise file_error(ckpt.path, "checkpoint metadata field 'position.batch' is past the end of an epoch",
                                 expected=f"at most {per_epoch} (batches of {self.settings.batch} in an epoch of "
                                          f"{len(self.train_set)} training images)",
                                 found=f"{position['batch']}",
                                 help="the checkpoint belongs to another data set or batch size, or was damaged; "
                                      "resume with the run's own --data and --batch, or start a new run",
                                 code="checkpoint-format")
            self._check_running_sums(ckpt, position)
            match_weights(ckpt.tensors, self.model.store.expected_shapes()).raise_if_mismatch(ckpt.path)
            self.model.store.load_state_dict(ckpt.tensors)
            self.optimizer.load_state_dict(ckpt.optimizer_state, path=ckpt.path)
            self._writing(self.log.path, self.log.load_existing, position["epoch"])
        position = self.comm.bcast_object(position)
        self.pos = Position(**{k: v for k, v in position.items() if k in Position.__annotations__})
        self._saved_pos = replace(self.pos)
        if self.comm.size > 1:
            self._broadcast_state()

    def checkpoint_settings(self) -> dict:
        """The run's settings as saved in every checkpoint (cnndsl.train.run_dir.SETTINGS)."""
        s = self.settings
        settings = {"epochs": s.epochs, "batch": s.batch, "lr": float(s.optimizer.lr), "seed": s.seed,
                    "augment": self.augment_flag, "opt_level": getattr(self.model, "opt_level", None)}
        settings.update(self.run_settings)
        return {k: v for k, v in settings.items() if v is not None or k in self.run_settings}

    def save(self) -> None:
        """Checkpoint and weights, written by rank 0 (atomically); the others wait for it. Values
        are checked finite first: a non-finite one is an error naming its layer, and the files
        of the last good save are kept. A SIGINT during the save waits for its end."""
        self._interrupts.begin_save()
        try:
            if self.is_root:
                state = self.model.store.state_dict()
                optim_state = self.optimizer.state_dict()
                self._check_finite(state, optim_state)
                meta = {"position": self.pos.meta(), "seed": self.settings.seed, "network": self.model.graph.name,
                        "world_size": self.comm.size, "settings": self.checkpoint_settings()}
                self._writing(self.out / CHECKPOINT_FILE, save_checkpoint, self.out, state, optim_state, meta)
                self._writing(self.out / "weights.safetensors", save_weights, self.out / "weights.safetensors", state,
                              {"network": self.model.graph.name, "epoch": str(self.pos.epoch),
                               **self.weights_metadata})
            self.comm.barrier()
            self._saved_pos = replace(self.pos)
        finally:
            self._interrupts.end_save()

    def _writing(self, path: Path, write, *args):
        """`write(*args)`, with an OSError (a full disk, a folder made read-only) turned into an
        error naming the file; atomic writes leave every file's previous version in place."""
        try:
            return write(*args)
        except OSError as e:
            reason = e.strerror or str(e)
            full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise file_error(path, f"cannot write {Path(path).name}: {reason}",
                             expected="a folder with free space that this user can write", found=reason,
                             help=("free some space, then " if full else "fix the folder, then ")
                                  + "continue: every file of the run keeps its last complete version; "
                                  + self._checkpoint_note(), code="write-failed") from None

    def _check_finite(self, state: dict, optim_state: dict) -> None:
        bad = [name for name, arr in state.items() if arr.size and not np.isfinite(arr).all()]
        flat_bad = []
        layout = self.model.store.params.layout
        for key, arr in optim_state.items():
            arr = np.asarray(arr)
            if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
                where = int(np.flatnonzero(~np.isfinite(arr.ravel()))[0])
                owner = next((n for n, seg in layout.segments.items() if seg.offset <= where < seg.stop), None)
                flat_bad.append(f"optimizer {key} of '{owner}'" if owner else f"optimizer {key}")
        if not bad and not flat_bad:
            return
        owner = getattr(self.model.store, "owner", {})
        first = bad[0] if bad else None
        layer = owner.get(first) or (first.rsplit(".", 1)[0] if first else None)
        node = None
        if layer is not None and layer in self.model.graph:
            node = self.model.graph.node(layer)
        what = abbreviated([f"'{n}'" for n in bad] + flat_bad)
        where = f" of layer '{layer}'" if layer else ""
        raise CnnError([Diagnostic(
            "error", f"non-finite values{where} after epoch {self.pos.epoch} (step {self.pos.step}): {what}; "
            "nothing was written", node.span if node is not None else None,
            help=f"lower the learning rate (now {self.optimizer.lr:.3g}); {self._checkpoint_note()}",
            code="non-finite")])

    # -- the loop ----------------------------------------------------------------
    def fit(self, on_epoch=None) -> list[dict]:
        """Train to the last epoch; `on_epoch(record)` is called after each epoch's evaluation."""
        s = self.settings
        per_epoch = self.train_set.num_batches(s.batch)
        report = getattr(self.model, "init_report", None)
        if report is not None and self.is_root and self.pos.epoch == 0 and self.pos.batch == 0:
            import sys

            print("\n".join(report.lines()), file=sys.stderr)  # transfer learning: what was loaded
        lock = None
        if self.is_root:
            from cnndsl.train.run_dir import RunLock, clean_stale_temps

            self._writing(self.out, self.out.mkdir, 0o777, True, True)  # parents, exist_ok
            lock = RunLock(self.out).acquire()  # re-entrant: the CLI holds it already
        self._interrupts.install()
        try:
            if self.is_root:
                clean_stale_temps(self.out)
            if self.comm.size == 1:  # several ranks: done in _join_ranks, on rank 0, before the others load it
                # a Ctrl-C while compiling saves the untouched model's checkpoint, as one in the first step did
                self.compile_kernels()
            if self.is_root:
                self.write_run_record()
            self.stop_reason = self._early_stop()  # a resumed run that had stopped early stays stopped
            while self.pos.epoch < s.epochs and self.stop_reason is None:
                self._interrupts.check()
                self._run_epoch(per_epoch)
                self.console(epoch_line(self.log.records[-1], self.metric_names))
                if on_epoch:
                    on_epoch(self.log.records[-1])
                self.stop_reason = self._early_stop()
            if self.stop_reason is not None:
                self.console(self.stop_reason)
            self._interrupts.check()  # one swallowed in the last epoch's evaluation or save
        except BaseException as e:
            # A Ctrl-C that lands while a C extension initializes comes back as that import's error:
            # pybind11 turns it into "ImportError: initialization failed" (matplotlib's Agg backend,
            # first imported by the first epoch's plot; seen once in CI's sweep run). Our handler has
            # set `stopping` when it raised, and the interrupt is the error's cause: stop as for Ctrl-C.
            if not (isinstance(e, KeyboardInterrupt) or self._interrupts.stopping or interrupted(e)):
                raise
            self._interrupts.delivered()  # from here on, another Ctrl-C cannot cut the save short
            if self.pos != self._saved_pos:
                self.save()
            if isinstance(e, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt from e
        finally:
            self._interrupts.restore()
            if lock is not None:
                lock.release()
        return self.log.records

    def _run_epoch(self, per_epoch: int) -> None:
        s, pos = self.settings, self.pos
        bar = Progress(total=per_epoch, desc=f"epoch {pos.epoch + 1}/{s.epochs}", initial=pos.batch,
                       enabled=self.progress_enabled)
        start = time.perf_counter()
        plateau = self.plateau_scale()
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
                self.optimizer.lr = self.schedule.reduced(self.schedule.lr_for_step(pos.epoch, pos.batch, per_epoch),
                                                          plateau)
                loss, outs = self.model.train_step(x, y, pos.step, share=len(x) / n_global)
                if not math.isfinite(loss):
                    raise self._non_finite(x, y, loss)
                pos.loss_sum += loss * n_global  # the loss is already the global batch's mean
                pos.correct += self._global_count(_correct(self.model, outs, y))
                pos.seen += n_global
                pos.batch += 1
                pos.step += 1
                elapsed = pos.seconds + time.perf_counter() - start
                bar.update(loss=pos.loss_sum / pos.seen, accuracy=self._train_accuracy(pos),
                           images_per_s=pos.seen / max(elapsed, 1e-9))
                self._interrupts.check()
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

    def _check_watched(self) -> None:
        """--early-stopping / --checkpoint-best (or the API's) name a value the run records (the
        train section's own lines are checked with the file)."""
        names = watched_names(self.model.config.metrics, self.model.losses)
        rule = self.settings.early_stopping
        for option, value in (("--early-stopping", rule.metric if rule else None),
                              ("--checkpoint-best", self.settings.checkpoint_best)):
            if value is not None and value not in names:
                from cnndsl.diagnostics import did_you_mean

                hint = did_you_mean(value, names)
                raise CnnError([Diagnostic(
                    "error", f"{option} {value}: this run records no such value",
                    details=[f"expected: one of {', '.join(names)}", f"found: {value}"],
                    help=(hint + "; " if hint else "") + "declare a metric in the train section with "
                    "`metric HEAD KIND` to watch it", code="unknown-metric")])

    # -- what the run folder records besides weights and metrics -----------------------
    def console(self, text: str) -> None:
        """A line for the user: printed through `echo` and appended to train.log (rank 0)."""
        if not self.is_root:
            return
        if self.echo is not None:
            self.echo(text)
        path = self.out / LOG_FILE
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text.rstrip("\n") + "\n")
        except OSError as e:
            raise file_error(path, f"cannot write {LOG_FILE}: {e.strerror or e}",
                             expected="a folder with free space that this user can write", found=str(e.strerror or e),
                             help="free some space or fix the folder, then continue with --resume",
                             code="write-failed") from None

    def write_run_record(self) -> None:
        """model.cnn (the exact text compiled) and settings.json (the resolved training section,
        the run's flags, the network parameters), atomically, at the start of every (resumed) run."""
        import json

        from cnndsl.io.atomic import atomic_write_bytes

        program = getattr(self.model, "program", None)
        source = getattr(program, "source", None)
        if source is not None:
            self._writing(self.out / MODEL_COPY, atomic_write_bytes, self.out / MODEL_COPY, source.encode("utf-8"))
        settings = {
            "network": self.model.graph.name,
            "model_file": str(getattr(program, "path", "")) or None,
            "profile": getattr(program, "profile", None),
            "parameters": _jsonable(dict(getattr(program, "params", {}) or {})),
            "device": getattr(self.model, "device", "cpu"),
            "opt_level": getattr(self.model, "opt_level", None),
            "processes": self.comm.size,
            "run": _jsonable(self.run_settings),
            "training": _jsonable(self.settings),
        }
        text = json.dumps(settings, indent=1, allow_nan=False) + "\n"
        self._writing(self.out / SETTINGS_FILE, atomic_write_bytes, self.out / SETTINGS_FILE, text.encode("utf-8"))

    def _early_stop(self) -> str | None:
        """Why the run stops before its last epoch (`early_stopping`), or None to go on. Decided
        from the metrics log alone, so a resumed run decides as the uninterrupted one would."""
        rule = self.settings.early_stopping
        if rule is None or not self.log.records:
            return None
        best, epoch = best_epoch(self.log.records, rule.metric, rule.min_delta)
        last = self.log.records[-1]["epoch"]
        if best is None:
            if last >= rule.patience:
                return (f"early stopping: no epoch recorded a finite {rule.metric} in {last} epochs "
                        f"(patience {rule.patience})")
            return None
        if last - epoch < rule.patience:
            return None
        what = "held-out " + rule.metric if rule.metric != "train_loss" else "training loss"
        return (f"early stopping after epoch {last}: the {what} has not improved"
                + (f" by more than {rule.min_delta:g}" if rule.min_delta else "")
                + f" for {last - epoch} epoch{'s' if last - epoch != 1 else ''} (best {best:.4g} at epoch {epoch})")

    def _save_best(self, record: dict) -> None:
        """`checkpoint best=NAME`: the weights of the epoch with the best NAME so far in
        best.safetensors (written atomically, with the epoch and the value in its metadata)."""
        name = self.settings.checkpoint_best
        if name is None or not self.is_root:
            return
        best, epoch = best_epoch(self.log.records, name)
        if epoch != record["epoch"]:
            return
        from cnndsl.io.weights import save_weights

        path = self.out / BEST_FILE
        state = self.model.store.state_dict()
        self._writing(path, save_weights, path, state,
                      {"network": self.model.graph.name, "epoch": str(record["epoch"]), "metric": name,
                       "value": repr(best), **self.weights_metadata})

    def _train_accuracy(self, pos: Position) -> float | None:
        """The running argmax accuracy of the first loss's head: correct values over the values
        seen (a per-pixel head has H*W values per image); None when that loss does not classify."""
        if self.values_per_target is None:
            return None
        return pos.correct / max(pos.seen * self.values_per_target, 1)

    def plateau_scale(self) -> float:
        """`schedule plateau`: the reductions the held-out values of the epochs so far call for (replayed
        from the records, so a resumed run reduces as an uninterrupted one); 1 for other schedules."""
        if self.schedule.kind != "plateau":
            return 1.0
        name = self.settings.schedule.metric
        return self.schedule.plateau_scale([watched_value(r, name) for r in self.log.records], lower_is_better(name))

    def _end_epoch(self) -> None:
        pos = self.pos
        held_out = self.model.evaluate(self.test_set.x, self.test_set.y, self.eval_batch)
        if not math.isfinite(held_out["loss"]):
            raise self._non_finite_held_out(held_out["loss"])
        train_accuracy = self._train_accuracy(pos)
        record = {
            "epoch": pos.epoch + 1,
            "train_loss": pos.loss_sum / max(pos.seen, 1),
            "train_accuracy": train_accuracy,
            "test_loss": held_out["loss"],
            "test_accuracy": held_out.get("accuracy"),
            "images_per_s": pos.seen / max(pos.seconds, 1e-9),
            "seconds": pos.seconds,
            "lr": self.optimizer.lr,
        }
        # the train section's other metrics (box_iou, mean_iou, map50, ...: cnndsl.tasks.metrics)
        record.update({f"test_{k}": v for k, v in held_out.items() if f"test_{k}" not in record})
        if self.train_metric is not None and self.train_metric != "accuracy":
            record[f"train_{self.train_metric}"] = train_accuracy  # e.g. train_pixel_accuracy
        if self.is_root:
            self._writing(self.log.path, self.log.append, record)
        else:
            self.log.records.append(record)
        self.pos = Position(epoch=pos.epoch + 1, step=pos.step)
        self.save()
        self._save_best(self.log.records[-1])
        if self.is_root:
            self._writing(self.out / "curves.png", plot, self.out, None, None, self.metric_names)

    def _non_finite(self, x, y, loss: float) -> CnnError:
        """Name the step and the first layer whose output is not finite; the checkpoint stays the last good one."""
        culprit = first_non_finite_layer(self.model, x, y, self.pos.step)
        where = f"; the first non-finite value comes from layer '{culprit.name}'" if culprit else ""
        return CnnError([Diagnostic(
            "error", f"the loss became {loss} at step {self.pos.step} (epoch {self.pos.epoch + 1}, "
            f"batch {self.pos.batch + 1}){where}", culprit.span if culprit else None,
            help=f"lower the learning rate (now {self.optimizer.lr:.3g}); {self._checkpoint_note()}",
            code="non-finite")])

    def _non_finite_held_out(self, loss: float) -> CnnError:
        """The held-out loss is not finite (e.g. NaN batchnorm running statistics, which only
        inference uses): name the epoch, the step and the first layer whose output is not finite
        on the first such held-out batch; nothing of this epoch is written."""
        culprit = None
        for x, y in self.test_set.batches(self.eval_batch, shuffle=False):
            if not math.isfinite(self.model.evaluate(x, y, self.eval_batch)["loss"]):
                culprit = first_non_finite_layer(self.model, x, y, self.pos.step, training=False)
                break
        where = f"; the first non-finite value comes from layer '{culprit.name}'" if culprit else ""
        stats = [n for n, b in self.model.store.buffers.items() if b.size and not np.isfinite(b).all()]
        if stats:
            where += f" (its running statistics are not finite: {abbreviated(stats)})" if culprit else \
                f"; running statistics not finite: {abbreviated(stats)}"
        return CnnError([Diagnostic(
            "error", f"the held-out loss became {loss} after epoch {self.pos.epoch + 1} (step {self.pos.step})"
            f"{where}; nothing of this epoch was written", culprit.span if culprit else None,
            help=f"lower the learning rate (now {self.optimizer.lr:.3g}); {self._checkpoint_note()}",
            code="non-finite")])

    def _checkpoint_note(self) -> str:
        if (self.out / "checkpoint.safetensors").exists():
            return f"the last good checkpoint in {self.out} is kept"
        return "no checkpoint had been written yet"


def warm_up(model, batch: int, eval_batch: int | None = None, optimizer=None, augment=None,
            kinds=("train", "eval")) -> None:
    """Compile (or load from the cache) every kernel of a training and an evaluation step, and
    leave the model exactly as it was: weights, running statistics and gradients restored.
    `kinds`: which of Model's executables to run ("train", "eval", "infer": a prediction at `batch`).

    `eval_batch`: the batch of the evaluation step (default `batch`); `optimizer`: one of the kind
    training will use (its kernel is compiled; its learning rate is set to 0 and its state is
    only its own; default plain SGD); `augment`: the run's augmentation Pipeline, run once on a
    batch of zeros when it maps the model's input shape to itself (its kernels are pure functions
    of the seed, the epoch and the image indices)."""
    from cnndsl.train.optim import SGD

    store = model.store
    saved = store.params.data.copy(), {k: v.copy() for k, v in store.buffers.items()}, store.params.grad.copy()
    previous = model.optimizer
    # the runtime's optimizer state as it is (set_optimizer(previous) would make it previous's: a
    # state the caller set on purpose, even a wrong one, must reach the caller's step unchanged)
    saved_state = getattr(store, "optimizer_state", None)
    if optimizer is None:
        optimizer = SGD(store.params, lr=0.0)
    optimizer.lr = 0.0
    model.set_optimizer(optimizer)
    try:
        x = np.zeros((batch,) + model.input_shape, np.float32)
        if augment is not None and len(augment) and tuple(augment.output_shape(model.input_shape)) == \
                tuple(model.input_shape):
            augment.apply(x, np.arange(batch, dtype=np.int64), 0)
        if "train" in kinds:
            model.train_step(x, model.example_targets(batch), step=0)
        if "eval" in kinds:
            eval_batch = batch if eval_batch is None else eval_batch
            model.evaluate(x[:eval_batch] if eval_batch <= batch else np.zeros((eval_batch,) + model.input_shape,
                                                                               np.float32),
                           model.example_targets(eval_batch), eval_batch)
        if "infer" in kinds:
            model.predict(x, batch)
    finally:
        store.params.data[...] = saved[0]
        for k, v in saved[1].items():
            store.buffers[k][...] = v
        store.params.grad[...] = saved[2]
        model.set_optimizer(previous)
        store.optimizer_state = saved_state


# What compile_kernels has warmed per model: (batch, evaluation batch, optimizer kind, augmented).
_WARMED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compile_kernels(model, config: TrainingConfig, batch: int | None = None, eval_batch: int | None = None,
                    augment=None, report: str | None = None, file=None, processes: int | None = None):
    """The compile phase before the first training step: compile (or load from Numba's cache)
    every kernel a training and an evaluation step need, with a status line that moves while
    Numba compiles (`report`: "live" on a terminal, "lines" for a log, None: silent; see
    cnndsl.train.progress.CompileStatus). When something has to compile, worker processes compile
    a share of it at once (`processes`: how many compile at once, this one included; default
    cnndsl.backend.compile_pool.pool_size(): CNNDSL_COMPILE_WORKERS, else the cores; 1: none).
    Returns a compile_pool.PoolCounter (count, seconds, records over every process; workers,
    after_pool), or None when there was nothing to do: done already for this model and these
    settings, or a device other than the CPU (its kernels compile on first use)."""
    from cnndsl.backend.compile_events import counting
    from cnndsl.backend.compile_pool import PoolCounter, compile_with_pool, pool_size
    from cnndsl.train.progress import CompileStatus

    if getattr(model, "device", "cpu") != "cpu":
        return None
    batch = config.batch if batch is None else batch
    eval_batch = min(EVAL_BATCH, batch) if eval_batch is None else eval_batch
    key = (batch, eval_batch, config.optimizer.name, augment is not None and len(augment) > 0)
    done = _WARMED.setdefault(model, set())
    if key in done:
        return None
    processes = pool_size(processes)
    optimizer = optimizer_for(config, model.store.params)
    status = CompileStatus(model.graph.name, report, file=file)
    failed = True
    combined = None

    def on_change(main):
        status.on_change(combined)  # the first line before the workers' start
        combined.main_changed(main)

    with counting(on_change) as counter:
        combined = PoolCounter(counter)
        try:
            compile_with_pool(model, batch, eval_batch, optimizer, augment, processes, combined,
                              on_change=status.on_change)
            failed = False
        finally:
            status.finish(combined, failed=failed)
    done.add(key)
    model._compiled_kinds.update(("train", "eval"))  # Model's own first-use phase: nothing left to do
    return combined


def first_non_finite_layer(model, x, y, step: int, training: bool = True):
    """Re-run the forward pass of the failing batch node by node (parameters are those before
    the step: the optimizer step refuses to apply a non-finite loss) and return the first
    node whose output holds NaN or Inf. `training=False`: with inference semantics (running
    batchnorm statistics, no dropout) for a held-out batch; the graph is the training-valid one,
    so layers keep their source names (no batchnorm folded into a conv)."""
    exe = model.executable("loss_train", len(x))
    # normalized as train_step and evaluate do (the caller passes the raw batch)
    feeds = model._feeds(model.prepare(x), model._targets(y))
    rc, backend = exe.rc, exe.rc.backend
    rc.training, rc.step, rc.seed = training, step, model.seed
    backend.start_run(rc)
    for name, value in feeds.items():
        backend.copy_in(exe.arrays[name], value)
    for launch, node, ins, out in exe._steps:
        launch(rc, node, ins, out)
        if out is not None and out.dtype.kind == "f" and not np.isfinite(backend.to_host(out)).all():
            return node
    return None


def _values_per_target(model) -> int | None:
    """How many class values one image's target of the first loss holds (1 for a class index,
    H*W for a per-pixel map); None when the first loss does not classify."""
    spec = model.losses[0]
    if spec.kind not in ("cross_entropy", "pixel_cross_entropy"):
        return None
    if spec.kind == "cross_entropy":
        return 1
    head = model.graph.node(model.graph.heads[spec.head]).type
    return math.prod(head.shape[1:])


def _correct(model, outs: dict, y) -> int:
    """Correct argmax values of the first loss's head in a batch (pixels, for a per-pixel head)."""
    spec = model.losses[0]
    if spec.kind not in ("cross_entropy", "pixel_cross_entropy"):
        return 0
    target = y[spec.head] if isinstance(y, dict) else y
    return int((outs[spec.head].argmax(axis=1) == target).sum())
