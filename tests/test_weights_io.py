import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cnndsl.diagnostics import CnnError
from cnndsl.io.atomic import atomic_write_bytes, atomic_writer
from cnndsl.io.weights import (load_checkpoint, load_weights, match_weights, save_checkpoint,
                               save_weights)

REPO = Path(__file__).resolve().parents[1]


def tensors():
    rng = np.random.default_rng(0)
    return {"c1.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "c1.bias": rng.standard_normal(4).astype(np.float32),
            "fc.weight": rng.standard_normal((10, 16)).astype(np.float32)}


def message(err: CnnError) -> str:
    return str(err)


# ------------------------------------------------------------------ atomic writes

def test_atomic_write_bytes_replaces(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_writer_keeps_old_file_when_writer_raises(tmp_path):
    p = tmp_path / "metrics.json"
    p.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic_writer(p, "w") as f:
            f.write('{"new": ')
            f.flush()
            raise RuntimeError("boom midway")
    assert p.read_text() == '{"old": true}'
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.json"]  # no temp left behind


def test_atomic_writer_new_file_absent_after_failure(tmp_path):
    p = tmp_path / "sub" / "x.png"
    with pytest.raises(ValueError):
        with atomic_writer(p) as f:
            f.write(b"\x89PNG")
            raise ValueError
    assert not p.exists()


def test_atomic_writer_text_mode(tmp_path):
    p = tmp_path / "t.json"
    with atomic_writer(p, "w") as f:
        json.dump({"a": 1}, f)
    assert json.loads(p.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# ------------------------------------------------------------------ weights

def test_roundtrip_with_metadata(tmp_path):
    p = tmp_path / "w.safetensors"
    t = tensors()
    save_weights(p, t, {"model": "lenet"})
    loaded, meta = load_weights(p)
    assert list(loaded) == list(t) or set(loaded) == set(t)
    for k in t:
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], t[k])
    assert meta == {"model": "lenet"}


