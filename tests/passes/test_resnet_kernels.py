"""How many kernels a ResNet block lowers to at each -O level (inference and training)."""
import pytest
from passes_testutil import graph_of

from cnndsl.training_graph import LossSpec
from cnndsl.passes.pipeline import kernel_count, optimize

BLOCK = """
network Block {
  input x: 8x8x8
  c1 = conv(x) 8 padding=same
  b1 = batchnorm(c1)
  r1 = relu(b1)
  c2 = conv(r1) 8 padding=same
  b2 = batchnorm(c2)
  s = add(x, b2)
  r = relu(s)
  p = global_avgpool(r)
  dense(p) 4 -> out
}
"""

# inference: conv bn relu conv bn add relu | pool dense  ->  fused_conv fused_conv(residual) | pool dense
INFERENCE = {0: 9, 1: 9, 2: 4, 3: 4}
# training: batchnorm is never folded, and a training batchnorm between the conv and its relu / add
# blocks the conv's epilogue fusions (21 kernels: forward, loss, gradients, step). At -O2 b1 takes
# its relu (fused_batchnorm), and its backward (activation's gradient + batchnorm_grad) becomes one
# fused_batchnorm_grad: 2 kernels less. b2 is followed by the add, not an activation: unchanged.
TRAINING = {0: 21, 1: 21, 2: 19, 3: 19}
# the same block without batchnorm: conv relu conv add relu -> 2 fused convs; 3 gradient kernels each
# (activation_grad, conv_grad_params, conv_grad_input) -> 1 fused_conv_grad
NO_BN = BLOCK.replace("  b1 = batchnorm(c1)\n  r1 = relu(b1)", "  r1 = relu(c1)") \
    .replace("  b2 = batchnorm(c2)\n  s = add(x, b2)", "  s = add(x, c2)")
TRAINING_NO_BN = {0: 17, 1: 17, 2: 11, 3: 11}


@pytest.mark.parametrize("level", sorted(INFERENCE))
def test_inference_kernel_count(level):
    g = optimize(graph_of(BLOCK), "inference", level, verify=True)
    assert kernel_count(g) == INFERENCE[level]
    if level >= 2:
        assert [n.op for n in g.nodes()] == ["input", "fused_conv", "fused_conv", "global_avgpool", "dense"]


@pytest.mark.parametrize("level", sorted(TRAINING))
def test_training_kernel_count(level):
    g = optimize(graph_of(BLOCK), "training", level, losses=[LossSpec("out", "cross_entropy")], verify=True)
    assert kernel_count(g) == TRAINING[level]
    if level >= 2:
        assert [n.op for n in g.nodes()][:7] == ["input", "conv", "fused_batchnorm", "conv", "batchnorm", "add", "relu"]
        assert [n.op for n in g.nodes()].count("fused_batchnorm_grad") == 1


@pytest.mark.parametrize("level", sorted(TRAINING_NO_BN))
def test_training_kernel_count_without_batchnorm(level):
    g = optimize(graph_of(NO_BN), "training", level, losses=[LossSpec("out", "cross_entropy")], verify=True)
    assert kernel_count(g) == TRAINING_NO_BN[level]
    if level >= 2:
        assert [n.op for n in g.nodes()].count("fused_conv_grad") == 2
