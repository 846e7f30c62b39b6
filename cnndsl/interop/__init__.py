"""Interoperability: ONNX export and import, Caffe and Darknet import (docs/interop.md).

    cnndsl/interop/deps.py         the optional extras, imported with a one-line error when missing
    cnndsl/interop/onnx_export.py  checked forward graph + weights -> onnx.ModelProto
    cnndsl/interop/cnn_writer.py   what importers build (NetBuilder) and the readable .cnn written from it
    cnndsl/interop/onnx_import.py  onnx.ModelProto -> NetBuilder

Nothing here is imported by the rest of cnndsl: the core install stays free of onnx and protobuf.
"""
