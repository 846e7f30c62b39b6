"""Interoperability: ONNX export and import, Caffe and Darknet import (docs/interop.md).

    cnndsl/interop/deps.py         the optional extras, imported with a one-line error when missing
    cnndsl/interop/onnx_export.py  checked forward graph + weights -> onnx.ModelProto
    cnndsl/interop/cnn_writer.py   what importers build (NetBuilder) and the readable .cnn written from it
    cnndsl/interop/onnx_import.py  onnx.ModelProto -> NetBuilder
    cnndsl/interop/prototxt.py     protobuf text format (Caffe .prototxt) with every value located
    cnndsl/interop/caffe_proto.py  the caffe.proto subset .caffemodel weights need, as run-time descriptors
    cnndsl/interop/caffe.py        Caffe .prototxt (+ .caffemodel) -> NetBuilder
    cnndsl/interop/darknet.py      Darknet .cfg (+ .weights) -> NetBuilder

Nothing here is imported by the rest of cnndsl: the core install stays free of onnx and protobuf.
"""
