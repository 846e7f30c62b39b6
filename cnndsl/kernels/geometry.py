"""ConvGeometry: where a windowed layer's window goes, resolved once, read by every launcher.

Shape inference computes one record per conv, fused conv, max/avg/L2 pool (`window_2d` in
cnndsl/ops/spatial.py) and conv_transpose (its shape rule) and stores it on the node,
`node.geometry`; the CPU and CUDA launchers, the memory estimate, the passes and the ONNX export
read it there instead of re-deriving padding, a pool's default stride or a fused conv's map
before pooling from the options. Gradient launchers read their forward node's.

The record is per sample: shape inference knows no batch, so N is 0 in a node's record and a
launcher that needs it takes `geo.batch(n)`. It describes the conv from (C, H, W) to (F, OH, OW)
with weight (F, C/G, KH, KW):

* conv, fused_conv: as written; fused_conv_pool: the conv, (OH, OW) is its map before the 2x2
  pool (what the kernel computes per chunk);
* conv_transpose: its adjoint conv, from the transposed conv's OUTPUT space to its input space
  (the conv whose kernels, run backwards, compute it); the pads are its crop;
* pools: F = C and G = 1 (no weight).

Padding is (pt, pb, pl, pr): top, bottom, left, right; the kernels take the top and left, the
bottom and right follow from the sizes (rounding=ceil and padding=same may make them differ).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class ConvGeometry:
    C: int
    H: int
    W: int
    F: int
    OH: int
    OW: int
    KH: int
    KW: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pb: int = 0
    pl: int = 0
    pr: int = 0
    dh: int = 1
    dw: int = 1
    G: int = 1
    N: int = 0  # the batch: 0 in a node's record, set by `batch(n)` where a launch needs it

    @classmethod
    def dense(cls, n: int, in_features: int, units: int) -> "ConvGeometry":
        """A dense layer as a conv on 1x1 maps (the CUDA GEMM kernels serve both)."""
        return cls(N=n, C=in_features, H=1, W=1, F=units, OH=1, OW=1, KH=1, KW=1)

    def batch(self, n: int) -> "ConvGeometry":
        return replace(self, N=n)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.KH, self.KW

    @property
    def stride(self) -> tuple[int, int]:
        return self.sh, self.sw

    @property
    def dilation(self) -> tuple[int, int]:
        return self.dh, self.dw

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return self.pt, self.pb, self.pl, self.pr

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.OH, self.OW

    @property
    def cpu_args(self) -> tuple[int, int, int, int, int, int, int]:
        """(sh, sw, pt, pl, dh, dw, G): the geometry arguments of the CPU conv kernels, in their order."""
        return self.sh, self.sw, self.pt, self.pl, self.dh, self.dw, self.G

    def args(self, kchunk: int = 0) -> tuple:
        """The geometry arguments of the CUDA GEMM kernels (cnndsl/kernels/cuda/gemm.py), in their order."""
        return (self.N, self.C, self.H, self.W, self.F, self.OH, self.OW, self.KH, self.KW,
                self.sh, self.sw, self.pt, self.pl, self.dh, self.dw, self.G, kchunk)

    @property
    def dense_like(self) -> bool:
        """1x1 maps: a plain matrix product, whose operands are contiguous along k."""
        return self.H * self.W == 1 and self.OH * self.OW == 1
