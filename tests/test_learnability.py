"""The ``learnability`` scheduler: its priority order p(1-p), its re-test share of solved
tasks (oldest test first), determinism from the seed, a stateless resume, its params'
errors, and a whole fake run that picks it by name."""
from __future__ import annotations

from pathlib import Path

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import load_config, validate
from srscode.core.engine import Engine
from srscode.core.errors import StageError
from srscode.core.ledger import Ledger
from srscode.core.registry import make_plugin_manager
from srscode.core.retention import states_as_of
from srscode.core.task_loading import split_tasks
from srscode.core.types import ReviewState
from srscode.plugins.schedule.learnability import LearnabilityParams, LearnabilityScheduler


class Memory:
    """A memory view over constructed states (task id -> (last pass rate, last round))."""

    def __init__(self, rates: dict[str, tuple[float, int]]):
        self.states = {t: ReviewState(task_id=t, last_pass_rate=p, last_round=r, reviews=1)
                       for t, (p, r) in rates.items()}

    def is_seen(self, task_id):
        return task_id in self.states

    def get_states(self, ids):
        return {t: self.states[t] for t in ids if t in self.states}

    def due(self, step, limit):
        return []

    def count_due(self, step):
        return 0


def make(seed=0, ids=None, **params):
    s = LearnabilityScheduler(LearnabilityParams(**params))
    s.setup(ids if ids is not None else [f"t{i}" for i in range(10)], seed)
    return s


# t0..t9: learnability p(1-p) of the seen ones: t2 .25 > t3 .21 = t4 .21 > t5 .16 > t6 .09 > t7 0
RATES = {"t2": (0.5, 1), "t3": (0.3, 2), "t4": (0.7, 1), "t5": (0.2, 2), "t6": (0.1, 2), "t7": (0.0, 2),
         # solved (>= 0.9): last tested at rounds 3, 1, 2
         "t8": (1.0, 3), "t9": (0.95, 1), "t1": (0.9, 2)}


def test_priority_order_is_learnability_then_seeded_ties():
    sch = make(retest_share=0.0)
    learnable, solved, seen = sch.rank(5, Memory(RATES))
    # t0 (unseen, prior 0.5) ties with t2 at .25; t3/t4 tie at .21
    assert set(learnable[:2]) == {"t0", "t2"} and set(learnable[2:4]) == {"t3", "t4"}
    assert learnable[4:] == ["t5", "t6", "t7"]
    assert solved == ["t9", "t1", "t8"]  # oldest last test first
    assert seen == set(RATES)
    out = sch.schedule(5, 4, Memory(RATES))
    assert set(out.task_ids) == {"t0", "t2", "t3", "t4"}
    assert out.new == ("t0",) and set(out.review) == {"t2", "t3", "t4"}


def test_ties_depend_on_the_seed_and_not_on_row_order():
    orders = set()
    for seed in range(8):
        a = make(seed=seed).rank(5, Memory(RATES))[0]
        b = make(seed=seed, ids=[f"t{i}" for i in reversed(range(10))]).rank(5, Memory(RATES))[0]
        assert a == b
        orders.add(tuple(a[:2]))
    assert orders == {("t0", "t2"), ("t2", "t0")}


def test_retest_share_takes_the_oldest_solved_tasks():
    out = make(retest_share=0.25).schedule(5, 8, Memory(RATES))
    assert set(out.task_ids) & {"t8", "t9", "t1"} == {"t9", "t1"}  # round(8 * .25) = 2, oldest first
    assert len(out.task_ids) == 8 and not out.repeated()
    none = make(retest_share=0.0).schedule(5, 7, Memory(RATES))  # 7 learnable tasks fill it
    assert len(none.task_ids) == 7 and not set(none.task_ids) & {"t8", "t9", "t1"}


def test_short_groups_fill_from_each_other():
    # more re-test slots than solved tasks: learnable ones fill the batch
    out = make(retest_share=1.0).schedule(5, 5, Memory(RATES))
    assert set(out.task_ids) >= {"t8", "t9", "t1"} and len(out.task_ids) == 5
    # more than the split: everything, once
    everything = make(retest_share=0.1).schedule(5, 50, Memory(RATES))
    assert sorted(everything.task_ids) == sorted(f"t{i}" for i in range(10))


