#!/usr/bin/env python
"""Hostile-input audit of the `cnndsl` command line (issue 13): what happens to a user's bad files.

    python benchmarks/reliability_audit.py --out DIR [--repo PATH] [--python PY] [--jobs 2]
                                           [--only GROUP[,GROUP]] [--mem-gib 4] [--list]

Generates hostile inputs (out-of-range labels in every data path, truncated and lying data,
weights and checkpoint files, decompression bombs, NaNs, unwritable output folders, models too
big to build, FIFOs and /dev/zero, empty held-out splits, random mutations of the example model
files, and a few Python API calls) in DIR/work, runs `PY -m cnndsl ...` on each as a subprocess of
the repository under test (cwd and PYTHONPATH = --repo; the script checks which `cnndsl` that
imports), with a timeout, an address-space limit (RLIMIT_AS, --mem-gib), no core dumps and a
file-size limit, and classifies each outcome:

    clean error     exit 1, a message on stderr, no traceback, no "internal error" (also click's own
                    usage errors, "Usage: ... Error: Invalid value ...", which exit 2 by click's convention)
    internal error  exit 2 / "cnndsl: internal error"
    traceback       a Python traceback printed
    crash           killed by a signal (or exit 128+N), or glibc's "double free" / "corrupted" abort
    hang            ran past its timeout (killed)
    memory          MemoryError / bad_alloc (the address-space limit was hit)
    wrong success   exit 0 where the input was bad
    ok              exit 0 on a good input (the controls test the harness itself)
    wrong failure   a clean exit 1 on an input that is good
    other           anything else (e.g. exit 1 with nothing on stderr)
    skipped         a fixture the case needs was not produced (its control failed)

Each case declares whether it must fail ("fail"), must succeed ("ok", the controls), or may do
either as long as it does so cleanly ("any": mutated model files, `check` of a huge model, which
may warn). Writes DIR/results.json (one record per case) and DIR/summary.md (a table per group and
in total, then every case that is neither "ok" nor "clean error", with its command).

The controls run first, one at a time, and produce the fixtures the other cases mutate (a trained
run folder with weights and a checkpoint); the rest run --jobs at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import os
import random
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np

CLASSES = ("clean error", "internal error", "traceback", "crash", "hang", "memory", "wrong success", "ok",
           "wrong failure", "other", "skipped")
BAD = ("internal error", "traceback", "crash", "hang", "memory", "wrong success", "wrong failure", "other")

T_FAST = 60       # check / shapes / eval / predict on a warm kernel cache: 1-2 s each when idle
T_TRAIN = 240     # a tiny training run; the first ones compile kernels (30 s cold, measured)
T_SPECIAL = 30    # FIFOs and /dev/* inputs: they may block or grow forever (reading /dev/urandom up to the
                  # 4 GiB limit took 9-15 s on 2 busy cores, so 20 s made it hang or memory by chance)
T_HUGE = 120      # train / bench of a model too big to build: it fails at once or never
T_CONTROL = 900   # the first control compiles every training kernel of the repo under test

GIB = 1024 ** 3


# ---------------------------------------------------------------------------- cases

@dataclasses.dataclass
class Case:
    group: str
    name: str
    args: list[str]                      # after `PY -m cnndsl` (or a script path when api=True)
    expect: str = "fail"                 # fail | ok | any
    timeout: float = T_FAST
    api: bool = False                    # run `PY args...` instead of `PY -m cnndsl args...`
    needs: tuple = ()                    # fixture paths that must exist before it runs
    prepare: Callable | None = None      # called just before it runs (copies and mutates fixtures)


class Audit:
    def __init__(self, args):
        self.repo = Path(args.repo).resolve()
        self.py = args.python
        self.out = Path(args.out).resolve()
        self.work = self.out / "work"
        self.logs = self.out / "logs"
        self.mem = int(args.mem_gib * GIB)
        self.jobs = args.jobs
        self.cases: list[Case] = []
        self.results: list[dict] = []
        self.lock = threading.Lock()
        self.started = time.time()

    # -- paths
    def p(self, *parts) -> Path:
        path = self.work.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def d(self, *parts) -> Path:
        path = self.work.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, group, name, args, expect="fail", timeout=T_FAST, **kw) -> Case:
        case = Case(group, name, [str(a) for a in args], expect, timeout, **kw)
        case.index = len(self.cases)
        self.cases.append(case)
        return case

    # -- running one case
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CNNDSL_") and k not in ("PYTHONPATH", "NUMBA_DISABLE_JIT", "PYTHONFAULTHANDLER")}
        env["PYTHONPATH"] = str(self.repo)
        env["PYTHONHASHSEED"] = "0"
        return env

    def argv(self, case: Case) -> list[str]:
        return [self.py, *case.args] if case.api else [self.py, "-m", "cnndsl", *case.args]

    def command_text(self, case: Case) -> str:
        return f"cd {shlex.quote(str(self.repo))} && PYTHONPATH={shlex.quote(str(self.repo))} " + \
            shlex.join(self.argv(case))

    def limits(self):
        mem = self.mem

        def apply():
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not drop a core into the repo
            resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024 ** 2, 512 * 1024 ** 2))
        return apply

    def run_case(self, case: Case) -> dict:
        record = {"index": case.index, "group": case.group, "name": case.name, "expect": case.expect,
                  "command": self.command_text(case)}
        missing = [str(n) for n in case.needs if not Path(n).exists()]
        if not missing and case.prepare is not None:
            try:
                case.prepare()
            except FixtureMissing as e:
                missing = [str(e)]
            except Exception as e:  # a fixture this harness could not derive: say so, do not run blind
                missing = [f"prepare failed: {type(e).__name__}: {e}"]
        if missing:
            record.update(rc=None, cls="skipped", seconds=0.0, stderr_head=[f"fixture missing: {missing[0]}"[:300]],
                          stderr_tail=[], timed_out=False)
            return record
        stem = f"{case.index:04d}_{case.group}__{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.name)}"
        out_path, err_path = self.logs / f"{stem}.out", self.logs / f"{stem}.err"
        start = time.perf_counter()
        timed_out = False
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            proc = subprocess.Popen(self.argv(case), cwd=self.repo, env=self.env(), stdin=subprocess.DEVNULL,
                                    stdout=fo, stderr=fe, preexec_fn=self.limits(), start_new_session=True)
            try:
                rc = proc.wait(timeout=case.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this case started
                except ProcessLookupError:
                    pass
                rc = proc.wait()
        seconds = time.perf_counter() - start
        out, err = _read_capped(out_path), _read_capped(err_path)
        cls = classify(case.expect, rc, out, err, timed_out)
        lines = [ln[:300] for ln in err.splitlines() if ln.strip()]
        if rc is not None and rc < 0 and not timed_out:
            record["signal"] = signal.Signals(-rc).name
        record.update(rc=rc, cls=cls, seconds=round(seconds, 2), timed_out=timed_out,
                      stderr_head=lines[:8], stderr_tail=lines[8:][-4:],
                      stdout_head=[ln[:300] for ln in out.splitlines()[:3]])
        return record

    def finish(self, record: dict) -> None:
        with self.lock:
            self.results.append(record)
            n = len(self.results)
            print(f"[{n:4d}/{len(self.cases)} {time.time() - self.started:6.0f}s] {record['cls']:14s} "
                  f"{record['seconds']:6.1f}s  {record['group']}/{record['name']}", flush=True)
            if n % 25 == 0:
                self.write()

    def write(self) -> None:
        meta = {"repo": str(self.repo), "python": self.py, "cnndsl_file": getattr(self, "cnndsl_file", None),
                "commit": getattr(self, "commit", None), "mem_gib": self.mem / GIB, "jobs": self.jobs,
                "seconds": round(time.time() - self.started, 1), "cases": len(self.results)}
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps({"meta": meta, "results": self.results}, indent=1))
        os.replace(tmp, self.out / "results.json")


class FixtureMissing(Exception):
    pass


def _read_capped(path: Path, cap: int = 1 << 20) -> str:
    """Head and tail of an output file (a case may print without bound)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 2 * cap:
            data = f.read()
        else:
            data = f.read(cap) + b"\n...\n"
            f.seek(size - cap)
            data += f.read()
    return data.decode("utf-8", errors="replace")


_CRASH_TEXT = ("double free", "Segmentation fault", "Fatal Python error", "corrupted size", "corrupted double",
               "free(): invalid", "malloc(): ", "munmap_chunk", "stack smashing", "Aborted (core dumped)")


def classify(expect: str, rc: int, out: str, err: str, timed_out: bool) -> str:
    text = out + "\n" + err
    memory = "MemoryError" in text or "bad_alloc" in text
    if timed_out:
        return "hang"
    if rc < 0 or rc > 128 or any(s in text for s in _CRASH_TEXT):
        return "memory" if memory else "crash"
    if "Traceback (most recent call last)" in text:
        return "memory" if memory else "traceback"
    if rc == 2 and "internal error" not in err and re.search(r"^Error: ", err, re.M) and "Usage:" in err:
        # click's own usage error (an option out of its declared range): exit 2 by click's convention
        return "wrong failure" if expect == "ok" else "clean error"
    if rc == 2 or "internal error" in err:
        return "memory" if memory else "internal error"
    if rc == 0:
        return "wrong success" if expect == "fail" else "ok"
    if rc == 1:
        if not err.strip():
            return "other"
        return "wrong failure" if expect == "ok" else "clean error"
    return "other"


# ---------------------------------------------------------------------------- file makers

