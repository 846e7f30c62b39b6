"""One convolution on the GPU, cnndsl's implicit-GEMM kernels against cuDNN (issue 20): by default
the 3x3 conv from 64 to 64 channels on 56x56 maps at batch 32, stride 1, padding 1 (goal: forward
and backward each at least 0.6x of cuDNN FP32), with the fraction of the GPU's FP32 peak.

    python benchmarks/cuda_conv.py                         # both GEMM variants, the default shape
    python benchmarks/cuda_conv.py --shape 64,128,28,28,128 --variants pipelined --reps 100
    python benchmarks/cuda_conv.py --variants pipelined,cublas  # the Numba kernels against cuBLAS
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_conv.py --smoke   # the logic, under the simulator

For each GEMM variant (CNNDSL_CUDA_GEMM=tiled|pipelined, set before the launches are prepared:
cnndsl/kernels/cuda/gemm.py) the three host functions the backend calls are timed as the backend
calls them: `conv_forward` (y = conv(x, w), no bias), `conv_backward_data` (dx) and
`conv_backward_weight` (dW, with its split-K workspace and reduction). The variant `cublas` times
the passes on the tile tune.py may choose besides the kernels' (cnndsl/kernels/cuda/im2col.py:
gathers around cuBLAS SGEMMs), whatever it would choose. PyTorch runs the same
passes: torch.nn.functional.conv2d, and torch.ops.aten.convolution_backward with output_mask
for dx alone and dW alone (what autograd calls for a conv), with cudnn.benchmark on, TF32 off
(the fair FP32 baseline: Numba has no tensor cores) and on (reported beside it).

Each pass is checked against a float64 reference (PyTorch on the CPU, without it NumPy) before
and after its timing (the launches after the second run on the prepared fast path, where there is
one): float32 tolerance, the largest error within 1e-4 of the largest reference value (cuDNN's
own FP32 error is reported beside it). It is timed after a warm-up: --reps launches queued back
to back with a CUDA event recorded between consecutive ones, the median interval (so a launch's
host overhead counts where it keeps the GPU waiting; should the intervals not add up to the
loop's wall time, that wall time per launch instead); under the simulator and on PyTorch's CPU,
wall-clock time per call.

GFLOP/s count 2*N*F*C*KH*KW*OH*OW per pass (the same for all three). The FP32 peak is
SM count x FP32 lanes per SM x 2 x the max SM clock, read from the device (numba's
MULTIPROCESSOR_COUNT and CLOCK_RATE); the lanes per SM come from the compute capability (128 on
sm_86, 89, 90, 100, 120; 64 on sm_60, 70, 75, 80). Writes benchmarks/results/cuda_conv.json
(--smoke: $TMPDIR/cnndsl_smoke/cuda_conv.json; --out).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda_check import (GEMM_ENV, RESULTS, ROOT, SMOKE_RESULTS, VARIANTS, _error, device_info, device_ready,  # noqa: E402
                        gemm_variant, variant_in_effect, versions, write_json)

sys.path.insert(0, str(ROOT))
DEFAULT_SHAPE = (32, 64, 56, 56, 64)  # N, C, H, W, F
SMOKE_SHAPE = (2, 3, 6, 6, 4)
PASSES = ("forward", "backward_data", "backward_weight")
GOAL = 0.6  # cnndsl / cuDNN FP32, forward and backward each (issue 20)
TOLERANCE = 1e-4
# FP32 lanes (CUDA cores) per SM by compute capability; others: 128
FP32_LANES = {(6, 0): 64, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64}


def fp32_peak(info: dict) -> dict:
    """The FP32 peak in GFLOP/s and the figures it is made of (None where the device did not say)."""
    cc = tuple(info["compute_capability"]) if info.get("compute_capability") else None
    lanes = FP32_LANES.get(cc, 128)
    sms, khz = info.get("sm_count"), info.get("max_sm_clock_khz")
    peak = sms * lanes * 2 * khz * 1e3 / 1e9 if sms and khz else None
    return {"sm_count": sms, "fp32_lanes_per_sm": lanes, "flops_per_lane_per_clock": 2,
            "max_sm_clock_mhz": khz / 1e3 if khz else None, "peak_gflops": peak,
            "formula": "sm_count x fp32_lanes_per_sm x 2 x max_sm_clock"}


def _stats(times_s: list[float]) -> dict:
    return {"ms": statistics.median(times_s) * 1e3, "mean_ms": statistics.fmean(times_s) * 1e3,
            "min_ms": min(times_s) * 1e3, "reps": len(times_s)}


def time_wall(fn, reps: int, warmup: int, sync) -> dict:
    """Per-call wall-clock seconds (each call synchronized): the simulator, PyTorch on the CPU."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {**_stats(times), "timer": "wall clock per synchronized call"}


