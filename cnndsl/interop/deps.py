"""The optional packages of the interop commands: a missing one is a one-line error saying what to
install, never an ImportError traceback."""
from __future__ import annotations

import importlib

from cnndsl.diagnostics import CnnError, Diagnostic

EXTRAS = {
    "onnx": ("onnx", "pip install 'cnndsl[onnx]'"),
    "onnxruntime": ("onnxruntime", "pip install 'cnndsl[onnx]'"),
    "google.protobuf": ("protobuf", "pip install 'cnndsl[caffe]'"),
}


def require(module: str, purpose: str):
    """Import `module` or raise a CnnError: `<purpose> needs the <package> package: <install>`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, install = EXTRAS.get(module, (module, f"pip install {module}"))
        raise CnnError([Diagnostic("error", f"{purpose} needs the {package} package, which is not installed",
                                   help=install, code="missing-extra")]) from None
