"""The part of Caffe's caffe.proto that .caffemodel weights need, as protobuf descriptors built at
run time (no generated code, no download). Field numbers are Caffe's:

    message BlobShape  { repeated int64 dim = 1 [packed = true]; }
    message BlobProto  { optional BlobShape shape = 7; repeated float data = 5 [packed = true];
                         repeated double double_data = 8 [packed = true];
                         optional int32 num = 1; optional int32 channels = 2;
                         optional int32 height = 3; optional int32 width = 4; }
    message LayerParameter   { optional string name = 1; optional string type = 2;
                               repeated BlobProto blobs = 7; }
    message V1LayerParameter { optional string name = 4; optional int32 type = 5;   // an enum in Caffe
                               repeated BlobProto blobs = 6; }
    message NetParameter { optional string name = 1; repeated LayerParameter layer = 100;
                           repeated V1LayerParameter layers = 2; }

Every other field of a real .caffemodel is skipped by the protobuf parser as unknown.
"""
from __future__ import annotations

from functools import lru_cache

from cnndsl.interop.deps import require

@lru_cache(maxsize=1)
def messages():
    """(NetParameter, BlobProto) message classes."""
    require("google.protobuf", "Reading Caffe .caffemodel weights")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="cnndsl_caffe_subset.proto", package="cnndsl_caffe",
                                             syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".cnndsl_caffe.{type_name}"
            if packed:
                f.options.packed = True

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, REP, None, True)])
    msg("BlobProto", [("shape", 7, F.TYPE_MESSAGE, OPT, "BlobShape", False),
                      ("data", 5, F.TYPE_FLOAT, REP, None, True),
                      ("double_data", 8, F.TYPE_DOUBLE, REP, None, True),
                      ("num", 1, F.TYPE_INT32, OPT, None, False), ("channels", 2, F.TYPE_INT32, OPT, None, False),
                      ("height", 3, F.TYPE_INT32, OPT, None, False), ("width", 4, F.TYPE_INT32, OPT, None, False)])
    msg("LayerParameter", [("name", 1, F.TYPE_STRING, OPT, None, False), ("type", 2, F.TYPE_STRING, OPT, None, False),
                           ("blobs", 7, F.TYPE_MESSAGE, REP, "BlobProto", False)])
    msg("V1LayerParameter", [("name", 4, F.TYPE_STRING, OPT, None, False), ("type", 5, F.TYPE_INT32, OPT, None, False),
                             ("blobs", 6, F.TYPE_MESSAGE, REP, "BlobProto", False)])
    msg("NetParameter", [("name", 1, F.TYPE_STRING, OPT, None, False),
                         ("layer", 100, F.TYPE_MESSAGE, REP, "LayerParameter", False),
                         ("layers", 2, F.TYPE_MESSAGE, REP, "V1LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("cnndsl_caffe.NetParameter")),
            get(pool.FindMessageTypeByName("cnndsl_caffe.BlobProto")))


def blob_array(blob):
    """A BlobProto's values as a float32 array of its shape (new `shape`, or legacy num/channels/h/w)."""
    import numpy as np

    data = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
        while len(shape) > 1 and shape[0] == 1 and int(np.prod(shape[1:])) == data.size and data.size:
            shape = shape[1:]  # legacy 4-D blobs of biases and fc weights: 1 x 1 x N x K
    return data, shape