def time_events(fn, reps: int, warmup: int, make_event, sync) -> dict:
    """Launches queued back to back, an event between consecutive ones: the median interval."""
    for _ in range(warmup):
        fn()
    events = [make_event() for _ in range(reps + 1)]
    sync()
    t0 = time.perf_counter()
    events[0].record()
    for e in events[1:]:
        fn()
        e.record()
    events[-1].synchronize()
    loop = time.perf_counter() - t0
    times = [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:])]  # elapsed_time: ms
    out = {**_stats(times), "loop_ms_per_call": loop / reps * 1e3, "timer": "CUDA events between queued launches"}
    if sum(times) < 0.8 * loop:
        # the intervals add up to the loop's wall time unless the events missed the launches (another
        # stream than the events'): then the wall-clock figure, which cannot miss them, is reported
        out.update(ms=loop / reps * 1e3, timer="wall clock of the queued loop per call (the events covered "
                   f"{sum(times) / loop:.0%} of it)")
    return out


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# -- PyTorch ----------------------------------------------------------------------------------

class TorchConv:
    def __init__(self, x, w, dy, stride, pad, device: str):
        import torch

        self.torch, self.device = torch, device
        self.x, self.w, self.dy = (torch.from_numpy(a).to(device) for a in (x, w, dy))
        self.stride, self.pad = [stride, stride], [pad, pad]

    def set_tf32(self, on: bool) -> None:
        self.torch.backends.cudnn.allow_tf32 = on
        self.torch.backends.cuda.matmul.allow_tf32 = on
        self.torch.backends.cudnn.benchmark = True

    def forward(self):
        return self.torch.nn.functional.conv2d(self.x, self.w, None, self.stride, self.pad)

    def _backward(self, mask):
        return self.torch.ops.aten.convolution_backward(self.dy, self.x, self.w, None, self.stride, self.pad, [1, 1],
                                                        False, [0, 0], 1, mask)

    def backward_data(self):
        return self._backward([True, False, False])[0]

    def backward_weight(self):
        return self._backward([False, True, False])[1]

    def results(self) -> dict:
        return {p: getattr(self, p)().cpu().numpy() for p in PASSES}

    def timer(self, reps: int, warmup: int):
        torch = self.torch
        if self.device == "cuda":
            return lambda fn: time_events(fn, reps, warmup, lambda: torch.cuda.Event(enable_timing=True),
                                          torch.cuda.synchronize)
        return lambda fn: time_wall(fn, reps, warmup, lambda: None)


def numpy_reference(x, w, dy, stride, pad) -> dict:
    from cnndsl.kernels.reference import conv as R

    s, p, d = (stride, stride), (pad, pad, pad, pad), (1, 1)
    y = R.conv2d(x.astype(np.float64), w.astype(np.float64), None, s, p, d, 1)
    dx, dw, _ = R.conv2d_backward(x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64), s, p, d, 1)
    return {"forward": y, "backward_data": dx, "backward_weight": dw}


# -- cnndsl ---------------------------------------------------------------------------------

def tuned_choices() -> dict:
    """The tile choices this process measured or read and used (cnndsl/kernels/cuda/tune.py), each
    with its candidates' times in microseconds, printed one line each."""
    from cnndsl.kernels.cuda import tune

    entries = dict(tune.MEMORY.used)
    for key, e in entries.items():
        times = ", ".join(f"{c} {us:.1f}" for c, us in sorted(e.get("us", {}).items(), key=lambda kv: kv[1]))
        print(f"tuned {key}: {e.get('choice')} (shape rule: {e.get('default')}); us: {times}"
              + (f"; failed: {e['failed']}" if e.get("failed") else ""), flush=True)
    return entries


