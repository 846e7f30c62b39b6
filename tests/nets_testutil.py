"""Small networks shared by tests in several folders (imported by file name: tests/ is on the path
through tests/conftest.py)."""
from __future__ import annotations

# A digits network whose third conv runs its forward and input gradient by Winograd on AVX-512 and
# on AVX2 (64 -> 64 at 28x28: winograd.plan's rules), the second its forward on AVX-512 only (16 ->
# 64; AVX2 wants 32 input channels); the first stays direct.
# Used by the pool-filled cache test (tests/kernels/test_kernels_direct_conv.py) and the memory
# estimate's bound (tests/test_memory_estimate.py).
WINOGRAD_NET = """network W {
  input image: 1x28x28
  conv 16 kernel=3 padding=same relu
  conv 64 kernel=3 padding=same relu
  conv 64 kernel=3 padding=same relu
  maxpool 2
  flatten
  dense 10 -> logits
}
train {
  dataset digits
  batch 64
  optimizer sgd lr=0.01
  loss logits cross_entropy
}
"""
