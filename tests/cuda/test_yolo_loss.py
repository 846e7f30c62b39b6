"""The `yolo` detection loss on the simulated GPU: the kernel vs the NumPy reference, and a tiny
detector's training steps on 'cuda' vs 'cpu' (loss options set from the train section)."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_testutil import assert_close, dev, empty, host

from cnndsl.kernels.reference.yolo_loss import yolo_loss as reference
from cnndsl.tasks.detection import encode

pytestmark = pytest.mark.cuda
f32 = np.float32

OBJECTS = [[(1, (0.3, 0.4, 0.2, 0.3)), (2, (0.8, 0.7, 0.1, 0.2))], [(0, (0.55, 0.1, 0.3, 0.15))]]


@pytest.mark.parametrize("boxes,noobj,coord,weight", [(1, 0.5, 5.0, 1.0), (2, 0.25, 2.0, 3.0)])
def test_yolo_kernel_matches_the_reference(boxes, noobj, coord, weight):
    from cnndsl.kernels.cuda import yolo_loss as Y
    from cnndsl.kernels.cuda.common import RB, grid1d
    from cnndsl.kernels.cuda.reduce import sum_to

    classes, grid = 3, (3, 4)
    t = np.stack([encode(o, grid, classes, boxes) for o in OBJECTS])
    z = np.random.default_rng(boxes).standard_normal(t.shape) * 2
    loss_ref, g_ref = reference(z, t, boxes, noobj, coord)
    n, c, s = t.shape[0], t.shape[1], grid[0] * grid[1]
    items = n * boxes * s
    d, terms, values = empty(z.size), empty(items), empty(2)
    Y.yolo_terms[grid1d(items)](dev(z), dev(t), d, terms, n, boxes, c // boxes, s, f32(noobj), f32(coord),
                                f32(weight / n))
    sum_to[1, RB](terms, items, f32(weight / n), values, 1)
    assert_close(host(d, z.shape), weight * g_ref, what="yolo gradient")
    assert abs(values.copy_to_host()[1] - weight * loss_ref) < 1e-4 * max(1.0, weight * loss_ref)


DETECTOR = """
network DetTiny(classes = 3, boxes = 2) {
  input image: 1x8x8
  conv 4 kernel=3 stride=2 padding=same leaky_relu(0.1)
  conv (classes + 5) * boxes kernel=1 -> grid
}
train {
  batch 2
  loss grid yolo noobj=0.3 coord=4 weight=2
}
"""


def test_detector_with_yolo_loss_trains_the_same_on_cuda_and_cpu():
    import cnndsl
    from cnndsl.model import Model
    from cnndsl.train.optim import Adam

    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = np.stack([encode(o, (4, 4), 3, 2) for o in OBJECTS])
    out = {}
    for device in ("cpu", "cuda"):
        model = Model(cnndsl.loads(DETECTOR), device=device)
        model.set_optimizer(Adam(model.store.params, lr=1e-2))
        losses = [model.train_step(x, y, step)[0] for step in range(2)]
        out[device] = (np.array(losses), model.store.state_dict())
    assert_close(out["cuda"][0], out["cpu"][0], rtol=1e-5, what="losses")
    for k, v in out["cpu"][1].items():
        assert_close(out["cuda"][1][k], v, rtol=1e-4, atol=1e-6, what=k)
