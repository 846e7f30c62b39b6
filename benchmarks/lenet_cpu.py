"""LeNet-5 on the CPU backend: training and inference speed, and the time to the first step.

    python benchmarks/lenet_cpu.py            # prints a table and writes benchmarks/results/lenet_cpu.json

Measured (warm-up excluded, median of repeats):
  - training images/s at batch 64 (optimizer steps on the bundled digits, no augmentation);
  - inference latency at batch 1 and images/s at batch 256;
  - time from process start to the end of the first training step, with an empty Numba
    cache (cold) and with the cache filled by the cold run (warm), each in a fresh process.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
MODEL = ROOT / "examples" / "lenet5.cnn"

FIRST_STEP = f"""
import time; t0 = time.perf_counter()
import sys; sys.path.insert(0, {str(ROOT)!r})
import cnndsl
from cnndsl.data.digits import load_digits
from cnndsl.train.optim import SGD
model = cnndsl.compile({str(MODEL)!r})
model.set_optimizer(SGD(model.store.params, lr=0.01))
x, y = load_digits("train")
model.train_step(x[:64], y[:64], step=0)
print(time.perf_counter() - t0)
"""


def _median_time(fn, repeats: int, inner: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def measure_speed() -> dict:
    import cnndsl
    from cnndsl.data.digits import load_digits
    from cnndsl.train.optim import SGD

    model = cnndsl.compile(MODEL)
    model.set_optimizer(SGD(model.store.params, lr=0.01, momentum=0.9))
    x, y = load_digits("train")
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 64 * 20, 64)]
    step = iter(range(10**9))

    def train_epoch_slice():
        for xb, yb in batches:
            model.train_step(xb, yb, next(step))

    train_epoch_slice()  # warm-up: compile and allocate
    t_train = _median_time(train_epoch_slice, repeats=5, inner=1) / len(batches)
    one = x[:1]
    model.predict(one, batch=1)
    t_one = _median_time(lambda: model.predict(one, batch=1), repeats=7, inner=200)
    big = x[:256]
    model.predict(big, batch=256)
    t_big = _median_time(lambda: model.predict(big, batch=256), repeats=7, inner=10)
    return {
        "train_images_per_s_batch64": 64 / t_train,
        "train_step_ms_batch64": t_train * 1e3,
        "inference_latency_us_batch1": t_one * 1e6,
        "inference_images_per_s_batch256": 256 / t_big,
    }


def measure_first_step() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda: float(subprocess.run([sys.executable, "-c", FIRST_STEP], env=env, check=True,  # noqa: E731
                                           capture_output=True, text=True).stdout.strip())
        cold = run()
        warm = run()
    return {"first_step_cold_s": cold, "first_step_warm_s": warm}


def main() -> None:
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
              "python": platform.python_version()}
    result.update(measure_speed())
    result.update(measure_first_step())
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "lenet_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")


if __name__ == "__main__":
    main()
