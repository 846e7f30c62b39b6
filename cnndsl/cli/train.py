"""train, eval, predict: commands that compile a model and run it."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import signal
import sys
import time
from pathlib import Path

import click
import numpy as np

from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.cli.options import EPOCHS, SEED, FiniteFloatRange, check_png_output, context_option, data_help, load_model, model_options
from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.diagnostics import CnnError, Diagnostic, file_error
from cnndsl.train.metrics import epoch_line

# Seconds a rank other than 0 waits, on an error every rank meets, before it aborts the job.
ABORT_GRACE_S = 2.0
# Seconds rank 0 waits after printing an error, before it aborts the job (see _train's caller).
ABORT_FLUSH_S = 0.5


_DEVICE = contextvars.ContextVar("device", default="cpu")

DATA_HELP = data_help()


# `--device cpu|cuda` for commands that compile a Model; read it with _DEVICE.get().
_device_option = context_option(
    _DEVICE, "device", "--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
    help="Where kernels run: Numba on the CPU, or Numba CUDA on an NVIDIA GPU (pip install cnndsl[cuda]).")
TUNE_ENV = "CNNDSL_CUDA_TUNE"  # read by cnndsl/kernels/cuda/tune.py when a launch is prepared
CACHE_ENV = "CNNDSL_CUDA_CACHE"  # read by cnndsl/kernels/cuda/shim.py when a kernel is made


def device_option(fn):
    """`--device` and, for --device cuda, `--cuda-tune`: the GEMM tile policy of
    cnndsl/kernels/cuda/tune.py, passed on as CNNDSL_CUDA_TUNE for the command's duration."""

    @_device_option
    @click.option("--cuda-tune", "cuda_tune", type=click.Choice(["on", "cached", "off"]), default=None,
                  help="With --device cuda: time each convolution's and dense layer's candidate GEMM tiles "
                       "(and cuBLAS, where installed) on the GPU and remember the fastest (on), use the "
                       "choices timed before (cached, the default), or the shape rules alone (off). "
                       "Default: $CNNDSL_CUDA_TUNE, else cached.")
    @functools.wraps(fn)
    def wrapper(*args, cuda_tune, **kwargs):
        if _DEVICE.get() == "cuda" and os.environ.get(CACHE_ENV):
            from cnndsl.kernels.cuda.shim import cache_policy

            try:  # a bad value now, not when the first kernel is made
                cache_policy()
            except ValueError as e:
                raise CnnError([Diagnostic("error", f"environment variable {e}", code="cli-env")]) from None
        if cuda_tune is None:
            if _DEVICE.get() == "cuda" and os.environ.get(TUNE_ENV):
                from cnndsl.kernels.cuda import tune

                try:  # a bad value now, not when the first launch is prepared
                    tune.policy()
                except ValueError as e:
                    raise CnnError([Diagnostic("error", f"environment variable {e}", code="cli-env")]) from None
            return fn(*args, **kwargs)
        if _DEVICE.get() != "cuda":
            raise click.UsageError("--cuda-tune applies to --device cuda")
        old = os.environ.get(TUNE_ENV)
        os.environ[TUNE_ENV] = cuda_tune
        try:
            return fn(*args, **kwargs)
        finally:
            if old is None:
                os.environ.pop(TUNE_ENV, None)
            else:
                os.environ[TUNE_ENV] = old

    return wrapper


def _compile(file, load_kwargs, seed=None, init_from_file=True, opt_level=None):
    from cnndsl.model import Model

    from cnndsl.train.progress import _is_tty

    program = load_model(file, load_kwargs)
    model = Model(program, seed=seed, opt_level=selected_opt_level() if opt_level is None else opt_level,
                  device=_DEVICE.get(), init_from_file=init_from_file)
    # eval and predict compile on first use (Model._compile_phase): say so on a terminal
    model.compile_report = "live" if _is_tty(sys.stderr) else None
    return model


def _datasets(model, data: str | None):
    from cnndsl.train.data import resolve_datasets

    return resolve_datasets(model, data)


