"""Hostile input files, one test per defence (issue 13): special files (FIFOs, devices, sockets),
lying headers, decompression bombs, NaN/infinity, checkpoints given as weights, byte-identical
weights files, and long lists cut short. Each asserts the error's key words, not just "no crash".

Readers are called in-process under a SIGALRM watchdog, so a reader that blocks on a FIFO fails
the test instead of hanging the suite."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnndsl.cli.inspect  # noqa: F401  (registers check)
import cnndsl.cli.train  # noqa: F401  (registers eval, predict)
import cnndsl.io.files as files
from cnndsl.cli.main import cli
from cnndsl.data.formats import load_npz_dataset
from cnndsl.data.formats import load_cifar10_bin, load_dataset, load_idx, load_image_folder
from cnndsl.diagnostics import CnnError
from cnndsl.frontend.parser import read_source
from cnndsl.io.images import decode_image, load_image
from cnndsl.io.weights import _encode, load_checkpoint, load_weights, save_checkpoint, save_weights
from tests.reliability_testutil import watchdog

ROOT = Path(__file__).resolve().parent.parent
LENET = str(ROOT / "examples" / "lenet5.cnn")


def refused(fn, *args, **kw) -> str:
    with watchdog(), pytest.raises(CnnError) as e:
        fn(*args, **kw)
    return str(e.value)


@pytest.fixture()
def small_budget(monkeypatch):
    """A 1 MiB memory budget, so that budget checks can be tested with small files."""
    monkeypatch.setattr(files, "memory_budget", lambda: (1 << 20, "a 1 MiB test budget"))


# ---------------------------------------------------------------------------- special files
def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture()
def specials(tmp_path):
    """(path, kind words) for a FIFO, a socket, /dev/zero and /dev/urandom."""
    out = [(make_fifo(tmp_path / "fifo"), "is a FIFO, not a regular file")]
    sock_path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    out.append((sock_path, "is a socket, not a regular file"))
    for dev in ("/dev/zero", "/dev/urandom"):
        if os.path.exists(dev):
            out.append((Path(dev), "is a character device, not a regular file"))
    yield out
    s.close()


def test_special_files_are_refused_by_every_reader(specials, tmp_path):
    readers = [
        ("model file", lambda p: read_source(p)),
        ("weights file", lambda p: load_weights(p)),
        ("data file", lambda p: load_npz_dataset(p, (1, 28, 28))),
        ("data file", lambda p: load_dataset(str(p), (1, 28, 28))),
        ("IDX images file", lambda p: load_idx(p, p)),
        ("CIFAR-10 batch file", lambda p: load_cifar10_bin(p)),
        ("image file", lambda p: load_image(p, (1, 28, 28))),
        ("image file", lambda p: decode_image(p)),
    ]
    for path, words in specials:
        for what, read in readers:
            msg = refused(read, path)
            assert f"{path}: error: {what} {words}" in msg, msg
            assert "found: a " in msg


def test_special_files_under_image_names_and_in_folders(tmp_path):
    make_fifo(tmp_path / "digit.png")
    make_fifo(tmp_path / "digit.npy")
    for name in ("digit.png", "digit.npy"):
        msg = refused(load_image, tmp_path / name, (1, 28, 28))
        assert "image file is a FIFO, not a regular file" in msg and name in msg
    folder = tmp_path / "imgs"
    (folder / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "cat" / "a.png")
    make_fifo(folder / "cat" / "b.png")  # not skipped in silence: refused
    msg = refused(load_image_folder, folder, (1, 8, 8))
    assert "b.png: error: image file is a FIFO, not a regular file" in msg


def test_fifo_checkpoint_is_refused(tmp_path):
    make_fifo(tmp_path / "checkpoint.safetensors")
    assert "checkpoint file is a FIFO, not a regular file" in refused(load_checkpoint, tmp_path)


def test_cli_check_on_a_fifo_and_dev_zero_exits_1_at_once(tmp_path):
    fifo = make_fifo(tmp_path / "net.cnn")
    r = subprocess.run([sys.executable, "-m", "cnndsl", "check", str(fifo), "/dev/zero"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    out = r.stdout + r.stderr
    assert f"{fifo}: error: model file is a FIFO, not a regular file" in out
    assert "/dev/zero: error: model file is a character device, not a regular file" in out
    assert "Traceback" not in out and "internal error" not in out


# ---------------------------------------------------------------------------- safetensors headers
def st_file(path: Path, header, data: bytes = b"", raw_header: bytes | None = None) -> Path:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, words", [
    ({"a": entry(shape=[2 ** 64])}, b"\0" * 8, "tensor 'a' has the wrong byte size"),
    ({"a": entry(shape=[2 ** 62, 4], offsets=[0, 2 ** 66])}, b"\0" * 8, "file is truncated"),
    ({"a": entry(shape=[-2])}, b"\0" * 8, "bad header entry for tensor 'a'"),
    ({"a": entry(shape=[True, 2])}, b"\0" * 8, "bad header entry for tensor 'a'"),
    ({"a": entry(offsets=[8, 16])}, b"\0" * 8, "file is truncated"),
    ({"a": entry(), "b": entry()}, b"\0" * 8, "tensor 'b' overlaps tensor 'a'"),
    ({"a": entry(offsets=[4, 12])}, b"\0" * 12, "4 bytes before tensor 'a' belong to no tensor"),
    ({"a": entry()}, b"\0" * 12, "4 bytes after the last tensor"),
    ({"a": entry(dtype="F64")}, b"\0" * 8, "tensor 'a' has the wrong byte size"),
    ({"a": entry(dtype="X9")}, b"\0" * 8, "bad header entry for tensor 'a'"),
    ({"a": [1, 2]}, b"", "bad header entry for tensor 'a'"),
    ({"a": entry(offsets=[0, 8, 9])}, b"\0" * 8, "bad header entry for tensor 'a'"),
    ({"__metadata__": {"k": 3}}, b"", "bad __metadata__"),
])
def test_lying_safetensors_headers(tmp_path, header, data, words):
    p = st_file(tmp_path / "w.safetensors", header, data)
    msg = refused(load_weights, p)
    assert str(p) in msg and words in msg, msg


def test_safetensors_depth_bomb_duplicates_and_long_header(tmp_path):
    bomb = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    msg = refused(load_weights, st_file(tmp_path / "deep.safetensors", None, raw_header=bomb))
    assert "its header nests too deeply" in msg
    dup = b'{"a":' + json.dumps(entry()).encode() + b',"a":' + json.dumps(entry()).encode() + b"}"
    msg = refused(load_weights, st_file(tmp_path / "dup.safetensors", None, b"\0" * 8, raw_header=dup))
    assert "the name 'a' appears twice" in msg
    p = tmp_path / "long.safetensors"
    p.write_bytes(struct.pack("<Q", 5000) + b'{"a":')
    msg = refused(load_weights, p)
    assert "file is truncated" in msg and "a 5000-byte JSON header" in msg


def test_weights_larger_than_the_memory_budget_are_refused_before_reading(tmp_path, small_budget):
    p = tmp_path / "big.safetensors"
    save_weights(p, {"a": np.zeros(300_000, np.float32)})
    msg = refused(load_weights, p)
    assert "weights file is too large to load" in msg and "a 1 MiB test budget" in msg
    assert f"{p.stat().st_size:,} bytes" in msg


def test_memory_budget_says_its_figure():
    budget, why = files.memory_budget()
    assert budget > 0 and ("half" in why or "fixed" in why)


# ---------------------------------------------------------------------------- IDX headers and gzip bombs
def idx_header(magic_type: int, dims) -> bytes:
    return bytes([0, 0, magic_type, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def test_idx_dims_whose_product_overflows_int64(tmp_path):
    big = 2 ** 32 - 1
    im = tmp_path / "train-images-idx3-ubyte"
    im.write_bytes(idx_header(8, (big, big, big)) + b"\0" * 64)
    msg = refused(load_idx, im, im)
    # the exact size, not an int64 that wrapped around
    assert "truncated" in msg and f"expected: {big ** 3} data bytes" in msg


def test_gzip_idx_declaring_too_much_is_refused_before_decompressing(tmp_path):
    im = tmp_path / "train-images-idx3-ubyte.gz"
    im.write_bytes(gzip.compress(idx_header(8, (2 ** 31, 28, 28)) + b"\0" * 1000))
    msg = refused(load_idx, im, im)
    assert "IDX images file is too large to load: the header declares 2147483648 images of 28x28" in msg
    assert "expected: at most" in msg and "memory" in msg


def test_gzip_idx_bomb_stops_at_the_declared_size(tmp_path):
    im = tmp_path / "train-images-idx3-ubyte"
    im.write_bytes(idx_header(8, (10, 2, 2)) + b"\0" * 40)
    lb = tmp_path / "train-labels-idx1-ubyte.gz"
    body = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = body.compress(idx_header(8, (10,))) + body.compress(b"\0" * (50 << 20)) + body.flush()
    assert len(blob) < 100_000  # 50 MiB of zeros in a small file
    lb.write_bytes(blob)
    msg = refused(load_idx, im, lb)
    assert "IDX labels file is longer than its header says" in msg
    assert "expected: 10 data bytes" in msg and "more than 10 bytes once decompressed" in msg


def test_idx_within_budget_but_over_it_once_converted(tmp_path, small_budget):
    im = tmp_path / "train-images-idx3-ubyte"
    im.write_bytes(idx_header(8, (300, 28, 28)) + b"\0" * (300 * 784))  # 235 KB raw, 940 KB float32
    msg = refused(load_idx, im, im)
    assert "too large to load: the header declares 300 images of 28x28" in msg and "1 MiB test budget" in msg


def test_cifar_record_size_and_budget(tmp_path, small_budget):
    p = tmp_path / "data_batch_1.bin"
    p.write_bytes(b"\0" * 3073 * 2 + b"\0" * 5)
    assert "truncated or not a CIFAR-10 binary batch" in refused(load_cifar10_bin, p)
    p.write_bytes(b"\0" * 3073 * 100)  # 300 KB of records, 1.2 MB of float32
    assert "CIFAR-10 batch file is too large to load: 100 records" in refused(load_cifar10_bin, p)


# ---------------------------------------------------------------------------- npz
def npz_with(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def lying_npy(data: np.ndarray, shape) -> bytes:
    """The bytes of `data` under a .npy header that declares `shape`."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(data.dtype),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data.tobytes()


