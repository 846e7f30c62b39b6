#!/usr/bin/env bash
# Everything to check on a lent GPU machine, in one command (docs/cuda.md, "Running it again").
# Run from the repository root with the lark wheel in .whl/ (the machine has no internet):
#
#     OUT=/some/folder bash benchmarks/gpu_session.sh
#
# 1. versions and the card;
# 2. in parallel: the CUDA kernel tests on the device (tests/cuda, CNNDSL_CUDA_ON_DEVICE=1),
#    LeNet-5 trained with --device cuda and, for comparison, with --device cpu (same seed), and
#    the CPU kernel tests on the host (tests/kernels);
# 3. alone on the GPU: benchmarks/cuda_check.py (correctness against the CPU backend, then
#    training images/s next to PyTorch + cuDNN, TF32 off and on).
# Every step has its own time limit and log under $OUT; a failing step does not stop the others.
set -u
OUT=${OUT:?set OUT to a folder for the logs}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || echo "wheel install failed"
else
  export PYTHONPATH=$PWD
fi
unset NUMBA_ENABLE_CUDASIM

canary() {  # compile and run one kernel through cnndsl's shim
  python3 - <<'PY'
import numpy as np
from cnndsl.backend.cuda.shim import cuda

@cuda.jit
def twice(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] *= 2

d = cuda.to_device(np.arange(4, dtype=np.float32))
twice[1, 32](d)
assert d.copy_to_host().tolist() == [0, 2, 4, 6]
print("canary kernel ran, numpy", np.__version__)
PY
}
if ! canary >"$OUT/canary.txt" 2>&1 && ls .whl/fallback/*.whl >/dev/null 2>&1; then
  # another NumPy than the one numba-cuda was built against: try the carried one
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/fallback/*.whl && export PYTHONPATH=/tmp/site:$PWD
  canary >>"$OUT/canary.txt" 2>&1
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import sys, numba, numpy, lark; print(sys.version.split()[0], 'numba', numba.__version__, 'numpy', numpy.__version__, 'lark', lark.__version__)"
  python3 -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)" 2>&1 | tail -1
  python3 -c "import torch; print('torch', torch.__version__, torch.backends.cudnn.version())" 2>&1 | tail -1
  python3 -c "from cnndsl.backend.cuda.shim import cuda, device_available; print('cuda module', cuda.__name__, 'available', device_available()); print(cuda.get_current_device().name)"
  nproc
  tail -n 3 "$OUT/canary.txt"
} >"$OUT/summary.txt" 2>&1
rm -f "$OUT/canary.txt"  # (at most 8 files come back from the machine: one summary, logs, one JSON)
cat "$OUT/summary.txt"

step() {  # step NAME SECONDS CMD...: run with a limit, log to $OUT/NAME.log, print the tail
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

# separate Numba CPU caches: concurrent writers to one cache directory can crash each other
( CNNDSL_CUDA_ON_DEVICE=1 NUMBA_CACHE_DIR=/tmp/nc_tests NUMBA_NUM_THREADS=4 \
    step cuda_tests 170 python3 -m pytest -q -m cuda tests/cuda -p no:cacheprovider ) &
( NUMBA_CACHE_DIR=/tmp/nc_gpu NUMBA_NUM_THREADS=4 \
    step train_cuda 170 python3 -m cnndsl train examples/lenet5.cnn --device cuda --no-progress --out /tmp/run_cuda ) &
( NUMBA_CACHE_DIR=/tmp/nc_cpu NUMBA_NUM_THREADS=4 \
    step train_cpu 170 python3 -m cnndsl train examples/lenet5.cnn --device cpu --no-progress --out /tmp/run_cpu ) &
# the host CPU's own kernel tests: on the H200's AVX-512 Xeon the CPU backend's vgg_small gradients
# disagreed (docs/cuda.md); these include the layer-shaped GEMM and conv checks written for it
( NUMBA_CACHE_DIR=/tmp/nc_kern NUMBA_NUM_THREADS=4 \
    step host_cpu_kernels 170 python3 -m pytest -q -p no:cacheprovider tests/kernels ) &
wait
# (at most 8 files come back from the machine: the metrics go into the logs)
cat /tmp/run_cuda/metrics.json >>"$OUT/train_cuda.log" 2>/dev/null
cat /tmp/run_cpu/metrics.json >>"$OUT/train_cpu.log" 2>/dev/null
NUMBA_CACHE_DIR=/tmp/nc_gpu step eval_cuda 45 python3 -m cnndsl eval examples/lenet5.cnn \
  --weights /tmp/run_cuda/weights.safetensors --device cuda
NUMBA_CACHE_DIR=/tmp/nc_cpu step cuda_check 240 python3 benchmarks/cuda_check.py
cp benchmarks/results/cuda_check.json "$OUT/" 2>/dev/null
for f in cuda_tests train_cuda train_cpu eval_cuda host_cpu_kernels cuda_check; do echo "---- $f"; tail -n 25 "$OUT/$f.log"; done
cat "$OUT/summary.txt"
