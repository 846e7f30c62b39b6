"""The cnndsl half of vs_pytorch.py, run in its own process; prints one JSON object on stdout.

    python benchmarks/_vs_cnndsl.py [--quick]

Threads come from the environment the parent sets (NUMBA_NUM_THREADS, OMP_NUM_THREADS).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

# cnndsl first: it caps OpenBLAS at one thread before NumPy loads it (see cnndsl/__init__.py);
# importing NumPy first would let OpenBLAS threads fight Numba's for the cores.
import cnndsl  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import _vs_common as C  # noqa: E402
from cnndsl.data.digits import load_digits  # noqa: E402
from cnndsl.train.optim import SGD  # noqa: E402

# One conv layer whose input has a gradient (the batchnorm before it has parameters), so the
# training graph computes all three of its kernels: forward, grad input and grad params.
ONE_CONV = f"""
network OneConv {{
  input x: {C.CONV_C}x{C.CONV_HW}x{C.CONV_HW}
  batchnorm
  conv {C.CONV_F} kernel={C.CONV_K} padding=same -> y
}}
train {{
  loss y mse
}}
"""
PROBE = "y"  # the conv's node name; its backward nodes are named "y.<something>"


def with_sgd(model):
    model.set_optimizer(SGD(model.store.params, lr=C.LR, momentum=C.MOMENTUM))
    return model


def lenet(reps: dict) -> dict:
    model = with_sgd(cnndsl.compile(C.LENET))
    x, y = load_digits("train")
    b = C.TRAIN_BATCH
    batches = [(x[i:i + b], y[i:i + b]) for i in range(0, b * C.LENET_TRAIN_BATCHES, b)]
    step = iter(range(10**9))

    def train_slice():
        for xb, yb in batches:
            model.train_step(xb, yb, next(step))

    train_slice()  # warm-up: kernel compilation and buffer allocation
    t_step = C.median_seconds(train_slice, reps["lenet_train"]) / len(batches)
    one, big = x[:1], x[:C.INFER_BATCH]
    model.predict(one, batch=1)
    model.predict(big, batch=C.INFER_BATCH)
    t_one = C.median_seconds(lambda: model.predict(one, batch=1), reps["latency"])
    t_big = C.median_seconds(lambda: model.predict(big, batch=C.INFER_BATCH), reps["throughput"])
    return {"lenet_train_images_per_s": b / t_step,
            "lenet_latency_us_batch1": t_one * 1e6,
            "lenet_infer_images_per_s_batch256": C.INFER_BATCH / t_big}


def vgg(reps: dict, path=C.VGG, key="vgg_train_images_per_s", rep="vgg_train") -> dict:
    model = with_sgd(cnndsl.compile(path))
    rng = np.random.default_rng(0)
    b = C.TRAIN_BATCH
    x = rng.standard_normal((b,) + C.VGG_INPUT).astype(np.float32)
    # random labels, as the PyTorch side draws them: example_targets' all-zero labels made later
    # steps' gradients denormal, and denormal arithmetic runs many times slower (compile_time.py)
    targets = rng.integers(0, C.VGG_CLASSES, b)
    step = iter(range(10**9))

    def train_step():
        model.train_step(x, targets, next(step))

    train_step()  # warm-up
    return {key: b / C.median_seconds(train_step, reps[rep])}


def resnet(reps: dict) -> dict:
    """examples/resnet_tiny.cnn (CIFAR-shaped input, 10 classes), one training step per repeat."""
    return vgg(reps, C.RESNET, "resnet_train_images_per_s", "resnet_train")


def conv_steps(exe) -> list:
    """The launches of the probe conv (forward and backward, fused or not); loss, batchnorm and
    optimizer launches are left out of the timing."""
    return [s for s in exe._steps if (s[1].name == PROBE or s[1].name.startswith(PROBE + "."))
            and "conv" in s[1].op]


def time_steps(exe, steps, repeats: int) -> float:
    def launch_all():
        for launch, node, ins, out in steps:
            launch(exe.rc, node, ins, out)
    return C.median_seconds(launch_all, repeats)


def conv(reps: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one_conv.cnn"
        path.write_text(ONE_CONV)
        model = with_sgd(cnndsl.compile(path))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((C.CONV_N, C.CONV_C, C.CONV_HW, C.CONV_HW)).astype(np.float32)
    infer = model.executable("infer", C.CONV_N)
    infer.run({model.input_name: x})  # fills every buffer the conv reads; compiles its kernels
    model.train_step(x, model.example_targets(C.CONV_N, rng), 0)
    train = model.executable("train", C.CONV_N)
    fwd, fwd_bwd = conv_steps(infer), conv_steps(train)
    if not any(s[1].name != PROBE for s in fwd_bwd):
        raise RuntimeError(f"no backward conv launch found among {[s[1].op for s in train._steps]}")
    flops = C.conv_flops_per_pass()
    return {"conv_fwd_gflops": flops / time_steps(infer, fwd, reps["conv"]) / 1e9,
            # three passes: forward, grad input, grad weight (the bias gradient is a sum, not counted)
            "conv_fwd_bwd_gflops": 3 * flops / time_steps(train, fwd_bwd, reps["conv"]) / 1e9,
            "conv_ops_timed": {"forward": [s[1].op for s in fwd], "forward_backward": [s[1].op for s in fwd_bwd]}}


def versions() -> dict:
    import numba

    return {"cnndsl": cnndsl.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(), "numba_threading_layer": _threading_layer()}


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    reps = C.repeats(parser.parse_args().quick)
    result = {}
    for figure in (lenet, vgg, resnet, conv):
        print(f"cnndsl: {figure.__name__} ...", file=sys.stderr, flush=True)
        result.update(figure(reps))
    result["versions"] = versions()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
