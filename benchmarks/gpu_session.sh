#!/usr/bin/env bash
# Everything to measure and check on a lent GPU machine (docs/cuda.md, "Running it again"), in two
# parts that fit one command each, run back to back while the machine is warm (it stays so for
# 30 s after a call; 15 minutes of device time in all, start-up included). From the repository
# root, with the lark wheel in .whl/ (the machine has no internet):
#
#     PART=speed  OUT=/some/folder bash benchmarks/gpu_session.sh   # on the GPU: <= 500 s (BUDGET_S)
#     PART=checks OUT=/some/folder bash benchmarks/gpu_session.sh   # then: <= 330 s
#     SIM=1 OUT=/some/folder bash benchmarks/gpu_session.sh         # here: both parts under numba's
#                                                                   # simulator at --smoke sizes, to
#                                                                   # try the plumbing (4-5 min)
#
# Without PART, both parts in one command (BUDGET_S 560 s: the last steps are cut).
# 0. versions and the card, one kernel through cnndsl's shim (the canary), and a conv launched five
#    times through the prepared launches' fast path (the launch canary);
# speed (alone on the GPU, one step at a time; the host CPU's kernel tests, tests/kernels, beside):
#      cuda_conv   benchmarks/cuda_conv.py: issue 20's 3x3 64->64 conv at 56x56, batch 32, forward,
#                  input and weight gradient, per variant (tiled:dispatch, pipelined, cublas,
#                  pipelined+tune), against cuDNN (TF32 off and on), % of FP32 peak; the +tune
#                  variant prints each pass's candidates' times ("tuned ..." lines);
#      cuda_check  benchmarks/cuda_check.py --speed-only: training images/s of lenet5, vgg_small
#                  (batch 64, 256) and resnet_tiny (128) per variant next to PyTorch + cuDNN;
#                  cuda_check.json keeps the +tune variant's choices and candidate times;
#      profiles    `cnndsl bench --device cuda --batch 64 --train --per-kernel`: vgg_small,
#                  resnet_tiny and lenet5 with the defaults (after), then lenet5 and vgg_small with
#                  CNNDSL_CUDA_GEMM=tiled and numba's dispatcher (before);
# checks (first, alone: the kernel cache; then side by side on the GPU):
#      cache_cold, cache_warm  `cnndsl bench --train` of lenet5 with CNNDSL_CUDA_CACHE=on in a folder
#                  of its own, twice: the first training step with the cache empty, then filled
#                  (docs/cuda.md, "Kept between processes"); cuda_correctness then runs on that cache;
#      cuda_tests  the CUDA kernel tests on the device (tests/cuda, CNNDSL_CUDA_ON_DEVICE=1, 8 workers);
#      cuda_correctness  cuda_check.py --correctness-only: one step of each example per variant
#                  against the CPU backend's (cpu_reference computes those beside, on the CPU), and
#                  the dispatcher against the prepared launches over three steps;
#      train_cuda, eval_cuda  LeNet-5 trained with --device cuda (train_cpu: the same on the CPU,
#                  beside), then evaluated.
# GPU timing steps never run beside each other or beside other GPU work; CPU-only steps run beside
# them (NUMBA_NUM_THREADS=4 each on the 16-core host, separate Numba caches: concurrent writers to
# one cache folder can crash each other).
#
# Every step has its own time limit, cut to what is left of BUDGET_S; a step that fails or times
# out does not stop the others, and one that would start with under 5 s left is skipped (said in
# summary.txt). At most 8 files come back from the machine; $OUT holds at most 7: summary.txt
# (versions, one line per step), cuda_conv.json, cuda_check.json, cuda_correctness.json, and three
# logs, each step's output appended when the step ends: speed.log (cuda_conv, cuda_check, the
# profiles, cache_cold, cache_warm), tests.log (host_cpu_kernels, cpu_reference, cuda_tests,
# cuda_correctness) and train.log (train_cpu, train_cuda with their metrics.json, eval_cuda).
#
# Measured on the H200 on 2026-12-04, the whole script at BUDGET_S=500 in one command: set-up
# and canaries 20 s, cuda_conv 61 s, cuda_check's first three variants 270 s (its limit then),
# profiles 21-48 s (the pipelined kernels compile again in each process: LeNet-5's took 44 s),
# then the budget was spent; the device tests alone took 155 s with 8 workers, the correctness
# steps 98 s for one variant. Each variant's kernels compile again in its own process.
set -u
OUT=${OUT:?set OUT to a folder for the logs}
SIM=${SIM:-0}
PART=${PART:-all}
case "$PART" in
  speed) DEFAULT_BUDGET=500 ;;
  checks) DEFAULT_BUDGET=330 ;;
  all) DEFAULT_BUDGET=560 ;;
  *) echo "gpu_session.sh: PART must be speed, checks or all, not '$PART'" >&2; exit 1 ;;