def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def offsets(size: int, k: int = 10) -> list[int]:
    """Truncation points: the first bytes (headers), k evenly spread, the last byte."""
    pts = {0, 1, 2, 4, 7, 8, 9, 12, 16, 24, 32, 64, size - 1, size // 2}
    pts |= {round(size * i / (k + 1)) for i in range(1, k + 1)}
    return sorted(p for p in pts if 0 <= p < size)


def npz_bytes(compressed=False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npy_header(dtype: str, shape, fortran=False) -> bytes:
    d = "{'descr': %r, 'fortran_order': %s, 'shape': %s, }" % (dtype, fortran, repr(tuple(shape)))
    d = d.encode("latin1")
    pad = 64 - (10 + len(d) + 1) % 64
    d += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d


def zip_members(path: Path, members: dict, deflate=True) -> Path:
    """A zip whose members are bytes, or (header, chunk_iterator) streams (for bombs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, value in members.items():
            if isinstance(value, bytes):
                zf.writestr(name, value)
            else:
                with zf.open(name, "w", force_zip64=True) as f:
                    for chunk in value:
                        f.write(chunk)
    return path


def zeros_stream(header: bytes, nbytes: int, chunk: int = 8 << 20):
    yield header
    block = bytes(chunk)
    left = nbytes
    while left > 0:
        yield block[:min(chunk, left)]
        left -= chunk


def gzip_stream(chunks, level=9) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    return b"".join(comp.compress(c) for c in chunks) + comp.flush()


def idx_bytes(kind: str, arr: np.ndarray | None = None, dims=None, body: bytes | None = None,
              dtype_code: int = 8) -> bytes:
    dims = tuple(arr.shape) if dims is None else tuple(dims)
    head = bytes([0, 0, dtype_code, len(dims)]) + b"".join(struct.pack(">I", d & 0xFFFFFFFF) for d in dims)
    return head + (arr.astype(np.uint8).tobytes() if body is None else body)


def png_chunk(typ: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data) & 0xFFFFFFFF)


def png_raw(width: int, height: int, idat: bytes, depth=8, color=0, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + \
        png_chunk(b"IEND", b"")


def png_zeros_idat(width: int, height: int) -> bytes:
    """The compressed pixel data of an all-black 8-bit grey image, streamed (no big buffer)."""
    comp = zlib.compressobj(9)
    row = bytes(width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    return b"".join(parts) + comp.flush()


def png_image(arr: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# -- safetensors, read and written here (not through the code under test)

def st_read(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def st_bytes(header, data: bytes, raw_header: bytes | None = None) -> bytes:
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_fill(header: dict, data: bytes, name: str, value: float, count: int | None = None) -> bytes:
    """Set the first `count` (all) float32 elements of tensor `name` to `value`."""
    e = header[name]
    start, end = e["data_offsets"]
    arr = np.frombuffer(data[start:end], dtype="<f4").copy()
    arr[:count] = value
    return data[:start] + arr.tobytes() + data[end:]


def st_first_float(header: dict, prefix: str = "") -> str:
    return next(k for k, e in header.items() if k != "__metadata__" and k.startswith(prefix) and e["dtype"] == "F32")


# ---------------------------------------------------------------------------- model files

TRAIN_TINY = """
train {
  epochs 1
  batch 8
  optimizer sgd lr=0.1 momentum=0.9
  loss logits cross_entropy
  metric logits accuracy
}
"""

MODELS = {
    "tiny.cnn": """network Tiny(classes = 5) {
  input image: 1x8x8
  conv 2 kernel=3 padding=same relu
  maxpool 2
  flatten
  dense classes -> logits
}
""" + TRAIN_TINY,
    "tiny_bn.cnn": """network TinyBN(classes = 5) {
  input image: 1x8x8
  conv 2 kernel=3 padding=same
  batchnorm relu
  maxpool 2
  flatten
  dense classes -> logits
}
""" + TRAIN_TINY,
    "tiny_rgb.cnn": """network TinyRGB(classes = 5) {
  input image: 3x32x32
  conv 2 kernel=3 stride=2 padding=same relu
  maxpool 4
  flatten
  dense classes -> logits
}
""" + TRAIN_TINY,
    "tiny_seg.cnn": """network TinySeg(classes = 3) {
  input image: 1x8x8
  conv 2 kernel=3 padding=same relu
  conv classes kernel=1 -> masks
}

train {
  epochs 1
  batch 4
  optimizer sgd lr=0.1
  loss masks pixel_cross_entropy
}
""",
}

HUGE = {
    "conv_1e12": "conv 1000000000000 kernel=3 padding=same relu\n  flatten",
    "dense_1e12": "flatten\n  dense 999999999999 relu",
    "kernel_1e9": "conv 2 kernel=999999999 padding=same relu\n  flatten",
    "dense_1e8": "flatten\n  dense 100000000 relu",
    "conv_1e7": "conv 10000000 kernel=3 padding=same relu\n  flatten",
    "maxpool_1e12": "conv 2 kernel=3 padding=same relu\n  maxpool 1000000000000 padding=same\n  flatten",
    "repeat_1e8": "repeat 10000 {\n    repeat 10000 {\n      conv 1 kernel=1\n    }\n  }\n  flatten",
}


BUILDABLE = ("maxpool_1e12",)  # a huge window, padded: one output per channel, nothing big to allocate


def huge_model(body: str, input_shape="1x8x8") -> str:
    return f"network Huge(classes = 5) {{\n  input image: {input_shape}\n  {body}\n  dense classes -> logits\n}}\n" \
        + TRAIN_TINY


# ---------------------------------------------------------------------------- the groups

def build(a: Audit, only: set[str] | None) -> None:
    rng = np.random.default_rng(0)
    models = {name: write(a.p("models", name), text.encode()) for name, text in MODELS.items()}
    tiny, tiny_bn, tiny_rgb, tiny_seg = (models[n] for n in ("tiny.cnn", "tiny_bn.cnn", "tiny_rgb.cnn",
                                                             "tiny_seg.cnn"))
    ex = a.repo / "examples"
    x16 = rng.random((16, 1, 8, 8), dtype=np.float32)
    y16 = np.arange(16) % 5
    good = write(a.p("data", "good.npz"), npz_bytes(x=x16, y=y16))
    good_rgb = write(a.p("data", "good_rgb.npz"), npz_bytes(x=rng.random((16, 3, 32, 32), dtype=np.float32), y=y16))
    good28 = write(a.p("data", "good28.npz"), npz_bytes(x=rng.random((16, 1, 28, 28), dtype=np.float32), y=y16))
    img_npy = a.p("data", "img.npy")
    np.save(img_npy, x16[0])
    img_png = write(a.p("data", "img.png"), png_image((x16[0, 0] * 255).astype(np.uint8)))

    fix = a.work / "fix"
    run_tiny, run_bn, run_rgb, run_pre = fix / "run_tiny", fix / "run_bn", fix / "run_rgb", fix / "run_pre"
    w_tiny = run_tiny / "weights.safetensors"
    ck_tiny = run_tiny / "checkpoint.safetensors"

    def train(model, data, out, *more):
        return ["train", model, "--data", data, "--out", out, "--no-progress", *more]

    # ---- controls: good inputs that must succeed; the first four produce the fixtures
    g = "controls"
    a.add(g, "train tiny (fixture run_tiny)", train(tiny, good, run_tiny), "ok", T_CONTROL)
    a.add(g, "train tiny_bn (fixture run_bn)", train(tiny_bn, good, run_bn), "ok", T_CONTROL)
    a.add(g, "train tiny_rgb (fixture run_rgb)", train(tiny_rgb, good_rgb, run_rgb), "ok", T_CONTROL)
    a.add(g, "train transfer_pretrain on 16 images 0-4 (fixture run_pre)",
          train(ex / "transfer_pretrain.cnn", good28, run_pre, "--epochs", "1", "--batch", "8"), "ok", T_CONTROL)
    a.add(g, "eval tiny", ["eval", tiny, "--weights", w_tiny, "--data", good], "ok", needs=(w_tiny,))
    a.add(g, "predict tiny .npy", ["predict", tiny, img_npy, "--weights", w_tiny], "ok", needs=(w_tiny,))
    a.add(g, "predict tiny .png", ["predict", tiny, img_png, "--weights", w_tiny], "ok", needs=(w_tiny,))
    a.add(g, "check examples", ["check", *sorted(ex.glob("*.cnn"))], "ok")
    a.add(g, "shapes lenet5", ["shapes", ex / "lenet5.cnn"], "ok")
    a.add(g, "resume with more epochs", ["train", tiny, "--data", good, "--resume", a.work / "cases/controls/resume",
                                         "--epochs", "2", "--no-progress"], "ok", T_TRAIN,
          prepare=copy_run(run_tiny, a.work / "cases/controls/resume"))

    groups = {
        "labels": group_labels, "data": group_data, "weights": group_weights, "checkpoint": group_checkpoint,
        "outputs": group_outputs, "huge": group_huge, "special": group_special, "splits": group_splits,
        "api": group_api, "model": group_model, "fuzz": group_fuzz,
    }
    ctx = dict(a=a, rng=rng, tiny=tiny, tiny_bn=tiny_bn, tiny_rgb=tiny_rgb, tiny_seg=tiny_seg, ex=ex, good=good,
               good_rgb=good_rgb, good28=good28, x16=x16, y16=y16, img_npy=img_npy, img_png=img_png,
               run_tiny=run_tiny, run_bn=run_bn, run_rgb=run_rgb, run_pre=run_pre, w_tiny=w_tiny,
               ck_tiny=ck_tiny, train=train)
    for name, fn in groups.items():
        if only is None or name in only:
            fn(**ctx)


def copy_run(src: Path, dst: Path, mutate: Callable[[Path], None] | None = None) -> Callable:
    """prepare(): a fresh copy of a run folder (its own, since the case writes into it), then mutate it."""
    def prepare():
        if not (src / "checkpoint.safetensors").exists():
            raise FixtureMissing(src / "checkpoint.safetensors")
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        if mutate is not None:
            mutate(dst)
    return prepare


def derived(src: Path, dst: Path, make: Callable[[Path, Path], None]) -> Callable:
    """prepare(): write dst from the fixture src (made after the controls ran)."""
    def prepare():
        if not src.exists():
            raise FixtureMissing(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        make(src, dst)
    return prepare


def group_labels(a, tiny, tiny_rgb, tiny_seg, ex, x16, w_tiny, run_rgb, run_pre, train, rng, **_):
    g = "labels"
    w_rgb = run_rgb / "weights.safetensors"
    # the shipped example as a new user runs it (1 epoch to keep the audit short): must train
    a.add(g, "train examples/transfer_pretrain.cnn as shipped (digits, 5 classes)",
          ["train", ex / "transfer_pretrain.cnn", "--epochs", "1", "--out", a.work / "cases/labels/pretrain",
           "--no-progress"], "ok", T_TRAIN)
    a.add(g, "train lenet5 -D classes=5 on digits",
          ["train", ex / "lenet5.cnn", "-D", "classes=5", "--epochs", "1", "--no-augment",
           "--out", a.work / "cases/labels/lenet5_5", "--no-progress"], "fail", T_TRAIN)
    a.add(g, "eval transfer_pretrain weights --data digits (its classes=[0..4] selection)",
          ["eval", ex / "transfer_pretrain.cnn", "--weights", run_pre / "weights.safetensors", "--data", "digits"],
          # the file's `dataset digits classes=[0, 1, 2, 3, 4]` selects the digits 0-4 from --data too
          "ok", needs=(run_pre / "weights.safetensors",))
    # npz: train on one bad label among good ones; eval on all labels bad (eval reads only the held-out
    # part, so one bad label might sit in the part it never reads)
    for label in (5, 10, 10 ** 5, 10 ** 7, -1, -2, 2 ** 62, -(2 ** 62)):
        y = np.arange(16) % 5
        y[3] = label
        data = write(a.p("data", "labels", f"label_{label}.npz"), npz_bytes(x=x16, y=y.astype(np.int64)))
        a.add(g, f"train npz label {label}", train(tiny, data, a.work / f"cases/labels/npz_{label}"),
              "fail", T_TRAIN)
        data = write(a.p("data", "labels", f"all_{label}.npz"), npz_bytes(x=x16, y=np.full(16, label, np.int64)))
        a.add(g, f"eval npz all labels {label}", ["eval", tiny, "--weights", w_tiny, "--data", data],
              needs=(w_tiny,))
    data = write(a.p("data", "labels", "uint8_255.npz"), npz_bytes(x=x16, y=np.full(16, 255, np.uint8)))
    a.add(g, "train npz uint8 labels 255", train(tiny, data, a.work / "cases/labels/u8"), "fail", T_TRAIN)
    data = write(a.p("data", "labels", "ten_classes.npz"), npz_bytes(x=x16, y=np.arange(16) % 10))
    a.add(g, "train npz labels 0-9 on 5 classes", train(tiny, data, a.work / "cases/labels/ten"), "fail", T_TRAIN)
    # IDX: labels 0..9 in a folder, for a 5-class network
    imgs = (x16[:, 0] * 255).astype(np.uint8)
    for kind, lab, test_lab in (("0-9", np.arange(16) % 10, np.array([5, 6, 7, 8])),
                                ("255", np.full(16, 255), np.full(4, 255))):
        folder = a.d("data", "labels", f"idx_{kind}")
        write(folder / "train-images-idx3-ubyte", idx_bytes("images", imgs))
        write(folder / "train-labels-idx1-ubyte", idx_bytes("labels", lab))
        write(folder / "t10k-images-idx3-ubyte", idx_bytes("images", imgs[:4]))
        write(folder / "t10k-labels-idx1-ubyte", idx_bytes("labels", test_lab))
        a.add(g, f"train IDX folder labels {kind}", train(tiny, folder, a.work / f"cases/labels/idx_{kind}"),
              "fail", T_TRAIN)
        a.add(g, f"eval IDX folder labels {kind}", ["eval", tiny, "--weights", w_tiny, "--data", folder],
              needs=(w_tiny,))
        gzf = a.d("data", "labels", f"idxgz_{kind}")
        for f in folder.iterdir():
            write(gzf / (f.name + ".gz"), gzip.compress(f.read_bytes()))
        a.add(g, f"train IDX .gz labels {kind}", train(tiny, gzf, a.work / f"cases/labels/idxgz_{kind}"),
              "fail", T_TRAIN)
        a.add(g, f"train IDX single file labels {kind}",
              train(tiny, folder / "train-images-idx3-ubyte", a.work / f"cases/labels/idx1_{kind}"), "fail", T_TRAIN)
    # CIFAR-10 binary: labels 0..9 for a 5-class network
    rec = np.zeros((16, 3073), np.uint8)
    rec[:, 0] = np.arange(16) % 10
    rec[:, 1:] = rng.integers(0, 256, (16, 3072))
    cf = a.d("data", "labels", "cifar")
    write(cf / "data_batch_1.bin", rec.tobytes())
    test = rec[:4].copy()
    test[:, 0] = [5, 6, 7, 8]  # the held-out split out of range too
    write(cf / "test_batch.bin", test.tobytes())
    a.add(g, "train CIFAR folder labels 0-9 on 5 classes", train(tiny_rgb, cf, a.work / "cases/labels/cifar"),
          "fail", T_TRAIN)
    a.add(g, "eval CIFAR folder labels 0-9 on 5 classes", ["eval", tiny_rgb, "--weights", w_rgb, "--data", cf],
          needs=(w_rgb,))
    a.add(g, "train CIFAR .bin labels 0-9", train(tiny_rgb, cf / "data_batch_1.bin", a.work / "cases/labels/cifar1"),
          "fail", T_TRAIN)
    # image folders with more class folders than classes
    for n_classes, split in ((7, False), (12, False), (7, True)):
        root = a.d("data", "labels", f"images_{n_classes}{'_split' if split else ''}")
        for k in range(n_classes):
            for j in range(2):
                for sub in (("train", "test") if split else ("",)):
                    write(root / sub / f"class{k:02d}" / f"{j}.png",
                          png_image((rng.random((8, 8)) * 255).astype(np.uint8)))
        tag = f"{n_classes} class folders{' train/test' if split else ''}"
        a.add(g, f"train image folder {tag}", train(tiny, root, a.work / f"cases/labels/imgs_{n_classes}_{split}"),
              "fail", T_TRAIN)
        a.add(g, f"eval image folder {tag}", ["eval", tiny, "--weights", w_tiny, "--data", root], needs=(w_tiny,))
    # segmentation: masks of the generated canvases for a network with too few classes
    a.add(g, "train unet_tiny -D classes=5 (masks up to 10)",
          ["train", ex / "unet_tiny.cnn", "-D", "classes=5", "--epochs", "1", "--out",
           a.work / "cases/labels/unet5", "--no-progress"], "fail", T_TRAIN)
    a.add(g, "train segmentation net on class labels (npz)",
          train(tiny_seg, a.work / "data/good.npz", a.work / "cases/labels/seg_npz"), "fail", T_TRAIN)


def group_data(a, tiny, tiny_rgb, x16, y16, good, w_tiny, run_rgb, img_png, train, rng, **_):
    g = "data"
    w_rgb = run_rgb / "weights.safetensors"

    def ev(name, data, model=tiny, weights=w_tiny, expect="fail"):
        a.add(g, name, ["eval", model, "--weights", weights, "--data", data], expect, needs=(weights,))

    # npz truncations (stored and compressed)
    for comp in (False, True):
        blob = npz_bytes(compressed=comp, x=x16, y=y16)
        for off in offsets(len(blob), 8):
            ev(f"npz{' compressed' if comp else ''} truncated at {off}/{len(blob)}",
               write(a.p("data", "npz_trunc", f"{'c' if comp else 's'}{off}.npz"), blob[:off]))
    # npz with lying or odd contents
    odd = {
        "x object dtype": lambda: npz_bytes(x=np.array([None] * 16, dtype=object), y=y16),
        "x strings": lambda: npz_bytes(x=np.array(["a"] * 16), y=y16),
        "x int64": lambda: npz_bytes(x=(x16 * 255).astype(np.int64), y=y16),
        "x complex": lambda: npz_bytes(x=x16.astype(np.complex64), y=y16),
        "x 5-D": lambda: npz_bytes(x=x16[:, None], y=y16),
        "x 0-D": lambda: npz_bytes(x=np.float32(1), y=y16),
        "y 2-D one-hot": lambda: npz_bytes(x=x16, y=np.eye(5)[y16]),
        "y float": lambda: npz_bytes(x=x16, y=y16.astype(np.float32)),
        "y float NaN": lambda: npz_bytes(x=x16, y=np.full(16, np.nan)),
        "y bool": lambda: npz_bytes(x=x16, y=np.ones(16, bool)),
        "y too short": lambda: npz_bytes(x=x16, y=y16[:3]),
        "y 0-D": lambda: npz_bytes(x=x16, y=np.int64(3)),
        "no keys": lambda: npz_bytes(),
        "wrong keys": lambda: npz_bytes(a=x16, b=y16),
        "x NaN": lambda: npz_bytes(x=np.where(np.arange(16 * 64).reshape(16, 1, 8, 8) == 5, np.nan, x16)
                                   .astype(np.float32), y=y16),
        "x +inf": lambda: npz_bytes(x=np.full_like(x16, np.inf), y=y16),
        "x float64 1e300 (inf as float32)": lambda: npz_bytes(x=np.full(x16.shape, 1e300), y=y16),
        "x float16 inf": lambda: npz_bytes(x=np.full(x16.shape, np.inf, np.float16), y=y16),
        "single .npy": lambda: (lambda b: (np.save(b, x16), b.getvalue())[1])(io.BytesIO()),
        "pickle": lambda: b"\x80\x04\x95" + bytes(64),
        "empty file": lambda: b"",
        "text": lambda: b"x,y\n1,2\n",
        "zip of a directory entry": lambda: _zip_dir_only(),
        "10000 keys": lambda: npz_bytes(**{f"k{i}": np.zeros(1) for i in range(10000)}),
    }
    for name, make in odd.items():
        ev(f"npz {name}", write(a.p("data", "npz_odd", re.sub(r"\W+", "_", name) + ".npz"), make()))
    # lying .npy headers inside a zip
    lies = {
        "x header 10^12 images": (npy_header("|u1", (10 ** 12, 1, 8, 8)) + bytes(64)),
        "x header 2^62 images": (npy_header("<f4", (2 ** 62, 1, 8, 8)) + bytes(64)),
        "x header shape overflows": (npy_header("<f4", (2 ** 40, 2 ** 40, 8, 8)) + bytes(64)),
        "x header negative shape": (npy_header("<f4", (-16, 1, 8, 8)) + bytes(64)),
        "x header fortran order": (npy_header("<f4", (16, 1, 8, 8), True) + x16.tobytes()),
        "x header big-endian": (npy_header(">f4", (16, 1, 8, 8)) + x16.astype(">f4").tobytes()),
        "x header 200 KB long": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 200_000) + b"{" + b" " * 199_998 + b"\n"),
        "x header garbage": (b"\x93NUMPY\x01\x00" + struct.pack("<H", 54) + b"__import__('os').system('true')" +
                             b" " * 23 + b"\n"),
    }
    yb = io.BytesIO()
    np.save(yb, y16)
    valid = ("x header fortran order", "x header big-endian")  # unusual but well-formed arrays
    for name, xb in lies.items():
        path = zip_members(a.p("data", "npz_lie", re.sub(r"\W+", "_", name) + ".npz"),
                           {"x.npy": xb, "y.npy": yb.getvalue()}, deflate=False)
        ev(f"npz {name}", path, expect="any" if name in valid else "fail")
    # decompression bombs: ~1 MB on disk, 1 GiB decoded (then 4 GiB as float32)
    n_bomb = 2 ** 24  # 1 GiB of 8x8 uint8 images
    bomb = zip_members(a.p("data", "bombs", "npz_bomb_1GiB.npz"), {
        "x.npy": zeros_stream(npy_header("|u1", (n_bomb, 1, 8, 8)), n_bomb * 64),
        "y.npy": zeros_stream(npy_header("<i8", (n_bomb,)), n_bomb * 8)})
    ev("npz bomb: 1 GiB of images deflated", bomb)
    a.add(g, "train npz bomb", train(tiny, bomb, a.work / "cases/data/bomb"), "fail", T_TRAIN)
    idx_head = bytes([0, 0, 8, 3]) + struct.pack(">III", n_bomb, 8, 8)
    folder = a.d("data", "bombs", "idx_gz_bomb")
    write(folder / "train-images-idx3-ubyte.gz", gzip_stream(zeros_stream(idx_head, n_bomb * 64)))
    write(folder / "train-labels-idx1-ubyte.gz",
          gzip_stream(zeros_stream(bytes([0, 0, 8, 1]) + struct.pack(">I", n_bomb), n_bomb)))
    ev("IDX gz bomb: header and body agree on 2^24 images", folder)
    folder = a.d("data", "bombs", "idx_gz_bomb_lying")
    write(folder / "train-images-idx3-ubyte.gz",
          gzip_stream(zeros_stream(bytes([0, 0, 8, 3]) + struct.pack(">III", 16, 8, 8), n_bomb * 64)))
    write(folder / "train-labels-idx1-ubyte", idx_bytes("labels", y16))
    ev("IDX gz bomb: header says 16 images, body 1 GiB", folder)
    # IDX truncations and lying headers
    imgs = (x16[:, 0] * 255).astype(np.uint8)
    images, labels = idx_bytes("images", imgs), idx_bytes("labels", y16)

    def idx_case(name, img_bytes, lab_bytes=labels, gz=False):
        folder = a.d("data", "idx", re.sub(r"\W+", "_", name))
        sfx = ".gz" if gz else ""
        write(folder / f"train-images-idx3-ubyte{sfx}", gzip.compress(img_bytes) if gz else img_bytes)
        write(folder / "train-labels-idx1-ubyte", lab_bytes)
        ev(f"IDX {name}", folder)

    for off in offsets(len(images), 6):
        idx_case(f"images truncated at {off}/{len(images)}", images[:off])
    for off in offsets(len(labels), 3):
        idx_case(f"labels truncated at {off}/{len(labels)}", images, labels[:off])
    gz = gzip.compress(images)
    for off in offsets(len(gz), 6):
        folder = a.d("data", "idx", f"gz_trunc_{off}")
        write(folder / "train-images-idx3-ubyte.gz", gz[:off])
        write(folder / "train-labels-idx1-ubyte", labels)
        ev(f"IDX .gz truncated at {off}/{len(gz)}", folder)
    body = imgs.tobytes()
    for name, dims in (("dims 0 images", (0, 8, 8)), ("dims overflow 2^32-1 cubed", (2 ** 32 - 1,) * 3),
                       ("dims product 2^64", (2 ** 16, 2 ** 24, 2 ** 24)), ("dims more than body", (1000, 8, 8)),
                       ("dims 8x8 body longer", (8, 8, 8)), ("dims 0x0 images", (16, 0, 0)),
                       ("dims 2^31 images", (2 ** 31, 8, 8)), ("dims 16x4x16", (16, 4, 16))):
        idx_case(f"lying header: {name}", idx_bytes("images", dims=dims, body=body))
    idx_case("magic 0x0D floats", idx_bytes("images", dims=(16, 8, 8), body=bytes(16 * 64 * 4), dtype_code=0x0D))
    idx_case("ndim 255", bytes([0, 0, 8, 255]) + bytes(1020) + body)
    idx_case("ndim 0", bytes([0, 0, 8, 0]) + body)
    idx_case("images and labels swapped", labels, images)
    idx_case("labels count 0", images, idx_bytes("labels", dims=(0,), body=b""))
    folder = a.d("data", "idx", "gz_trailing_garbage")
    write(folder / "train-images-idx3-ubyte.gz", gzip.compress(images) + b"garbage after the gzip member")
    write(folder / "train-labels-idx1-ubyte", labels)
    ev("IDX .gz with trailing garbage", folder)
    folder = a.d("data", "idx", "gz_garbage")
    write(folder / "train-images-idx3-ubyte.gz", b"\x1f\x8b" + bytes(range(256)) * 4)
    write(folder / "train-labels-idx1-ubyte", labels)
    ev("IDX .gz of garbage", folder)
    # CIFAR-10 binary
    rec = np.zeros((8, 3073), np.uint8)
    rec[:, 0] = np.arange(8) % 5
    rec[:, 1:] = rng.integers(0, 256, (8, 3072))
    blob = rec.tobytes()
    for off in offsets(len(blob), 6):  # a cut at a record boundary leaves a smaller valid file
        ev(f"CIFAR .bin truncated at {off}/{len(blob)}", write(a.p("data", "cifar", f"trunc_{off}.bin"), blob[:off]),
           tiny_rgb, w_rgb, expect="any" if off and off % 3073 == 0 else "fail")
    bad = rec.copy()
    bad[5, 0] = 200
    ev("CIFAR label byte 200", write(a.p("data", "cifar", "label200.bin"), bad.tobytes()), tiny_rgb, w_rgb)
    ev("CIFAR-100 layout (3074-byte records)", write(a.p("data", "cifar", "c100.bin"), bytes(3074 * 5)),
       tiny_rgb, w_rgb)
    ev("CIFAR gzip", write(a.p("data", "cifar", "gz.bin"), gzip.compress(blob)), tiny_rgb, w_rgb)
    folder = a.d("data", "cifar", "pickled")
    write(folder / "data_batch_1", b"\x80\x02" + bytes(100))
    ev("CIFAR python-version folder", folder, tiny_rgb, w_rgb)
    ev("CIFAR .bin on a 1x8x8 network", write(a.p("data", "cifar", "ok.bin"), blob))
    # images: truncated PNG / JPEG in an image folder and for predict
    png = img_png.read_bytes()
    from PIL import Image
    jb = io.BytesIO()
    Image.fromarray((x16[0, 0] * 255).astype(np.uint8)).save(jb, format="JPEG")
    jpg = jb.getvalue()
    for kind, blob in (("png", png), ("jpg", jpg)):
        for off in offsets(len(blob), 4):
            path = write(a.p("data", "img_trunc", f"{kind}_{off}.{kind}"), blob[:off])
            # a PNG cut inside its final IEND chunk (12 bytes) has every pixel: decoders may accept it
            lenient = kind == "png" and off >= len(blob) - 12
            a.add(g, f"predict {kind} truncated at {off}/{len(blob)}", ["predict", tiny, path, "--weights", w_tiny],
                  "any" if lenient else "fail", needs=(w_tiny,))
    folder = a.d("data", "img_folder_trunc")
    for k in range(5):
        for j in range(3):
            write(folder / f"c{k}" / f"{j}.png", png)
    write(folder / "c3" / "9.png", png[:len(png) // 2])
    ev("image folder with a truncated PNG", folder)
    a.add(g, "train image folder with a truncated PNG", train(tiny, folder, a.work / "cases/data/imgtrunc"),
          "fail", T_TRAIN)
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    path = write(a.p("data", "img_odd", "bad_crc.png"), bytes(bad_crc))
    a.add(g, "predict PNG with a bad CRC", ["predict", tiny, path, "--weights", w_tiny], needs=(w_tiny,))
    # PNG bombs
    path = write(a.p("data", "bombs", "png_20000x20000.png"), png_raw(20000, 20000, zlib.compress(b"")))
    a.add(g, "predict PNG bomb 20000x20000 (over Pillow's limit)", ["predict", tiny, path, "--weights", w_tiny],
          needs=(w_tiny,))
    path = write(a.p("data", "bombs", "png_10000x10000.png"), png_raw(10000, 10000, png_zeros_idat(10000, 10000)))
    a.add(g, "predict PNG bomb 10000x10000 zeros (~100 KB)", ["predict", tiny, path, "--weights", w_tiny],
          needs=(w_tiny,))
    path = write(a.p("data", "bombs", "png_65535x65535_rgba16.png"),
                 png_raw(65535, 65535, zlib.compress(b""), depth=16, color=6))
    a.add(g, "predict PNG 65535x65535 RGBA16 header", ["predict", tiny, path, "--weights", w_tiny], needs=(w_tiny,))
    ztxt = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(64 << 20), 9))
    path = write(a.p("data", "bombs", "png_ztxt_64MiB.png"),
                 png_raw(8, 8, zlib.compress(bytes(9 * 8)), extra=ztxt))
    a.add(g, "predict PNG with a 64 MiB zTXt chunk bomb", ["predict", tiny, path, "--weights", w_tiny],
          needs=(w_tiny,))
    folder = a.d("data", "img_folder_bomb")
    for k in range(5):
        write(folder / f"c{k}" / "0.png", png)
        write(folder / f"c{k}" / "1.png", png)
    shutil.copy(a.work / "data/bombs/png_20000x20000.png", folder / "c2" / "2.png")
    ev("image folder holding a PNG bomb", folder)
    # NaN / inf images
    for name, value in (("NaN", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("1e30", 1e30)):
        arr = x16[0].copy()
        arr[0, 3, 3] = value
        path = a.p("data", "img_nan", f"{name}.npy")
        np.save(path, arr)
        a.add(g, f"predict .npy image with {name}", ["predict", tiny, path, "--weights", w_tiny], needs=(w_tiny,))
    path = a.p("data", "img_nan", "object.npy")
    np.save(path, np.array([None], dtype=object), allow_pickle=True)
    a.add(g, "predict .npy holding a pickle", ["predict", tiny, path, "--weights", w_tiny], needs=(w_tiny,))
    path = write(a.p("data", "img_nan", "lying.npy"), npy_header("<f4", (10 ** 12, 8, 8)) + bytes(256))
    a.add(g, "predict .npy header 10^12x8x8", ["predict", tiny, path, "--weights", w_tiny], needs=(w_tiny,))
    folder = a.d("data", "img_folder_nan")
    for k in range(5):
        (folder / f"c{k}").mkdir(exist_ok=True)
        for j in range(2):
            arr = np.full((8, 8), np.nan if (k, j) == (1, 1) else 0.5, np.float32)
            Image.fromarray(arr).save(folder / f"c{k}" / f"{j}.tif")  # mode F: 32-bit float
    ev("image folder with a NaN float TIFF", folder)
    # 1e30: finite images, a huge but finite loss (measured 1.4e30): may train; 3e38 overflows to inf
    for name, value, expect in (("1e30", 1e30, "any"), ("3e38", 3e38, "fail")):
        data = write(a.p("data", "overflow", f"{name}.npz"),
                     npz_bytes(x=np.full(x16.shape, value, np.float32), y=y16))
        a.add(g, f"train on images of {name}", train(tiny, data, a.work / f"cases/data/ov_{name}"), expect, T_TRAIN)
        a.add(g, f"train batchnorm net on images of {name}",
              train(a.work / "models/tiny_bn.cnn", data, a.work / f"cases/data/ovbn_{name}"), expect, T_TRAIN)
    # augment reads the same formats
    a.add(g, "augment npz truncated", ["augment", tiny, "--data", a.work / "data/npz_trunc/s100.npz", "-n", "2",
                                       "-k", "2", "-o", a.work / "cases/data/aug.png"])
    a.add(g, "augment npz bomb", ["augment", tiny, "--data", bomb, "-n", "2", "-k", "2",
                                  "-o", a.work / "cases/data/aug2.png"])


def _zip_dir_only() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("x.npy/"), b"")
    return buf.getvalue()


def group_weights(a, tiny, good, img_npy, w_tiny, ck_tiny, ex, run_pre, **_):
    g = "weights"
    base = a.work / "weights"

    def ev(name, make, expect="fail", predict=False):
        path = base / (re.sub(r"\W+", "_", name) + ".safetensors")
        args = ["predict", tiny, img_npy, "--weights", path] if predict else \
            ["eval", tiny, "--weights", path, "--data", good]
        a.add(g, name, args, expect, prepare=derived(w_tiny, path, lambda src, dst: write(dst, make(src))))

    def header_case(name, edit=None, raw=None, predict=False, expect="fail"):
        def make(src):
            header, data = st_read(src)
            if raw is not None:
                return st_bytes(None, data, raw(header))
            edit(header)
            return st_bytes(header, data)
        ev(name, make, expect, predict=predict)

    # truncations: offsets are computed from the fixture when the case runs, so list them by fraction
    for frac in (0, 1, 4, 7, 8, 9, 16, 64, 0.25, 0.5, 0.75, 0.9, 0.99, -1):
        def make(src, frac=frac):
            blob = src.read_bytes()
            n = struct.unpack("<Q", blob[:8])[0]
            cut = frac if isinstance(frac, int) and frac >= 0 else \
                len(blob) - 1 if frac == -1 else int(8 + n + (len(blob) - 8 - n) * frac)
            return blob[:cut]
        ev(f"weights truncated at {frac}" + (" of the data" if isinstance(frac, float) else ""), make)
    for name, n in (("2^64-1", 2 ** 64 - 1), ("2^63", 2 ** 63), ("0", 0), ("file size + 1", None),
                    ("99 MB", 99 * 10 ** 6)):
        def make(src, n=n):
            blob = src.read_bytes()
            return struct.pack("<Q", len(blob) + 1 if n is None else n) + blob[8:]
        ev(f"header length {name}", make)
    first = lambda h: st_first_float(h)  # noqa: E731
    edits = {
        "shape [2^63]": lambda h: h[first(h)].update(shape=[2 ** 63]),
        "shape [2^64]": lambda h: h[first(h)].update(shape=[2 ** 64]),
        "shape [2^32, 2^32] (product overflows)": lambda h: h[first(h)].update(shape=[2 ** 32, 2 ** 32]),
        "shape [2^62, 4] (bytes overflow)": lambda h: h[first(h)].update(shape=[2 ** 62, 4]),
        "shape [-1]": lambda h: h[first(h)].update(shape=[-1]),
        "shape [1.5]": lambda h: h[first(h)].update(shape=[1.5]),
        "shape 'x'": lambda h: h[first(h)].update(shape="x"),
        "shape null": lambda h: h[first(h)].update(shape=None),
        "shape 64 dims": lambda h: h[first(h)].update(shape=[1] * 64),
        "dtype unknown": lambda h: h[first(h)].update(dtype="F33"),
        "dtype BF16": lambda h: h[first(h)].update(dtype="BF16"),
        "dtype null": lambda h: h[first(h)].update(dtype=None),
        "offsets reversed": lambda h: h[first(h)].update(data_offsets=h[first(h)]["data_offsets"][::-1]),
        "offsets past the end": lambda h: h[first(h)].update(
            data_offsets=[10 ** 9, 10 ** 9 + 4 * int(np.prod(h[first(h)]["shape"]))]),
        "offsets [0, 2^64]": lambda h: h[first(h)].update(data_offsets=[0, 2 ** 64]),
        "offsets negative": lambda h: h[first(h)].update(data_offsets=[-4, 0]),
        "offsets three numbers": lambda h: h[first(h)].update(data_offsets=[0, 4, 8]),
        "offsets overlap another tensor": lambda h: [e.update(data_offsets=[0, e["data_offsets"][1] -
                                                                            e["data_offsets"][0]])
                                                     for k, e in h.items() if k != "__metadata__"],
        "entry is a list": lambda h: h.update({first(h): [1, 2, 3]}),
        "entry is null": lambda h: h.update({first(h): None}),
        "__metadata__ a list": lambda h: h.update(__metadata__=[1, 2]),
        "__metadata__ values int": lambda h: h.update(__metadata__={"a": 1}),
        "__metadata__ 10 MB string": lambda h: h.update(__metadata__={"a": "x" * 10 ** 7}),
        "empty tensor name": lambda h: h.update({"": h.pop(first(h))}),
        "10000 extra tensors": lambda h: h.update({f"extra{i}": {"dtype": "F32", "shape": [0],
                                                                  "data_offsets": [0, 0]} for i in range(10000)}),
        "a tensor renamed": lambda h: h.update({"renamed": h.pop(first(h))}),
        "a tensor dropped": lambda h: h.pop(first(h)),
    }
    lenient = ("__metadata__ 10 MB string",)  # within the format's 100 MB header limit
    for name, edit in edits.items():
        header_case(f"header {name}", edit, expect="any" if name in lenient else "fail")
    raws = {
        "JSON nested 100000 deep ([)": lambda h: b"[" * 100000 + b"]" * 100000,
        "JSON nested 100000 deep ({)": lambda h: b'{"a":' * 100000 + b"1" + b"}" * 100000,
        "JSON nested 100000 deep in __metadata__": lambda h: b'{"__metadata__":{"a":' + b"[" * 100000 +
        b"]" * 100000 + b"}}",
        "JSON nested 100000 deep in a shape": lambda h: (
            b'{"w":{"dtype":"F32","data_offsets":[0,4],"shape":' + b"[" * 100000 + b"]" * 100000 + b"}}"),
        "JSON not an object": lambda h: b"[1, 2, 3]",
        "JSON invalid UTF-8": lambda h: b'{"\xff\xfe":1}',
        "JSON with NaN in a shape": lambda h: json.dumps(h).replace(json.dumps(h[first(h)]["shape"]),
                                                                    "[NaN]", 1).encode(),
        "JSON duplicate keys": lambda h: json.dumps(h)[:-1].encode() + b"," + json.dumps(
            {first(h): h[first(h)]})[1:].encode(),
        "JSON 1e400 in offsets": lambda h: json.dumps(h).replace(
            json.dumps(h[first(h)]["data_offsets"]), "[0, 1e400]", 1).encode(),
        "JSON huge integer in shape": lambda h: json.dumps(h).replace(
            json.dumps(h[first(h)]["shape"]), "[" + "9" * 5000 + "]", 1).encode(),
        "JSON trailing garbage": lambda h: json.dumps(h).encode() + b"}}}",
        "header all spaces": lambda h: b" " * 64,
    }
    for name, raw in raws.items():  # a repeated key holding the same entry is harmless: either outcome
        header_case(f"header {name}", raw=raw, expect="any" if name == "JSON duplicate keys" else "fail")

    def values(value, count=None, prefix=""):
        def make(src):
            header, data = st_read(src)
            return st_bytes(header, st_fill(header, data, st_first_float(header, prefix), value, count))
        return make
    # 3e38 is finite: the file is valid, what the network computes from it may overflow
    for name, value, count, expect in (("one NaN", np.nan, 1, "fail"), ("all NaN", np.nan, None, "fail"),
                                       ("one +inf", np.inf, 1, "fail"), ("3e38 everywhere", 3e38, None, "any")):
        ev(f"tensor with {name} (eval)", values(value, count), expect)
        ev(f"tensor with {name} (predict)", values(value, count), expect, predict=True)

    def f64(src):  # the same values, one tensor widened to float64
        header, data = st_read(src)
        arrays = {name: np.frombuffer(data[e["data_offsets"][0]:e["data_offsets"][1]], "<f4").reshape(e["shape"])
                  for name, e in header.items() if name != "__metadata__"}
        k = first(header)
        arrays[k] = arrays[k].astype("<f8")
        return _st_from_arrays(arrays)
    ev("a tensor stored as F64", f64)

    # files a user will naturally pass
    a.add(g, "checkpoint as --weights (eval)", ["eval", tiny, "--weights", ck_tiny, "--data", good], "any",
          needs=(ck_tiny,))
    a.add(g, "checkpoint as --weights (predict)", ["predict", tiny, img_npy, "--weights", ck_tiny], "any",
          needs=(ck_tiny,))
    a.add(g, "weights of another network", ["eval", tiny, "--weights", run_pre / "weights.safetensors",
                                            "--data", good], needs=(run_pre / "weights.safetensors",))
    a.add(g, "weights for 5 classes with -D classes=10", ["eval", tiny, "-D", "classes=10", "--weights", w_tiny,
                                                          "--data", good], needs=(w_tiny,))
    a.add(g, "a PNG as weights", ["eval", tiny, "--weights", a.work / "data/img.png", "--data", good])
    a.add(g, "an npz as weights", ["eval", tiny, "--weights", good, "--data", good])
    a.add(g, "a folder as weights", ["eval", tiny, "--weights", a.work / "fix", "--data", good])
    a.add(g, "missing weights file", ["eval", tiny, "--weights", a.work / "nope.safetensors", "--data", good])
    a.add(g, "init from a truncated file", ["check", write(a.p("models", "init_trunc.cnn"), (
        MODELS["tiny.cnn"].replace("train {", f'train {{\n  init from "{a.work}/weights/'
                                   f'weights_truncated_at_0_5_of_the_data.safetensors"'))
        .encode())], "any")
    a.add(g, "train with init from a truncated file", ["train", a.work / "models/init_trunc.cnn", "--data", good,
                                                        "--out", a.work / "cases/weights/init", "--no-progress"],
          "fail", T_TRAIN, needs=(a.work / "weights/weights_truncated_at_0_5_of_the_data.safetensors",))


def _st_from_arrays(arrays: dict) -> bytes:
    codes = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
    header, parts, pos = {}, [], 0
    for name, arr in arrays.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": codes[arr.dtype.newbyteorder("<")], "shape": list(arr.shape),
                        "data_offsets": [pos, pos + len(b)]}
        parts.append(b)
        pos += len(b)
    return st_bytes(header, b"".join(parts))


def group_checkpoint(a, tiny, tiny_bn, good, run_tiny, run_bn, **_):
    g = "checkpoint"
    cases = a.work / "cases" / "checkpoint"

    def resume(name, mutate=None, expect="fail", model=tiny, src=run_tiny, extra=("--epochs", "2")):
        dst = cases / re.sub(r"\W+", "_", name)
        a.add(g, name, ["train", model, "--data", good, "--resume", dst, *extra, "--no-progress"], expect, T_TRAIN,
              prepare=copy_run(src, dst, mutate))

    def meta(edit):
        def mutate(run: Path):
            ck = run / "checkpoint.safetensors"
            header, data = st_read(ck)
            md = header["__metadata__"]
            key = next(k for k in md if k != "format")
            m = json.loads(md[key])
            result = edit(m)
            md[key] = result if isinstance(result, str) else json.dumps(m)
            write(ck, st_bytes(header, data))
        return mutate

    def pos(**kw):
        return meta(lambda m: m["position"].update(kw))

    # docs/training.md: a finished run resumed says "run already finished its N epochs; nothing to
    # do" and exits 0, so that a batch job re-running the same command succeeds
    resume("finished run resumed without more epochs", extra=(), expect="any")
    resume("position missing", meta(lambda m: m.pop("position")))
    resume("position a list", meta(lambda m: m.update(position=[1, 2])))
    resume("position null", meta(lambda m: m.update(position=None)))
    resume("position a string", meta(lambda m: m.update(position="epoch 1")))
    resume("position empty object", meta(lambda m: m.update(position={})))
    for field, values in (("epoch", ("x", -5, 1.5, 10 ** 9, float("nan"), True, None, [1])),
                          ("batch", (10 ** 9, -1, 1.5, "0")),
                          ("step", (float("nan"), "1", -1, float("inf"))),
                          ("loss_sum", ("a", float("nan"))), ("seen", (-1, 10 ** 30)), ("correct", (10 ** 30,)),
                          ("seconds", (float("inf"),))):
        for v in values:
            resume(f"position {field} {json.dumps(v)}", pos(**{field: v}))
    resume("position with an unknown field", pos(colour="blue"), "any")
    resume("meta not JSON", meta(lambda m: "{not json"))
    resume("meta a JSON list", meta(lambda m: "[1, 2]"))
    resume("meta a number", meta(lambda m: "42"))
    resume("meta nested 100000 deep", meta(lambda m: '{"position":' + "[" * 100000 + "]" * 100000 + "}"))
    resume("seed a string", meta(lambda m: m.update(seed="x")))

    def md_edit(edit):
        def mutate(run):
            ck = run / "checkpoint.safetensors"
            header, data = st_read(ck)
            edit(header)
            write(ck, st_bytes(header, data))
        return mutate
    resume("format key missing", md_edit(lambda h: h["__metadata__"].pop("format")))
    resume("format of another version", md_edit(lambda h: h["__metadata__"].update(format="cnndsl-checkpoint-9")))
    resume("no __metadata__", md_edit(lambda h: h.pop("__metadata__")))

    def tensors(edit):
        def mutate(run):
            ck = run / "checkpoint.safetensors"
            header, data = st_read(ck)
            data = edit(header, data)
            write(ck, st_bytes(header, data))
        return mutate
    resume("a weight NaN", tensors(lambda h, d: st_fill(h, d, st_first_float(h, "weights/"), np.nan, 1)))
    resume("a weight +inf", tensors(lambda h, d: st_fill(h, d, st_first_float(h, "weights/"), np.inf, 1)))
    resume("optimizer state NaN", tensors(lambda h, d: st_fill(h, d, st_first_float(h, "optim/"), np.nan)))
    resume("optimizer tensor dropped", tensors(lambda h, d: (h.pop(st_first_float(h, "optim/")), d)[1]))
    resume("all optimizer tensors dropped", tensors(
        lambda h, d: ([h.pop(k) for k in [k for k in h if k.startswith("optim/")]], d)[1]))
    resume("optimizer tensor renamed", tensors(
        lambda h, d: (h.update({"optim/zzz": h.pop(st_first_float(h, "optim/"))}), d)[1]))
    resume("a weight dropped", tensors(lambda h, d: (h.pop(st_first_float(h, "weights/")), d)[1]))
    resume("an optimizer int tensor as F32", tensors(
        lambda h, d: ([e.update(dtype="F32", shape=[int(np.prod(e["shape"], dtype=np.int64)) * 2])
                       for k, e in h.items() if k.startswith("optim/") and e["dtype"] == "I64"], d)[1]))
    resume("batchnorm running_var NaN", tensors(
        lambda h, d: st_fill(h, d, next(k for k in h if "var" in k and k.startswith("weights/")), np.nan)),
        model=tiny_bn, src=run_bn)
    resume("batchnorm running_var negative", tensors(
        lambda h, d: st_fill(h, d, next(k for k in h if "var" in k and k.startswith("weights/")), -1.0)),
        model=tiny_bn, src=run_bn)
    for frac in (0, 8, 100, 0.5, 0.9, -1):
        def cut(run, frac=frac):
            ck = run / "checkpoint.safetensors"
            blob = ck.read_bytes()
            n = len(blob) - 1 if frac == -1 else frac if isinstance(frac, int) else int(len(blob) * frac)
            write(ck, blob[:n])
        resume(f"checkpoint truncated at {frac}", cut)
    # metrics.json, which resume reads back
    for name, text in (("truncated", None), ("a list", b"[1, 2]"), ("NaN epoch", b'[{"epoch": NaN}]'),
                       ("binary", b"\x00\xff\xfe"), ("nested 100000 deep", b"[" * 100000 + b"]" * 100000)):
        def mutate(run, text=text):
            m = run / "metrics.json"
            blob = m.read_bytes()
            m.write_bytes(blob[:len(blob) // 2] if text is None else text)
        resume(f"metrics.json {name}", mutate, "any")
    resume("metrics.json missing", lambda run: (run / "metrics.json").unlink(), "any")
    # what --resume points at
    a.add(g, "--resume the checkpoint file", ["train", tiny, "--data", good, "--resume",
                                              cases / "file_run/checkpoint.safetensors", "--epochs", "2",
                                              "--no-progress"], "any", T_TRAIN,
          prepare=copy_run(run_tiny, cases / "file_run"))
    a.add(g, "--resume a folder named *.safetensors", ["train", tiny, "--data", good, "--resume",
                                                       cases / "run.safetensors", "--epochs", "2", "--no-progress"],
          "any", T_TRAIN, prepare=copy_run(run_tiny, cases / "run.safetensors"))
    a.add(g, "--resume the weights file", ["train", tiny, "--data", good, "--resume",
                                           run_tiny / "weights.safetensors", "--epochs", "2", "--no-progress"],
          "fail", T_TRAIN, needs=(run_tiny / "weights.safetensors",))
    empty = a.d("cases", "checkpoint", "empty_dir")
    a.add(g, "--resume an empty folder", ["train", tiny, "--data", good, "--resume", empty, "--no-progress"],
          "fail", T_TRAIN)
    a.add(g, "--resume a missing folder", ["train", tiny, "--data", good, "--resume", cases / "nope",
                                           "--no-progress"], "fail", T_TRAIN)
    a.add(g, "--resume another network's run", ["train", tiny_bn, "--data", good, "--resume", cases / "other_net",
                                                "--epochs", "2", "--no-progress"], "fail", T_TRAIN,
          prepare=copy_run(run_tiny, cases / "other_net"))


def group_outputs(a, tiny, good, run_tiny, ex, w_tiny, img_npy, **_):
    g = "outputs"
    base = a.d("cases", "outputs")
    a_file = write(base / "a_file", b"x")

    def tr(name, out, expect="fail", prepare=None):
        a.add(g, name, ["train", tiny, "--data", good, "--out", out, "--no-progress"], expect, T_TRAIN,
              prepare=prepare)
    tr("--out /proc/x", "/proc/x")
    tr("--out /proc/self/x", "/proc/self/x")
    tr("--out a regular file", a_file)
    tr("--out under a regular file", a_file / "sub")
    tr("--out /dev/null", "/dev/null")
    tr("--out /dev/full/x", "/dev/full/x")
    # (--out '' is not tried: it means the default runs/<name> under the cwd, i.e. inside the repo under test)
    tr("--out a 300-character name", base / ("n" * 300))
    loop = base / "loop"
    if not loop.is_symlink():
        os.symlink(loop, loop)
    tr("--out a symlink loop", loop)
    tr("--out a folder holding a finished run (no --resume)", base / "existing_run", "fail",
       copy_run(run_tiny, base / "existing_run"))
    a.add(g, "graph -o /proc/x", ["graph", tiny, "-o", "/proc/x"])
    a.add(g, "graph -o a folder", ["graph", tiny, "-o", base])
    a.add(g, "graph --format svg -o /proc/x.svg", ["graph", tiny, "--format", "svg", "-o", "/proc/x.svg"])
    a.add(g, "augment -o /proc/x.png", ["augment", tiny, "--data", good, "-n", "2", "-k", "2", "-o", "/proc/x.png"])
    a.add(g, "augment -o a folder", ["augment", tiny, "--data", good, "-n", "2", "-k", "2", "-o", base])
    a.add(g, "predict -o /proc/x.png", ["predict", tiny, img_npy, "--weights", w_tiny, "-o", "/proc/x.png"],
          needs=(w_tiny,))


def group_huge(a, good, tiny, **_):
    g = "huge"
    for name, body in HUGE.items():
        path = write(a.p("models", "huge", f"{name}.cnn"), huge_model(body).encode())
        a.add(g, f"check {name}", ["check", path], "any")
        a.add(g, f"shapes {name}", ["shapes", path], "any")
        buildable = "any" if name in BUILDABLE else "fail"
        a.add(g, f"train {name}", ["train", path, "--data", good, "--out", a.work / f"cases/huge/{name}",
                                   "--no-progress"], buildable, T_HUGE)
        a.add(g, f"bench {name}", ["bench", path, "--repeats", "1", "--batch", "2"], buildable, T_HUGE)
    # (1x100000x100000 is refused by the language itself: more than 2**31 elements per sample)
    path = write(a.p("models", "huge", "input_4e4.cnn"),
                 huge_model("conv 1 kernel=1\n  flatten", "1x40000x40000").encode())
    for cmd in ("check", "shapes"):
        a.add(g, f"{cmd} input 1x40000x40000", [cmd, path], "any")
    a.add(g, "bench input 1x40000x40000", ["bench", path, "--repeats", "1", "--batch", "2"], "fail", T_HUGE)
    a.add(g, "compile --train conv_1e12", ["compile", "--train", a.work / "models/huge/conv_1e12.cnn"], "any",
          T_TRAIN)
    a.add(g, "graph conv_1e12", ["graph", a.work / "models/huge/conv_1e12.cnn"], "any")
    for value in ("1000000000000", "0", "-1", "1e30", "nan", "99999999999999999999"):
        a.add(g, f"check tiny -D classes={value}", ["check", tiny, "-D", f"classes={value}"], "any")
        a.add(g, f"train tiny -D classes={value}", ["train", tiny, "-D", f"classes={value}", "--data", good, "--out",
                                                    a.work / f"cases/huge/classes_{value}", "--no-progress"],
              "fail", T_TRAIN)
    a.add(g, "train --batch 10^9", ["train", tiny, "--data", good, "--batch", "1000000000", "--out",
                                    a.work / "cases/huge/batch", "--no-progress"], "fail", T_TRAIN)
    a.add(g, "bench --batch 10^9", ["bench", tiny, "--batch", "1000000000", "--repeats", "1"], "fail", T_TRAIN)
    a.add(g, "eval --batch 10^12", ["eval", tiny, "--weights", a.work / "fix/run_tiny/weights.safetensors",
                                    "--data", good, "--batch", "1000000000000"], "any",
          needs=(a.work / "fix/run_tiny/weights.safetensors",))


def group_special(a, tiny, good, w_tiny, img_npy, run_tiny, **_):
    g = "special"
    sp = a.d("special")

    def fifo(name):
        path = sp / name
        if not path.exists():
            os.mkfifo(path)
        return path
    m, d, w, i = fifo("model.cnn"), fifo("data.npz"), fifo("weights.safetensors"), fifo("image.png")
    T = T_SPECIAL
    a.add(g, "check a FIFO model", ["check", m], timeout=T)
    a.add(g, "shapes a FIFO model", ["shapes", m], timeout=T)
    a.add(g, "eval --data a FIFO", ["eval", tiny, "--weights", w_tiny, "--data", d], timeout=T, needs=(w_tiny,))
    a.add(g, "train --data a FIFO", ["train", tiny, "--data", d, "--out", a.work / "cases/special/fifo",
                                     "--no-progress"], timeout=T)
    a.add(g, "eval --weights a FIFO", ["eval", tiny, "--weights", w, "--data", good], timeout=T)
    a.add(g, "predict a FIFO image", ["predict", tiny, i, "--weights", w_tiny], timeout=T, needs=(w_tiny,))
    idx = a.d("special", "idx_fifo")
    for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        if not (idx / n).exists():
            os.mkfifo(idx / n)
    a.add(g, "eval --data an IDX folder of FIFOs", ["eval", tiny, "--weights", w_tiny, "--data", idx], timeout=T,
          needs=(w_tiny,))
    imgs = a.d("special", "img_fifo")
    for k in range(5):
        write(imgs / f"c{k}" / "0.png", (a.work / "data/img.png").read_bytes())
    if not (imgs / "c0/1.png").exists():
        os.mkfifo(imgs / "c0/1.png")
    # (the FIFO may be refused, or passed over like any entry that is not an image file)
    a.add(g, "eval --data an image folder holding a FIFO", ["eval", tiny, "--weights", w_tiny, "--data", imgs],
          "any", timeout=T, needs=(w_tiny,))

    def fifo_ckpt(run):
        (run / "checkpoint.safetensors").unlink()
        os.mkfifo(run / "checkpoint.safetensors")
    a.add(g, "--resume a folder whose checkpoint is a FIFO",
          ["train", tiny, "--data", good, "--resume", a.work / "cases/special/fifo_ck", "--epochs", "2",
           "--no-progress"], timeout=T, prepare=copy_run(run_tiny, a.work / "cases/special/fifo_ck", fifo_ckpt))
    for dev in ("/dev/zero", "/dev/urandom", "/dev/null"):
        nm = dev.split("/")[-1]
        a.add(g, f"check {dev}", ["check", dev], timeout=T)
        a.add(g, f"eval --data {dev}", ["eval", tiny, "--weights", w_tiny, "--data", dev], timeout=T, needs=(w_tiny,))
        a.add(g, f"eval --weights {dev}", ["eval", tiny, "--weights", dev, "--data", good], timeout=T)
        a.add(g, f"predict image {dev}", ["predict", tiny, dev, "--weights", w_tiny], timeout=T, needs=(w_tiny,))
        for link, args in ((f"{nm}.cnn", lambda p: ["check", p]),
                           (f"{nm}.npz", lambda p: ["eval", tiny, "--weights", w_tiny, "--data", p]),
                           (f"{nm}.safetensors", lambda p: ["eval", tiny, "--weights", p, "--data", good]),
                           (f"{nm}.png", lambda p: ["predict", tiny, p, "--weights", w_tiny]),
                           (f"{nm}.bin", lambda p: ["eval", tiny, "--weights", w_tiny, "--data", p])):
            path = sp / link
            if not path.is_symlink():
                os.symlink(dev, path)
            a.add(g, f"{args('X')[0]} {link} -> {dev}", args(path), timeout=T, needs=(w_tiny,))
    a.add(g, "check /proc/self/mem", ["check", "/proc/self/mem"], timeout=T)
    a.add(g, "check a folder", ["check", sp], timeout=T)
    a.add(g, "predict a folder", ["predict", tiny, sp, "--weights", w_tiny], timeout=T, needs=(w_tiny,))
    a.add(g, "eval --data /proc/self/status", ["eval", tiny, "--weights", w_tiny, "--data", "/proc/self/status"],
          timeout=T, needs=(w_tiny,))


def group_splits(a, tiny, x16, y16, w_tiny, rng, **_):
    g = "splits"
    for n, batch, expect in ((0, None, "fail"), (1, None, "fail"), (2, None, "fail"), (3, None, "fail"),
                             # 5 images at batch 2: 4 train, 1 held out: one held-out image is a valid
                             # (if noisy) evaluation, as Keras's validation_split gives (docs/training.md)
                             (4, None, "fail"), (5, None, "fail"), (16, "64", "fail"), (5, "2", "ok"),
                             (10, "2", "ok")):
        data = write(a.p("data", "splits", f"n{n}.npz"),
                     npz_bytes(x=x16[:n] if n <= 16 else x16, y=y16[:n]))
        more = ["--batch", batch] if batch else []
        a.add(g, f"train {n} images" + (f" --batch {batch}" if batch else " (batch 8)"),
              ["train", tiny, "--data", data, "--out", a.work / f"cases/splits/n{n}_{batch}", "--no-progress", *more],
              expect, T_TRAIN)
    for n in (0, 1):
        a.add(g, f"eval on {n} images", ["eval", tiny, "--weights", w_tiny, "--data",
                                        a.work / f"data/splits/n{n}.npz"], "fail", needs=(w_tiny,))
    # an image folder with train/ and an empty-class test/
    root = a.d("data", "splits", "imgs_empty_test")
    png = png_image((x16[0, 0] * 255).astype(np.uint8))
    for k in range(5):
        write(root / "train" / f"c{k}" / "0.png", png)
        write(root / "train" / f"c{k}" / "1.png", png)
        (root / "test" / f"c{k}").mkdir(parents=True, exist_ok=True)
    write(root / "test" / "c0" / "0.png", png)
    a.add(g, "train image folder, test split of 1 image", ["train", tiny, "--data", root, "--out",
                                                           a.work / "cases/splits/img1", "--no-progress"],
          "fail", T_TRAIN)
    # IDX folder whose t10k split holds 0 images
    folder = a.d("data", "splits", "idx_empty_test")
    imgs = (x16[:, 0] * 255).astype(np.uint8)
    write(folder / "train-images-idx3-ubyte", idx_bytes("images", imgs))
    write(folder / "train-labels-idx1-ubyte", idx_bytes("labels", y16))
    write(folder / "t10k-images-idx3-ubyte", idx_bytes("images", dims=(0, 8, 8), body=b""))
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes("labels", dims=(0,), body=b""))
    a.add(g, "train IDX folder with an empty t10k split", ["train", tiny, "--data", folder, "--out",
                                                           a.work / "cases/splits/idx0", "--no-progress"],
          "fail", T_TRAIN)
    a.add(g, "eval IDX folder with an empty t10k split", ["eval", tiny, "--weights", w_tiny, "--data", folder],
          "fail", needs=(w_tiny,))
    cf = a.d("data", "splits", "cifar_empty_test")
    write(cf / "data_batch_1.bin", bytes(3073 * 8))
    write(cf / "test_batch.bin", b"")
    a.add(g, "train CIFAR folder with an empty test_batch.bin",
          ["train", a.work / "models/tiny_rgb.cnn", "--data", cf, "--out", a.work / "cases/splits/cifar0",
           "--no-progress"], "fail", T_TRAIN)


API_TEMPLATE = """\
import sys
import numpy as np
import cnndsl
from cnndsl.diagnostics import CnnError


def main():
    model = cnndsl.compile({model!r})
    from cnndsl.train.trainer import optimizer_for
    model.set_optimizer(optimizer_for(model.config, model.store.params))
    rng = np.random.default_rng(0)
    x = rng.random((4,) + tuple(model.input_shape), dtype=np.float32)
{body}


try:
    main()
except (CnnError, ValueError) as e:  # a clean, explained refusal
    print(f"{{type(e).__name__}}: {{e}}", file=sys.stderr)
    sys.exit(1)
"""


def group_api(a, tiny, tiny_seg, **_):
    g = "api"
    cases = {
        "train_step good labels": (tiny, "model.train_step(x, np.array([0, 1, 2, 4]), step=0)", "ok"),
        "train_step label 5 of 5 classes": (tiny, "model.train_step(x, np.array([0, 1, 5, 4]), step=0)", "fail"),
        "train_step label 10^7": (tiny, "model.train_step(x, np.array([0, 1, 10**7, 4]), step=0)", "fail"),
        "train_step label -1": (tiny, "model.train_step(x, np.array([0, -1, 2, 4]), step=0)", "fail"),
        "train_step label -10^9": (tiny, "model.train_step(x, np.array([0, -10**9, 2, 4]), step=0)", "fail"),
        "train_step float labels": (tiny, "model.train_step(x, np.array([0.5, 1, 2, 4]), step=0)", "fail"),
        "train_step 3 labels for 4 images": (tiny, "model.train_step(x, np.array([0, 1, 2]), step=0)", "fail"),
        "train_step NaN image": (tiny, "x[1, 0, 2, 2] = np.nan\n    model.train_step(x, np.array([0, 1, 2, 4]), step=0)",
                                 "fail"),
        "evaluate label 10^5": (tiny, "print(model.evaluate(x, np.array([0, 1, 10**5, 4])))", "fail"),
        "evaluate no images": (tiny, "print(model.evaluate(x[:0], np.array([], np.int64)))", "fail"),
        "fit labels 0-9": (tiny, "model.fit(x, np.array([0, 7, 8, 9]), epochs=1, batch=2)", "fail"),
        "predict NaN image": (tiny, "x[0, 0, 0, 0] = np.nan\n    print(model.predict(x))", "fail"),
        "seg train_step good masks (-1 ignored)": (
            tiny_seg, "m = rng.integers(0, 3, (4, 8, 8)); m[0, 0, 0] = -1\n    model.train_step(x, m, step=0)", "ok"),
        "seg train_step mask 99": (tiny_seg, "m = rng.integers(0, 3, (4, 8, 8)); m[1, 2, 3] = 99\n"
                                             "    model.train_step(x, m, step=0)", "fail"),
        "seg train_step mask -5": (tiny_seg, "m = rng.integers(0, 3, (4, 8, 8)); m[1, 2, 3] = -5\n"
                                             "    model.train_step(x, m, step=0)", "fail"),
        "seg train_step mask 10^7": (tiny_seg, "m = rng.integers(0, 3, (4, 8, 8)); m[3, 7, 7] = 10**7\n"
                                               "    model.train_step(x, m, step=0)", "fail"),
        "seg evaluate mask 1000": (tiny_seg, "m = rng.integers(0, 3, (4, 8, 8)); m[0, 0, 1] = 1000\n"
                                             "    print(model.evaluate(x, m))", "fail"),
        "seg train_step masks of the wrong size": (tiny_seg, "model.train_step(x, np.zeros((4, 4, 4), np.int64), "
                                                             "step=0)", "fail"),
    }
    for name, (model, body, expect) in cases.items():
        script = write(a.p("api", re.sub(r"\W+", "_", name) + ".py"),
                       API_TEMPLATE.format(model=str(model), body="    " + body).encode())
        a.add(g, name, [script], expect, T_TRAIN, api=True)


def group_model(a, tiny, **_):
    """Hand-made hostile model files, checked (fast)."""
    g = "model"
    texts = {
        "parens 1000 deep": "network N(classes = 5) {\n  input image: 1x8x8\n  flatten\n  dense " +
                            "(" * 1000 + "5" + ")" * 1000 + " -> logits\n}\n",
        "parens 100000 deep": "network N(classes = 5) {\n  input image: 1x8x8\n  flatten\n  dense " +
                              "(" * 100000 + "5" + ")" * 100000 + " -> logits\n}\n",
        "100000-term sum": "network N(classes = 5) {\n  input image: 1x8x8\n  flatten\n  dense " +
                           "+".join(["1"] * 100000) + " -> logits\n}\n",
        "unary minus 100000 deep": "network N(classes = 5) {\n  input image: 1x8x8\n  flatten\n  dense " +
                                   "-" * 100000 + "5 -> logits\n}\n",
        "50000 layers": "network N(classes = 5) {\n  input image: 1x8x8\n" +
                        "  conv 1 kernel=1\n" * 50000 + "  flatten\n  dense classes -> logits\n}\n",
        "block recursion": "block b(f) {\n  input x\n  b f\n}\nnetwork N(classes = 5) {\n  input image: 1x8x8\n"
                           "  b 2\n  flatten\n  dense classes -> logits\n}\n",
        "mutual block recursion": "block a1(f) {\n  input x\n  b1 f\n}\nblock b1(f) {\n  input x\n  a1 f\n}\n"
                                  "network N(classes = 5) {\n  input image: 1x8x8\n  a1 2\n  flatten\n"
                                  "  dense classes -> logits\n}\n",
        "blocks nested 2000 deep": "".join(f"block b{i}(f) {{\n  input x\n  b{i + 1} f\n}}\n" for i in range(2000)) +
                                   "block b2000(f) {\n  input x\n  conv f kernel=1\n}\n"
                                   "network N(classes = 5) {\n  input image: 1x8x8\n  b0 2\n  flatten\n"
                                   "  dense classes -> logits\n}\n",
        "repeat 10000 x 10000": HUGE["repeat_1e8"],
        "a 5 MB comment": "# " + "x" * 5_000_000 + "\n" + MODELS["tiny.cnn"],
        "a 20 MB file": MODELS["tiny.cnn"] + "#" * 20_000_000,
        "NUL bytes": MODELS["tiny.cnn"].replace("relu", "re\0lu"),
        "invalid UTF-8": None,
        "UTF-16": None,
        "only a BOM": "\ufeff",
        "empty": "",
        "100000 networks": "".join(f"network N{i}(classes = 5) {{\n  input image: 1x8x8\n  flatten\n"
                                   f"  dense classes -> logits\n}}\n" for i in range(100000)),
        "100000 -D-style parameters": "network N(" + ", ".join(f"p{i} = 1" for i in range(100000)) +
                                      ") {\n  input image: 1x8x8\n  flatten\n  dense 5 -> logits\n}\n",
        "input 1x0x0": "network N(classes = 5) {\n  input image: 1x0x0\n  flatten\n  dense classes -> logits\n}\n",
        "input 0x8x8": "network N(classes = 5) {\n  input image: 0x8x8\n  flatten\n  dense classes -> logits\n}\n",
        "number 1e308": "network N(classes = 5) {\n  input image: 1x8x8\n  flatten\n  dense 1e308 -> logits\n}\n",
        "init from a FIFO path": MODELS["tiny.cnn"].replace("train {", f'train {{\n  init from "{a.work}/special/'
                                                                       f'weights.safetensors"'),
        "dataset a FIFO path": MODELS["tiny.cnn"].replace("train {", f'train {{\n  dataset "{a.work}/special/'
                                                                     f'data.npz"'),
    }
    for name, text in texts.items():
        if name == "invalid UTF-8":
            blob = MODELS["tiny.cnn"].encode().replace(b"relu", b"rel\xff\xfe")
        elif name == "UTF-16":
            blob = MODELS["tiny.cnn"].encode("utf-16")
        else:
            blob = text.encode("utf-8", errors="surrogatepass")
        path = write(a.p("models", "hostile", re.sub(r"\W+", "_", name) + ".cnn"), blob)
        a.add(g, f"check {name}", ["check", path], "any")
    a.add(g, "shapes 50000 layers", ["shapes", a.work / "models/hostile/50000_layers.cnn"], "any")
    a.add(g, "train dataset a FIFO path", ["train", a.work / "models/hostile/dataset_a_FIFO_path.cnn", "--out",
                                           a.work / "cases/model/fifo", "--no-progress"], "fail", T_SPECIAL,
          needs=(a.work / "special/data.npz",))
    a.add(g, "train init from a FIFO path", ["train", a.work / "models/hostile/init_from_a_FIFO_path.cnn",
                                             "--data", a.work / "data/good.npz", "--out", a.work / "cases/model/ififo",
                                             "--no-progress"], "fail", T_SPECIAL,
          needs=(a.work / "special/weights.safetensors",))
    for d in ("classes", "classes=", "=5", "nope=3", "classes=5=5", "classes=\0", "classes=" + "9" * 5000):
        a.add(g, f"check -D {d[:30]!r}", ["check", tiny, "-D", d.replace("\0", "x")], "any")
    for opt in (["--network", "Nope"], ["--profile", "nope"], ["-O", "99"], ["-O", "-1"]):
        a.add(g, f"shapes {' '.join(opt)}", ["shapes", tiny, *opt], "fail")


# -- model-file fuzz: random mutations of the example files, checked

_EXTREME = ("0", "-1", "1", "1.5", "-0", "1e308", "1e-308", "999999999999", "1000000000001", "2147483648",
            "9223372036854775808", "nan", "inf", "0x10", "1_000", "٣", "", "()", "classes", "-classes")
_INSERT = ("(", ")", "{", "}", "=", ",", "x", "->", "#", "\"", "\\", "\0", "\ufeff", "\u202e", "😀", "\t", "\r",
           "repeat 3", "input x", "block", "network", "train {", "profile p {", "concat(", "add(", "-D", "..")


def mutate(text: str, rnd: random.Random) -> bytes:
    ops = rnd.randint(1, 3)
    for _ in range(ops):
        kind = rnd.randrange(11)
        lines = text.split("\n")
        if kind == 0 and text:  # delete a token
            toks = list(re.finditer(r"\S+", text))
            t = rnd.choice(toks)
            text = text[:t.start()] + text[t.end():]
        elif kind == 1:  # duplicate a line
            i = rnd.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif kind == 2:  # replace a number with an extreme
            nums = list(re.finditer(r"\d+(\.\d+)?(e-?\d+)?", text))
            if nums:
                t = rnd.choice(nums)
                text = text[:t.start()] + rnd.choice(_EXTREME) + text[t.end():]
        elif kind == 3:  # replace an identifier with another one of the file
            ids = list(re.finditer(r"[A-Za-z_]\w*", text))
            if ids:
                t, u = rnd.choice(ids), rnd.choice(ids)
                text = text[:t.start()] + u.group() + text[t.end():]
        elif kind == 4:  # insert a token
            i = rnd.randrange(len(text) + 1)
            text = text[:i] + rnd.choice(_INSERT) + text[i:]
        elif kind == 5:  # truncate
            text = text[:rnd.randrange(len(text) + 1)]
        elif kind == 6:  # swap two lines
            i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == 7:  # delete a line
            del lines[rnd.randrange(len(lines))]
            text = "\n".join(lines)
        elif kind == 8:  # change an option's value
            opts = list(re.finditer(r"(\w+)=([^\s)]+)", text))
            if opts:
                t = rnd.choice(opts)
                text = text[:t.start(2)] + rnd.choice(_EXTREME + ("same", "valid", "floor", "true")) + text[t.end(2):]
        elif kind == 9:  # flip a character
            if text:
                i = rnd.randrange(len(text))
                text = text[:i] + chr(rnd.randrange(32, 127)) + text[i + 1:]
        else:  # repeat a line many times
            i = rnd.randrange(len(lines))
            lines[i:i + 1] = [lines[i]] * rnd.choice((10, 100, 1000))
            text = "\n".join(lines)
    blob = text.encode("utf-8", errors="surrogatepass")
    if rnd.random() < 0.05:  # a raw byte that is not UTF-8
        i = rnd.randrange(len(blob) + 1)
        blob = blob[:i] + bytes([rnd.randrange(128, 256)]) + blob[i:]
    return blob


def group_fuzz(a, ex, **_):
    g = "fuzz"
    per_file = int(os.environ.get("AUDIT_FUZZ_PER_FILE", "40"))
    for src in sorted(ex.glob("*.cnn")):
        text = src.read_text()
        rnd = random.Random(f"{src.name}-{per_file}")
        for i in range(per_file):
            path = write(a.p("models", "fuzz", f"{src.stem}_{i:03d}.cnn"), mutate(text, rnd))
            a.add(g, f"{src.stem} #{i}", ["check", path], "any")


# ---------------------------------------------------------------------------- summary

def summarize(a: Audit) -> str:
    by_group: dict[str, dict[str, int]] = {}
    for r in a.results:
        by_group.setdefault(r["group"], {c: 0 for c in CLASSES})[r["cls"]] += 1
    total = {c: sum(g[c] for g in by_group.values()) for c in CLASSES}
    cols = ["clean error", "internal error", "traceback", "crash", "hang", "memory", "wrong success", "ok"]
    cols += [c for c in ("wrong failure", "other", "skipped") if total[c]]
    heads = {"clean error": "clean errors", "internal error": "internal errors", "traceback": "tracebacks",
             "crash": "crashes", "hang": "hangs", "memory": "memory", "wrong success": "wrong successes",
             "ok": "ok", "wrong failure": "wrong failures", "other": "other", "skipped": "skipped"}
    secs = sum(r["seconds"] for r in a.results)
    lines = ["# cnndsl reliability audit", "",
             f"- repository: `{a.repo}` (commit {getattr(a, 'commit', '?')}; imports `{a.cnndsl_file}`)",
             f"- {len(a.results)} cases, {time.time() - a.started:.0f} s wall ({secs:.0f} s of case time, "
             f"--jobs {a.jobs}), address-space limit {a.mem / GIB:g} GiB per case",
             f"- re-run: `python benchmarks/reliability_audit.py --repo {a.repo} --out DIR --jobs {a.jobs}`", "",
             "| group | cases | " + " | ".join(heads[c] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for group in list(dict.fromkeys(r["group"] for r in a.results)):
        row = by_group[group]
        lines.append(f"| {group} | {sum(row.values())} | " + " | ".join(str(row[c]) for c in cols) + " |")
    lines.append(f"| **total** | **{len(a.results)}** | " + " | ".join(f"**{total[c]}**" for c in cols) + " |")
    lines += ["", "## Cases that are neither `ok` nor `clean error`", ""]
    order = {r["group"]: i for i, r in enumerate(a.results)}
    bad = sorted((r for r in a.results if r["cls"] in BAD or r["cls"] == "skipped"),
                 key=lambda r: (order[r["group"]], r["cls"], r["name"]))
    group = None
    for r in bad:
        if r["group"] != group:
            group = r["group"]
            lines += ["", f"### {group}", ""]
        msg = (r["stderr_tail"] or r["stderr_head"] or [""])[-1] if r["cls"] == "crash" else \
            (r["stderr_head"] or [""])[0]
        if r["cls"] in ("internal error", "traceback", "memory"):
            msg = next((ln for ln in reversed(r["stderr_head"] + r["stderr_tail"])
                        if "Error" in ln or "error" in ln), msg)
        if r["cls"] == "crash" and isinstance(r["rc"], int) and r["rc"] < 0 and not msg:
            msg = f"killed by {signal.Signals(-r['rc']).name}"
        if r["cls"] == "wrong success":
            msg = (r.get("stdout_head") or [""])[0] or msg
        lines.append(f"- **{r['cls']}** ({r['rc']}, {r['seconds']} s) {r['name']}: `{msg[:160]}`")
    lines += ["", "## Commands of the failing cases", ""]
    for r in bad:
        lines.append(f"- {r['group']} / {r['name']} ({r['cls']}): `{r['command']}`")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where results.json, summary.md, logs/ and work/ go")
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="the checkout under test")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs `-m cnndsl`")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (after the controls)")
    ap.add_argument("--only", action="append", default=None, help="groups to run (comma-separated, repeatable); "
                    "the controls always run")
    ap.add_argument("--mem-gib", type=float, default=4.0, help="RLIMIT_AS of every case (GiB)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)
    a = Audit(args)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.work.exists():
        for p in a.work.rglob("*"):  # a previous run's read-only or odd leftovers
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(a.work)
    if a.logs.exists():
        shutil.rmtree(a.logs)
    a.logs.mkdir(parents=True)
    only = None if not args.only else {g.strip() for item in args.only for g in item.split(",") if g.strip()}

    probe = subprocess.run([a.py, "-c", "import cnndsl; print(cnndsl.__file__)"], cwd=a.repo, env=a.env(),
                           capture_output=True, text=True)
    a.cnndsl_file = probe.stdout.strip()
    print(f"cnndsl under test: {a.cnndsl_file or probe.stderr.strip()}", flush=True)
    if not a.cnndsl_file.startswith(str(a.repo) + os.sep):
        print(f"error: {a.py} imports cnndsl from {a.cnndsl_file!r}, not from {a.repo}", file=sys.stderr)
        return 1
    a.commit = subprocess.run(["git", "-C", str(a.repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or None
    t0 = time.time()
    build(a, only)
    print(f"{len(a.cases)} cases generated in {time.time() - t0:.0f} s under {a.work}", flush=True)
    if args.list:
        for c in a.cases:
            print(f"{c.group:12s} {c.expect:4s} {c.name}")
        return 0
    controls = [c for c in a.cases if c.group == "controls"]
    rest = [c for c in a.cases if c.group != "controls"]
    # The first control compiles the training kernels alone; the other fixtures then run side by side.
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for batch in (controls[:1], controls[1:4], controls[4:] + rest):
            futures = [pool.submit(a.run_case, c) for c in batch]
            for f in as_completed(futures):
                a.finish(f.result())
    a.results.sort(key=lambda r: r["index"])
    a.write()
    (a.out / "summary.md").write_text(summarize(a))
    print((a.out / "summary.md").read_text().split("\n## ")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
