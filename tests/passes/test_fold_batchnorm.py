"""fold_batchnorm: inference only; the weights stay untouched; guards."""
import numpy as np
import pytest
from passes_testutil import assert_close, body, graph_of, random_store, run_inference, run_pass

from cnndsl.passes.base import TRAINING
from cnndsl.passes.fold_batchnorm import FoldBatchnorm
from cnndsl.passes.pipeline import optimize

NET = """
network B {
  input x: 3x6x6
  c = conv(x) 4 padding=same bias=false
  b = batchnorm(c) eps=0.001
  p = maxpool(b) 2
  f = flatten(p)
  h = dense(f) 5
  hb = batchnorm(h)
  dense(hb) 2 -> out
}
"""


def test_batchnorm_folds_into_conv_and_dense():
    g, ctx = run_pass(graph_of(NET), FoldBatchnorm())
    assert body(g)[1] == ("c = fused_conv(x) filters=4 kernel=3x3 stride=1x1 padding=same dilation=1x1 groups=1 "
                          "bias=false residual=false activation=none alpha=0.01 folded_bn=b bn_eps=0.001")
    assert body(g)[4] == "h = fused_dense(f) units=5 bias=true activation=none alpha=0.01 folded_bn=hb bn_eps=1e-05"
    assert "batchnorm" not in [n.op for n in g.nodes()]
    assert g.node("c").params == {"weight": (4, 3, 3, 3)}  # no bias param appears: the folded one is scratch
    assert ctx.stats["fold_batchnorm"] == {"batchnorm folded into conv": 1, "batchnorm folded into dense": 1}


def test_folded_outputs_match_and_stored_weights_are_untouched():
    g0 = graph_of(NET)
    store = random_store(g0, seed=1)
    before = store.state_dict()
    x = np.random.default_rng(0).standard_normal((3, 3, 6, 6)).astype(np.float32)
    want = run_inference(g0, store, x)
    got = run_inference(optimize(g0, "inference", 2), store, x)
    assert_close(got["out"], want["out"], what="folded")
    for name, value in store.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    # a later change of the stored statistics is seen: folding happens at run time, never stale
    store.buffers["b.running_var"][...] *= 4.0
    assert_close(run_inference(optimize(g0, "inference", 2), store, x)["out"], run_inference(g0, store, x)["out"])


def test_never_in_training():
    g = optimize(graph_of(NET), TRAINING, 3, disabled=["autodiff"])
    assert [n.op for n in g.nodes()].count("batchnorm") == 2


@pytest.mark.parametrize("net", [
    NET.replace("p = maxpool(b) 2", "s = add(b, c)\n  p = maxpool(s) 2"),  # the conv is read twice
    NET.replace("b = batchnorm(c) eps=0.001", "r = relu(c)\n  b = batchnorm(r) eps=0.001"),  # bn after relu
    "network B {\n input x: 3x6x6\n c = conv(x) 4\n batchnorm(c) -> out\n}",  # bn is a head
])
def test_does_not_fire(net):
    g, ctx = run_pass(graph_of(net), FoldBatchnorm())
    folded = ctx.stats.get("fold_batchnorm", {}).get("batchnorm folded into conv", 0)
    assert folded == 0 and body(g)[:3] == body(graph_of(net))[:3]
