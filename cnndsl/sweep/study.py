"""The sweep: an Optuna study over a search space, each trial a short training run.

* A trial first asks the sampler (TPE by default) for a point and checks it with the shape
  checker (cnndsl/sweep/check.py) and the memory estimate: an invalid point is recorded with its
  reason and ends at once, before anything is compiled or trained. Optuna stores it as PRUNED
  without intermediate values, which its TPE sampler ranks below every trained trial; cnndsl
  counts it apart (user attribute state=invalid), and it does not count towards --trials.
* A valid point trains (cnndsl.train.Trainer, progress off) into DIR/trials/NNNN; after each
  epoch its held-out objective is reported to the pruner (median or successive halving), which
  may stop it (state=pruned).
* The study lives in DIR/study.db (SQLite), so a sweep that is interrupted resumes with the
  same command, and several processes started with the same command share the study. A trial
  left RUNNING by a process that died (kill -9) on this host is marked failed when the next
  process starts, and its point is queued again.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnndsl.diagnostics import CnnError, Diagnostic, Span, file_error, interrupted
from cnndsl.sweep.check import check_point, reason_text
from cnndsl.sweep.space import Space, show_point
from cnndsl.train.run_dir import process_alive, process_start_time

HOST = socket.gethostname()
STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
OBJECTIVES = ("accuracy", "loss")
MINIMIZE = ("flops", "params", "latency")
LATENCY_RUNS = 30  # timed single-image predictions per trial (--minimize latency), after 3 untimed


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise CnnError([Diagnostic("error", "cnndsl sweep needs Optuna, which is not installed", None,
                                   help="pip install 'cnndsl[sweep]'   (or: pip install optuna)",
                                   code="missing-optuna")]) from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no traceback for a trial stopped by Ctrl-C
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate TPE
    return optuna


@dataclass
class SweepConfig:
    file: str
    space: Space
    text: str
    out: Path
    trials: int
    epochs: int | None = None
    objective: str = "accuracy"  # accuracy (maximize) | loss (minimize): on the held-out split
    minimize: str | None = None  # flops | params | latency: a second objective (a Pareto front; no pruning)
    pruner: str = "median"  # median | halving | none
    sampler: str = "tpe"  # tpe | random
    seed: int | None = None  # the sampler's seed
    data: str | None = None
    augment: bool = True
    profile: str | None = None
    network: str | None = None
    storage: str | None = None  # a database URL (default: sqlite in out)
    study_name: str = "sweep"
    max_invalid: int | None = None  # stop after this many invalid points (default max(100, 10 * trials))
    opt_level: int = 2
    echo: Callable[[str], None] = print

    @property
    def multi(self) -> bool:
        return self.minimize is not None

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / STUDY_FILE).resolve()}"

    def fingerprint(self) -> dict[str, Any]:
        """What makes a study the same study: a resumed or joined sweep must agree on all of it."""
        import hashlib

        return {"file": str(Path(self.file).resolve()), "space": self.space.describe(),
                "source": hashlib.sha256(self.text.encode()).hexdigest()[:16],
                "defines": dict(sorted(self.space.defines.items())), "objective": self.objective,
                "minimize": self.minimize, "epochs": self.epochs, "data": self.data, "augment": self.augment,
                "profile": self.profile, "network": self.network}


# ---- process identity (for trials left behind by a killed process) ---------------------------------
PID = os.getpid()
PID_START = process_start_time(PID)


# ---- opening the study ---------------------------------------------------------------------------------
def open_study(cfg: SweepConfig):
    optuna = require_optuna()
    user_storage = None
    if cfg.storage is not None:  # opened first: a URL that cannot be opened leaves no --out folder behind
        # a database server shared by machines: a trial whose process stops sending heartbeats is
        # failed after the grace period and its point retried once
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
        else:
            retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
        user_storage = _user_storage(optuna, cfg.storage, heartbeat_interval=30, grace_period=120, **retry)
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error(str(cfg.out), f"cannot create the sweep folder: {e.strerror or e}",
                         help="choose another --out", code="sweep-out") from None
    if not os.access(cfg.out, os.W_OK):
        raise file_error(str(cfg.out), "the sweep folder is not writable", help="choose another --out",
                         code="sweep-out")
    if user_storage is None:
        with _creation_lock(cfg.out):  # two processes creating the database's tables at once collide
            storage = _rdb_storage(optuna, cfg.storage_url(), engine_kwargs={"connect_args": {"timeout": 120}})
            return _create(optuna, cfg, storage)
    return _create(optuna, cfg, user_storage)


def _user_storage(optuna, url: str, **kwargs):
    """The --storage database; a URL that names no database SQLAlchemy knows, a driver that is not
    installed, or a database that cannot be opened is an error about --storage (they were internal
    errors: NoSuchModuleError, OperationalError)."""
    import sqlalchemy.exc

    try:
        return _rdb_storage(optuna, url, **kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as e:
        if interrupted(e):
            raise
        try:
            shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
        except Exception:  # not a URL at all: shown as given
            shown = url
        reason = str(getattr(e, "orig", None) or e).splitlines()[0] if str(e) else type(e).__name__
        raise CnnError([Diagnostic(
            "error", f"--storage {shown}: cannot open the database", Span("<command line>", 0, 0),
            ["expected: a database URL SQLAlchemy can open, e.g. sqlite:////shared/study.db or "
             "postgresql://user@host/db (with its driver installed)", f"found: {type(e).__name__}: {reason}"],
            help="check the URL, that the database server is reachable and that its driver is installed; "
                 "leave --storage out for a SQLite file in --out", code="sweep-storage")]) from None


def _rdb_storage(optuna, url: str, **kwargs):
    """optuna's RDBStorage, which creates the database's tables if they are missing. Another process
    that does not take our lock (optuna.load_study in a script, a dashboard, a sweep on another
    machine sharing a server) may create them at the same moment: its CREATE TABLE then wins and
    ours fails with 'table ... already exists' (seen in 1 of 15 runs of test_sweep's kill test,
    whose reader opened the study as the sweep created it). The tables exist then: open again."""
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.OperationalError as e:
            if "already exists" not in str(e) or attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _creation_lock(folder: Path):
    import fcntl

    with open(folder / ".study.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _create(optuna, cfg: SweepConfig, storage):
    directions = ["maximize" if cfg.objective == "accuracy" else "minimize"] + (["minimize"] if cfg.multi else [])
    sampler = _sampler(optuna, cfg, storage)
    pruner = _pruner(optuna, cfg)
    for attempt in range(5):  # two processes creating one study at the same moment: one of them loads it
        try:
            study = optuna.create_study(storage=storage, study_name=cfg.study_name, directions=directions,
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
            break
        except optuna.exceptions.DuplicatedStudyError:
            time.sleep(0.2 * (attempt + 1))
    else:  # pragma: no cover
        raise CnnError([Diagnostic("error", "could not open the study", None, code="sweep-study")])
    if [d.name.lower() for d in study.directions] != directions:
        raise _mismatch(cfg, "objectives", " + ".join(d.name.lower() for d in study.directions),
                        " + ".join(directions))
    saved = study.user_attrs.get("cnndsl")
    mine = cfg.fingerprint()
    if saved is None:
        study.set_user_attr("cnndsl", mine)
    else:
        for key in mine:
            if saved.get(key) != mine[key]:
                raise _mismatch(cfg, key, saved.get(key), mine[key])
    return study


def _mismatch(cfg: SweepConfig, key, theirs, mine) -> CnnError:
    where = str(cfg.out / STUDY_FILE) if cfg.storage is None else cfg.storage
    if key == "source":  # trials of two versions of a network must not mix in one study
        return file_error(where, f"{cfg.file} has changed since this study was started",
                          expected=f"the file as it was (sha256 {theirs}...)", found=f"sha256 {mine}...",
                          help="give another --out (or --study NAME) for the changed file, or restore it",
                          code="sweep-mismatch")
    return file_error(where, f"this study was started with another {key}",
                      expected=f"{key} {theirs!r} (as the study was started)", found=f"{key} {mine!r}",
                      help="run the sweep with the settings it was started with, or give another --out "
                           "(or --study NAME) for a new study", code="sweep-mismatch")


def _sampler(optuna, cfg: SweepConfig, storage):
    seed = cfg.seed
    if seed is not None:  # a resumed sweep, or a second process, does not repeat the first one's draws
        try:
            n = len(storage.get_all_trials(storage.get_study_id_from_name(cfg.study_name), deepcopy=False))
        except KeyError:
            n = 0
        seed = seed + n
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, cfg.trials // 2)),
                                      multivariate=True)


def _pruner(optuna, cfg: SweepConfig):
    if cfg.multi or cfg.pruner == "none":
        return optuna.pruners.NopPruner()
    if cfg.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, cfg.trials // 4)), n_warmup_steps=0)


# ---- counting and recovering ------------------------------------------------------------------------------
def state_of(trial) -> str:
    from optuna.trial import TrialState

    own = trial.user_attrs.get("state")
    if own == "repeat":
        return "repeat"
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if own in ("invalid", "failed", "interrupted", "pruned"):
        return own
    return {TrialState.PRUNED: "pruned", TrialState.FAIL: "failed", TrialState.RUNNING: "running",
            TrialState.WAITING: "waiting"}.get(trial.state, trial.state.name.lower())


def count_states(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        s = state_of(t)
        counts[s] = counts.get(s, 0) + 1
    return counts


def recover(study, echo, names) -> int:
    """Trials left RUNNING by a dead process of this host, and trials stopped by Ctrl-C, are failed
    and their points queued again (once). Returns how many were queued. A trial stopped before it
    had drawn every parameter of `names` (its point is chosen one parameter at a time, each written
    as drawn) had trained nothing: it is failed, and not queued, since queuing the parameters it had
    would let the sampler draw the rest afresh, another point under the old one's name."""
    from optuna.trial import TrialState

    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    queued = 0
    for t in trials:
        ua = t.user_attrs
        dead = (t.state == TrialState.RUNNING and ua.get("host") == HOST and isinstance(ua.get("pid"), int)
                and not process_alive(ua["pid"], ua.get("pid_start")))
        if dead:
            storage.set_trial_user_attr(t._trial_id, "state", "interrupted")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        interrupted = dead or (t.state == TrialState.FAIL and ua.get("state") == "interrupted")
        if interrupted and t.number not in requeued and set(names) <= set(t.params):
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            queued += 1
    if queued:
        echo(f"{queued} trial{'s' if queued != 1 else ''} interrupted earlier will run again")
    return queued


