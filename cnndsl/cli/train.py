"""train, eval, predict: commands that compile a model and run it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from cnndsl.cli.main import cli
from cnndsl.cli.options import load_model, model_options


def _compile(file, load_kwargs, seed=None):
    from cnndsl.model import Model

    program = load_model(file, load_kwargs)
    return Model(program, seed=seed)


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
@model_options
def train(file, epochs, batch, lr, seed, out_dir, resume_dir, data, no_augment, no_progress, load_kwargs):
    """Train a model on its dataset; writes weights, metrics.json and curves.png to --out."""
    from cnndsl.train.trainer import Trainer, with_overrides

    model = _compile(file, load_kwargs, seed)
    settings = with_overrides(model.config, epochs, batch, lr, seed)
    out = Path(resume_dir or out_dir or Path("runs") / Path(file).stem)
    train_set, test_set = _datasets(model, data)
    trainer = Trainer(model, train_set, test_set, settings, out, progress=not no_progress and sys.stderr.isatty(),
                      augment=not no_augment)
    if resume_dir:
        trainer.resume()
        click.echo(f"resuming {out} at epoch {trainer.pos.epoch + 1}, batch {trainer.pos.batch}", err=True)
    augmenting = ", augmented" if trainer.augment is not None else ""
    click.echo(f"training {model.graph.name}: {len(train_set)} images{augmenting}, {len(test_set)} held out, "
               f"{settings.epochs} epochs of batch {settings.batch}, {settings.optimizer.name} lr={settings.optimizer.lr:g}",
               err=True)
    try:
        trainer.fit(on_epoch=lambda r: click.echo(_epoch_line(r), err=True))
    except KeyboardInterrupt:
        click.echo(f"\nstopped; checkpoint saved in {out} (continue with --resume {out})", err=True)
        sys.exit(130)
    click.echo(f"weights: {out / 'weights.safetensors'}  metrics: {out / 'metrics.json'}  plot: {out / 'curves.png'}")


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
def eval_(file, weights, data, batch, load_kwargs):
    """Loss and accuracy of trained weights on the held-out split."""
    model = _compile(file, load_kwargs)
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
@model_options
def predict(file, images, weights, top, load_kwargs):
    """Top classes with probabilities for PNG/JPEG/.npy images."""
    from cnndsl.io.images import load_image

    model = _compile(file, load_kwargs)
    model.load_weights(weights)
    x = np.stack([load_image(path, model.input_shape) for path in images])
    probs = model.predict_proba(x)
    head = model.losses[0].head
    for path, p in zip(images, probs[head]):
        order = np.argsort(-p)[:top]
        shown = ", ".join(f"{int(k)} ({p[k]:.3f})" for k in order)
        click.echo(f"{path}: {shown}")