def test_prior_and_solved_threshold_and_min_gap():
    low_prior = make(retest_share=0.0, new_task_prior=0.0).rank(5, Memory(RATES))[0]
    assert low_prior[0] == "t2" and low_prior[-2:] in (["t0", "t7"], ["t7", "t0"])  # both p(1-p) = 0
    strict = make(solved_threshold=1.0).rank(5, Memory(RATES))[1]
    assert strict == ["t8"]
    gap = make(min_gap=3).rank(4, Memory(RATES))  # tested at round 2 or 3: not before round 5 / 6
    assert set(gap[0]) | set(gap[1]) == {"t0", "t2", "t4", "t9"}


def test_deterministic_and_stateless_resume():
    mem = Memory(RATES)
    a = make(seed=3)
    first = [a.schedule(r, 4, mem) for r in range(4, 8)]
    b = make(seed=3)
    b.load_state_dict(a.state_dict())
    assert [b.schedule(r, 4, mem) for r in range(4, 8)] == first
    assert a.state_dict() == {}


def test_params_are_validated_with_the_key_named():
    reg = make_plugin_manager(load_entry_points=False)
    with pytest.raises(Exception, match="retest_share"):
        reg.validate("scheduler", "learnability", {"retest_share": 1.5}, "stages.scheduler")
    with pytest.raises(Exception, match="bogus"):
        reg.validate("scheduler", "learnability", {"bogus": 1}, "stages.scheduler")


def test_a_memory_view_without_pass_rates_is_a_clear_error():
    class Bare:
        def is_seen(self, t):
            return False

    with pytest.raises(StageError, match="get_states"):
        make().schedule(1, 2, Bare())


def test_selectable_by_name_in_a_run(tmp_path):
    fake_stages.reset()
    cfg_dict = fake_config(rounds=4, **{"stages.scheduler": {"name": "learnability",
                                                              "params": {"retest_share": 0.25}},
                                        "stages.memory": {"name": "none"}})
    cfg = validate(cfg_dict)
    Engine(cfg, cfg.model_dump(mode="json"), tmp_path, extra_plugins=[fake_stages], quiet=True).run()
    led = Ledger(tmp_path, create=False)
    try:
        rows = led.rounds()
        assert [len(r["new_ids"]) + len(r["review_ids"]) for r in rows] == [24] * 4  # full batches
        assert rows[0]["review_ids"] == [] and rows[1]["review_ids"]  # round 2 re-tests learnable tasks
        # round 4's schedule recomputed from the memory after round 3 is the committed one
        view = Memory({})
        view.states = states_as_of(led, 3)
        sch = LearnabilityScheduler(LearnabilityParams(retest_share=0.25))
        sch.setup(split_tasks([f"T{i:05d}" for i in range(120)], 0.8, 7)[0], 7)
        again = sch.schedule(4, 24, view)
        assert (list(again.new), list(again.review)) == (rows[3]["new_ids"], rows[3]["review_ids"])
        solved = [t for t, s in view.states.items() if s.last_pass_rate >= 0.9]
        assert solved and set(again.review) & set(solved)  # the re-test share is in the run
    finally:
        led.close()


def test_the_ablation_configs_share_the_srs_budget():
    root = Path(__file__).resolve().parents[1] / "examples"
    for suffix in ("", "-dry"):
        srs, learn = (load_config(root / f"{n}{suffix}.yaml")[0] for n in ("srs", "learnability"))
        assert learn.stages.scheduler.name == "learnability" and learn.stages.memory.name == "none"
        for key in ("data", "seed", "model", "rounds", "batch_size", "candidates", "validation", "dpo"):
            assert getattr(learn, key) == getattr(srs, key), (suffix, key)
        assert learn.stages.generator == srs.stages.generator and learn.stages.trainer == srs.stages.trainer