def describe(launch) -> list[dict]:
    """The kernels of a Launch: name, grid, block, and whether the launch took the fast path
    (common.PreparedLaunch). Best effort, never raising: a configured launcher (numba's, or
    cnndsl's under the simulator) has its dimensions as attributes, and its kernel's name."""
    out = []
    for step in getattr(launch, "steps", ()):
        try:
            k = step[0] if isinstance(step, tuple) else getattr(step, "configured", step)
            name = getattr(k, "name", None) or getattr(getattr(getattr(k, "dispatcher", None), "py_func", None),
                                                       "__name__", None)
            config = (getattr(k, "griddim", None), getattr(k, "blockdim", None))
            try:
                grid, block = ([int(v) for v in (c if isinstance(c, tuple) else (c,) if c is not None else ())]
                               for c in config)
            except (TypeError, ValueError):
                grid, block = str(config[0]), str(config[1])
            entry = {"kernel": name or type(k).__name__, "grid": grid, "block": block}
            if hasattr(step, "fast"):
                entry["fast_launch"] = step.fast is not None
                entry["fast_launch_fallback"] = getattr(step, "fallback_reason", "")
        except Exception as e:  # noqa: BLE001
            entry = {"error": _error(e)}
        out.append(entry)
    return out


class CnndslConv:
    def __init__(self, x, w, dy, geo, cuda):
        self.cuda, self.geo = cuda, geo
        self.x, self.w, self.dy = (cuda.to_device(np.ascontiguousarray(a).ravel()) for a in (x, w, dy))
        self.y = cuda.device_array(geo.N * geo.F * geo.OH * geo.OW, np.float32)
        self.dx = cuda.device_array(x.size, np.float32)
        self.dw = cuda.device_array(w.size, np.float32)
        self.no_bias = cuda.to_device(np.zeros(geo.F, np.float32))
        self.shapes = {"forward": (geo.N, geo.F, geo.OH, geo.OW), "backward_data": x.shape,
                       "backward_weight": w.shape}

    def launches(self, forced: str | None = None) -> dict:
        """The three passes' launches, prepared now (CNNDSL_CUDA_GEMM is read here); `forced`: one
        tile name for all three (the "cublas" variant: im2col.py's cuBLAS path)."""
        from cnndsl.kernels.cuda import gemm as K

        geo = self.geo
        # as the backend plans a weight gradient (a checkout without tune.py: the shape rules)
        plan = getattr(K, "weight_plan", None)
        tile, splits = (forced, None) if forced else plan(self.x, self.dy, geo) if plan else (None, None)
        ws = K.weight_workspace(geo, tile, splits)
        self.part = self.cuda.device_array(max(int(ws), 1), np.float32)
        self.workspace, self.weight_plan = int(ws), (tile, splits)
        return {"forward": K.conv_forward(self.x, self.w, self.no_bias, False, self.y, geo, forced),
                "backward_data": K.conv_backward_data(self.dy, self.w, self.no_bias, False, self.dx, geo, forced),
                "backward_weight": K.conv_backward_weight(self.x, self.dy, self.dw, self.part, geo, tile, splits)}

    def result(self, name: str) -> np.ndarray:
        buf = {"forward": self.y, "backward_data": self.dx, "backward_weight": self.dw}[name]
        return buf.copy_to_host().reshape(self.shapes[name])

    def clear(self) -> None:
        for buf in (self.y, self.dx, self.dw):  # NaN: an output element left unwritten shows
            buf.copy_to_device(np.full(buf.size, np.nan, np.float32))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default=None, help="N,C,H,W,F (default %s)" % ",".join(map(str, DEFAULT_SHAPE)))
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--pad", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="GEMM families (default %(default)s)")
    ap.add_argument("--reps", type=int, default=None, help="timed launches per figure (default 50; --smoke 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed launches first (default 5; --smoke 1)")
    ap.add_argument("--no-torch", action="store_true", help="no PyTorch: a NumPy reference, no cuDNN figures")
    ap.add_argument("--smoke", action="store_true",
                    help=f"shape {','.join(map(str, SMOKE_SHAPE))}, 1 rep; runs under NUMBA_ENABLE_CUDASIM=1 "
                         "(PyTorch on the CPU)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON to write (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    try:
        N, C, H, W, F = (int(v) for v in args.shape.split(",")) if args.shape else \
            SMOKE_SHAPE if args.smoke else DEFAULT_SHAPE
    except ValueError:
        print(f"cuda_conv: --shape wants N,C,H,W,F (five integers), not {args.shape!r}", file=sys.stderr)
        return 2
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    reps = args.reps or (1 if args.smoke else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)

    if not device_ready("cuda_conv", args.smoke):
        return 2
    from cnndsl.kernels.cuda.shim import SIMULATOR, cuda
    from cnndsl.kernels.geometry import ConvGeometry

    k, s, p = args.kernel, args.stride, args.pad
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    geo = ConvGeometry(N=N, C=C, H=H, W=W, F=F, OH=OH, OW=OW, KH=k, KW=k, sh=s, sw=s, pt=p, pb=p, pl=p, pr=p)
    flop = 2 * N * F * C * k * k * OH * OW
    info = device_info()
    peak = fp32_peak(info)
    print(f"device: {info['name']}, compute capability {info['compute_capability']}")
    print(f"FP32 peak: {peak['sm_count']} SMs x {peak['fp32_lanes_per_sm']} lanes x 2 x "
          f"{peak['max_sm_clock_mhz']} MHz = {peak['peak_gflops'] and round(peak['peak_gflops'])} GFLOP/s")
    print(f"conv {k}x{k} stride {s} pad {p}: x {N}x{C}x{H}x{W}, w {F}x{C}x{k}x{k}, y {N}x{F}x{OH}x{OW}; "
          f"{flop / 1e9:.3f} GFLOP per pass; median of {reps} launches after {warmup} warm-up", flush=True)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    dy = rng.standard_normal((N, F, OH, OW)).astype(np.float32)

    out = args.out or (SMOKE_RESULTS if args.smoke else RESULTS) / "cuda_conv.json"
    results = {"device": info["name"], "device_info": info, "versions": versions(), "fp32_peak": peak,
               "shape": {"N": N, "C": C, "H": H, "W": W, "F": F, "kernel": k, "stride": s, "pad": p, "OH": OH,
                         "OW": OW},
               "gflop_per_pass": flop / 1e9, "reps": reps, "warmup": warmup, "goal_ratio": GOAL,
               "tolerance": TOLERANCE, "torch": {}, "cnndsl": {}, "ratio_fp32": {}, "errors": []}

    def save():
        write_json(out, results)

    def figures(t: dict) -> dict:
        t["gflops"] = flop / (t["ms"] * 1e6)
        t["peak_fraction"] = t["gflops"] / peak["peak_gflops"] if peak["peak_gflops"] else None
        return t

    # the reference values in float64 (PyTorch on the CPU, else NumPy); PyTorch's float32 passes
    # on the GPU are timed below, and their own error against it is reported beside cnndsl's
    ref, torch_conv = None, None
    if not args.no_torch:
        try:
            import torch

            ref = TorchConv(*(a.astype(np.float64) for a in (x, w, dy)), s, p, "cpu").results()
            results["reference"] = "torch float64 on the CPU"
            tdev = "cuda" if torch.cuda.is_available() else "cpu"
            if tdev == "cuda" or SIMULATOR:
                torch_conv = TorchConv(x, w, dy, s, p, tdev)
                torch_conv.set_tf32(False)
                results["torch_device"] = tdev
                results["torch_fp32_rel_err"] = {n: _rel(v, ref[n]) for n, v in torch_conv.results().items()}
            else:
                print("(PyTorch has no CUDA here: no cuDNN figures)")
        except ImportError:
            print("(PyTorch not installed: a NumPy reference, no cuDNN figures)")
        except Exception as e:  # noqa: BLE001
            results["errors"].append(f"torch: {_error(e)}")
            traceback.print_exc()
    if ref is None:
        ref = numpy_reference(x, w, dy, s, p)
        results["reference"] = "numpy float64"

    if torch_conv is not None and (torch_conv.device == "cuda" or SIMULATOR):
        timer = torch_conv.timer(reps, warmup)
        for label, tf32 in (("fp32", False), ("tf32", True)):
            torch_conv.set_tf32(tf32)
            results["torch"][label] = {}
            for name in PASSES:
                try:
                    results["torch"][label][name] = t = figures(timer(getattr(torch_conv, name)))
                    print(f"torch {label} {name:15s} {t['ms']:9.3f} ms {t['gflops']:9.0f} GFLOP/s", flush=True)
                except Exception as e:  # noqa: BLE001
                    results["errors"].append(f"torch {label} {name}: {_error(e)}")
                    traceback.print_exc()
            save()
        torch_conv.set_tf32(False)

    if SIMULATOR:
        gpu_timer = lambda fn: time_wall(fn, reps, warmup, cuda.synchronize)  # noqa: E731
    else:
        def gpu_timer(fn):
            try:
                return time_events(fn, reps, warmup, cuda.event, cuda.synchronize)
            except (AttributeError, TypeError, NotImplementedError):  # a `cuda` module without these events
                return time_wall(fn, reps, warmup, cuda.synchronize)

    conv = CnndslConv(x, w, dy, geo, cuda)
    failed = False
    for variant in variants:
        forced = "cublas" if variant == "cublas" else None  # the cuBLAS path (im2col.py), whatever tune.py picks
        r = results["cnndsl"][variant] = {"family": "cublas (im2col + cuBLAS SGEMM)" if forced
                                          else variant_in_effect(variant)}
        print(f"cnndsl, {GEMM_ENV}={variant} -> {r['family']}", flush=True)
        try:
            with gemm_variant(None if forced else variant):
                launches = conv.launches(forced)
            r["weight_workspace_elements"] = conv.workspace
            if "+tune" in variant:
                r["tune"] = tuned_choices()
        except Exception as e:  # noqa: BLE001
            r["error"] = _error(e)
            failed = True
            traceback.print_exc()
            save()
            continue
        for name, launch in launches.items():
            rp = r[name] = {}
            try:
                conv.clear()
                launch()
                cuda.synchronize()
                rp["rel_err"] = err = _rel(conv.result(name), ref[name])
                rp["ok"] = err <= TOLERANCE
                failed |= not rp["ok"]
                rp.update(figures(gpu_timer(launch)))
                rp["launches"] = describe(launch)  # after the timed calls: whether they took the fast path
                # the timed calls ran from a launch's third call on, on the prepared fast path where
                # there is one: their output is checked too
                conv.clear()
                launch()
                cuda.synchronize()
                rp["rel_err_after_timing"] = err2 = _rel(conv.result(name), ref[name])
                rp["ok"] = rp["ok"] and err2 <= TOLERANCE
                failed |= not rp["ok"]
                base = results["torch"].get("fp32", {}).get(name)
                if base:
                    rp["ratio_fp32"] = base["ms"] / rp["ms"]
                    results["ratio_fp32"].setdefault(variant, {})[name] = rp["ratio_fp32"]
                ratio = f"  {rp['ratio_fp32']:.3f}x cuDNN fp32" if base else ""
                print(f"cnndsl {variant:9s} {name:15s} {rp['ms']:9.3f} ms {rp['gflops']:9.0f} GFLOP/s  "
                      f"{'check PASS' if rp['ok'] else 'check FAIL'} (rel err {err:.1e}, after timing "
                      f"{err2:.1e}){ratio}",
                      flush=True)
            except Exception as e:  # noqa: BLE001  (a crash of one pass or variant leaves the others)
                rp["error"] = _error(e)
                failed = True
                traceback.print_exc()
                print(f"cnndsl {variant:9s} {name:15s} ERROR {rp['error']}", flush=True)
            save()
        both = [r.get(n, {}).get("ms") for n in PASSES[1:]]
        base = [results["torch"].get("fp32", {}).get(n, {}).get("ms") for n in PASSES[1:]]
        if all(both) and all(base):
            r["backward_ms"] = sum(both)
            results["ratio_fp32"][variant]["backward"] = sum(base) / sum(both)

    print("\n" + render(results))
    save()
    print(f"written {out}")
    return 1 if failed or results["errors"] else 0


def render(results: dict) -> str:
    """The table: per pass, ms, GFLOP/s and fraction of peak for PyTorch and each variant."""
    cols = [("torch fp32", results["torch"].get("fp32", {})), ("torch tf32", results["torch"].get("tf32", {}))]
    cols += [(v, r) for v, r in results["cnndsl"].items()]
    lines = [f"{'pass':16s}" + "".join(f" {c:>24s}" for c, _ in cols) + "   (ms, GFLOP/s, % of FP32 peak)"]
    for name in PASSES:
        cells = []
        for _, r in cols:
            t = r.get(name, {})
            if "ms" in t:
                frac = f"{100 * t['peak_fraction']:4.1f}%" if t.get("peak_fraction") is not None else "   -"
                cells.append(f"{t['ms']:8.3f} {t['gflops']:7.0f} {frac}")
            else:
                cells.append("-")
        lines.append(f"{name:16s}" + "".join(f" {c:>24s}" for c in cells))
    for v, ratios in results["ratio_fp32"].items():
        lines.append(f"cnndsl {v} / cuDNN fp32 (goal {results['goal_ratio']}x): "
                     + ", ".join(f"{n} {x:.3f}x" for n, x in ratios.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
