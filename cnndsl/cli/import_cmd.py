"""`cnndsl import MODEL -o FILE.cnn [--weights W] [--weights-out W.safetensors]` (docs/interop.md).

MODEL is an ONNX model (`.onnx`), a Caffe net (`.prototxt`, weights from `--weights X.caffemodel`)
or a Darknet cfg (`.cfg`, weights from `--weights X.weights`). The .cnn written is loaded back and
shape-checked like any model file before anything is written."""
from __future__ import annotations

from pathlib import Path

import click

from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.diagnostics import file_error

KINDS = {".onnx": "onnx", ".prototxt": "caffe", ".cfg": "darknet"}


def import_model(model: str, weights: str | None = None):
    """The NetBuilder (cnndsl/interop/cnn_writer.py) of MODEL; raises CnnError with located diagnostics."""
    kind = KINDS.get(Path(model).suffix.lower())
    if kind is None:
        raise file_error(model, "cnndsl cannot tell what kind of model this is from its name",
                         expected="a name ending in .onnx (ONNX), .prototxt (Caffe) or .cfg (Darknet)",
                         found=f"'{Path(model).suffix or 'no suffix'}'")
    if kind == "onnx":
        from cnndsl.interop.onnx_import import import_onnx

        if weights is not None:
            raise file_error(weights, "an ONNX model carries its own weights", expected="no --weights with .onnx",
                             found=f"--weights {weights}")
        builder = import_onnx(model)
    elif kind == "caffe":
        from cnndsl.interop.caffe import import_caffe

        builder = import_caffe(model, weights)
    else:
        from cnndsl.interop.darknet import import_darknet

        builder = import_darknet(model, weights)
    return builder


@cli.command(name="import")
@click.argument("model")
@click.option("-o", "--output", "output", required=True, metavar="FILE.cnn", help="The .cnn file to write.")
@click.option("--weights", default=None, metavar="W",
              help="Weights of a Caffe (.caffemodel) or Darknet (.weights) model.")
@click.option("--weights-out", default=None, metavar="W.safetensors",
              help="Where to write the weights (default: FILE.safetensors beside FILE.cnn, when there are weights).")
def import_(model, output, weights, weights_out):
    """Import MODEL (.onnx, .prototxt, .cfg) as a readable .cnn file and a weights file."""
    from cnndsl.interop.cnn_writer import finish
    from cnndsl.io.atomic import atomic_write_text, check_target
    from cnndsl.io.weights import save_weights

    for target in (output, weights_out):  # both before either is written: no .cnn without its weights
        if target is not None:
            check_target(target)
    builder = import_model(model, weights)
    if not builder.source_weights:
        constant = sorted({k.rsplit(".", 1)[0] for k in builder.weights})
        if constant:
            builder.note(f"without --weights, no weights file is written, so the constant weights cnndsl gives "
                         f"{', '.join(constant)} are not kept either: those layers start from random values",
                         help="import with --weights to get them")
        builder.weights = {}
    if builder.weights and weights_out is None:
        weights_out = str(Path(output).with_suffix(".safetensors"))
    text, program = finish(builder, output, Path(weights_out).name if weights_out and builder.weights else None)
    print_diagnostics(builder.notes + list(program.diagnostics))
    atomic_write_text(output, text)
    what = f"{output}: {sum(1 for n in program.graph.nodes() if n.op != 'input')} layers"
    if builder.params:
        what += " (" + ", ".join(f"{k} = {v}" for k, v in builder.params.items()) + ")"
    if builder.weights and weights_out:
        save_weights(weights_out, builder.weights, {"network": program.graph.name, "imported_from": str(model)})
        what += f"; {weights_out}: {len(builder.weights)} tensors"
    click.echo(what)