def test_npz_member_whose_header_lies(tmp_path):
    lying = lying_npy(np.zeros((2, 28, 28), np.uint8), (99999999999999, 28, 28))
    p = npz_with(tmp_path / "d.npz", {"x.npy": lying, "y.npy": npy_bytes(np.zeros(2, np.int64))})
    msg = refused(load_npz_dataset, p, (1, 28, 28))
    assert "member 'x.npy' does not hold the array its header declares" in msg
    assert "(the zip directory's uncompressed size)" in msg


def test_npz_zip_bomb_is_refused_from_the_declared_sizes(tmp_path, small_budget):
    x = npy_bytes(np.zeros((40, 28, 28), np.float32))  # 125 KB; 250 KB with its float32 copy
    bomb = npy_bytes(np.zeros((8 << 20,), np.uint8))  # 8 MiB of zeros, a few KB deflated
    p = npz_with(tmp_path / "b.npz", {"x.npy": bomb, "y.npy": npy_bytes(np.zeros(8 << 20, np.int64))})
    assert p.stat().st_size < 200_000
    msg = refused(load_npz_dataset, p, (1, 28, 28))
    assert "data file is too large to load" in msg and "1 MiB test budget" in msg
    assert "'x' (8388608) and 'y' (8388608)" in msg
    ok = npz_with(tmp_path / "ok.npz", {"x.npy": x, "y.npy": npy_bytes(np.zeros(40, np.int64))})
    assert len(load_npz_dataset(ok, (1, 28, 28))) == 40


