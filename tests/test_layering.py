"""No import climbs the pipeline: a module imports only from its own stage or earlier ones.

STAGES is the one statement of the layer order (docs/architecture.md, "Layers", says why each
stage sits where it does). A stage is a list of module prefixes under `cnndsl.`; a module belongs
to the stage of its longest matching prefix, so `ir.graph` (the data structure the op declarations
are written against) can sit below `ops` while the rest of `ir/` (the verifier, the dump, the dot
view: readers of the op registry) sits above it. Every import counts, the ones inside functions
too: an import moved into a function still runs, and still makes the lower stage depend on the
higher one. Imports under `if TYPE_CHECKING:` never run and are left out.

When this fails: move what both sides share down (the way FlatParams went to backend/params.py
and the CUDA shim to kernels/cuda/), or, when the order itself is wrong, change STAGES here and
the table in docs/architecture.md together.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnndsl"

STAGES: list[list[str]] = [
    ["diagnostics", "machine", "kernel_cache", "version"],  # messages, the machine's limits, the kernel cache
    ["io"],                                      # files (regular files, budgets), weights, images
    ["kernels"],                                 # array code (Numba, NumPy references): knows no graph
    ["ir.graph"],                                # Graph, Node, TensorType
    ["ops"],                                     # the op registry and every op's declaration
    ["ir", "analysis"],                          # verify/dump/dot; shape inference, the memory plan, summary
    ["augment", "train.schedule", "train.watch", "tasks.metric_kinds"],  # what the training section names
    #                                                                        and declares the options of
    ["frontend"],                                # text -> checked Program
    ["training_graph"],                          # forward graph + losses -> training graph
    ["analysis.memory"],                         # does a model fit (plans the training graph too)
    ["passes"],                                  # the optimization pipeline
    ["backend"],                                 # executables, launchers, the parameter store
    ["data", "distributed", "tasks", "train.metrics"],  # data sets, MPI, task heads and metric arithmetic
    ["train", "backend.compile_pool"],           # the trainer, optimizers, schedules; the compile phase's pool
    ["model"],                                   # the Python API
    ["sweep", "interop", "docs_gen"],            # search spaces, ONNX/Caffe/Darknet, generated docs
    ["cli", "__main__", ""],                     # the command; "" is the package's own __init__
]

# Known climbs, each with its reason; the test fails when one disappears, so the list only shrinks.
# Empty: the last three (passes.fusion -> backend.executor, backend.compile_pool -> model and -> the
# package) were removed by inverting them (docs/architecture.md, "Layers").
ALLOWED: dict[tuple[str, str], str] = {}


def _stage_of(module: str) -> int:
    """The stage of a dotted module name below `cnndsl` ("" is the package itself)."""
    best, found = -1, None
    for i, prefixes in enumerate(STAGES):
        for p in prefixes:
            if (module == p or (p and module.startswith(p + "."))) and len(p) > best:
                best, found = len(p), i
    assert found is not None, f"cnndsl.{module} is in no stage of STAGES"
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str):
    """(imported module below cnndsl, line) for every import of a cnndsl module, nested ones included."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "":
        package = []
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                base = ["cnndsl"] + base
            else:
                base = []
            if node.module:
                names = [".".join(base + [node.module])]
                if names[0] == "cnndsl":  # from cnndsl import x: x may be a module
                    names = ["cnndsl." + a.name for a in node.names]
            else:
                names = [".".join(base + [a.name]) for a in node.names]
        else:
            continue
        for name in names:
            if name == "cnndsl" or name.startswith("cnndsl."):
                yield name[len("cnndsl."):] if name != "cnndsl" else "", node.lineno


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dotted(module: str) -> str:
    return f"cnndsl.{module}" if module else "cnndsl"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, _module_name(path)


def _existing(target: str) -> str:
    """`from cnndsl.x import name` names a module or an attribute of one: keep what exists as a file."""
    parts = target.split(".") if target else []
    while parts:
        p = PACKAGE.joinpath(*parts)
        if p.with_suffix(".py").exists() or (p / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return ""


def climbs():
    found = []
    for path, module in _modules():
        mine = _stage_of(module)
        for target, line in _imports(path, module):
            target = _existing(target)
            theirs = _stage_of(target)
            if theirs > mine:
                found.append((module, target, f"{path.relative_to(PACKAGE.parent)}:{line}",
                              STAGES[mine], STAGES[theirs]))
    return found


def test_every_module_has_a_stage():
    for _, module in _modules():
        _stage_of(module)


def test_no_import_climbs_the_pipeline():
    found = [c for c in climbs() if (c[0], c[1]) not in ALLOWED]
    assert not found, "imports from a later stage (tests/test_layering.py, STAGES):\n" + "\n".join(
        f"  {where}: {_dotted(m)} (stage {s1}) imports {_dotted(t)} (stage {s2})" for m, t, where, s1, s2 in found)


def test_allowed_climbs_still_exist():
    present = {(c[0], c[1]) for c in climbs()}
    gone = [k for k in ALLOWED if k not in present]
    assert not gone, f"these allowed climbs are gone: remove them from ALLOWED: {gone}"


def test_the_check_sees_nested_and_relative_imports(tmp_path, monkeypatch):
    """The walk finds an import inside a function and a relative one (an honest test can fail)."""
    pkg = tmp_path / "cnndsl"
    (pkg / "ir").mkdir(parents=True)
    (pkg / "model.py").write_text("")
    (pkg / "ir" / "__init__.py").write_text("")
    (pkg / "ir" / "graph.py").write_text("def f():\n    from cnndsl.model import Model\n")
    (pkg / "ir" / "dump.py").write_text("from ..model import Model\n")
    (pkg / "ir" / "dot.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cnndsl.model import Model\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    found = {(m, t) for m, t, *_ in climbs()}
    assert found == {("ir.graph", "model"), ("ir.dump", "model")}
