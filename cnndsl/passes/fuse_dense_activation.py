"""fuse_dense_activation (-O2, both modes): dense + bias + activation become one fused_dense.

    h = dense(x) 120 ; r = relu(h)        ->   h = fused_dense(x) units=120 activation=relu

Same rule and guards as fuse_conv_activation (ONNX Runtime GemmActivationFusion).
Tests: tests/passes/test_fuse_dense_activation.py.
"""
from __future__ import annotations

from cnndsl.passes.fuse_conv_activation import FuseActivation


class FuseDenseActivation(FuseActivation):
    name = "fuse_dense_activation"
    ops = ("dense", "fused_dense")