def test_npz_members_that_are_not_arrays_or_are_encrypted(tmp_path):
    p = npz_with(tmp_path / "t.npz", {"x.npy": b"hello world", "y.npy": npy_bytes(np.zeros(2, np.int64))})
    assert "member 'x.npy' is not a NumPy array" in refused(load_npz_dataset, p, (1, 28, 28))
    p = npz_with(tmp_path / "raw.npz", {"x": b"123", "y": b"456"})
    assert "member 'x' is not a NumPy array" in refused(load_npz_dataset, p, (1, 28, 28))
    p = npz_with(tmp_path / "e.npz", {"x.npy": npy_bytes(np.zeros((2, 28, 28), np.uint8)),
                                      "y.npy": npy_bytes(np.zeros(2, np.int64))})
    blob = bytearray(p.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # set the 'encrypted' flag bit on every header
        at = 0
        while (at := blob.find(sig, at)) >= 0:
            flag = 6 if sig == b"PK\x03\x04" else 8
            blob[at + flag] |= 1
            at += 4
    p.write_bytes(bytes(blob))
    msg = refused(load_npz_dataset, p, (1, 28, 28))
    assert "cannot read data file as .npz" in msg and "encrypted" in msg


def test_single_npy_with_a_lying_shape_is_described_not_loaded(tmp_path):
    p = tmp_path / "one.npy"
    p.write_bytes(lying_npy(np.zeros(3, np.float32), (9999999999999,)))
    msg = refused(load_npz_dataset, p, (1, 28, 28))
    assert "single .npy array" in msg and "(9999999999999)" in msg


# ---------------------------------------------------------------------------- images
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height 8-bit grey pixels, without pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 30_000])  # 1.1x Pillow's limit (a warning), 10x (an error)
def test_png_bombs_are_clear_errors(tmp_path, side):
    p = png_header_only(tmp_path / "bomb.png", side, side)
    msg = refused(decode_image, p)
    assert "image is too large to decode safely" in msg and "Pillow's limit" in msg
    # in a folder loaded with resize=True (the path that accepts any size)
    (tmp_path / "f" / "a").mkdir(parents=True)
    png_header_only(tmp_path / "f" / "a" / "bomb.png", side, side)
    msg = refused(load_image_folder, tmp_path / "f", (1, 8, 8), resize=True)
    assert "bomb.png" in msg and "too large to decode safely" in msg