esac
if [ "$SIM" = 1 ]; then DEFAULT_BUDGET=420; fi
BUDGET_S=${BUDGET_S:-$DEFAULT_BUDGET}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")  # each step's own log, the runs, the references
export PYTHONUNBUFFERED=1
rm -f "$OUT/summary.txt" "$OUT/speed.log" "$OUT/tests.log" "$OUT/train.log" "$OUT/cuda_conv.json" "$OUT/cuda_check.json" \
  "$OUT/cuda_correctness.json"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || echo "wheel install failed"
else
  export PYTHONPATH=$PWD
fi
if [ "$SIM" = 1 ]; then
  export NUMBA_ENABLE_CUDASIM=1
  unset CNNDSL_CUDA_ON_DEVICE
else
  unset NUMBA_ENABLE_CUDASIM
fi

canary() {  # compile and run one kernel through cnndsl's shim
  timeout -k 5 120 python3 - <<'PY'
import numpy as np
from cnndsl.kernels.cuda.shim import cuda

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
if ! canary >"$WORK/canary.txt" 2>&1 && ls .whl/fallback/*.whl >/dev/null 2>&1; then
  # another NumPy than the one numba-cuda was built against: try the carried one
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/fallback/*.whl && export PYTHONPATH=/tmp/site:$PWD
  canary >>"$WORK/canary.txt" 2>&1
fi

# the prepared launches' fast path (common.PreparedLaunch: from the third call on, numba-cuda's
# marshalled arguments straight to cuda.core) was written without a GPU: a conv launched five times
# must give the first call's output. Should it not, the whole session keeps numba's dispatcher
# (CNNDSL_CUDA_LAUNCH=dispatch), so that the figures still come, and summary.txt says so.
launch_canary() {
  timeout -k 5 120 python3 - <<'PY'
import numpy as np
from cnndsl.kernels.cuda import common
from cnndsl.kernels.cuda import gemm as K
from cnndsl.kernels.cuda.shim import cuda
from cnndsl.kernels.geometry import ConvGeometry

geo = ConvGeometry(N=2, C=3, H=9, W=9, F=5, OH=9, OW=9, KH=3, KW=3, pt=1, pb=1, pl=1, pr=1)
rng = np.random.default_rng(0)
x, w, b = (cuda.to_device(rng.standard_normal(n).astype(np.float32)) for n in (2 * 3 * 81, 5 * 3 * 9, 5))
y = cuda.device_array(2 * 5 * 81, np.float32)
launch = K.conv_forward(x, w, b, True, y, geo)
outs = []
for _ in range(5):
    y.copy_to_device(np.full(y.size, np.nan, np.float32))
    launch()
    cuda.synchronize()
    outs.append(y.copy_to_host())
paths = ["fast path" if getattr(s, "fast", None) is not None else
         f"dispatcher ({getattr(s, 'fallback_reason', '') or 'the simulator, or no PreparedLaunch'})"
         for s in launch.steps]
print("prepared launch:", ", ".join(paths), "| family", getattr(K, "family", lambda: "tiled")())
assert all(np.array_equal(o, outs[0]) for o in outs) and np.isfinite(outs[0]).all(), "outputs differ between calls"
PY
}
if ! launch_canary >"$WORK/launch_canary.txt" 2>&1; then
  export CNNDSL_CUDA_LAUNCH=dispatch
  echo "PREPARED LAUNCH CANARY FAILED: CNNDSL_CUDA_LAUNCH=dispatch for the whole session" >>"$WORK/launch_canary.txt"
fi

{
  date -u
  echo "SIM=$SIM PART=$PART BUDGET_S=$BUDGET_S, $(nproc) cores, CNNDSL_CUDA_LAUNCH=${CNNDSL_CUDA_LAUNCH:-(unset: prepared)}"
  git rev-parse --short HEAD >/dev/null 2>&1 && echo "git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', uncommitted changes')"
  command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  # the host's load (CPU-side steps run beside the GPU timings) and its CPU's vector extensions
  echo "host: $(uptime | sed 's/.*load/load/'); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "$(grep -o -w -E 'avx512f|avx2|fma' /proc/cpuinfo | sort -u | xargs)"
  timeout 90 python3 - <<'PY' 2>&1 | tail -n 8
import sys
sys.path.insert(0, "benchmarks")
import lark, numba, numpy
print(sys.version.split()[0], "numba", numba.__version__, "numpy", numpy.__version__, "lark", lark.__version__)
try:
    import numba_cuda
    print("numba-cuda", numba_cuda.__version__)
except ImportError as e:
    print("numba-cuda:", e)
try:
    import torch
    print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), "cuda", torch.cuda.is_available())
except ImportError as e:
    print("torch:", e)
from cuda_check import VARIANTS, device_info, variant_in_effect
print("device", device_info())
print("gemm variants:", {v: variant_in_effect(v) for v in VARIANTS})
try:  # the "cublas" tile candidate (cnndsl/kernels/cuda/blas.py): whether cuBLAS loads here, and from where
    from cnndsl.kernels.cuda import blas
    ok, why = blas.available()
    print("cublas candidate:", "available" if ok else f"not available: {why}",
          getattr(blas._LIB.lib, "_name", "") if ok else "")
except Exception as e:  # noqa: BLE001
    print("cublas candidate: error", type(e).__name__, e)
PY
  tail -n 3 "$WORK/canary.txt"
  tail -n 6 "$WORK/launch_canary.txt"
} >"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"

step() {  # step GROUP NAME SECONDS CMD...: CMD with a time limit, its output appended to $OUT/GROUP.log
  local group=$1 name=$2 limit=$3; shift 3
  local left=$((BUDGET_S - SECONDS - 10)) note=""
  if [ "$left" -lt 5 ]; then
    echo "== $name: skipped, ${BUDGET_S} s budget spent" | tee -a "$OUT/summary.txt"
    return 0
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; note=" (limit cut to $left s)"; fi
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note="$note, TIME LIMIT ($limit s)"; fi
  echo "== $name: exit $rc after $((SECONDS - t0)) s$note" | tee -a "$OUT/summary.txt"
  (
    flock 9 2>/dev/null
    { printf '\n======== %s: exit %s after %s s%s\n$ %s\n' "$name" "$rc" "$((SECONDS - t0))" "$note" "$*"
      cat "$WORK/$name.log"; } >>"$OUT/$group.log"
  ) 9>"$WORK/$group.lock"
  return 0
}

REF=$WORK/cuda_ref  # the CPU backend's reference steps, from cpu_reference to cuda_check
mkdir -p "$REF"
if [ "$SIM" = 1 ]; then
  # the same steps at sizes the simulator gets through: cuda_check's smoke network, a 12-image data set
  python3 - "$WORK" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
import numpy as np
from cuda_check import SMOKE_NETS
open(f"{sys.argv[1]}/smoke.cnn", "w").write(SMOKE_NETS["smoke"])
rng = np.random.default_rng(0)
np.savez(f"{sys.argv[1]}/tiny.npz", x=rng.standard_normal((12, 1, 4, 4)).astype(np.float32), y=rng.integers(0, 3, 12))
PY
  SMOKE=--smoke
  PROFILE_AFTER="$WORK/smoke.cnn"; PROFILE_BEFORE="$WORK/smoke.cnn"; PROFILE_ARGS="--batch 2 --repeats 1"
  TRAIN_NET=$WORK/smoke.cnn; DATA_ARGS="--data $WORK/tiny.npz"; TRAIN_ARGS="$DATA_ARGS --epochs 1 --batch 2"
  CUDA_TESTS="tests/cuda/test_gemm.py -k dense"; HOST_TESTS="tests/kernels/test_kernels_dense.py"; XDIST="-n 0"
  CHECK_VARIANTS="pipelined,tiled:dispatch,pipelined+tune"
  L_CONV=150 L_REF=90 L_CHECK=150 L_WAIT=60 L_AFTER=60 L_BEFORE=60 L_TRAIN=90 L_EVAL=40 L_TESTS=120 L_HOST=120
  L_FIRST=60 FIRST_ARGS="--batch 2"
else
  SMOKE=
  # after (the defaults) for the three examples, then before (tiled, dispatcher) for two
  PROFILE_AFTER="examples/vgg_small.cnn examples/resnet_tiny.cnn examples/lenet5.cnn"
  PROFILE_BEFORE="examples/lenet5.cnn examples/vgg_small.cnn"; PROFILE_ARGS="--batch 64"
  TRAIN_NET=examples/lenet5.cnn; DATA_ARGS=""; TRAIN_ARGS=""
  CUDA_TESTS="tests/cuda"; HOST_TESTS="tests/kernels"; XDIST="-n 8"
  # the default first; the tuned variant last, as it compiles every candidate (the first a limit cuts)
  CHECK_VARIANTS="pipelined,tiled:dispatch,pipelined+tune"
  # the limits from the H200 run of 2026-12-04 (times there in brackets): cuda_conv (61 s);
  # cuda_check's speeds, four variants (the first three took 270 s, the time limit; its kernels
  # compile again in every process); a profile (LeNet-5 after 44 s, before 21 s; vgg_small
  # before 32 s, after over 48 s: the pipelined kernels' compilation); the device tests with 8
  # workers (155 s); the correctness steps (98 s with their CPU reference)
  L_CONV=120 L_REF=200 L_CHECK=330 L_WAIT=150 L_AFTER=110 L_BEFORE=60 L_TRAIN=170 L_EVAL=45 L_TESTS=240 L_HOST=170
  L_FIRST=60 FIRST_ARGS="--batch 64"  # LeNet-5's first step compiled 25 s there (cold)
fi
export NUMBA_NUM_THREADS=4
# the shape rules' tiles everywhere but in the +tune variants (which set CNNDSL_CUDA_TUNE=on): the
# choices those measure are remembered on disk and would otherwise change the later steps' kernels
export CNNDSL_CUDA_TUNE=off

speed_part() {
  # -- the figures, alone on the GPU; the host CPU's kernel tests beside them --------------------
  # (on the H200's AVX-512 Xeon the CPU backend's vgg_small gradients once disagreed, docs/cuda.md;
  # these include the layer-shaped GEMM and conv checks written for it)
  ( NUMBA_CACHE_DIR=/tmp/nc_kern step tests host_cpu_kernels "$L_HOST" python3 -m pytest -q -p no:cacheprovider \
      $HOST_TESTS ) &
  NUMBA_CACHE_DIR=/tmp/nc_gpu step speed cuda_conv "$L_CONV" python3 benchmarks/cuda_conv.py $SMOKE \
    --variants tiled:dispatch,pipelined,cublas,pipelined+tune --out "$OUT/cuda_conv.json"
  NUMBA_CACHE_DIR=/tmp/nc_gpu step speed cuda_check "$L_CHECK" python3 benchmarks/cuda_check.py $SMOKE \
    --speed-only --out "$OUT/cuda_check.json"
  # where the time goes, per kernel: after (the defaults) first, then before (tiled kernels,
  # numba's dispatcher on every launch)
  local net
  for net in $PROFILE_AFTER; do
    CNNDSL_CUDA_GEMM=pipelined CNNDSL_CUDA_LAUNCH=${CNNDSL_CUDA_LAUNCH:-prepared} NUMBA_CACHE_DIR=/tmp/nc_gpu \
      step speed "profile_$(basename "$net" .cnn)_pipelined" \
      "$L_AFTER" python3 -m cnndsl bench "$net" --device cuda --train --per-kernel $PROFILE_ARGS
  done
  for net in $PROFILE_BEFORE; do
    CNNDSL_CUDA_GEMM=tiled CNNDSL_CUDA_LAUNCH=dispatch NUMBA_CACHE_DIR=/tmp/nc_gpu \
      step speed "profile_$(basename "$net" .cnn)_tiled" \
      "$L_BEFORE" python3 -m cnndsl bench "$net" --device cuda --train --per-kernel $PROFILE_ARGS
  done
  wait
}

checks_part() {
  # -- the kernel cache (CNNDSL_CUDA_CACHE=on, in a folder of its own): LeNet-5's first training
  # step with the cache empty, then filled; the correctness steps below then run on it too -------
  local cached="env -u NUMBA_CACHE_DIR CNNDSL_CUDA_CACHE=on XDG_CACHE_HOME=$WORK/xdg"
  step speed cache_cold "$L_FIRST" $cached python3 -m cnndsl bench "$TRAIN_NET" --device cuda --train \
    --repeats 1 $FIRST_ARGS
  step speed cache_warm "$L_FIRST" $cached python3 -m cnndsl bench "$TRAIN_NET" --device cuda --train \
    --repeats 1 $FIRST_ARGS
  # -- the GPU steps whose speed is not the point, side by side -----------------------------------
  ( NUMBA_CACHE_DIR=/tmp/nc_ref CNNDSL_COMPILE_WORKERS=4 \
      step tests cpu_reference "$L_REF" python3 benchmarks/cuda_check.py $SMOKE --save-reference "$REF"
    touch "$REF/.done" ) &
  ( if [ "$SIM" = 1 ]; then unset CNNDSL_CUDA_ON_DEVICE; else export CNNDSL_CUDA_ON_DEVICE=1; fi
    NUMBA_CACHE_DIR=/tmp/nc_tests step tests cuda_tests "$L_TESTS" python3 -m pytest -q -m cuda -p no:cacheprovider \
      $XDIST $CUDA_TESTS ) &
  ( NUMBA_CACHE_DIR=/tmp/nc_cpu step train train_cpu "$L_TRAIN" bash -c \
      "python3 -m cnndsl train $TRAIN_NET --device cpu --no-progress --out $WORK/run_cpu $TRAIN_ARGS \
       && cat $WORK/run_cpu/metrics.json" ) &
  # each variant's step against the CPU backend's, and the dispatcher against the prepared launches
  step tests cuda_correctness "$L_CHECK" $cached python3 benchmarks/cuda_check.py $SMOKE \
    --correctness-only --variants "$CHECK_VARIANTS" --reference "$REF" --wait-reference "$L_WAIT" --out "$OUT/cuda_correctness.json"
  NUMBA_CACHE_DIR=/tmp/nc_gpu step train train_cuda "$L_TRAIN" bash -c \
    "python3 -m cnndsl train $TRAIN_NET --device cuda --no-progress --out $WORK/run_cuda $TRAIN_ARGS \
     && cat $WORK/run_cuda/metrics.json"
  NUMBA_CACHE_DIR=/tmp/nc_gpu step train eval_cuda "$L_EVAL" python3 -m cnndsl eval "$TRAIN_NET" \
    --weights "$WORK/run_cuda/weights.safetensors" --device cuda $DATA_ARGS
  wait
}

case "$PART" in
  speed) speed_part ;;
  checks) checks_part ;;
  *) speed_part; checks_part ;;
esac

show() {  # show NAME REGEX: the step's log from the first line matching REGEX on, else its last lines
  if grep -qE "$2" "$WORK/$1.log" 2>/dev/null; then sed -n "/$2/,\$p" "$WORK/$1.log"; else tail -n 6 "$WORK/$1.log" 2>/dev/null; fi
}
echo "---- cuda_conv"; show cuda_conv "^pass "; grep "^tuned " "$WORK/cuda_conv.log" 2>/dev/null
echo "---- cuda_check"; grep -E "^(variant|PyTorch twin)" "$WORK/cuda_check.log" 2>/dev/null
show cuda_check "^training images"
for f in cache_cold cache_warm; do
  [ -f "$WORK/$f.log" ] && { echo "---- $f"; grep -E "kernel JIT|compile" "$WORK/$f.log"; }
done
echo "---- cuda_correctness"; grep -E "^(correctness|PyTorch twin|  seed)" "$WORK/cuda_correctness.log" 2>/dev/null
for f in cpu_reference host_cpu_kernels train_cpu train_cuda eval_cuda cuda_tests; do
  [ -f "$WORK/$f.log" ] && { echo "---- $f"; tail -n 4 "$WORK/$f.log"; }
done
echo "---- summary ($SECONDS s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' '))"
cat "$OUT/summary.txt"