@cli.command()
@click.argument("file")
@click.option("--epochs", type=EPOCHS, default=None, help="Override the file's epoch count.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Override the batch size.")
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Override the learning rate.")
@click.option("--seed", type=SEED, default=None,
              help="Seed of initialization, data order and dropout.")
@click.option("--out", "out_dir", default=None, help="Output folder (default runs/<file name>).")
@click.option("--resume", "resume_dir", default=None,
              help="Continue the run saved in this folder (or its checkpoint.safetensors), with the settings "
                   "it was started with; --epochs may extend it.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in the --out folder (default: refuse).")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--early-stopping", "early_stopping", metavar="METRIC", default=None,
              help="Stop when the held-out METRIC (loss, accuracy, map50, ...) has not improved for --patience "
                   "epochs (the train section's `early_stopping metric=...`).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Epochs without improvement before early stopping (default 5, or the file's).")
@click.option("--checkpoint-best", "checkpoint_best", metavar="METRIC", default=None,
              help="Also keep the weights of the epoch with the best held-out METRIC in best.safetensors "
                   "(the train section's `checkpoint best=...`).")
@click.option("--no-augment", is_flag=True, help="Switch the file's augmentation off for this run.")
@click.option("--no-progress", is_flag=True, help="No progress bar (one line per epoch instead).")
@click.option("--distributed", type=click.Choice(["auto", "none", "mpi"]), default="auto", show_default=True,
              help="Data-parallel over MPI ranks (launch with mpiexec ... python -m mpi4py -m cnndsl train); "
                   "auto: when started by an MPI launcher.")
@model_options
@opt_level_option
@device_option
def train(file, epochs, batch, lr, seed, out_dir, resume_dir, overwrite, data, early_stopping, patience,
          checkpoint_best, no_augment, no_progress, distributed, load_kwargs):
    """Train a model on its dataset; writes weights, metrics.json, curves.png, train.log, a copy of
    the model file and settings.json to --out."""
    from cnndsl.distributed import get_comm

    given = _given_settings(epochs, batch, lr, seed, data, no_augment, load_kwargs)
    given.update({k: v for k, v in (("early_stopping", early_stopping), ("patience", patience),
                                    ("checkpoint_best", checkpoint_best)) if v is not None})
    args = (file, given, out_dir, resume_dir, overwrite, no_progress, load_kwargs)
    comm = get_comm(distributed)
    if comm.size == 1:
        _train(*args, comm)
        return
    _share_cores(comm)
    try:
        _train(*args, comm)
    except BaseException as e:  # one rank stopping alone would leave the others waiting forever
        if isinstance(e, SystemExit) and not e.code:
            raise
        if isinstance(e, CnnError) and comm.rank == 0:
            print_diagnostics(e.diagnostics)
            # Printed and aborted at once, the message was lost (stderr empty: once in CI, and in 1
            # of 20 runs here with the os._exit below; 0 of 30 without it), most likely because
            # MPICH's launcher stops forwarding a rank's output once it learns of the abort
            sys.stderr.flush()
            time.sleep(ABORT_FLUSH_S)
        elif isinstance(e, CnnError):
            # Every rank runs the same checks, so rank 0 meets this error too and reports it; an
            # abort from here at once could kill rank 0 before its message is out (seen in CI).
            # Still alive after the grace period, this rank says it itself: never an empty stderr.
            time.sleep(ABORT_GRACE_S)
            click.echo(f"rank {comm.rank}:", err=True)
            print_diagnostics(e.diagnostics)
        elif not isinstance(e, SystemExit):
            click.echo(f"rank {comm.rank}: {type(e).__name__}: {e}", err=True)
        sys.stderr.flush()
        comm.abort(1)
        # MPICH's MPI_Abort can return before the launcher ends this process: the error went
        # through cnndsl's handler again and was printed twice (9 runs of 30). Nothing more to say.
        os._exit(1)