def test_image_much_larger_than_the_input_is_refused_before_decoding(tmp_path):
    p = png_header_only(tmp_path / "big.png", 5000, 4000)  # no pixel data: decoding would fail
    msg = refused(load_image, p, (1, 28, 28))
    assert "wrong size for the network's input (refused before decoding)" in msg
    assert "4000x5000 (height x width) L image" in msg and "resize it to 28x28" in msg


def test_npy_image_headers_checked_before_loading(tmp_path):
    p = tmp_path / "lie.npy"
    p.write_bytes(lying_npy(np.zeros((28, 28), np.uint8), (28, 99)))
    msg = refused(load_image, p, (1, 28, 28))
    assert "cannot read .npy image" in msg and "the header declares" in msg
    p = tmp_path / "huge.npy"
    np.save(p, np.zeros((1, 280, 280), np.uint8))
    msg = refused(load_image, p, (1, 28, 28))
    assert "far larger than the network's input" in msg and "(not loaded)" in msg
    p = tmp_path / "empty.npy"
    p.write_bytes(b"")
    assert "cannot read .npy image" in refused(load_image, p, (1, 28, 28))


def test_nan_in_images_is_refused(tmp_path):
    a = np.full((28, 28), 0.5, np.float32)
    a[3, 4] = np.nan
    np.save(tmp_path / "n.npy", a)
    assert "NaN or infinity" in refused(load_image, tmp_path / "n.npy", (1, 28, 28))
    Image.fromarray(a, "F").save(tmp_path / "n.tiff")
    msg = refused(load_image, tmp_path / "n.tiff", (1, 28, 28))
    assert "n.tiff" in msg and "NaN or infinity" in msg and "1 non-finite values" in msg
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(a, "F").save(tmp_path / "f" / "a" / "n.tiff")
    msg = refused(load_image_folder, tmp_path / "f", (1, 8, 8), resize=True)
    assert "NaN or infinity" in msg


