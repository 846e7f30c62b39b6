"""The PyTorch half of vs_pytorch.py, run in its own process; prints one JSON object on stdout.

    python benchmarks/_vs_torch.py --threads 2 [--quick]

The same networks, shapes, batches, optimizer and timing rule as _vs_cnndsl.py, written in
PyTorch (CPU build). PyTorch is only a benchmark dependency, never one of cnndsl.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # cnndsl.data for the digits

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import _vs_common as C  # noqa: E402


def lenet5(classes: int = 10) -> nn.Module:
    """examples/lenet5.cnn, layer for layer."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(84, classes))


def vgg_stage(cin: int, filters: int, convs: int) -> list[nn.Module]:
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else filters, filters, 3, padding=1),
                   nn.BatchNorm2d(filters), nn.ReLU()]
    return layers + [nn.MaxPool2d(2)]


def vgg_small(classes: int = 10, width: int = 32) -> nn.Module:
    """examples/vgg_small.cnn, layer for layer (conv with bias, then batchnorm and relu)."""
    return nn.Sequential(
        *vgg_stage(3, width, 2), *vgg_stage(width, width * 2, 2), *vgg_stage(width * 2, width * 4, 3),
        nn.Flatten(),
        nn.Linear(width * 4 * 4 * 4, 256), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, classes))


class Residual(nn.Module):
    """examples/resnet_tiny.cnn's `residual` and `down` blocks: conv-bn-relu-conv-bn, plus the
    input (or a strided 1x1 conv of it), then relu."""

    def __init__(self, cin: int, filters: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, filters, 3, stride=stride, padding=1), nn.BatchNorm2d(filters),
                                  nn.ReLU(), nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters))
        self.shortcut = nn.Conv2d(cin, filters, 1, stride=stride) if stride != 1 else nn.Identity()

    def forward(self, x):
        return F.relu(self.shortcut(x) + self.body(x))


def resnet_tiny(classes: int = 10, width: int = 16) -> nn.Module:
    """examples/resnet_tiny.cnn, block for block."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        Residual(w, w, 1), Residual(w, w, 1),
        Residual(w, 2 * w, 2), Residual(2 * w, 2 * w, 1), Residual(2 * w, 2 * w, 1),
        Residual(2 * w, 4 * w, 2), Residual(4 * w, 4 * w, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, classes))


def normalizer(path):
    """The `(x - mean) / std` that cnndsl's Model.prepare does, on the same NumPy arrays."""
    return normalizer_from(*C.normalization(path))


def normalizer_from(mean: list[float], std: list[float]):
    shape = (1, len(mean), 1, 1)
    mean, std = np.asarray(mean, np.float32).reshape(shape), np.asarray(std, np.float32).reshape(shape)
    return lambda x: torch.from_numpy(np.ascontiguousarray((x - mean) / std, dtype=np.float32))


def trainer(net: nn.Module, normalize):
    """One full optimizer step: zero_grad, forward, loss, backward, step."""
    opt = torch.optim.SGD(net.parameters(), lr=C.LR, momentum=C.MOMENTUM)
    net.train()

    def step(x: np.ndarray, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(normalize(x)), y).backward()
        opt.step()
    return step


def lenet(reps: dict) -> dict:
    from cnndsl.data.digits import load_digits

    torch.manual_seed(0)
    net, normalize = lenet5(), normalizer(C.LENET)
    x, y = load_digits("train")
    b = C.TRAIN_BATCH
    batches = [(x[i:i + b], torch.from_numpy(y[i:i + b])) for i in range(0, b * C.LENET_TRAIN_BATCHES, b)]
    step = trainer(net, normalize)

    def train_slice():
        for xb, yb in batches:
            step(xb, yb)

    train_slice()  # warm-up
    t_step = C.median_seconds(train_slice, reps["lenet_train"]) / len(batches)
    net.eval()

    def predict(images):
        with torch.inference_mode():
            return net(normalize(images)).numpy()

    one, big = x[:1], x[:C.INFER_BATCH]
    predict(one), predict(big)
    t_one = C.median_seconds(lambda: predict(one), reps["latency"])
    t_big = C.median_seconds(lambda: predict(big), reps["throughput"])
    return {"lenet_train_images_per_s": b / t_step,
            "lenet_latency_us_batch1": t_one * 1e6,
            "lenet_infer_images_per_s_batch256": C.INFER_BATCH / t_big}


def vgg(reps: dict, make=vgg_small, path=C.VGG, key="vgg_train_images_per_s", rep="vgg_train") -> dict:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b = C.TRAIN_BATCH
    x = rng.standard_normal((b,) + C.VGG_INPUT).astype(np.float32)
    y = torch.from_numpy(rng.integers(0, C.VGG_CLASSES, size=b))
    step = trainer(make(C.VGG_CLASSES), normalizer(path))
    step(x, y)  # warm-up
    return {key: b / C.median_seconds(lambda: step(x, y), reps[rep])}


def resnet(reps: dict) -> dict:
    return vgg(reps, resnet_tiny, C.RESNET, "resnet_train_images_per_s", "resnet_train")


def conv(reps: dict) -> dict:
    torch.manual_seed(0)
    layer = nn.Conv2d(C.CONV_C, C.CONV_F, C.CONV_K, padding=1, bias=True)
    x = torch.randn(C.CONV_N, C.CONV_C, C.CONV_HW, C.CONV_HW)
    g = torch.randn(C.CONV_N, C.CONV_F, C.CONV_HW, C.CONV_HW)
    x_grad = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        # fresh gradients every time: accumulating into old ones would add work cnndsl does not do
        x_grad.grad = layer.weight.grad = layer.bias.grad = None
        layer(x_grad).backward(g)

    forward(), forward_backward()  # warm-up
    flops = C.conv_flops_per_pass()
    return {"conv_fwd_gflops": flops / C.median_seconds(forward, reps["conv"]) / 1e9,
            "conv_fwd_bwd_gflops": 3 * flops / C.median_seconds(forward_backward, reps["conv"]) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = C.repeats(args.quick)
    result = {}
    for figure in (lenet, vgg, resnet, conv):
        print(f"pytorch: {figure.__name__} ...", file=sys.stderr, flush=True)
        result.update(figure(reps))
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__,
                          "torch_threads": torch.get_num_threads(),
                          "mkldnn": bool(torch.backends.mkldnn.is_available())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