def _share_cores(comm) -> None:
    """Ranks on one machine split its cores between their Numba threads."""
    import numba

    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, (os.cpu_count() or 1) // comm.local_size)))


def _given_settings(epochs, batch, lr, seed, data, no_augment, load_kwargs) -> dict:
    """The run settings (cnndsl.train.run_dir.SETTINGS) typed on this command line, by name."""
    from click.core import ParameterSource

    given = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "data": data,
             "profile": load_kwargs["profile"], "network": load_kwargs["network"]}
    given = {k: v for k, v in given.items() if v is not None}
    if load_kwargs["defines"]:
        given["defines"] = dict(load_kwargs["defines"])
    if no_augment:
        given["augment"] = False
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("opt_level") not in (None, ParameterSource.DEFAULT):
        given["opt_level"] = selected_opt_level()
    return given


def _train(file, given, out_dir, resume_dir, overwrite, no_progress, load_kwargs, comm):
    """Validate everything about the output folder before compiling, then train.

    Order: the folder (resumable run / writable / not holding another run), its lock, the
    checkpoint and the run's saved settings (on --resume), then compile, load the data and
    check it (Trainer), and only then replace an old run (--overwrite) and train."""
    from cnndsl.io.weights import check_checkpoint_meta, load_checkpoint
    from cnndsl.train import run_dir

    root = comm.rank == 0
    say = (lambda text: click.echo(text, err=True)) if root else (lambda text: None)
    if resume_dir is not None and overwrite:
        raise CnnError([Diagnostic("error", "--resume continues a run and --overwrite replaces it: give one of them",
                                   code="cli-flags")])
    if resume_dir is not None:
        out = run_dir.resume_folder(resume_dir) if root else None
        out = comm.bcast_object(out) if comm.size > 1 else out
        if out_dir is not None and os.path.realpath(out_dir) != os.path.realpath(out):
            raise file_error(out_dir, "--resume continues a run in its own folder; --out names another one",
                             expected=f"no --out, or --out {out}", found=f"--out {out_dir}",
                             help="leave --out out (to copy a run, copy its folder and resume the copy)",
                             code="cli-flags")
    else:
        out = Path(out_dir or Path("runs") / Path(file).stem)

    lock = None
    saved, ckpt = None, None
    created = root and not out.exists()  # removed again if the run fails before writing anything
    try:
        if root:
            run_dir.check_writable(out, "--resume" if resume_dir is not None else "--out")
            lock = run_dir.RunLock(out).acquire()
            removed = run_dir.clean_stale_temps(out)
            if removed:
                say(f"removed {len(removed)} temporary file{'s' if len(removed) != 1 else ''} left by an "
                    f"interrupted write in {out}")
            if resume_dir is None and not overwrite:
                run_dir.refuse_existing_run(out)
            if resume_dir is not None:
                ckpt = load_checkpoint(out)
                saved = check_checkpoint_meta(ckpt.path, ckpt.meta).get("settings")  # before compiling
        saved = comm.bcast_object(saved) if comm.size > 1 else saved
        settings_ = run_dir.merge_resumed(saved, given, out / run_dir.CHECKPOINT_FILE) if resume_dir is not None \
            else dict(given)
        _run(file, settings_, out, resume_dir is not None, ckpt, overwrite, no_progress, load_kwargs, comm, say)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):  # stopping: a late Ctrl-C changes nothing
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if lock is not None:
            lock.release()
            lock = None
        if created and not run_dir.existing_run(out):  # an error before the first epoch ended: leave no folder
            with contextlib.suppress(OSError):
                for name in (run_dir.LOG_FILE, run_dir.MODEL_COPY, run_dir.SETTINGS_FILE):
                    (out / name).unlink(missing_ok=True)
                out.rmdir()
        raise
    finally:
        if lock is not None:
            lock.release()


