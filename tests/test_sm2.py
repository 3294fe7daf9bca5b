"""Table-driven test of the seed's SM-2 transitions (plugins/memory/sm2.py)."""
from __future__ import annotations

import pytest

from srscode.core.types import Task
from srscode.plugins.memory.sm2 import SM2Memory, SM2Params

TASK = Task("t1", "q", "def f(): pass", "def test(): pass", pass_percentage=0.25)

# (case, params, [(step, pass_rate), ...], expected fields after the last review)
CASES = [
    ("q4 first review", {}, [(1, 0.8)],
     dict(ef=2.5, streak=1, repeat_fail=0, interval=1, due=2, graduated=False, skipped=False)),
    ("q3 lowers EF", {}, [(1, 0.6)],
     dict(ef=2.36, streak=1, repeat_fail=0, interval=1, due=2)),
    ("q2 incorrect, nonzero rate resets repeat_fail", {}, [(1, 0.0), (2, 0.4)],
     dict(ef=1.96 - 0.32, streak=0, repeat_fail=0, interval=1, due=3)),
    ("q1 zero rate counts a repeat failure", {}, [(1, 0.0)],
     dict(ef=1.96, streak=0, repeat_fail=1, interval=1, due=2)),
    ("just below thresholds", {}, [(1, 0.7999)],
     dict(ef=2.36, streak=1, interval=1)),
    ("perfect graduates at once", {}, [(1, 1.0)],
     dict(graduated=True, streak=1, ef=2.6)),
    ("three correct in a row graduate", {}, [(1, 0.8), (2, 0.9), (4, 0.85)],
     dict(graduated=True, streak=3, interval=4, due=8)),
    ("intervals 1,2,4 then round(interval*EF)", {"graduate_streak": 10},
     [(1, 0.9), (2, 0.9), (4, 0.9), (8, 0.9), (18, 0.9)],
     dict(streak=5, ef=2.5, interval=25, due=43, graduated=False)),
    ("failure resets streak and interval", {"graduate_streak": 10}, [(1, 0.9), (2, 0.9), (4, 0.2)],
     dict(streak=0, interval=1, due=5, repeat_fail=0)),
    ("EF floor 1.3", {}, [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)],
     dict(ef=1.3, repeat_fail=4, skipped=False)),
    ("skip after 5 zero-pass rounds", {}, [(s, 0.0) for s in range(1, 6)],
     dict(skipped=True, repeat_fail=5, graduated=False)),
    ("a nonzero rate in between restarts the zero count", {},
     [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.1), (5, 0.0), (6, 0.0)],
     dict(skipped=False, repeat_fail=2)),
    ("constants are parameters", {"quality_thresholds": [[0.5, 4]], "skip_after_zero_rounds": 2},
     [(1, 0.5), (2, 0.0), (3, 0.0)],
     dict(skipped=True, repeat_fail=2)),
]


@pytest.mark.parametrize("case,params,reviews,expected", CASES, ids=[c[0] for c in CASES])
def test_sm2_transitions(case, params, reviews, expected):
    mem = SM2Memory(SM2Params(**params))
    state = mem.initial(TASK)
    for step, rate in reviews:
        state = mem.update(state, rate, step)
    for field, value in expected.items():
        got = getattr(state, field)
        if isinstance(value, float):
            assert got == pytest.approx(value), (case, field)
        else:
            assert got == value, (case, field)
    assert state.priority == pytest.approx(state.ef)  # due reviews are ordered by EF ascending
    assert state.reviews == len(reviews)


@pytest.mark.parametrize("rate,q", [(1.0, 5), (0.95, 4), (0.8, 4), (0.79, 3), (0.6, 3), (0.59, 2), (0.4, 2), (0.39, 1), (0.0, 1)])
def test_quality_mapping(rate, q):
    mem = SM2Memory()
    state = mem.update(mem.initial(TASK), rate, 1)
    assert state.extra["quality"] == q


def test_update_does_not_mutate_input():
    mem = SM2Memory()
    s0 = mem.initial(TASK)
    s1 = mem.update(s0, 0.0, 1)
    assert s0.reviews == 0 and s0.repeat_fail == 0 and s1.repeat_fail == 1


def test_optional_initial_ef_from_pass_percentage():
    assert SM2Memory().initial(TASK).ef == 2.5  # off by default
    mem = SM2Memory(SM2Params(ef_from_pass_percentage=True))
    assert mem.initial(TASK).ef == pytest.approx(1.3 + 1.2 * 0.25)


def test_weights_favour_weak_tasks():
    mem = SM2Memory()
    weak = mem.update(mem.initial(TASK), 0.0, 1)
    strong = mem.update(mem.initial(TASK), 0.8, 1)
    assert mem.weight(weak) > mem.weight(strong) >= 1.0
    assert SM2Memory(SM2Params(weighting="uniform")).weight(weak) == 1.0


def test_interval_is_capped_when_reviews_come_early():
    # under the uniform scheduler a task is reviewed every round, long before it is due
    mem = SM2Memory(SM2Params(graduate_streak=10_000))
    state = mem.initial(TASK)
    for step in range(1, 400):
        state = mem.update(state, 0.9, step)
    assert state.interval == 100_000 and state.due == 399 + 100_000