# ---------------------------------------------------------------------------- weights: NaN, checkpoints, lists
def test_nan_weights_name_the_tensor(tmp_path):
    w = {"c1.weight": np.ones((2, 2), np.float32), "c1.bias": np.array([1.0, np.inf], np.float32)}
    save_weights(tmp_path / "w.safetensors", w)
    msg = refused(load_weights, tmp_path / "w.safetensors")
    assert "holds NaN or infinite values in 1 tensor" in msg and "'c1.bias' (1 of 2 values)" in msg


def test_nan_weights_via_init_from(tmp_path):
    from cnndsl.frontend import loads
    from cnndsl.model import Model

    src = "network N {\n  input image: 1x4x4\n  flatten\n  f = dense 3 -> logits\n}\n"
    m = Model(loads(src), seed=0)
    bad = {k: np.full(v.shape, np.nan, np.float32) for k, v in m.state_dict().items()}
    save_weights(tmp_path / "pre.safetensors", bad)
    with pytest.raises(CnnError) as e:
        Model(loads(src + f'train {{\n  init from "{tmp_path / "pre.safetensors"}"\n}}\n'), seed=0)
    assert "NaN or infinite" in str(e.value) and "'f.weight'" in str(e.value)


def test_long_lists_are_abbreviated(tmp_path):
    from cnndsl.io.weights import match_weights

    many = {f"t{i:03d}": np.zeros(1, np.float64) for i in range(50)}
    save_weights(tmp_path / "d.safetensors", many)
    msg = refused(load_weights, tmp_path / "d.safetensors")
    assert "50 tensors of the wrong dtype" in msg and "'t019' is F64" in msg
    assert "'t020'" not in msg and "... and 30 more" in msg
    report = match_weights({f"x{i}": np.zeros(1) for i in range(1000)}, {"a": (1,)})
    with pytest.raises(CnnError) as e:
        report.raise_if_mismatch(tmp_path / "d.safetensors")
    details = e.value.diagnostics[0].details
    assert details[0] == "tensor 'a' is missing from the file"
    assert len(details) == 21 and details[-1] == "... and 981 more"


def test_huge_headers_stay_fast(tmp_path):
    """A header of 60,000 entries with one name twice, and a file of 20,000 unexpected tensors
    against 100 missing ones: both once took minutes (a quadratic search, a difflib hint against
    every name); the watchdog gives each 10 s."""
    import time

    from cnndsl.io.weights import match_weights

    names = [f"t{i}" for i in range(60_000)] + ["t5"]
    text = "{" + ",".join(f'"{n}":' + json.dumps(entry(shape=[0], offsets=[0, 0])) for n in names) + "}"
    msg = refused(load_weights, st_file(tmp_path / "dup.safetensors", None, raw_header=text.encode()))
    assert "the name 't5' appears twice" in msg
    report = match_weights({f"layer{i}.weight": np.zeros(1) for i in range(20_000)},
                           {f"conv{i}.bias": (1,) for i in range(100)})
    start = time.perf_counter()
    with watchdog(), pytest.raises(CnnError) as e:
        report.raise_if_mismatch(tmp_path / "w.safetensors")
    assert time.perf_counter() - start < 2
    assert "100 missing, 20000 unexpected" in str(e.value) and "... and 20,080 more" in str(e.value)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """weights.safetensors and a checkpoint holding the same weights (and I64 optimizer state)."""
    import cnndsl

    d = tmp_path_factory.mktemp("run")
    model = cnndsl.compile(LENET, seed=1)
    model.save_weights(d / "weights.safetensors")
    state = model.state_dict()
    save_checkpoint(d, state, {"step": np.array(7, np.int64), "c1.weight.m": np.zeros_like(state["c1.weight"])},
                    {"epoch": 1, "step": 7, "position": {"epoch": 1, "batch": 0, "step": 7}})
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    np.save(d / "digit.npy", img)
    return d


def test_checkpoint_loads_as_weights(lenet_run):
    w, _ = load_weights(lenet_run / "weights.safetensors")
    c, meta = load_weights(lenet_run / "checkpoint.safetensors")
    assert set(w) == set(c) and all(np.array_equal(w[k], c[k]) for k in w)
    assert meta["format"].startswith("cnndsl-checkpoint")


