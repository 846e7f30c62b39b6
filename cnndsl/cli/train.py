"""train, eval, predict: commands that compile a model and run it."""
from __future__ import annotations

import contextvars
import functools
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.cli.options import load_model, model_options
from cnndsl.cli.compile import opt_level_option, selected_opt_level
from cnndsl.diagnostics import CnnError

# Seconds a rank other than 0 waits, on an error every rank meets, before it aborts the job.
ABORT_GRACE_S = 2.0


_DEVICE = contextvars.ContextVar("device", default="cpu")


def device_option(fn):
    """`--device cpu|cuda` for commands that compile a Model; read it with _DEVICE.get()."""

    @click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                  help="Where kernels run: Numba on the CPU, or Numba CUDA on an NVIDIA GPU (pip install cnndsl[cuda]).")
    @functools.wraps(fn)
    def wrapper(*args, device, **kwargs):
        token = _DEVICE.set(device)
        try:
            return fn(*args, **kwargs)
        finally:
            _DEVICE.reset(token)

    return wrapper


def _compile(file, load_kwargs, seed=None, init_from_file=True):
    from cnndsl.model import Model

    program = load_model(file, load_kwargs)
    return Model(program, seed=seed, opt_level=selected_opt_level(), device=_DEVICE.get(),
                 init_from_file=init_from_file)


def _datasets(model, data: str | None):
    from cnndsl.train.data import resolve_datasets

    return resolve_datasets(model, data)


@cli.command()
@click.argument("file")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the file's epoch count.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Override the batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Override the learning rate.")
@click.option("--seed", type=int, default=None, help="Seed of initialization, data order and dropout.")
@click.option("--out", "out_dir", default=None, help="Output folder (default runs/<file name>).")
@click.option("--resume", "resume_dir", default=None, help="Continue the run saved in this folder.")
@click.option("--data", default=None, help="Dataset: 'digits' (bundled) or a .npz file with x/y arrays.")
@click.option("--no-augment", is_flag=True, help="Switch the file's augmentation off for this run.")
@click.option("--no-progress", is_flag=True, help="No progress bar (one line per epoch instead).")
@click.option("--distributed", type=click.Choice(["auto", "none", "mpi"]), default="auto", show_default=True,
              help="Data-parallel over MPI ranks (launch with mpiexec ... python -m mpi4py -m cnndsl train); "
                   "auto: when started by an MPI launcher.")
@model_options
@opt_level_option
@device_option
def train(file, epochs, batch, lr, seed, out_dir, resume_dir, data, no_augment, no_progress, distributed,
          load_kwargs):
    """Train a model on its dataset; writes weights, metrics.json and curves.png to --out."""
    from cnndsl.distributed import get_comm

    comm = get_comm(distributed)
    if comm.size == 1:
        _train(file, epochs, batch, lr, seed, out_dir, resume_dir, data, no_augment, no_progress, load_kwargs, comm)
        return
    _share_cores(comm)
    try:
        _train(file, epochs, batch, lr, seed, out_dir, resume_dir, data, no_augment, no_progress, load_kwargs, comm)
    except BaseException as e:  # one rank stopping alone would leave the others waiting forever
        if isinstance(e, CnnError) and comm.rank == 0:
            print_diagnostics(e.diagnostics)
        elif isinstance(e, CnnError):
            # Every rank runs the same checks, so rank 0 meets this error too and reports it; an
            # abort from here at once could kill rank 0 before its message is out (seen in CI).
            time.sleep(ABORT_GRACE_S)
        elif not isinstance(e, (CnnError, SystemExit)):
            click.echo(f"rank {comm.rank}: {type(e).__name__}: {e}", err=True)
        if not (isinstance(e, SystemExit) and not e.code):
            comm.abort(1)
        raise


def _share_cores(comm) -> None:
    """Ranks on one machine split its cores between their Numba threads."""
    import numba

    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, (os.cpu_count() or 1) // comm.local_size)))


