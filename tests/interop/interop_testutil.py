"""Helpers of the interop tests (imported by file name; tests/interop has no __init__.py).

`random_networks()` draws networks over every exportable op of the language (strides, dilations,
groups, `same` and explicit padding, floor and ceil rounding, every pool, conv_transpose, upsample,
every activation, add, concat, batchnorm on maps and vectors, dropout, flatten + dense, global
pooling); the pass-equivalence tests' generator (tests/passes/test_equivalence.py) is reused beside
it. `ort_outputs` runs an exported model in ONNX Runtime; `close` is the tolerance every interop
comparison states: max |a - b| <= rtol * max(1, max |reference|) (float32, rtol 1e-5)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import assume, strategies as st

from cnndsl.analysis.infer import infer_shapes
from cnndsl.ir.graph import Graph
from cnndsl.ops.build import make_node
from cnndsl.ops.registry import all_ops, get_op

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
RTOL = 1e-5

sys.path.insert(0, str(TESTS / "passes"))
from passes_testutil import random_store  # noqa: E402  (reused: random weights and batchnorm statistics)
from test_equivalence import networks as equivalence_networks  # noqa: E402,F401


def max_rel_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_close(actual, expected, rtol=RTOL, what=""):
    err = max_rel_error(actual, expected)
    assert err <= rtol, f"{what}: max error {err:.3g} x scale (tolerance {rtol:g})"


def ort_session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_outputs(model, feeds: dict) -> dict[str, np.ndarray]:
    sess = ort_session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _activations() -> tuple[str, ...]:
    """Every activation op of the registry (issue 16 adds many): the random networks draw them all."""
    return tuple(sorted(name for name, op in all_ops().items() if op.category == "activation"))


ACTS = _activations()


class _Net:
    def __init__(self, draw, c, h, w):
        self.draw, self.g, self.n = draw, Graph("random"), 0
        self.g.add(make_node("input", "x", shape=(c, h, w)))
        self.g.inputs.append("x")
        self.cur, self.shape = "x", (c, h, w)

    def add(self, op, inputs, **attrs):
        self.n += 1
        name = f"{op}{self.n}"
        self.g.add(make_node(op, name, **attrs), inputs)
        diags = infer_shapes(self.g)
        assume(not diags.errors)  # a drawn layer that does not fit its input: draw another network
        self.shape = self.g.node(name).type.shape
        return name

    def maybe_act(self, x):
        act = self.draw(st.sampled_from(("none",) + ACTS))
        if act == "none":
            return x
        has_alpha = get_op(act).attr("alpha") is not None
        return self.add(act, [x], **({"alpha": self.draw(st.sampled_from([0.1, 0.3, 1.0]))} if has_alpha else {}))

    def layer(self):
        d = self.draw
        c = self.shape[0]
        kinds = ["conv", "conv", "deconv", "pool", "upsample", "bn", "residual", "concat", "dropout"]
        kinds += [k for k in ("multiply", "reshape", "lrn", "softmax_axis") if get_op(k) is not None]
        kind = d(st.sampled_from(kinds))
        rounding = d(st.sampled_from([None, "floor", "ceil"]))
        extra = {"rounding": rounding} if rounding else {}
        if kind == "conv":
            groups = d(st.sampled_from([1, c]))
            filters = groups * d(st.integers(1, 3))
            k = d(st.integers(1, 3))
            padding = d(st.sampled_from(["same", 0, 1]))
            self.cur = self.add("conv", [self.cur], filters=filters, kernel=k, stride=d(st.integers(1, 2)),
                                padding=padding if padding == "same" or padding <= k - 1 else 0,
                                dilation=d(st.integers(1, 2)), groups=groups, bias=d(st.booleans()), **extra)
        elif kind == "deconv":
            s = d(st.integers(1, 2))
            self.cur = self.add("conv_transpose", [self.cur], filters=d(st.integers(1, 3)), kernel=d(st.integers(1, 3)),
                                stride=s, padding=d(st.sampled_from(["same", 0])), bias=d(st.booleans()))
        elif kind == "pool":
            op = d(st.sampled_from(["maxpool", "avgpool", "l2pool"]))
            k = d(st.integers(1, 3))
            self.cur = self.add(op, [self.cur], kernel=k, stride=d(st.integers(1, 2)),
                                padding=d(st.sampled_from(["same", 0, k // 2])), **extra)
        elif kind == "upsample":
            modes = get_op("upsample").attr("mode").choices
            mode = d(st.sampled_from(modes))
            extra = {"align_corners": d(st.booleans())} if get_op("upsample").attr("align_corners") else {}
            self.cur = self.add("upsample", [self.cur], scale=d(st.integers(1, 2)), mode=mode, **extra)
        elif kind == "multiply":  # a squeeze-and-excitation scale, or two maps
            if d(st.booleans()):
                s_ = self.add("global_avgpool", [self.cur])
                s_ = self.add("sigmoid", [self.add("dense", [s_], units=c)])
                self.cur = self.add("multiply", [self.cur, s_] if d(st.booleans()) else [s_, self.cur])
            else:
                self.cur = self.add("multiply", [self.cur, self.add("tanh", [self.cur])])
        elif kind == "reshape":
            c_, h_, w_ = self.shape
            self.cur = self.add("reshape", [self.cur], shape=(c_ * h_, 1, w_) if d(st.booleans()) else (-1, h_, w_))
        elif kind == "lrn":
            self.cur = self.add("lrn", [self.cur], size=d(st.sampled_from([1, 3, 5])), alpha=1e-2, beta=0.75, k=2.0)
        elif kind == "softmax_axis":
            self.cur = self.add("softmax_axis", [self.cur], axis=d(st.sampled_from(get_op("softmax_axis").attr("axis").choices)))
        elif kind == "bn":
            self.cur = self.add("batchnorm", [self.cur], eps=d(st.sampled_from([1e-5, 1e-3])))
        elif kind == "residual":
            y = self.add("conv", [self.cur], filters=c, kernel=3, padding="same")
            y = self.maybe_act(self.add("batchnorm", [y]) if d(st.booleans()) else y)
            self.cur = self.add("add", [self.cur, y])
        elif kind == "concat":
            a = self.add("conv", [self.cur], filters=d(st.integers(1, 2)), kernel=1)
            b = self.add("conv", [self.cur], filters=d(st.integers(1, 2)), kernel=3, padding=1)
            self.cur = self.add("concat", [a, b, a] if d(st.booleans()) else [a, b])
        else:
            self.cur = self.add("dropout", [self.cur], p=0.3)
        self.cur = self.maybe_act(self.cur)

    def head(self):
        d = self.draw
        pools = ["global_avgpool", "flatten"] + (["global_maxpool"] if get_op("global_maxpool") else [])
        v = self.add(d(st.sampled_from(pools)), [self.cur])
        v = self.add("dense", [v], units=d(st.integers(2, 5)), bias=d(st.booleans()))
        if d(st.booleans()):
            v = self.add("batchnorm", [v])
        v = self.maybe_act(v)
        self.g.add(make_node("dense", "out", units=3), [v])
        self.g.heads["out"] = "out"
        if d(st.booleans()):  # a second head: a feature map
            self.g.heads["map"] = self.cur
        infer_shapes(self.g).raise_if_errors()


@st.composite
def random_networks(draw):
    net = _Net(draw, draw(st.integers(1, 3)), draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    for _ in range(draw(st.integers(1, 4))):
        net.layer()
    net.head()
    return net.g
