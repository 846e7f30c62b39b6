import math
import re

import pytest

from cnndsl.train.schedule import Schedule


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_constant():
    s = Schedule("constant", lr=0.1, epochs=5)
    assert [s.lr_at(e) for e in (0, 1.3, 5)] == [0.1, 0.1, 0.1]


def test_step():
    s = Schedule("step", lr=1.0, epochs=10, step_size=3, gamma=0.5)
    assert s.lr_at(0) == 1.0
    assert s.lr_at(2.99) == 1.0
    assert s.lr_at(3) == 0.5
    assert s.lr_at(6.5) == 0.25
    assert s.lr_at(9.9) == 0.125
    # floating-point epoch positions land on the right side of a boundary
    assert Schedule("step", lr=1.0, epochs=1, step_size=0.1, gamma=0.5).lr_at(0.3) == 0.125


def test_cosine():
    s = Schedule("cosine", lr=0.2, epochs=10)
    assert s.lr_at(0) == approx(0.2)
    assert s.lr_at(5) == approx(0.1)
    assert s.lr_at(10) == approx(0.0)
    assert s.lr_at(2.5) == approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(12) == approx(0.0)  # clamped


def test_warmup_then_cosine():
    s = Schedule("cosine", lr=1.0, epochs=12, warmup=2)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(0.5) == approx(0.25)
    assert s.lr_at(1) == approx(0.5)
    assert s.lr_at(2) == approx(1.0)
    assert s.lr_at(7) == approx(0.5)  # half-way through the 10 cosine epochs
    assert s.lr_at(12) == approx(0.0)


def test_warmup_constant_and_step():
    s = Schedule("constant", lr=0.4, epochs=5, warmup=1)
    assert s.lr_at(0.25) == approx(0.1) and s.lr_at(1) == 0.4 and s.lr_at(3) == 0.4
    s = Schedule("step", lr=1.0, epochs=10, warmup=1, step_size=4, gamma=0.1)
    assert s.lr_at(0.5) == approx(0.5) and s.lr_at(1) == 1.0 and s.lr_at(4) == approx(0.1)


def test_per_step_uses_midpoints():
    s = Schedule("cosine", lr=1.0, epochs=2, warmup=1)
    first = s.lr_for_step(0, 0, 10)
    assert first == approx(0.05)  # never zero at the first step
    assert s.lr_for_step(1, 9, 10) > 0  # nor at the last
    lrs = [s.lr_for_step(e, b, 10) for e in range(2) for b in range(10)]
    assert lrs[:10] == sorted(lrs[:10])  # rising during warm-up
    assert lrs[10:] == sorted(lrs[10:], reverse=True)  # falling afterwards
    st = Schedule("step", lr=1.0, epochs=4, step_size=1, gamma=0.5)
    assert st.lr_for_step(0, 9, 10) == 1.0 and st.lr_for_step(1, 0, 10) == 0.5
    assert st.lr_for_epoch(2) == 0.25


def test_validation():
    with pytest.raises(ValueError):
        Schedule("linear")
    with pytest.raises(ValueError):
        Schedule("cosine", epochs=2, warmup=2)
    with pytest.raises(ValueError):
        Schedule("step", step_size=0)
    with pytest.raises(ValueError):
        Schedule("constant", epochs=0)
    assert Schedule("cosine", 0.1, 3).lr_at(0) == 0.1


def _out_of_range(attr):
    """A value the declared option refuses (None when it has no bound to cross)."""
    for bound, step in ((attr.minimum, -1), (attr.above, 0), (attr.below, 0), (attr.maximum, 1)):
        if bound is not None:
            v = bound + step
            return int(v) if attr.kind == "int" else float(v)
    return None


def test_schedule_checks_are_the_declared_attrs():
    """One check: each option out of its declared range is refused by Schedule with the Attr's own
    words (the words a .cnn file gets too), for every kind; an option of another kind is refused."""
    from cnndsl.train.schedule import OPTIONS, PYTHON_WIDER

    tried = 0
    for kind, options in OPTIONS.items():
        for name, attr in options.items():
            attr = PYTHON_WIDER.get(name, attr)
            bad = _out_of_range(attr)
            if bad is None:
                continue
            with pytest.raises(ValueError) as e:
                attr.coerce(bad)
            with pytest.raises(ValueError, match="^schedule " + kind + ": " + re.escape(str(e.value)) + "$"):
                Schedule(kind, lr=0.1, epochs=10, **{name: bad})
            tried += 1
    assert tried >= 10
    with pytest.raises(ValueError, match="schedule constant: it has no option gamma"):
        Schedule("constant", gamma=0.5)


def test_a_file_gets_the_same_words_with_its_span():
    from cnndsl.diagnostics import CnnError
    from cnndsl.frontend import loads

    src = "network N {\n input x: 4\n dense 2 -> out\n}\ntrain {\n  schedule step gamma=2\n}\n"
    with pytest.raises(CnnError) as e:
        loads(src, "s.cnn")
    d = e.value.diagnostics[0]
    assert "gamma must be at most 1, got 2" in d.message and d.span.line == 6
    with pytest.raises(ValueError, match="schedule step: gamma must be at most 1, got 2"):
        Schedule("step", gamma=2.0)