def test_file_is_standard_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(p, tensors())
    from safetensors.numpy import load_file
    other = load_file(str(p))
    np.testing.assert_array_equal(other["fc.weight"], tensors()["fc.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(CnnError) as e:
        load_weights(tmp_path / "nope.safetensors")
    assert "does not exist" in message(e.value) and "nope.safetensors" in message(e.value)
    assert e.value.errors[0].code == "weights-missing"


def test_directory(tmp_path):
    with pytest.raises(CnnError) as e:
        load_weights(tmp_path)
    assert "directory" in message(e.value)


@pytest.mark.parametrize("content,code", [
    (b"", "weights-format"),
    (b"abc", "weights-format"),
    (b"PK\x03\x04" + b"\0" * 40, "weights-format"),
    (b"hello world, this is text", "weights-format"),
])
def test_not_safetensors(tmp_path, content, code):
    p = tmp_path / "w.safetensors"
    p.write_bytes(content)
    with pytest.raises(CnnError) as e:
        load_weights(p)
    assert e.value.errors[0].code == code
    assert "not a safetensors file" in message(e.value)


def test_npz_is_not_safetensors(tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(CnnError) as e:
        load_weights(p)
    assert "zip archive" in message(e.value)


@pytest.mark.parametrize("cut", [4, 12, 60, -1, -40])
def test_truncated(tmp_path, cut):
    p = tmp_path / "w.safetensors"
    save_weights(p, tensors())
    blob = p.read_bytes()
    p.write_bytes(blob[:cut])
    with pytest.raises(CnnError) as e:
        load_weights(p)
    code = e.value.errors[0].code
    assert code in ("weights-truncated", "weights-format"), message(e.value)
    if cut > 8:
        assert code == "weights-truncated"
        assert "truncated" in message(e.value)


def test_corrupt_header_json(tmp_path):
    p = tmp_path / "w.safetensors"
    head = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # missing brace
    p.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 8)
    with pytest.raises(CnnError) as e:
        load_weights(p)
    assert e.value.errors[0].code == "weights-corrupt"


def test_corrupt_header_entry(tmp_path):
    p = tmp_path / "w.safetensors"
    head = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 8)
    with pytest.raises(CnnError) as e:
        load_weights(p)
    assert "byte size" in message(e.value)
    head = json.dumps({"a": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 8)
    with pytest.raises(CnnError) as e:
        load_weights(p)
    assert "'a'" in message(e.value)


def test_wrong_dtype(tmp_path):
    p = tmp_path / "w.safetensors"
    t = tensors()
    t["c1.bias"] = t["c1.bias"].astype(np.float64)
    save_weights(p, t)
    with pytest.raises(CnnError) as e:
        load_weights(p)
    msg = message(e.value)
    assert "'c1.bias' is F64" in msg and "F32" in msg
    loaded, _ = load_weights(p, dtype=None)
    assert loaded["c1.bias"].dtype == np.float64


def test_match_weights_report_and_error(tmp_path):
    t = tensors()
    expected = {"c1.weight": (4, 1, 3, 3), "c1.bias": (8,), "fc.weights": (10, 16)}
    r = match_weights(t, expected)
    assert r.loaded == ["c1.weight"]
    assert r.missing == ["fc.weights"]
    assert r.unexpected == ["fc.weight"]
    assert r.mismatched == [("c1.bias", (4,), (8,))]
    assert not r.ok
    with pytest.raises(CnnError) as e:
        r.raise_if_mismatch(tmp_path / "w.safetensors")
    msg = message(e.value)
    assert "tensor 'c1.bias': file has shape (4,), network expects (8,)" in msg
    assert "'fc.weights' is missing" in msg and "did you mean 'fc.weight'" in msg
    assert "w.safetensors" in msg
    ok = match_weights(t, {k: v.shape for k, v in t.items()})
    assert ok.ok
    ok.raise_if_mismatch("x")


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_roundtrip(tmp_path):
    t = tensors()
    opt = {"step": np.array(7, dtype=np.int64), "exp_avg": np.ones(5, np.float32)}
    meta = {"epoch": 3, "step": 120, "seed": 1, "config": {"lr": 0.01, "optimizer": "adam"}}
    path = save_checkpoint(tmp_path / "run", t, opt, meta)
    assert path.name == "checkpoint.safetensors"
    ck = load_checkpoint(tmp_path / "run")
    assert set(ck.tensors) == set(t)
    np.testing.assert_array_equal(ck.tensors["fc.weight"], t["fc.weight"])
    assert int(ck.optimizer_state["step"]) == 7
    assert ck.meta == meta
    # the file is plain safetensors: readable as weights with any dtype
    loaded, md = load_weights(path, dtype=None)
    assert "weights/c1.bias" in loaded and md["format"].startswith("cnndsl-checkpoint")


def test_checkpoint_missing(tmp_path):
    with pytest.raises(CnnError) as e:
        load_checkpoint(tmp_path)
    assert "no checkpoint" in message(e.value)


def test_weights_file_is_not_a_checkpoint(tmp_path):
    save_weights(tmp_path / "checkpoint.safetensors", tensors())
    with pytest.raises(CnnError) as e:
        load_checkpoint(tmp_path)
    assert "not a cnndsl checkpoint" in message(e.value)


def test_sigkill_during_checkpointing_leaves_loadable_checkpoint(tmp_path):
    """A child rewrites a ~4 MB checkpoint in a loop; SIGKILL it at some moment; load."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from cnndsl.io.weights import save_checkpoint
        w = {{"w": np.zeros(1_000_000, np.float32)}}
        i = 0
        while True:
            w["w"][:] = i
            save_checkpoint({str(tmp_path)!r}, w, {{"step": np.array(i)}}, {{"epoch": i}})
            if i == 0:
                print("ready", flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ck = load_checkpoint(tmp_path)
    i = ck.meta["epoch"]
    assert int(ck.optimizer_state["step"]) == i
    assert np.all(ck.tensors["w"] == i)