def _run(file, s, out, resuming, ckpt, overwrite, no_progress, load_kwargs, comm, say):
    from cnndsl.train import run_dir
    from cnndsl.train.trainer import Trainer, check_batch_splits, with_overrides

    load_kwargs = dict(load_kwargs, **{k: s.get(k, load_kwargs[k]) for k in ("defines", "profile", "network")})
    model = _compile(file, load_kwargs, s.get("seed"), opt_level=s.get("opt_level"))
    settings = with_overrides(model.config, s.get("epochs"), s.get("batch"), s.get("lr"), s.get("seed"),
                              s.get("early_stopping"), s.get("patience"), s.get("checkpoint_best"))
    check_batch_splits(settings.batch, comm.size)  # before the data is loaded
    from cnndsl.analysis.memory import require_fits

    # a step that cannot fit is refused before the data is loaded (a 183M-parameter model took 22 s
    # and 3.4 GB to fail when the training executable was built)
    require_fits(model.program, settings.batch, training=True, inference_batches=())
    # the data actually used (the train section's `dataset` when no --data): a resumed run keeps
    # it even if the model file's train section names other data by then
    data = s.get("data") or model.config.dataset or "digits"
    train_set, test_set = _datasets(model, data)
    augment = s.get("augment", True)
    recorded = {"defines": dict(load_kwargs["defines"]), "data": run_dir.data_setting(data),
                "profile": load_kwargs["profile"], "network": load_kwargs["network"]}
    recorded.update({k: s[k] for k in ("early_stopping", "patience", "checkpoint_best") if s.get(k) is not None})
    # The compile phase before the first step (Trainer.compile_kernels) shows a status line even
    # without a progress bar: in place on a terminal, else one line at its start and one at its end.
    live = not no_progress and sys.stderr.isatty()
    trainer = Trainer(model, train_set, test_set, settings, out, progress=live, augment=augment, comm=comm,
                      data_name=data, run_settings=recorded, compile_report="live" if live else "lines", echo=say)
    names = getattr(train_set, "class_names", None)
    if names:  # `predict` shows them (image folders, CIFAR-10)
        import json

        trainer.weights_metadata["class_names"] = json.dumps(list(names))
    if resuming:
        trainer.resume(ckpt)
        if trainer.pos.epoch >= settings.epochs:
            # exit 0: a finished run is what --resume asks for; a job restarted after it ended
            # (a preempted batch job re-running its command) must not fail (docs/training.md)
            done = trainer.pos.epoch
            say(f"run already finished its {done} epoch{'s' if done != 1 else ''}" +
                (f" (--epochs {settings.epochs})" if settings.epochs < done else "") +
                f"; nothing to do (give --epochs N with N > {done} to continue it)")
            return
        say(f"resuming {out} at epoch {trainer.pos.epoch + 1}, batch {trainer.pos.batch}")
    elif overwrite and comm.rank == 0:
        removed = run_dir.remove_run_files(out)
        if removed:
            say(f"--overwrite: removed the previous run's {', '.join(removed)} from {out}")
    elif comm.rank == 0:  # a new run: no log of an earlier attempt that never finished an epoch
        (out / run_dir.LOG_FILE).unlink(missing_ok=True)
    augmenting = ", augmented" if trainer.augment is not None else ""
    ranks = f" on {comm.size} processes" if comm.size > 1 else ""
    trainer.console(f"training {model.graph.name}{ranks}: {len(train_set)} images{augmenting}, {len(test_set)} held "
                    f"out, {settings.epochs} epochs of batch {settings.batch}, {settings.optimizer.name} "
                    f"lr={settings.optimizer.lr:g}")
    try:
        trainer.fit()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the checkpoint is saved; a late Ctrl-C changes nothing
        say(f"\nstopped; checkpoint saved in {out} (continue with --resume {out})")
        sys.exit(130)
    if comm.rank == 0:
        best = f"  best ({settings.checkpoint_best}): {out / 'best.safetensors'}" \
            if (out / "best.safetensors").exists() and settings.checkpoint_best else ""
        trainer.echo = click.echo  # the last line goes to stdout (and train.log)
        trainer.console(f"weights: {out / 'weights.safetensors'}{best}  metrics: {out / 'metrics.json'}  "
                        f"plot: {out / 'curves.png'}  log: {out / 'train.log'}")