def _train(file, epochs, batch, lr, seed, out_dir, resume_dir, data, no_augment, no_progress, load_kwargs, comm):
    from cnndsl.train.trainer import Trainer, with_overrides

    say = (lambda text: click.echo(text, err=True)) if comm.rank == 0 else (lambda text: None)
    model = _compile(file, load_kwargs, seed)
    settings = with_overrides(model.config, epochs, batch, lr, seed)
    out = Path(resume_dir or out_dir or Path("runs") / Path(file).stem)
    train_set, test_set = _datasets(model, data)
    trainer = Trainer(model, train_set, test_set, settings, out, progress=not no_progress and sys.stderr.isatty(),
                      augment=not no_augment, comm=comm)
    if resume_dir:
        trainer.resume()
        say(f"resuming {out} at epoch {trainer.pos.epoch + 1}, batch {trainer.pos.batch}")
    augmenting = ", augmented" if trainer.augment is not None else ""
    ranks = f" on {comm.size} processes" if comm.size > 1 else ""
    say(f"training {model.graph.name}{ranks}: {len(train_set)} images{augmenting}, {len(test_set)} held out, "
        f"{settings.epochs} epochs of batch {settings.batch}, {settings.optimizer.name} lr={settings.optimizer.lr:g}")
    try:
        trainer.fit(on_epoch=lambda r: say(_epoch_line(r)))
    except KeyboardInterrupt:
        say(f"\nstopped; checkpoint saved in {out} (continue with --resume {out})")
        sys.exit(130)
    if comm.rank == 0:
        click.echo(f"weights: {out / 'weights.safetensors'}  metrics: {out / 'metrics.json'}  "
                   f"plot: {out / 'curves.png'}")


def _epoch_line(r: dict) -> str:
    acc = r.get("test_accuracy")
    acc_text = f"  held-out accuracy {acc:.4f}" if acc is not None else ""
    return (f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}  held-out loss {r['test_loss']:.4f}{acc_text}"
            f"  ({r['images_per_s']:.0f} images/s, {r['seconds']:.1f} s)")


@cli.command(name="eval")
@click.argument("file")
@click.option("--weights", required=True, help="A .safetensors weights file (e.g. runs/lenet5/weights.safetensors).")
@click.option("--data", default=None, help="Dataset: 'digits' (bundled) or a .npz file with x/y arrays.")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True)
@model_options
@opt_level_option
@device_option
def eval_(file, weights, data, batch, load_kwargs):
    """Loss and accuracy of trained weights on the held-out split."""
    model = _compile(file, load_kwargs, init_from_file=False)  # trained weights are loaded next
    model.load_weights(weights)
    _, test_set = _datasets(model, data)
    start = time.perf_counter()
    result = model.evaluate(test_set.x, test_set.y, batch)
    seconds = time.perf_counter() - start
    parts = [f"{k} {v:.4f}" for k, v in result.items()]
    click.echo(f"{len(test_set)} held-out images: " + "  ".join(parts) + f"  ({len(test_set) / seconds:.0f} images/s)")


@cli.command()
@click.argument("file")
@click.argument("images", nargs=-1, required=True)
@click.option("--weights", required=True, help="A .safetensors weights file.")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="How many classes to show.")
@click.option("-o", "--out-image", default=None,
              help="Write a PNG of the input with the predicted boxes or mask drawn over it (NAME-1.png, ... "
                   "for several inputs).")
@model_options
@opt_level_option
@device_option
def predict(file, images, weights, top, out_image, load_kwargs):
    """Top classes with probabilities for PNG/JPEG/.npy images."""
    from cnndsl.io.images import load_image

    model = _compile(file, load_kwargs, init_from_file=False)  # trained weights are loaded next
    model.load_weights(weights)
    x = np.stack([load_image(path, model.input_shape) for path in images])
    from cnndsl.tasks.draw import predict_task  # boxes, detections, masks; -o draws them

    if predict_task(model, images, x, out_image, echo=click.echo, top=top):
        return
    probs = model.predict_proba(x)
    head = model.losses[0].head
    for path, p in zip(images, probs[head]):
        order = np.argsort(-p)[:top]
        shown = ", ".join(f"{int(k)} ({p[k]:.3f})" for k in order)
        click.echo(f"{path}: {shown}")
