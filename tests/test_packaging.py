"""A non-editable install finds the grammar and the bundled digits (the wheel carries both)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return next(out.glob("cnndsl-*.whl"))


def test_wheel_carries_the_grammar_and_the_digits(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "cnndsl/grammar/cnn.lark" in names
    assert "cnndsl/data/digits.npz" in names


def test_installed_package_checks_a_model_outside_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    code = ("import cnndsl, cnndsl.frontend.parser as p; "
            "assert str(cnndsl.__file__).startswith(%r); "
            "prog = cnndsl.load(%r); print(prog.graph.node('c1').type)") % (str(site), str(ROOT / "examples/lenet5.cnn"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "6x28x28"
