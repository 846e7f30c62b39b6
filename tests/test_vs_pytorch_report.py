"""benchmarks/vs_pytorch.py's report arithmetic (no benchmark runs): with --rounds, each side's
figure is the median of its rounds and a ratio is the median of the rounds' own ratios, so a
machine whose speed drifts between the two sides' runs does not decide the ratio."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def vs():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("vs_pytorch_under_test", BENCH / "vs_pytorch.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("vs_pytorch_under_test", None)
        sys.path.remove(str(BENCH))


def _side(scale: float, vs) -> dict:
    return {key: scale * (i + 1) for i, key in enumerate(vs.SPEED_KEYS)}


def test_ratios_are_medians_of_the_rounds_own_ratios(vs):
    # round 2: the machine ran at half speed for PyTorch's run only; a ratio of medians would be
    # 2/1 (medians 2, 1); the median of the rounds' ratios (2, 4, 2) is 2, and its range shows 4
    rounds = [{"cnndsl": _side(2.0, vs), "pytorch": _side(1.0, vs)},
              {"cnndsl": _side(2.0, vs), "pytorch": _side(0.5, vs)},
              {"cnndsl": _side(3.0, vs), "pytorch": _side(1.5, vs)}]
    ours = vs.median_of([r["cnndsl"] for r in rounds])
    theirs = vs.median_of([r["pytorch"] for r in rounds])
    key = vs.SPEED_KEYS[0]
    assert ours[key] == 2.0 and theirs[key] == 1.0
    ours.update(first_step_cold_s=20.0, first_step_warm_s=1.0)
    theirs.update(first_step_cold_s=4.0, first_step_warm_s=2.0)
    rows = {r["key"]: r for r in vs.rows(ours, theirs, rounds)}
    assert rows[key]["round_ratios"] == [2.0, 4.0, 2.0]
    assert rows[key]["ratio"] == 2.0
    assert rows["first_step_cold_s"]["ratio"] == 5.0 and rows["first_step_cold_s"]["round_ratios"] == []
    cells = {c[0]: c for c in vs.table_cells({"figures": list(rows.values())})}
    assert any("[2.00-4.00]" in c[3] for c in cells.values())


def test_without_pytorch_there_is_no_ratio(vs):
    rounds = [{"cnndsl": _side(1.0, vs)}]
    ours = vs.median_of([rounds[0]["cnndsl"]])
    ours.update(first_step_cold_s=20.0, first_step_warm_s=1.0)
    rows = {r["key"]: r for r in vs.rows(ours, None, rounds)}
    for key in vs.SPEED_KEYS:
        assert rows[key]["ratio"] is None and rows[key]["status"] == "no PyTorch"
    assert rows["first_step_cold_s"]["status"] == "missed by 5.0 s"  # cnndsl's own target still judged


def test_warm_start_is_the_median_of_several_processes_and_cold_is_the_first(vs, monkeypatch):
    # one cold process, then WARM_RUNS warm ones sharing its cache: the warm figure is their median
    printed = iter(["12.5", "1.30", "0.80", "0.95", "0.90", "2.10"])
    caches = []

    def fake_run(args, env):
        caches.append(env["NUMBA_CACHE_DIR"])
        return next(printed)

    monkeypatch.setattr(vs, "run_python", fake_run)
    got = vs.first_steps("print(1)", threads=2, warm_runs=5)
    assert got["first_step_cold_s"] == 12.5
    assert got["first_step_warm_s"] == 0.95
    assert got["first_step_warm_runs_s"] == [1.30, 0.80, 0.95, 0.90, 2.10]
    assert len(set(caches)) == 1 and len(caches) == 6
