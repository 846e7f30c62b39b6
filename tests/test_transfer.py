"""Transfer learning: `init from`, freeze (by name, block, up_to), reinit, the load report, frozen
batchnorm statistics, and the trainable column of `cnndsl shapes`."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import cnndsl.cli.inspect  # noqa: F401  (registers shapes)
import cnndsl.cli.train  # noqa: F401  (registers train)
from cnndsl.cli.main import cli
from cnndsl.diagnostics import CnnError
from cnndsl.frontend import loads
from cnndsl.model import Model
from cnndsl.train.optim import SGD

NET = """network Small(classes = {classes}) {{
  input image: 1x12x12
  c1 = conv 4 kernel=3 padding=same
  bn1 = batchnorm relu
  maxpool 2
  c2 = conv 6 kernel=3 padding=same
  bn2 = batchnorm relu
  maxpool 2
  flatten
  f3 = dense 16 relu
  {head} = dense classes -> logits
}}
"""


def program(classes=4, head="logits", train="", path="<string>"):
    src = NET.format(classes=classes, head=head)
    if train:
        src += "train {\n" + train + "\n}\n"
    return loads(src, path)


@pytest.fixture()
def pretrained(tmp_path):
    model = Model(program(classes=4), seed=3)
    rng = np.random.default_rng(0)
    for name, buf in model.store.buffers.items():  # non-trivial running statistics
        buf[...] = rng.uniform(0.5, 1.5, buf.shape) if name.endswith("var") else rng.normal(0, 0.3, buf.shape)
    path = tmp_path / "pre.safetensors"
    model.save_weights(path)
    return path, model.store.state_dict()


def data(n=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 12, 12), dtype=np.float32), rng.integers(0, classes, n)


def test_syntax_init_freeze_up_to_reinit():
    p = program(train='init from "w.safetensors"\nfreeze up_to c2\nreinit f3')
    t = p.training
    assert t.init_from == "w.safetensors" and t.reinit == ("f3",)
    assert t.freeze == ("c1", "bn1", "c2") and t.freeze_up_to == ("c2",) and t.freeze_stats
    assert program(train='init "w.safetensors"').training.init_from == "w.safetensors"  # `from` is optional
    q = program(train="freeze f3 up_to bn1 stats=false").training
    assert q.freeze == ("f3", "c1", "bn1") and not q.freeze_stats


@pytest.mark.parametrize("line,code,text", [
    ("freeze up_to", "missing-option", "needs a layer name after it"),
    ("freeze up_to cc2", "unknown-layer", "did you mean 'c2'"),
    ("reinit f33", "unknown-layer", "did you mean 'f3'"),
    ("reinit", "missing-option", "reinit needs"),
    ("init from", "missing-option", "init from needs"),
    ("init from 3", "bad-value", "quoted path"),
])
def test_syntax_errors(line, code, text):
    with pytest.raises(CnnError) as e:
        program(train=line)
    d = e.value.diagnostics[0]
    assert d.code == code and text in (d.message + " " + (d.help or ""))


def test_new_head_by_new_name_just_works(pretrained):
    path, before = pretrained
    m = Model(program(classes=3, head="head3", train=f'init from "{path}"'), seed=0)
    r = m.init_report
    assert set(r.loaded) == {k for k in before if not k.startswith("logits.")}
    assert [n for n, _ in r.new] == ["head3.weight", "head3.bias"]
    assert sorted(n for n, _ in r.skipped) == ["logits.bias", "logits.weight"]
    text = "\n".join(r.lines())
    assert "loaded 14 tensors" in text and "newly initialized 2" in text and "skipped 2" in text
    after = m.store.state_dict()
    for k in r.loaded:
        assert np.array_equal(after[k], before[k])
    fresh = Model(program(classes=3, head="head3"), seed=0).store.state_dict()
    assert np.array_equal(after["head3.weight"], fresh["head3.weight"])  # the seed's initialization


def test_shape_mismatch_is_an_error_with_both_shapes_and_the_line(pretrained):
    path, _ = pretrained
    with pytest.raises(CnnError) as e:
        Model(program(classes=3, train=f'init from "{path}"', path="ft.cnn"))
    first, layer = e.value.diagnostics[:2]
    assert first.code == "init-mismatch" and "nothing was loaded" in first.message
    assert str(first.span) == "ft.cnn:14:1"  # the init line
    assert any("logits.weight: file (4, 16), network (3, 16)" in d for d in first.details)
    assert layer.span.line == 11 and "ft.cnn:11" in str(layer.span)  # the head's line
    assert "(3, 16) here but (4, 16)" in layer.message and "reinit logits" in layer.help


def test_reinit_takes_a_changed_head_fresh(pretrained):
    path, before = pretrained
    m = Model(program(classes=3, train=f'init from "{path}"\nreinit logits'), seed=0)
    assert [n for n, _ in m.init_report.reinit] == ["logits.weight", "logits.bias"]
    assert np.array_equal(m.store.state_dict()["c2.weight"], before["c2.weight"])


def test_a_file_sharing_nothing_is_an_error(tmp_path):
    from cnndsl.io.weights import save_weights

    save_weights(tmp_path / "other.safetensors", {"x.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(CnnError) as e:
        Model(program(train=f'init from "{tmp_path / "other.safetensors"}"'))
    assert e.value.diagnostics[0].code == "init-nothing"


def test_relative_path_beside_the_model_file(tmp_path, pretrained, monkeypatch):
    path, _ = pretrained
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pre.safetensors").write_bytes(path.read_bytes())
    monkeypatch.chdir(tmp_path)
    p = program(head="h2", train='init from "pre.safetensors"', path=str(tmp_path / "sub" / "m.cnn"))
    assert Model(p).init_report.loaded


def _train(model, steps=4):
    model.set_optimizer(SGD(model.store.params, lr=0.1, momentum=0.9))
    x, y = data(classes=3)
    for step in range(steps):
        model.train_step(x, y, step)


def test_frozen_layers_and_batchnorm_statistics_stay_bit_exact(pretrained):
    path, before = pretrained
    m = Model(program(classes=3, head="head3", train=f'init from "{path}"\nfreeze up_to bn2'), seed=0)
    assert m.graph.node("bn1").meta.get("frozen_statistics") and m.graph.node("bn2").meta.get("frozen_statistics")
    _train(m)
    after = m.store.state_dict()
    for k in ("c1.weight", "c1.bias", "bn1.gamma", "bn1.beta", "bn1.running_mean", "bn1.running_var",
              "c2.weight", "bn2.running_mean", "bn2.running_var"):
        assert np.array_equal(after[k], before[k]), k
    assert not np.array_equal(after["f3.weight"], before["f3.weight"])  # the rest trains


def test_stats_false_lets_frozen_batchnorm_update(pretrained):
    path, before = pretrained
    m = Model(program(classes=3, head="head3", train=f'init from "{path}"\nfreeze up_to bn2 stats=false'), seed=0)
    assert not m.graph.node("bn1").meta.get("frozen_statistics")
    _train(m)
    after = m.store.state_dict()
    assert np.array_equal(after["c1.weight"], before["c1.weight"])
    assert np.array_equal(after["bn1.gamma"], before["bn1.gamma"])
    assert not np.array_equal(after["bn1.running_mean"], before["bn1.running_mean"])


def test_frozen_statistics_in_evaluation_mode_match_inference(pretrained):
    path, _ = pretrained
    m = Model(program(classes=3, head="head3", train=f'init from "{path}"\nfreeze up_to bn2'), seed=0)
    x, _ = data()
    # a frozen-statistics batchnorm normalizes training batches like inference does
    m.set_optimizer(SGD(m.store.params, lr=0.0))
    _, outs = m.train_step(x, data(classes=3)[1], 0)
    train_logits = outs["logits"].copy()
    assert np.allclose(train_logits, m.predict(x)["logits"], atol=1e-5)


def test_frozen_batchnorm_behind_a_trainable_layer_is_refused(pretrained):
    with pytest.raises(CnnError) as e:
        Model(program(train="freeze bn2"))
    d = e.value.diagnostics[0]
    assert d.code == "freeze-stats" and "'c1'" in d.message and "stats=false" in d.help
    Model(program(train="freeze bn2 stats=false"))  # fine: batch statistics, their gradient is exact


def test_shapes_shows_trainable(tmp_path):
    f = tmp_path / "m.cnn"
    f.write_text(NET.format(classes=3, head="logits") + "train {\n  freeze up_to c2\n}\n")
    r = CliRunner().invoke(cli, ["shapes", str(f), "--json"])
    assert r.exit_code == 0, r.output
    import json

    rows = {row["name"]: row for row in json.loads(r.output)}
    assert not rows["c1"]["trainable"] and not rows["bn1"]["trainable"] and not rows["c2"]["trainable"]
    assert rows["bn2"]["trainable"] and rows["f3"]["trainable"]
    r = CliRunner().invoke(cli, ["shapes", str(f)])
    assert "Trainable" in r.output and "Non-trainable params: 270" in r.output


def test_cli_train_with_mismatched_weights_exits_1(tmp_path, pretrained):
    path, _ = pretrained
    f = tmp_path / "ft.cnn"
    f.write_text(NET.format(classes=3, head="logits") + f'train {{\n  init from "{path}"\n  epochs 1\n}}\n')
    r = CliRunner().invoke(cli, ["train", str(f), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "ft.cnn:14:3: error: init from" in r.stderr and "file (4, 16), network (3, 16)" in r.stderr
    assert "ft.cnn:11:3: error: layer 'logits'" in r.stderr


def test_a_file_with_thousands_of_other_tensors_reports_in_a_few_lines():
    """The report lists at most 20 names per kind and says how many more (issue 13)."""
    from cnndsl.tasks.transfer import TransferReport

    report = TransferReport("w.safetensors", loaded=["c1.weight"],
                            skipped=[(f"extra{i}.weight", (3,)) for i in range(5000)],
                            mismatched=[(f"m{i}.weight", (1,), (2,)) for i in range(30)])
    lines = report.lines()
    assert len(lines) == 2 + 1 + 20 + 1
    assert lines[2].startswith("  skipped 5000 (in the file, not in this network): extra0.weight (3,), ")
    assert lines[2].endswith("... and 4,980 more") and lines[-1] == "  ... and 10 more shape mismatches"
