"""Models made in PyTorch, exported by torch.onnx (its TorchScript exporter, opset 17), imported by
`cnndsl import`: cnndsl's outputs equal PyTorch's within max |a - b| <= 1e-5 * max(1, max |ref|).
Real-world ONNX: PyTorch's node names, its folded batchnorm, Resize for nn.Upsample, ceil-mode and
count_include_pad pooling, Flatten after adaptive pooling."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from interop_testutil import assert_close  # noqa: E402

from cnndsl.interop.cnn_writer import finish  # noqa: E402
from cnndsl.interop.onnx_import import import_onnx  # noqa: E402
from cnndsl.model import Model  # noqa: E402

nn = torch.nn


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.avg2 = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)
        self.gap, self.fc, self.drop = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 10), nn.Dropout(0.2)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        z = nn.functional.leaky_relu(self.c2(y), 0.1) + y
        z = self.avg(self.pool(z))
        z = torch.cat([z, torch.sigmoid(z)], 1)
        z = self.avg2(self.up(z))
        z = torch.tanh(self.deconv(z))
        return self.fc(self.drop(torch.flatten(self.gap(z), 1))), torch.softmax(z, dim=1)


def _export(model, shape, tmp_path):
    model.eval()
    for m in model.modules():  # non-trivial batchnorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, *shape)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits", "maps"], dynamic_axes={"image": {0: "N"}})
    path = tmp_path / "torch.onnx"
    path.write_bytes(f.getvalue())
    return path


def test_a_pytorch_model_imports_with_its_outputs(tmp_path):
    torch.manual_seed(0)
    model = Mixed()
    path = _export(model, (3, 15, 15), tmp_path)
    builder = import_onnx(str(path))
    text, program = finish(builder, str(tmp_path / "torch.cnn"))
    cnn = Model(program, init_from_file=False)
    cnn.store.load_state_dict(builder.weights)
    x = np.random.default_rng(0).standard_normal((3, 3, 15, 15)).astype(np.float32)
    with torch.no_grad():
        logits, maps = (t.numpy() for t in model(torch.from_numpy(x)))
    got = cnn.predict(x)
    assert_close(got["logits"], logits, what="logits")
    assert_close(got["maps"], maps, what="maps")
    for piece in ("c1 = conv 8 padding=same", "pool = maxpool 2 rounding=ceil", "gap = global_avgpool",
                  "(count_include_pad=1: a depthwise conv", "upsample", "network main_graph(classes = 10)"):
        assert piece in text, text
