"""Reliability: hostile files generated from valid ones, for every reader of user files.

For each reader (npz, IDX plain and gzip, CIFAR-10 .bin, PNG and .npy images, weights,
checkpoints, .cnn models) a small valid file is derived into hostile variants: truncations at
every offset up to 512 then 64 spread offsets, lying headers, decompression bombs, NaN and
out-of-range values, random byte overwrites (hypothesis) and special files. Each variant is
either read correctly (the result passes the reader's sanity check) or refused with a `CnnError`
whose message names the file; any other exception is a defect.

Then a smaller set runs the real command line (`python -m cnndsl check / eval / predict`) in
subprocesses under a 4 GiB address-space limit (RLIMIT_AS) and a timeout, asserting exit 1, an
error message, no "internal error", no traceback and no death by a signal.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnndsl.data.dataset import Dataset
from cnndsl.data.formats import load_cifar10_bin, load_idx, load_npz_dataset
from cnndsl.diagnostics import CnnError
from cnndsl.frontend import load as load_model
from cnndsl.io.images import load_image
from cnndsl.io.weights import load_checkpoint, load_weights, save_checkpoint, save_weights
from tests.reliability_testutil import watchdog

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (1, 6, 6)
MODEL = """network Tiny(classes = 3) {
  input image: 1x6x6
  c1 = conv 2 kernel=3 padding=same relu
  flatten
  f = dense classes -> logits
}
"""


# ---------------------------------------------------------------------------- valid files
def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def lying_npy(data: np.ndarray, shape=None, descr=None, fortran=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {
        "descr": descr or np.lib.format.dtype_to_descr(data.dtype), "fortran_order": fortran,
        "shape": tuple(data.shape if shape is None else shape)})
    return buf.getvalue() + data.tobytes()


def zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def idx(magic_type: int, dims, body: bytes) -> bytes:
    return bytes([0, 0, magic_type, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + body


RNG = np.random.default_rng(0)
X8 = RNG.integers(0, 256, (4, 6, 6), dtype=np.uint8)
Y = np.array([0, 1, 2, 1], np.int64)
NPZ = zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y)})
NPZ_STORED = zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y)}, zipfile.ZIP_STORED)
IDX_IMAGES = idx(8, X8.shape, X8.tobytes())
IDX_LABELS = idx(8, (4,), Y.astype(np.uint8).tobytes())
CIFAR = bytes(np.concatenate([np.array([[3], [7]], np.uint8), RNG.integers(0, 256, (2, 3072), dtype=np.uint8)],
                             axis=1).ravel())
IMG = RNG.integers(0, 256, (6, 6), dtype=np.uint8)


def png_bytes(arr=IMG) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def weights_bytes(tmp: Path, tensors=None) -> bytes:
    p = tmp / "w.safetensors"
    save_weights(p, tensors or {"c1.weight": RNG.normal(size=(2, 1, 3, 3)).astype(np.float32),
                                "c1.bias": np.zeros(2, np.float32),
                                "f.weight": RNG.normal(size=(3, 72)).astype(np.float32),
                                "f.bias": np.zeros(3, np.float32)}, {"network": "Tiny"})
    return p.read_bytes()


def checkpoint_bytes(tmp: Path) -> bytes:
    d = tmp / "ck"
    save_checkpoint(d, {"c1.weight": np.ones((2, 1, 3, 3), np.float32), "f.bias": np.zeros(3, np.float32)},
                    {"step": np.array(3, np.int64), "c1.weight.m": np.zeros((2, 1, 3, 3), np.float32)},
                    {"epoch": 1, "step": 3, "position": {"epoch": 1, "batch": 0, "step": 3}})
    return (d / "checkpoint.safetensors").read_bytes()


# ---------------------------------------------------------------------------- sanity of what was read
def sane_dataset(ds) -> None:
    assert isinstance(ds, Dataset)
    assert ds.x.dtype == np.float32 and ds.x.ndim == 4 and ds.x.shape[1:] in (SHAPE, (3, 32, 32))
    assert np.all(np.isfinite(ds.x))
    assert ds.y.dtype == np.int64 and ds.y.shape == (len(ds.x),) and (ds.y.min(initial=0) >= 0)


def sane_image(x) -> None:
    assert x.dtype == np.float32 and x.shape == SHAPE
    assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1


def sane_weights(result) -> None:
    tensors, meta = result
    assert isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    for arr in tensors.values():
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr))


class Reader:
    """How to read one kind of file (its path given) and what a correct result looks like."""

    def __init__(self, name: str, valid: bytes, read: Callable[[Path], object], sane: Callable,
                 suffix: str = "", prefixes_valid: bool = False):
        self.name, self.valid, self.read, self.sane = name, valid, read, sane
        self.suffix = suffix
        self.prefixes_valid = prefixes_valid  # a truncated file may still be valid (text, CIFAR records)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def readers(workdir) -> dict[str, Reader]:
    good_images, good_labels = workdir / "good-images-idx3-ubyte", workdir / "good-labels-idx1-ubyte"
    good_images.write_bytes(IDX_IMAGES)
    good_labels.write_bytes(IDX_LABELS)
    rs = [
        Reader("npz", NPZ, lambda p: load_npz_dataset(p, SHAPE), sane_dataset, ".npz"),
        Reader("npz-stored", NPZ_STORED, lambda p: load_npz_dataset(p, SHAPE), sane_dataset, ".npz"),
        Reader("idx-images", IDX_IMAGES, lambda p: load_idx(p, good_labels), sane_dataset),
        Reader("idx-labels", IDX_LABELS, lambda p: load_idx(good_images, p), sane_dataset),
        Reader("idx-images-gz", gzip.compress(IDX_IMAGES, mtime=0), lambda p: load_idx(p, good_labels),
               sane_dataset, ".gz"),
        Reader("idx-labels-gz", gzip.compress(IDX_LABELS, mtime=0), lambda p: load_idx(good_images, p),
               sane_dataset, ".gz"),
        Reader("cifar", CIFAR, load_cifar10_bin, sane_dataset, ".bin", prefixes_valid=True),
        Reader("png", png_bytes(), lambda p: load_image(p, SHAPE), sane_image, ".png"),
        Reader("npy-image", npy_bytes(IMG), lambda p: load_image(p, SHAPE), sane_image, ".npy"),
        Reader("npy-float-image", npy_bytes(IMG.astype(np.float32) / 255), lambda p: load_image(p, SHAPE),
               sane_image, ".npy"),
        Reader("weights", weights_bytes(workdir), load_weights, sane_weights, ".safetensors"),
        Reader("checkpoint-as-weights", checkpoint_bytes(workdir), load_weights, sane_weights, ".safetensors"),
        Reader("model", MODEL.encode(), load_model, lambda program: None, ".cnn", prefixes_valid=True),
    ]
    return {r.name: r for r in rs}


def same(a, b) -> bool:
    """Whether two reader results hold the same data."""
    if isinstance(a, Dataset):
        return isinstance(b, Dataset) and same(a.x, b.x) and same(a.y, b.y)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def outcome(reader: Reader, path: Path, what: str, must_fail: bool = False, like=None) -> str:
    """'ok' or 'refused'; anything but a CnnError naming the file fails the test. `must_fail`:
    reading may not succeed, unless `like` is given and the result holds the same data (a PNG cut
    after its last pixel data still decodes)."""
    try:
        with watchdog(20):
            result = reader.read(path)
    except CnnError as e:
        msg = str(e)
        assert e.errors, f"{reader.name} {what}: a CnnError without an error"
        assert str(path) in msg or path.name in msg, f"{reader.name} {what}: the message does not name the file:\n{msg}"
        return "refused"
    except Exception as e:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{reader.name} {what}: {type(e).__name__}: {e}") from e
    assert not must_fail or (like is not None and same(result, like)), \
        f"{reader.name} {what}: read without an error, and not as the whole file reads"
    try:
        reader.sane(result)
    except AssertionError as e:
        raise AssertionError(f"{reader.name} {what}: read, but the result is wrong: {e}") from None
    return "ok"


def write(workdir: Path, reader: Reader, data: bytes, tag: str = "f") -> Path:
    p = workdir / f"{reader.name}-{tag}{reader.suffix}"
    p.write_bytes(data)
    return p


def offsets(n: int) -> list[int]:
    """Every offset up to 512, then 64 spread over the rest."""
    dense = list(range(min(n, 513)))
    if n > 513:
        dense += sorted(set(np.linspace(513, n - 1, 64).astype(int).tolist()))
    return dense


NAMES = ["npz", "npz-stored", "idx-images", "idx-labels", "idx-images-gz", "idx-labels-gz", "cifar", "png",
         "npy-image", "npy-float-image", "weights", "checkpoint-as-weights", "model"]


def test_valid_files_read_correctly(readers, workdir):
    for r in readers.values():
        assert outcome(r, write(workdir, r, r.valid), "as written") == "ok"


@pytest.mark.parametrize("name", NAMES)
def test_truncations_at_every_offset(readers, workdir, name):
    r = readers[name]
    whole = r.read(write(workdir, r, r.valid))
    refusals = 0
    for n in offsets(len(r.valid)):
        p = write(workdir, r, r.valid[:n])
        refusals += outcome(r, p, f"cut to {n} bytes", must_fail=not r.prefixes_valid and n < len(r.valid),
                            like=whole) == "refused"
    assert refusals > 0


@pytest.mark.parametrize("name", NAMES)
def test_random_overwrites(readers, workdir, name):
    r = readers[name]
    head = min(len(r.valid), 256)  # headers live at the start: most overwrites go there

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, len(r.valid) - 1), st.integers(0, 255)), min_size=1, max_size=4),
           st.booleans())
    def run(edits, in_head):
        data = bytearray(r.valid)
        for at, value in edits:
            data[at % head if in_head else at] = value
        outcome(r, write(workdir, r, bytes(data), "h"), f"with bytes {edits} overwritten")

    run()


# ---------------------------------------------------------------------------- lying headers, bombs, values
def st_raw(header: dict | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _e(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


BIG = 2 ** 32 - 1
LYING = {
    "npz": [
        zip_bytes({"x.npy": lying_npy(X8, (10 ** 12, 6, 6)), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": lying_npy(X8, (4, 6, 6), descr="<f8"), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": lying_npy(X8, (4, 6, 6), descr="|O"), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": lying_npy(X8, (4, 6, 6), fortran=True), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(X8), "y.npy": lying_npy(Y, (2 ** 62,))}),
        zip_bytes({"x.npy": b"\x93NUMPY\x01\x00\xff\xff" + b" " * 64, "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": b"\x93NUMPY\x09\x09" + b"\0" * 64, "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(X8.astype(np.float32) * np.nan), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(np.full((4, 6, 6), np.inf, np.float64)), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(np.full((4, 6, 6), 1e300)), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(-Y - 1)}),
        zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y.astype(np.float32) + 0.5)}),
        zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(np.array(["a", "b", "c", "d"]))}),
        zip_bytes({"x.npy": npy_bytes(X8.astype(np.complex64)), "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y), "y": b"junk"}),
        zip_bytes({"x": b"\x93NUMPY", "y.npy": npy_bytes(Y)}),
        zip_bytes({"x.npy": npy_bytes(np.zeros(8 << 20, np.uint8)), "y.npy": npy_bytes(Y)}),  # 8 MiB of zeros
        NPZ.replace(b"x.npy", b"q.npy"),
        NPZ[:len(NPZ) // 2] + NPZ,
        NPZ + NPZ,
        b"PK\x05\x06" + b"\0" * 18,
        b"PK\x03\x04" + b"\xff" * 40,
    ],
    "idx-images": [idx(8, (BIG, BIG, BIG), b"\0" * 16), idx(8, (0, BIG, BIG), b""), idx(8, (4, 0, 6), b""),
                   idx(8, (4, 6, 6, 1), X8.tobytes()), idx(0x0D, (4, 6, 6), X8.tobytes()),
                   idx(8, (5, 6, 6), X8.tobytes()),
                   idx(8, (2, 12, 6), X8.tobytes()), bytes([0, 0, 8, 255]), b"\x80\x04\x95junk", IDX_LABELS],
    "idx-labels": [idx(8, (BIG,), b"\0" * 4), idx(8, (3,), b"\0\1\2"), idx(8, (4,), b"\xff" * 4), IDX_IMAGES,
                   idx(8, (4, 1), b"\0" * 4)],
    "idx-images-gz": [gzip.compress(idx(8, (BIG, BIG, BIG), b"\0" * 64)),
                      gzip.compress(idx(8, (2 ** 31, 28, 28), b"\0" * 1000)),
                      gzip.compress(IDX_IMAGES + b"\0" * (8 << 20)),  # 8 MiB beyond the declared size
                      gzip.compress(IDX_IMAGES[:100]) + gzip.compress(IDX_IMAGES[100:]),  # two members: valid
                      gzip.compress(IDX_IMAGES) + b"garbage after the stream",
                      gzip.compress(IDX_IMAGES)[:-4] + b"\0\0\0\0",  # wrong length in the trailer
                      gzip.compress(IDX_IMAGES)[:-8] + b"\0" * 8],  # wrong CRC
    "cifar": [CIFAR + b"\0", CIFAR[:-1], b"\x0a" + CIFAR[1:], b"\xff" * 3073, b"\0" * 3074 * 2,
              b"\x80\x02junkjunk" + b"\0" * 3063, b"\x1f\x8b" + b"\0" * 3071],
    "png": [],  # filled in below (needs Pillow)
    "npy-image": [lying_npy(IMG, (6, 600)), lying_npy(IMG, (10 ** 15,)), lying_npy(IMG, (6, 6), descr="<f8"),
                  lying_npy(IMG, (6, 6), descr="|O"), lying_npy(IMG, (6, 6), fortran=True),
                  lying_npy(IMG, (1, 1, 1, 1, 36)), lying_npy(IMG, ()), lying_npy(IMG, (6, 6), descr="<c8"),
                  npy_bytes(np.full((6, 6), np.nan, np.float32)), npy_bytes(np.full((6, 6), 2.0)),
                  npy_bytes(np.full((6, 6), -0.5, np.float16)), npy_bytes(np.full((6, 6), 1e300)),
                  npy_bytes(IMG.astype(">u2")), npy_bytes(np.zeros((6, 6), "V4")),
                  b"\x93NUMPY\x03\x00" + struct.pack("<I", 2 ** 31) + b"{}",
                  b"\x93NUMPY\x01\x00" + struct.pack("<H", 20) + b"{'descr': 1}".ljust(20)],
    "weights": [
        st_raw({"a": _e(shape=[2 ** 64])}, b"\0" * 8), st_raw({"a": _e(shape=[2 ** 63, 2])}, b"\0" * 8),
        st_raw({"a": _e(shape=[-1])}, b"\0" * 8), st_raw({"a": _e(shape=[1.5])}, b"\0" * 8),
        st_raw({"a": _e(shape="ab")}, b"\0" * 8), st_raw({"a": _e(offsets=[0, 2 ** 64])}, b"\0" * 8),
        st_raw({"a": _e(offsets=[-8, 0])}, b"\0" * 8), st_raw({"a": _e(offsets=["0", "8"])}, b"\0" * 8),
        st_raw({"a": _e(), "b": _e()}, b"\0" * 8), st_raw({"a": _e(offsets=[8, 16])}, b"\0" * 16),
        st_raw({"a": _e(dtype="BF16", shape=[4])}, b"\0" * 8), st_raw({"a": _e(dtype="F64", shape=[1])}, b"\0" * 8),
        st_raw({"a": _e()}, struct.pack("<ff", np.nan, np.inf)), st_raw({"__metadata__": {"a": 1}}, b""),
        st_raw({"__metadata__": [1]}, b""), st_raw({}, b""), st_raw(b"null", b""), st_raw(b"[]", b""),
        st_raw(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""), st_raw(b'{"a": 1e999999}', b""),
        st_raw(b'{"a": ' + b"9" * 5000 + b"}", b""), st_raw(b"{\"a\": \"\\ud800\"}", b""),
        st_raw(b"{\xff\xfe}", b""), struct.pack("<Q", 2 ** 64 - 1) + b"{}", struct.pack("<Q", 0),
        b"\x80\x02junk", b"PK\x03\x04" + b"\0" * 30,
    ],
    "model": [b"\0" * 10, b"\xff\xfe" + MODEL.encode("utf-16-le"), b"network N {" * 2000, b"(" * 100_000,
              MODEL.encode().replace(b"conv 2", b"conv 99999999999999999999"),
              b"\xef\xbb\xbf" + MODEL.encode(), MODEL.encode() + b"\xc3\x28", b"network \xe2\x80\xae {}\n",
              b"\n" * (17 * 1024 * 1024)],
}
LYING["checkpoint-as-weights"] = LYING["weights"]
LYING["npz-stored"] = [zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y)}, zipfile.ZIP_BZIP2),
                       zip_bytes({"x.npy": npy_bytes(X8), "y.npy": npy_bytes(Y)}, zipfile.ZIP_LZMA)]
LYING["idx-labels-gz"] = [gzip.compress(IDX_LABELS + b"\0" * (8 << 20)), gzip.compress(idx(8, (BIG,), b""))]
LYING["npy-float-image"] = []


def _png_variants() -> list[bytes]:
    good = png_bytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def with_ihdr(width, height, depth=8, colour=0, crc=True) -> bytes:
        ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
        c = chunk(b"IHDR", ihdr) if crc else struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
        return good[:8] + c + good[8 + 25:]

    rgb16 = io.BytesIO()
    Image.fromarray((IMG.astype(np.uint16) * 257)).save(rgb16, "PNG")
    tiff_nan = io.BytesIO()
    Image.fromarray(np.full((6, 6), np.nan, np.float32), "F").save(tiff_nan, "TIFF")
    tiff_big = io.BytesIO()
    Image.fromarray(np.full((6, 6), 7.0, np.float32), "F").save(tiff_big, "TIFF")
    alpha = io.BytesIO()
    Image.fromarray(np.zeros((6, 6, 4), np.uint8), "RGBA").save(alpha, "PNG")
    jpeg = io.BytesIO()
    Image.fromarray(IMG).save(jpeg, "JPEG")
    j = jpeg.getvalue()
    sof = j.find(b"\xff\xc0")
    jpeg_huge = j[:sof + 5] + struct.pack(">HH", 65000, 65000) + j[sof + 9:]
    return [with_ihdr(30000, 30000), with_ihdr(10000, 10000), with_ihdr(2 ** 31 - 1, 1), with_ihdr(0, 0),
            with_ihdr(6, 6, depth=7), with_ihdr(6, 6, colour=5), with_ihdr(6, 6, crc=False), with_ihdr(7, 6),
            rgb16.getvalue(), tiff_nan.getvalue(), tiff_big.getvalue(), alpha.getvalue(), j, jpeg_huge,
            j[:len(j) // 2], b"GIF89a" + b"\xff" * 20, b"BM" + b"\xff" * 60]


LYING["png"] = _png_variants()


@pytest.mark.parametrize("name", NAMES)
def test_lying_headers_bombs_and_bad_values(readers, workdir, name):
    r = readers[name]
    for i, data in enumerate(LYING[name]):
        outcome(r, write(workdir, r, data, f"lie{i}"), f"variant {i} ({data[:24]!r}...)")


def test_special_files(readers, workdir):
    fifo = workdir / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    for r in readers.values():
        for special in (fifo, Path("/dev/zero"), Path("/dev/urandom")):
            if special.exists():
                assert outcome(r, special, f"given {special}", must_fail=True) == "refused"


def test_checkpoint_reader_on_truncations(workdir):
    """load_checkpoint (the checkpoint owner's function) goes through the same file reading and
    header parsing: a cut checkpoint is refused naming it."""
    valid = checkpoint_bytes(workdir)
    d = workdir / "cut"
    d.mkdir(exist_ok=True)
    for n in offsets(len(valid))[::4]:
        (d / "checkpoint.safetensors").write_bytes(valid[:n])
        with watchdog(20), pytest.raises(CnnError) as e:
            load_checkpoint(d)
        assert "checkpoint.safetensors" in str(e.value)


# ---------------------------------------------------------------------------- the command line
LIMIT = 4 * 1024 ** 3  # address space: the import of numpy, numba and llvmlite needs about 1 GiB


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def cnndsl(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cnndsl", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limit, env=env)


@pytest.fixture(scope="module")
def cli_files(workdir):
    d = workdir / "cli"
    d.mkdir()
    model = d / "tiny.cnn"
    model.write_text(MODEL)
    from cnndsl.model import Model
    from cnndsl.frontend import loads

    weights = Model(loads(MODEL), seed=0).state_dict()
    save_weights(d / "w.safetensors", weights)
    blob = (d / "w.safetensors").read_bytes()
    (d / "cut.safetensors").write_bytes(blob[:len(blob) // 2])
    nan = {k: v.copy() for k, v in weights.items()}
    nan["f.weight"][0, 0] = np.nan
    save_weights(d / "nan.safetensors", nan)
    (d / "deep.safetensors").write_bytes(st_raw(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""))
    os.mkfifo(d / "fifo.safetensors")
    os.mkfifo(d / "fifo.cnn")
    os.mkfifo(d / "fifo.png")
    (d / "cut.cnn").write_text(MODEL[:40])
    (d / "bomb.npz").write_bytes(LYING["npz"][0])
    (d / "bomb-images-idx3-ubyte.gz").write_bytes(LYING["idx-images-gz"][1])
    (d / "bomb-labels-idx1-ubyte.gz").write_bytes(gzip.compress(IDX_LABELS))
    (d / "bomb.png").write_bytes(LYING["png"][0])
    np.save(d / "nan.npy", np.full((6, 6), np.nan, np.float32))
    return d


CLI_CASES = [
    ("check", "fifo.cnn", "model file is a FIFO, not a regular file"),  # with /dev/zero and cut.cnn
    ("eval", "cut.safetensors", "weights file is truncated"),
    ("eval", "nan.safetensors", "NaN or infinite values in 1 tensor"),
    ("eval", "deep.safetensors", "header nests too deeply"),
    ("eval", "fifo.safetensors", "weights file is a FIFO, not a regular file"),
    ("eval-data", "bomb.npz", "does not hold the array its header declares"),
    ("eval-data", "bomb-images-idx3-ubyte.gz", "too large to load: the header declares 2147483648 images"),
    ("eval-data", "/dev/urandom", "data file is a character device, not a regular file"),
    ("predict", "fifo.png", "image file is a FIFO, not a regular file"),
    ("predict", "bomb.png", "image is too large to decode safely"),
    ("predict", "nan.npy", "NaN or infinity"),
]


def _run_case(d: Path, case) -> tuple[tuple, subprocess.CompletedProcess]:
    command, target, _ = case
    t = target if target.startswith("/") else d / target
    model, weights = d / "tiny.cnn", d / "w.safetensors"
    if command == "check":
        r = cnndsl("check", t, "/dev/zero", d / "cut.cnn")
    elif command == "eval":
        r = cnndsl("eval", model, "--weights", t)
    elif command == "eval-data":
        r = cnndsl("eval", model, "--weights", weights, "--data", t)
    else:
        r = cnndsl("predict", model, "--weights", weights, t)
    return case, r


def test_cli_refuses_hostile_files_cleanly(cli_files):
    with ThreadPoolExecutor(2) as pool:  # two at a time: the suite runs on two cores
        results = list(pool.map(lambda c: _run_case(cli_files, c), CLI_CASES))
    for (command, target, words), r in results:
        out = r.stdout + r.stderr
        where = f"cnndsl {command} {target}: exit {r.returncode}\n{out[-2000:]}"
        assert r.returncode == 1, where  # not 2 (internal error), not negative (a signal)
        assert "error:" in out and words in out, where
        assert "internal error" not in out and "Traceback" not in out, where
        if command == "check":
            assert "/dev/zero: error: model file is a character device, not a regular file" in out, where
            assert "cut.cnn:2:13: error: the file ends before the closing" in out, where