def measure_latency(model, x) -> float:
    """Milliseconds of one single-image prediction (the inference graph at batch 1, -O level of the
    sweep): the median of LATENCY_RUNS timed runs after 3 untimed ones. Measured on this machine,
    under whatever else runs on it: compare latencies within one sweep only."""
    for _ in range(3):
        model.predict(x, batch=1)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        model.predict(x, batch=1)
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000.0 * times[len(times) // 2]


# ---- one trial -------------------------------------------------------------------------------------------------
class _Abort(CnnError):
    """A problem of the whole sweep (not of one point): stops it."""


class Runner:
    def __init__(self, cfg: SweepConfig, study):
        self.cfg = cfg
        self.study = study
        self._data: dict[tuple, Any] = {}
        self.trained_here = 0

    def datasets(self, model):
        from cnndsl.train.data import resolve_datasets

        c = model.config
        key = (self.cfg.data, c.dataset, c.dataset_classes, tuple(model.input_shape))
        if key not in self._data:
            self._data[key] = resolve_datasets(model, self.cfg.data)
        return self._data[key]

    def objective(self, trial):
        import optuna

        cfg = self.cfg
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", PID)
        trial.set_user_attr("pid_start", PID_START)
        point = {d.name: d.suggest(trial) for d in cfg.space.dims}
        repeated = self.repeat(trial, point)
        if repeated is not None:
            return repeated
        start = time.perf_counter()
        result = check_point(cfg.space, cfg.text, point, cfg.profile, cfg.network)
        if result.valid:
            program = result.program
            settings = self.settings(program)
            try:
                from cnndsl.analysis.memory import require_fits

                require_fits(program, settings.batch, training=True, inference_batches=())
            except CnnError as e:
                result.errors = [d for d in e.diagnostics if d.severity == "error"] or list(e.diagnostics)
        if not result.valid:
            d = result.errors[0]
            trial.set_user_attr("state", "invalid")
            trial.set_user_attr("reason", reason_text(d))
            trial.set_user_attr("code", d.code)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            cfg.echo(f"trial {trial.number}: {show_point(point)}: invalid, not trained: {reason_text(d)}")
            raise optuna.TrialPruned("invalid point")
        trial.set_user_attr("params", result.params)
        trial.set_user_attr("flops", result.flops)
        try:
            value = self.train(trial, program, settings, point, start)
        except BaseException as e:
            if not interrupted(e):  # a Ctrl-C, or an import it cut short (diagnostics.interrupted)
                raise
            trial.set_user_attr("state", "interrupted")
            if isinstance(e, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt from e
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - start)
        if cfg.minimize == "latency":
            return value, self.latency
        if cfg.multi:
            return value, float(result.flops if cfg.minimize == "flops" else result.params)
        return value

    def repeat(self, trial, point):
        """A point trained before (a sampler proposes the same point again, often in a small
        discrete space): every trial trains with the file's seed, so training it again would give
        the same result. Its result is copied instead (state=repeat, repeat_of=N), in no time."""
        import optuna
        from optuna.trial import TrialState

        prev = next((t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                     if t.params == trial.params and t.number != trial.number
                     and t.user_attrs.get("state") not in ("invalid", "repeat")), None)
        if prev is None:
            return None
        for key in ("params", "flops", "accuracy", "loss", "epochs", "latency_ms", "dir"):
            if key in prev.user_attrs:
                trial.set_user_attr(key, prev.user_attrs[key])
        trial.set_user_attr("state", "repeat")
        trial.set_user_attr("repeat_of", prev.number)
        trial.set_user_attr("reason", f"trial {prev.number}")
        trial.set_user_attr("seconds", 0.0)
        self.cfg.echo(f"trial {trial.number}: {show_point(point)}: the point of trial {prev.number}, "
                      "which trained with the same seed: its result is reused")
        if prev.state == TrialState.COMPLETE:
            return tuple(prev.values) if self.cfg.multi else prev.value
        if not self.cfg.multi:
            for step, v in sorted(prev.intermediate_values.items()):
                trial.report(v, step)
        raise optuna.TrialPruned("a repeat of a pruned point")

    def settings(self, program):
        from cnndsl.frontend.training import TrainingConfig
        from cnndsl.train.trainer import with_overrides

        return with_overrides(program.training or TrainingConfig(), epochs=self.cfg.epochs)

    def train(self, trial, program, settings, point, start) -> float:
        import optuna

        from cnndsl.model import Model
        from cnndsl.train.trainer import Trainer

        cfg = self.cfg
        model = Model(program, opt_level=cfg.opt_level)
        train_set, test_set = self.datasets(model)
        out = cfg.out / TRIALS_DIR / f"{trial.number:04d}"
        trial.set_user_attr("dir", str(out))
        defines, knobs = cfg.space.split(point)
        trainer = Trainer(model, train_set, test_set, settings, out, progress=False, augment=cfg.augment,
                          data_name=cfg.data, compile_report=None,
                          run_settings={"defines": defines, "data": cfg.data, "profile": cfg.profile,
                                        "network": cfg.network})
        last: dict[str, float] = {}

        def on_epoch(r):
            acc, loss = r.get("test_accuracy"), r.get("test_loss")
            if cfg.objective == "accuracy" and acc is None:
                raise _Abort([Diagnostic("error", "--objective accuracy needs a classification head: the held-out "
                                         "evaluation reports no accuracy", Span(cfg.file, 0, 0),
                                         help="use --objective loss", code="sweep-objective")])
            value = acc if cfg.objective == "accuracy" else loss
            last["value"] = value
            for k, v in (("accuracy", acc), ("loss", loss), ("epochs", r["epoch"]),
                         ("seconds", time.perf_counter() - start)):
                trial.set_user_attr(k, v)
            shown = f"held-out accuracy {acc:.4f}" if acc is not None else f"held-out loss {loss:.4f}"
            cfg.echo(f"trial {trial.number}: {show_point(point)}: epoch {r['epoch']}/{settings.epochs} {shown} "
                     f"({time.perf_counter() - start:.1f} s)")
            if not cfg.multi:
                trial.report(value, r["epoch"])
                if r["epoch"] < settings.epochs and trial.should_prune():
                    trial.set_user_attr("state", "pruned")
                    cfg.echo(f"trial {trial.number}: pruned after epoch {r['epoch']} (below the median of the "
                             "trials before it at that epoch)" if cfg.pruner == "median" else
                             f"trial {trial.number}: pruned after epoch {r['epoch']}")
                    raise optuna.TrialPruned()

        from cnndsl.backend.compile_events import counting

        try:
            # a new width or kernel size reuses the compiled kernels: counted, to show it (docs/sweep.md)
            with counting() as compiled:
                try:
                    trainer.fit(on_epoch=on_epoch)
                finally:
                    trial.set_user_attr("compiled", compiled.count)
                    trial.set_user_attr("compile_seconds", compiled.seconds)
                    # which functions, for which argument types: none is ever compiled twice (a kernel
                    # variant another width selects compiles once, the first time a layer needs it)
                    trial.set_user_attr("compiled_functions",
                                        sorted({f"{c.qualname}{c.signature}" for c in compiled.records})[:500])
        except _Abort:
            raise
        except CnnError as e:  # e.g. a loss that became NaN at a high learning rate: a bad point, not a bad sweep
            d = next((x for x in e.diagnostics if x.severity == "error"), e.diagnostics[0])
            trial.set_user_attr("state", "failed")
            trial.set_user_attr("reason", reason_text(d))
            cfg.echo(f"trial {trial.number}: {show_point(point)}: training stopped: {d.message}")
            raise optuna.TrialPruned("training failed") from None
        self.trained_here += 1
        if cfg.minimize == "latency":
            self.latency = measure_latency(model, test_set.x[:1])
            trial.set_user_attr("latency_ms", self.latency)
        return last["value"]

    latency = 0.0

    # -- the loop ---------------------------------------------------------------------------------------------
    def tried(self) -> int:
        """Distinct points tried (trained, pruned, failed or found invalid)."""
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return len({tuple(sorted((k, repr(v)) for k, v in t.params.items())) for t in done})

    def run(self, after_trial: Callable[[], None] | None = None) -> dict[str, int]:
        cfg = self.cfg
        max_invalid = cfg.max_invalid if cfg.max_invalid is not None else max(100, 10 * cfg.trials)
        while True:
            c = count_states(self.study)
            busy = c.get("complete", 0) + c.get("pruned", 0) + c.get("failed", 0) + c.get("running", 0)
            if busy >= cfg.trials:
                break
            if c.get("invalid", 0) >= max_invalid:
                cfg.echo(f"stopping: {c['invalid']} invalid points proposed (--max-invalid {max_invalid}); "
                         "the space is mostly invalid: `cnndsl check` shows why")
                break
            if c.get("repeat", 0) >= max_invalid:
                cfg.echo(f"stopping: {c['repeat']} points proposed again; the sampler has little left to try")
                break
            size = cfg.space.size()
            if size is not None and self.tried() >= size:
                cfg.echo(f"stopping: every one of the {size} points of the space has been tried")
                break
            self.study.optimize(self.objective, n_trials=1, catch=())
            if after_trial is not None:
                after_trial()
        return count_states(self.study)
