"""Out-of-bounds accesses the NUMBA_BOUNDSCHECK=1 run found in the kernels (issue 13), each now
refused or kept in bounds, and the extent check the bounds-checked build adds to the BLAS calls."""
from __future__ import annotations

import numpy as np
import pytest

from cnndsl.augment import ops as A
from cnndsl.kernels.cpu import blas
from cnndsl.kernels.cpu import loss as L
from cnndsl.kernels.cpu.common import BOUNDSCHECK


@pytest.mark.parametrize("label", [3, 10**7, -1, -4])
def test_cross_entropy_refuses_a_label_outside_the_classes(label):
    # 3 and 10**7 wrote dlogits[1, label] out of bounds; -1 wrapped to the last class, -4 out
    logits = np.zeros((2, 3), np.float32)
    dlogits = np.full((2, 3), 7.0, np.float32)
    with pytest.raises(ValueError, match=rf"cross-entropy label {label} of sample 1 is outside \[0, 3\)"):
        L.softmax_cross_entropy(logits, np.array([0, label], np.int64), dlogits)
    assert (dlogits == 7.0).all()  # refused before anything was written


def test_cross_entropy_accepts_every_label_in_range():
    dlogits = np.empty((3, 3), np.float32)
    loss = L.softmax_cross_entropy(np.zeros((3, 3), np.float32), np.array([0, 1, 2], np.int64), dlogits)
    assert loss == pytest.approx(np.log(3.0), rel=1e-6)


@pytest.mark.parametrize("label", [3, 10**6, -2])
def test_pixel_cross_entropy_refuses_a_label_outside_the_classes(label):
    # 3 and 10**6 wrote dlogits[n, label, s] out of bounds; -2 was silently ignored like -1
    logits = np.zeros((2, 3, 2, 2), np.float32)
    labels = np.zeros((2, 2, 2), np.int64)
    labels[1, 1, 0] = label
    dlogits = np.full(logits.shape, 7.0, np.float32)
    with pytest.raises(ValueError, match=rf"pixel cross-entropy label {label} of sample 1, pixel 2 "
                                         r"is outside \[0, 3\) and is not -1"):
        L.pixel_cross_entropy(logits, labels, dlogits)
    assert (dlogits == 7.0).all()


def test_pixel_cross_entropy_still_ignores_minus_one():
    labels = np.full((1, 2, 2), -1, np.int64)
    labels[0, 0, 0] = 1
    dlogits = np.empty((1, 3, 2, 2), np.float32)
    loss = L.pixel_cross_entropy(np.zeros((1, 3, 2, 2), np.float32), labels, dlogits)
    assert loss == pytest.approx(np.log(3.0), rel=1e-6)
    assert (dlogits[0, :, 1, :] == 0).all() and (dlogits[0, :, 0, 1] == 0).all()


@pytest.mark.parametrize("degrees", [float("nan"), float("inf"), -float("inf")])
def test_rotation_by_a_non_finite_angle_fills_instead_of_reading_outside_the_image(degrees):
    # the source point was NaN: np.int64(NaN) indexed src far out of bounds
    x = np.random.default_rng(0).random((2, 1, 5, 6)).astype(np.float32)
    out = A.rotate_images(x, degrees, fill=0.25)
    assert out.shape == x.shape
    assert (out == np.float32(0.25)).all()


def test_rotation_by_a_finite_angle_is_unchanged_by_the_fix():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    assert np.array_equal(A.rotate_images(x, 0.0), x)
    assert np.array_equal(A.rotate_images(x, 90.0), np.rot90(x, 1, axes=(2, 3)))


@pytest.mark.skipif(not BOUNDSCHECK, reason="the extent check is compiled in under NUMBA_BOUNDSCHECK=1 only")
@pytest.mark.parametrize("operand, sizes, short", [("A", (5, 6, 4), 5), ("B", (6, 5, 4), 5), ("C", (6, 6, 3), 3)])
def test_bounds_checked_gemm_refuses_an_operand_too_small(operand, sizes, short):
    # (2x3) @ (3x2) -> 2x2 needs 6, 6 and 4 elements; one short, the sgemm would read or write past it
    a, b, c = (np.ones(n, np.float32) for n in sizes)
    with pytest.raises(IndexError, match=rf"gemm operand {operand}: .* does not fit its {short} elements"):
        blas.gemm(False, False, 2, 2, 3, np.float32(1), a, 0, 3, b, 0, 2, np.float32(0), c, 0, 2)


@pytest.mark.skipif(not BOUNDSCHECK, reason="the extent check is compiled in under NUMBA_BOUNDSCHECK=1 only")
def test_bounds_checked_gemm_refuses_an_offset_past_the_end():
    a, b, c = (np.ones(6, np.float32) for _ in range(3))
    with pytest.raises(IndexError, match="gemm operand C: 2 x 2 at offset 3"):
        blas.gemm(False, False, 2, 2, 3, np.float32(1), a, 0, 3, b, 0, 2, np.float32(0), c, 3, 2)
    blas.gemm(False, False, 2, 2, 3, np.float32(1), a, 0, 3, b, 0, 2, np.float32(0), c, 2, 2)  # fits
    assert np.array_equal(c, np.array([1, 1, 3, 3, 3, 3], np.float32))
