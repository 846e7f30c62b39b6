"""`cnndsl export FILE --weights W -o model.onnx`: the inference graph as an ONNX model (docs/interop.md)."""
from __future__ import annotations

import click

from cnndsl.cli.main import cli, print_diagnostics
from cnndsl.cli.options import load_model, model_options
from cnndsl.diagnostics import Diagnostic, Span


@cli.command()
@click.argument("file")
@click.option("--weights", "weights", default=None, metavar="W.safetensors",
              help="Trained weights (e.g. a run's weights.safetensors); without it, the seed's initialization.")
@click.option("-o", "--output", "output", required=True, metavar="MODEL.onnx", help="Where to write the ONNX model.")
@click.option("-O", "opt_level", type=click.IntRange(0, 3), default=1, show_default=True,
              help="Pass level of the exported graph: 0-1 one ONNX node per layer (batchnorm as "
                   "BatchNormalization); 2-3 the fused graph cnndsl runs (batchnorm folded into the weights).")
@click.option("--no-normalize", is_flag=True,
              help="Leave out the training section's `normalize` (by default the model takes raw images, "
                   "like Model.predict).")
@model_options
def export(file, weights, output, opt_level, no_normalize, load_kwargs):
    """Export FILE's network with its weights as an ONNX model (opset 17, dynamic batch)."""
    from cnndsl.interop.onnx_export import IR_VERSION, OPSET, export_program
    from cnndsl.io.atomic import atomic_write_bytes
    from cnndsl.model import Model

    program = load_model(file, load_kwargs)
    model = Model(program, init_from_file=False)
    if weights is not None:
        model.load_weights(weights)
    else:
        print_diagnostics([Diagnostic("warning", "no --weights given: exporting the seed's initial weights",
                                      Span(file, 0, 0),
                                      help="pass --weights runs/NAME/weights.safetensors", code="export-no-weights")])
    onnx_model = export_program(program, model.state_dict(), level=opt_level, normalize=not no_normalize)
    atomic_write_bytes(output, onnx_model.SerializeToString())
    g = onnx_model.graph

    def io(values):
        return ", ".join(f"{v.name}[{','.join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim)}]"
                         for v in values)

    click.echo(f"{output}: {len(g.node)} nodes, opset {OPSET}, IR version {IR_VERSION}; "
               f"inputs {io(g.input)}; outputs {io(g.output)}")