def test_predict_and_eval_with_a_checkpoint_match_the_weights_file(lenet_run):
    runner = CliRunner()
    out = {}
    for name in ("weights.safetensors", "checkpoint.safetensors"):
        p = runner.invoke(cli, ["predict", LENET, "--weights", str(lenet_run / name), str(lenet_run / "digit.npy")])
        assert p.exit_code == 0, p.output
        e = runner.invoke(cli, ["eval", LENET, "--weights", str(lenet_run / name), "--batch", "500"])
        assert e.exit_code == 0, e.output
        out[name] = (p.output, e.output.split("(")[0])  # without the images/s figure
    assert "wrong dtype" not in out["checkpoint.safetensors"][0]
    assert out["weights.safetensors"] == out["checkpoint.safetensors"]


def test_cli_eval_with_nan_weights_exits_1(lenet_run, tmp_path):
    w, _ = load_weights(lenet_run / "weights.safetensors")
    w["c1.bias"][0] = np.nan
    save_weights(tmp_path / "nan.safetensors", w)
    r = CliRunner().invoke(cli, ["eval", LENET, "--weights", str(tmp_path / "nan.safetensors")])
    assert r.exit_code == 1
    assert "holds NaN or infinite values in 1 tensor" in r.output and "'c1.bias' (1 of 6 values)" in r.output
    assert "accuracy" not in r.output


# ---------------------------------------------------------------------------- byte-identical files
_SAVE = """
import sys, numpy as np
from cnndsl.io.weights import save_checkpoint, save_weights
t = {f"layer{i}.weight": np.arange(i + 3, dtype=np.float32) for i in range(12)}
t["step"] = np.array(5, np.int64)
save_weights(sys.argv[1] + "/w.safetensors", t,
             {k: k * 2 for k in ("network", "format", "zeta", "alpha", "epoch", "m", "q")})
w = {k: v for k, v in t.items() if k != "step"}
save_checkpoint(sys.argv[1], w, {"step": np.array(5, np.int64), "layer0.weight.m": w["layer0.weight"]},
                {"epoch": 1, "step": 5, "position": {"epoch": 1, "batch": 0, "step": 5}, "zeta": 1, "alpha": 2})
"""


def test_identical_saves_are_byte_identical_across_processes(tmp_path):
    digests = set()
    for seed in ("1", "2", "3"):  # hash randomization changes a hash map's order between processes
        out = tmp_path / seed
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", _SAVE, str(out)], check=True, env=env, timeout=60)
        digests.add(tuple(hashlib.sha256((out / name).read_bytes()).hexdigest()
                          for name in ("w.safetensors", "checkpoint.safetensors")))
    assert len(digests) == 1
    out = out / "w.safetensors"
    blob = out.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    assert n % 8 == 0
    meta = json.loads(blob[8:8 + n])["__metadata__"]
    assert list(meta) == sorted(meta)


def test_writer_matches_the_safetensors_library(tmp_path):
    from safetensors.numpy import load, save

    t = {"z": np.arange(3, dtype=np.uint8), "a": np.ones(2, np.float32), "m": np.arange(2, dtype=np.int64),
         "b": np.zeros((2, 2), np.float64), "c": np.array([True, False]), "h": np.zeros((0, 3), np.float32),
         "g": np.float32(3.5), "k": np.arange(6, dtype=">f4").reshape(2, 3), "é": np.zeros(1, np.int8)}
    for meta in (None, {"network": "x\"é\n"}):  # with one key the library's order is determined
        mine = _encode(t, meta)
        assert mine == save({k: np.asarray(v).astype(np.asarray(v).dtype.newbyteorder("<")) for k, v in t.items()},
                            metadata=meta)
        back = load(mine)
        assert all(np.array_equal(back[k], t[k]) for k in t)
    try:
        import torch  # noqa: F401
        from safetensors.torch import load as torch_load
    except ImportError:
        return
    back = torch_load(_encode({k: v for k, v in t.items() if k not in ("z",)}, {"a": "1", "b": "2"}))
    assert back["k"].tolist() == t["k"].tolist()