def _number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


_epoch_line = epoch_line  # the line printed after each epoch (cnndsl.train.metrics.epoch_line)


@cli.command(name="eval")
@click.argument("file")
@click.option("--weights", required=True, help="A .safetensors weights file (e.g. runs/lenet5/weights.safetensors), "
                                               "or a run's checkpoint.safetensors.")
@click.option("--data", default=None, help=DATA_HELP)
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True)
@model_options
@opt_level_option
@device_option
def eval_(file, weights, data, batch, load_kwargs):
    """Loss and accuracy of trained weights on the held-out split."""
    model = _compile(file, load_kwargs, init_from_file=False)  # trained weights are loaded next
    model.load_weights(weights)
    _, test_set = _datasets(model, data)
    if not len(test_set):
        from cnndsl.diagnostics import file_error

        spec = data or model.config.dataset or "digits"
        raise file_error(spec, "the held-out split is empty: there is nothing to evaluate",
                         expected="at least one held-out image (a data set without a test split holds out 20%)",
                         found="0 held-out images", help="evaluate on a larger data set, or one with a test split",
                         code="data-too-small")
    start = time.perf_counter()
    result = model.evaluate(test_set.x, test_set.y, batch)
    seconds = time.perf_counter() - start
    parts = [f"{k} {v:.4f}" for k, v in result.items()]
    click.echo(f"{len(test_set)} held-out images: " + "  ".join(parts) + f"  ({len(test_set) / seconds:.0f} images/s)")


@cli.command()
@click.argument("file")
@click.argument("images", nargs=-1, required=True)
@click.option("--weights", required=True, help="A .safetensors weights file, or a run's checkpoint.safetensors.")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="How many classes to show.")
@click.option("--resize", is_flag=True,
              help="Resize each image to the network's input (bilinear) and convert grayscale <-> RGB to its "
                   "channel count (default: a wrong size or channel count is an error for that file).")
@click.option("-o", "--out-image", default=None,
              help="Write a PNG of the input with the predicted boxes or mask drawn over it (NAME-1.png, ... "
                   "for several inputs).")
@model_options
@opt_level_option
@device_option
def predict(file, images, weights, top, out_image, resize, load_kwargs):
    """Top classes with probabilities for PNG/JPEG/.npy images. A file that cannot be used is an
    error for that file; the others are still predicted (exit 1 when any failed)."""
    from cnndsl.io.images import load_image

    if out_image is not None:  # written as PNG (NAME-1.png, ... for several inputs)
        check_png_output(out_image, "the picture", "predict-out", bare=True)
    model = _compile(file, load_kwargs, init_from_file=False)  # trained weights are loaded next
    names = model.class_names(model.load_weights(weights))
    good, arrays, failed = [], [], []
    for path in images:
        try:
            arrays.append(load_image(path, model.input_shape, resize=resize))
            good.append(path)
        except CnnError as e:
            print_diagnostics(e.diagnostics)
            failed.append(path)
    if good:
        x = np.stack(arrays)
        from cnndsl.tasks.draw import predict_task  # boxes, detections, masks; -o draws them

        if not predict_task(model, good, x, out_image, echo=click.echo, top=top):
            probs = model.predict_proba(x)
            head = model.losses[0].head
            for path, p in zip(good, probs[head]):
                order = np.argsort(-p)[:top]
                shown = ", ".join((f"{names[k]} ({p[k]:.3f})" if names else f"{int(k)} ({p[k]:.3f})") for k in order)
                click.echo(f"{path}: {shown}")
    if failed:
        hint = "" if resize else " (--resize adapts the size and grayscale/RGB)"
        click.echo(f"{len(failed)} of {len(images)} image{'s' if len(images) != 1 else ''} could not be used{hint}",
                   err=True)
        sys.exit(1)

