"""Winograd F(2x2, 3x3) (cnndsl/kernels/cpu/winograd.py): the weight transform against its matrix
statement, the forward and the input gradient against the NumPy reference and finite differences,
on Hypothesis shapes (odd sizes, every padding from 0 to 2 on each side, batch 1, channel counts
that leave partial channel blocks and partial groups of 32 tiles), and the rule that picks it.

Tolerance: assert_close's float32 bound, 1e-5 + 1e-4 x max |expected|. Winograd's transforms add
up to 4 (input), 9 (output) terms and U holds halves and quarters of the weights, so its rounding
error is larger than the direct sum's but far inside that bound: measured max |error| / max |y|
of 2.5e-7 to 1.5e-6 for 3 to 128 input channels at batch 64 (docs/performance.md, "Winograd"),
and the padding costs nothing here (its zeros are exact)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from kernels_testutil import SETTINGS, assert_close, check_grad_fd, f32
from kernels_testutil import vector_file  # noqa: F401 (a fixture)

from cnndsl.kernels.activations import ACTIVATIONS
from cnndsl.kernels.cpu import winograd as WG
from cnndsl.kernels.cpu.direct import kernel_code
from cnndsl.kernels.cpu.epilogue import KERNEL_CODE
from cnndsl.kernels.reference import conv as R

ACTS = {a.code: a for a in ACTIVATIONS}
ALPHA = 0.1
_NO_BIAS = np.zeros(1, np.float32)
NONE = KERNEL_CODE["none"]


@st.composite
def cases(draw):
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = max(draw(st.integers(1, 13)), 3 - pads[0] - pads[1])
    w = max(draw(st.integers(1, 40)), 3 - pads[2] - pads[3])  # up to 20 tiles a row: runs of 16 + 4
    return dict(n=draw(st.integers(1, 3)), c=draw(st.sampled_from([1, 2, 5, 16, 17, 33])),
                f=draw(st.sampled_from([1, 5, 8, 9, 10, 17, 33])), h=h, w=w, pads=pads,
                act=draw(st.sampled_from(sorted(ACTS))), residual=draw(st.booleans()), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


def _forward(x, w, b, res, act, pt, pl, oh, ow):
    """WG.run on a NaN-filled output and scratch (a lane or row left unwritten shows)."""
    n, c = x.shape[:2]
    f = w.shape[0]
    p = WG.plan(c, f, x.shape[2], x.shape[3], 3, 3, 1, 1, pt, pl, 1, 1, 1, oh, ow, True)
    y = np.full((n, f, oh, ow), np.nan, np.float32)
    WG.run(p, f32(x), f32(w), f32(b) if b is not None else _NO_BIAS, b is not None,
           f32(res) if res is not None else y, res is not None, kernel_code(act), np.float32(ALPHA), False, pt, pl,
           np.full(WG.scratch_len(f, c), np.nan, np.float32), y)
    return y, p


@SETTINGS
@given(cases())
def test_forward_matches_reference(case):
    rng = np.random.default_rng(case["seed"])
    n, c, f = case["n"], case["c"], case["f"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((f, c, 3, 3))
    b = rng.standard_normal(f) if case["bias"] else None
    z = R.conv2d(x, w, b, (1, 1), case["pads"], (1, 1), 1)
    res = rng.standard_normal(z.shape) if case["residual"] else None
    expected = ACTS[case["act"]].reference(z + res if res is not None else z, ALPHA)
    y, p = _forward(x, w, b, res, case["act"], case["pads"][0], case["pads"][2], z.shape[2], z.shape[3])
    assert_close(y, expected, what=f"winograd forward {p}")


@pytest.mark.parametrize("n, c, f, hw, pad", [
    (1, 64, 64, 56, 1),   # the benchmark's layer at batch 1: 28-tile rows, runs of 16 + 12 crossing groups
    (3, 16, 32, 7, 1),    # an odd map: the last tile row and column half outside y; groups across images
    (2, 32, 18, 70, 1),   # rows of 35 tiles, longer than a group: a run cut by the group's end
    (5, 20, 40, 4, 0),    # no padding: one tile per image, groups of 5 images
    (2, 17, 9, 9, 2),     # a padding of 2 (a larger output than the input)
])
def test_forward_paths(n, c, f, hw, pad):
    """Fixed shapes that random draws reach only by chance; relu and a residual (the fused conv's
    epilogue, in the vector code)."""
    rng = np.random.default_rng(n * 100 + c)
    x, w, b = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f)
    z = R.conv2d(x, w, b, (1, 1), (pad,) * 4, (1, 1), 1)
    res = rng.standard_normal(z.shape)
    relu = next(a.code for a in ACTIVATIONS if a.name == "relu")
    y, p = _forward(x, w, b, res, relu, pad, pad, z.shape[2], z.shape[3])
    assert_close(y, np.maximum(z + res, 0.0), what=f"winograd forward {p}")


@SETTINGS
@given(cases())
def test_input_gradient_matches_reference_and_fd(case):
    """dx by the forward of dy with the flipped, transposed window (flip = True)."""
    rng = np.random.default_rng(case["seed"])
    n, c, f = case["n"], case["c"], case["f"]
    pads = case["pads"]
    x = rng.standard_normal((n, c, case["h"], case["w"]))
    w = rng.standard_normal((f, c, 3, 3))
    args = ((1, 1), pads, (1, 1), 1)
    z = R.conv2d(x, w, None, *args)
    dy = rng.standard_normal(z.shape)
    q = WG.input_grad_plan(c, f, case["h"], case["w"], 3, 3, 1, 1, pads[0], pads[2], 1, 1, 1, z.shape[2],
                           z.shape[3], True)
    assert q is not None
    dx = np.full(x.shape, np.nan, np.float32)
    WG.run(q, f32(dy), f32(w), _NO_BIAS, False, dx, False, NONE, np.float32(0), True, 2 - pads[0],
           2 - pads[2], np.full(WG.scratch_len(c, f), np.nan, np.float32), dx)
    dx_ref, _, _ = R.conv2d_backward(x, w, dy, *args)
    assert_close(dx, dx_ref, what=f"winograd input gradient {q}")

    def loss(x_):
        return float((R.conv2d(x_, w, None, *args) * dy).sum())
    check_grad_fd(loss, [x], [dx], rng, what="winograd input gradient")


def test_weight_transform_is_g_g_gt():
    """u[xi] = (G g G^T)[xi // 4, xi % 4], and the flipped form the input gradient uses; the rows
    u_stride apart, nothing written between them."""
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 7, 3, 3))
    for flip, (fo, ci), g in ((False, (5, 7), w), (True, (7, 5), w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))):
        u = np.full((16, WG.u_stride(fo, ci)), np.nan, np.float32)
        WG.weight_transform(f32(w), flip, u)
        assert np.isnan(u[:, fo * ci:]).all()
        assert_close(u[:, :fo * ci].reshape(16, fo, ci), np.einsum("ai,fcij,bj->abfc", G, g, G).reshape(16, fo, ci),
                     what=f"U = G g G^T (flip {flip})")


def test_on_avx2_it_pays_on_larger_maps_and_more_channels_only(vector_file):
    """AVX2's rule: from 32 input channels at 32x32, from 64 x 64 channels at 16x16, never at 8x8."""
    vector_file("avx2")
    def takes(c, f, hw, n=None):
        return WG.plan(c, f, hw, hw, 3, 3, 1, 1, 1, 1, 1, 1, 1, hw, hw, False, n) is not None

    assert takes(64, 64, 56) and takes(32, 32, 32) and takes(32, 64, 32) and takes(64, 64, 28)
    assert not takes(16, 32, 32) and not takes(16, 16, 32) and not takes(3, 64, 32)
    assert takes(64, 64, 16) and takes(64, 128, 16) and not takes(32, 64, 16) and not takes(32, 32, 16)
    assert not takes(128, 128, 8) and not takes(128, 128, 8, 64) and not takes(64, 64, 8)
    assert WG.input_grad_plan(64, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is not None  # dy's 32 -> 64
    assert WG.input_grad_plan(32, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is None  # dy's 16 channels


def test_plan_applies_to_3x3_stride_1_only_and_where_it_pays(vector_file):
    """AVX-512's rule (the one read from the Xeon), whatever this CPU is."""
    vector_file("avx512")
    assert WG.plan(64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 56, 56) is not None  # the benchmark's conv
    for declined in [(64, 64, 56, 56, 3, 3, 2, 2, 1, 1, 1, 1, 1, 28, 28),   # stride 2
                     (64, 64, 56, 56, 3, 3, 1, 1, 2, 2, 2, 2, 1, 56, 56),   # dilation 2
                     (64, 64, 56, 56, 3, 3, 1, 1, 1, 1, 1, 1, 2, 56, 56),   # groups 2
                     (64, 64, 56, 56, 5, 5, 1, 1, 2, 2, 1, 1, 1, 56, 56),   # 5x5
                     (64, 64, 56, 56, 1, 1, 1, 1, 0, 0, 1, 1, 1, 56, 56)]:  # 1x1
        assert WG.plan(*declined, True) is None, declined
    # the measured rule (see winograd.MIN_IN_CHANNELS): not from 3 or 8 channels, not into 16,
    # not at 8x8 below 64 x 64 channels; yes from 16 into 32 at 16x16 and up
    assert WG.plan(3, 64, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is None
    assert WG.plan(32, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is None
    assert WG.plan(32, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8) is None
    assert WG.plan(64, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8) is not None
    assert WG.plan(16, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 16, 16) is not None
    # ... and on a small map from the batch with MIN_TILES tiles (8x8: 16 tiles an image, batch 8)
    small = (128, 128, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8)
    assert WG.plan(*small, False, 4) is None and WG.plan(*small, False, 8) is not None
    assert WG.from_batch(WG.plan(*small), 8, 8) == 8 and WG.plan(*small, True, 1) is not None
    assert WG.plan(32, 32, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 16, 16, False, 1) is not None
    # the input gradient swaps the channels: dy's 64 -> dx's 16 declines (into 16)
    assert WG.input_grad_plan(16, 64, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is None
    assert WG.input_grad_plan(64, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 32, 32) is not None


def test_a_short_scratch_or_a_mismatch_is_an_error_not_a_write_past_it():
    """The vector code has no bounds checks: the launcher checks the scratch, the shapes and the
    plan."""
    x = np.zeros((1, 16, 8, 8), np.float32)
    w = np.zeros((32, 16, 3, 3), np.float32)
    p = WG.plan(16, 32, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8, True)
    y = np.zeros((1, 32, 8, 8), np.float32)
    u = np.zeros(WG.scratch_len(32, 16), np.float32)
    with pytest.raises(ValueError, match="scratch"):
        WG.run(p, x, w, _NO_BIAS, False, y, False, NONE, np.float32(0), False, 1, 1, u[:-1], y)
    with pytest.raises(ValueError, match="plan"):
        y6 = np.zeros((1, 32, 6, 8), np.float32)
        WG.run(p, x, w, _NO_BIAS, False, y6, False, NONE, np.float32(0), False, 1, 1, u, y6)
    with pytest.raises(ValueError, match="input does not match"):
        WG.run(p, np.zeros((1, 15, 8, 8), np.float32), w, _NO_BIAS, False, y, False, NONE, np.float32(0), False, 1,
               1, u, y)
    with pytest.raises(IndexError, match="residual"):
        WG.run(p, x, w, _NO_BIAS, False, np.zeros((1, 32, 8, 7), np.float32), True, NONE, np.float32(0), False, 1,
               1, u, y)


_OTHER_TRANSFORMS = """
import sys
import numpy as np
from cnndsl.kernels.cpu import microkernel as M
M.VECTOR_LANES = 8 if M.VECTOR_LANES >= 16 else 16  # before winograd's transforms are compiled
from cnndsl.kernels.cpu import winograd as WG
from cnndsl.kernels.reference import conv as R
worst = 0.0
for n, c, f, hw, pad in [(1, 32, 32, 56, 1), (3, 16, 32, 7, 1), (2, 32, 18, 70, 1), (2, 17, 9, 9, 2)]:
    rng = np.random.default_rng(n + c + hw)
    x, w, b = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f)
    z = R.conv2d(x, w, b, (1, 1), (pad,) * 4, (1, 1), 1)
    res = rng.standard_normal(z.shape)
    p = WG.plan(c, f, hw, hw, 3, 3, 1, 1, pad, pad, 1, 1, 1, *z.shape[2:], True)
    y = np.full(z.shape, np.nan, np.float32)
    WG.run(p, x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), True, res.astype(np.float32), True,
           0, np.float32(0.1), False, pad, pad, np.full(WG.scratch_len(f, c), np.nan, np.float32), y)
    worst = max(worst, float(np.abs(y - (z + res)).max() / np.abs(z + res).max()))
    dy = rng.standard_normal(z.shape)
    dx_ref = R.conv2d_backward(x, w, dy, (1, 1), (pad,) * 4, (1, 1), 1)[0]
    q = WG.input_grad_plan(c, f, hw, hw, 3, 3, 1, 1, pad, pad, 1, 1, 1, *z.shape[2:], True)
    dx = np.full(x.shape, np.nan, np.float32)
    WG.run(q, dy.astype(np.float32), w.astype(np.float32), np.zeros(1, np.float32), False, dx, False, 0,
           np.float32(0.1), True, 2 - pad, 2 - pad, np.full(WG.scratch_len(c, f), np.nan, np.float32), dx)
    worst = max(worst, float(np.abs(dx - dx_ref).max() / np.abs(dx_ref).max()))
print("worst", worst)
sys.exit(0 if worst < 1e-4 else 1)
"""


@pytest.mark.slow
def test_the_other_cpus_transforms_compute_the_same(tmp_path):
    """The transforms compile one way for AVX-512 (masked loads and stores throughout) and another
    for AVX2 (plain ones where every lane is in: _masked_store); a CI machine of one kind compiles
    only its own. Here the other kind's, in a fresh process with an empty kernel cache (so that
    neither kind's code reaches the other's cache): forward with bias and a residual, and the input
    gradient, against the float64 reference on maps with whole and partial runs of 16 tiles;
    relative error below 1e-4 (float32 sums of at most 9 x 33 products)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", _OTHER_TRANSFORMS], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
