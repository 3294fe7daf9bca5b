"""The ratio scheduler's fill rules and the uniform baseline."""
from __future__ import annotations

import pytest

from srscode.core.types import Schedule
from srscode.plugins.schedule.ratio import RatioParams, RatioScheduler
from srscode.plugins.schedule.uniform import UniformScheduler


class FakeMemory:
    def __init__(self, due_ids=(), seen=()):
        self.due_ids = list(due_ids)
        self.seen = set(seen) | set(due_ids)

    def is_seen(self, task_id):
        return task_id in self.seen

    def due(self, step, limit):
        return self.due_ids[:limit]

    def count_due(self, step):
        return len(self.due_ids)


IDS = [f"t{i:03d}" for i in range(100)]


def make(ratio=0.7, ids=IDS, seed=0):
    s = RatioScheduler(RatioParams(new_task_ratio=ratio))
    s.setup(ids, seed)
    return s


@pytest.mark.parametrize(
    "ratio,batch,n_due,n_unseen,exp_new,exp_review",
    [
        (0.7, 10, 20, 100, 7, 3),   # the plain ratio
        (0.7, 10, 1, 100, 9, 1),    # reviews short: fill with new
        (0.7, 10, 20, 4, 4, 6),     # new short: fill with reviews
        (0.7, 10, 2, 3, 3, 2),      # both short: take all
        (0.0, 10, 20, 100, 0, 10),  # reviews only
        (1.0, 10, 20, 100, 10, 0),  # new only
        (0.5, 7, 20, 100, 4, 3),    # rounding
    ],
)
def test_ratio_fill_rules(ratio, batch, n_due, n_unseen, exp_new, exp_review):
    s = make(ratio, ids=IDS[:n_unseen])
    sched = s.schedule(1, batch, FakeMemory(due_ids=[f"r{i}" for i in range(n_due)]))
    assert (len(sched.new), len(sched.review)) == (exp_new, exp_review)
    assert len(set(sched.task_ids)) == len(sched.task_ids)


def test_due_order_is_the_memory_order():
    s = make(0.5)
    sched = s.schedule(1, 4, FakeMemory(due_ids=["r2", "r0", "r1"]))
    assert sched.review == ("r2", "r0")


def test_unseen_order_is_seeded_and_independent_of_row_order():
    a, b, c = make(seed=1), make(seed=1, ids=list(reversed(IDS))), make(seed=2)
    mem = FakeMemory()
    sa, sb, sc = (x.schedule(1, 10, mem) for x in (a, b, c))
    assert sa.new == sb.new
    assert sa.new != sc.new
    assert list(sa.new) != sorted(sa.new)  # shuffled, not id order


def test_state_round_trip_continues_where_it_stopped():
    a = make()
    mem = FakeMemory()
    first = a.schedule(1, 10, mem)
    state = a.state_dict()
    b = make()
    b.load_state_dict(state)
    assert b.schedule(2, 10, mem).new == a.schedule(2, 10, mem).new
    assert not set(first.new) & set(b.schedule(3, 10, mem).new)


def test_every_task_is_new_exactly_once():
    s = make(1.0)
    got = []
    for step in range(1, 20):
        got.extend(s.schedule(step, 10, FakeMemory()).new)
    assert sorted(got) == sorted(IDS)


def test_uniform_is_random_per_step_and_reports_seen_as_review():
    u = UniformScheduler()
    u.setup(IDS, 3)
    mem = FakeMemory(seen=IDS[:50])
    s1, s2 = u.schedule(1, 20, mem), u.schedule(2, 20, mem)
    assert s1.task_ids != s2.task_ids
    assert all(t in IDS[:50] for t in s1.review) and all(t not in IDS[:50] for t in s1.new)
    u2 = UniformScheduler()
    u2.setup(IDS, 3)
    assert u2.schedule(1, 20, mem) == s1


def test_a_schedule_names_the_tasks_it_repeats_and_where():
    assert Schedule(("a", "b"), ("c",)).repeated() == []
    assert Schedule(("a", "b", "a"), ("b", "c")).repeated() == ["a (2x new)", "b (new and review)"]
