"""The CUDA losses given a label outside the classes (issue 13): no gradient written outside the
row or pixel (it was d[base + label]), and a NaN loss, which stops training as any non-finite
loss does. Under the simulator, tiny shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from cuda_testutil import dev, empty, host

pytestmark = pytest.mark.cuda
f32 = np.float32


def _grid(n):
    from cnndsl.kernels.cuda.common import grid1d
    return grid1d(n)


@pytest.mark.parametrize("label", [3, 10**6, -1])
def test_cross_entropy_rows_with_a_label_outside_the_classes(label):
    from cnndsl.kernels.cuda import loss as L

    z = np.zeros((2, 3))
    d = dev(np.full(12, 7.0))  # (2, 3) gradient and six guard elements behind it
    terms = empty(2)
    L.cross_entropy_rows[_grid(2)](dev(z), dev(np.array([0, label]), np.int64), d, terms, 2, 3, f32(0.5))
    out, t = host(d, (12,)), terms.copy_to_host()
    assert math.isnan(t[1]) and t[0] == pytest.approx(math.log(3.0), rel=1e-6)
    assert (out[3:6] == 0).all() and (out[6:] == 7.0).all()  # bad row zeroed, nothing beyond


@pytest.mark.parametrize("label, nan", [(4, True), (10**6, True), (-2, True), (-1, False)])
def test_pixel_cross_entropy_with_a_label_outside_the_classes(label, nan):
    from cnndsl.kernels.cuda import loss as L

    z = np.zeros((1, 4, 1, 2))
    lab = np.array([[[0, label]]])
    d = dev(np.full(16, 7.0))  # (1, 4, 2) gradient and eight guard elements
    terms, valid = empty(2), empty(2)
    L.pixel_cross_entropy_terms[_grid(2)](dev(z), dev(lab, np.int64), d, terms, valid, 1, 4, 2)
    out, t, v = host(d, (16,)), terms.copy_to_host(), valid.copy_to_host()
    assert math.isnan(t[1]) == nan and v[1] == (1.0 if nan else 0.0)
    assert (out[1:8:2] == 0).all() and (out[8:] == 7.0).all()
