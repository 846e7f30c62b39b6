"""docs/layers.md and the option tables of docs/language.md are generated from the declarations and
must be committed in sync."""
from __future__ import annotations

from cnndsl.docs_gen import DOC_PATH, documented_ops, render
from cnndsl.ops.registry import all_ops


def test_layers_md_is_in_sync():
    assert DOC_PATH.read_text() == render(), "docs/layers.md is stale: run `python -m cnndsl.docs_gen`"


def test_every_layer_is_documented():
    names = {op.name for op in documented_ops()}
    for op in all_ops().values():
        if op.name in names:
            assert op.doc and op.shape_doc and op.flops_doc, op.name
            for a in op.attrs:
                assert a.doc, f"{op.name}.{a.name} has no doc"
    for required in ["input", "conv", "conv_transpose", "maxpool", "avgpool", "l2pool", "global_avgpool",
                     "relu", "leaky_relu", "tanh", "sigmoid", "softmax", "dropout", "batchnorm", "dense",
                     "flatten", "upsample", "add", "concat"]:
        assert required in names


def test_language_md_option_tables_are_in_sync():
    """docs/language.md's optimizer, schedule and augmentation tables are generated from their declarations."""
    from cnndsl.docs_gen import LANGUAGE_PATH, render_language

    text = LANGUAGE_PATH.read_text()
    assert text == render_language(text), "docs/language.md is stale: run `python -m cnndsl.docs_gen`"
    assert "| `adamw` | `lr` | 0.001 | > 0 |" in text and "| `plateau` | `factor` | 0.1 | > 0, < 1 |" in text
