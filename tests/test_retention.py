"""Retention metrics: the definitions on hand-made states, and on a recorded run the
engine-time function, the replay from the memory log and the engine's own counts agree."""
from __future__ import annotations

import json

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.ledger import Ledger, state_from_json
from srscode.core.retention import (
    compute, interval_bucket, retention_history, round_records, states_as_of,
)
from srscode.core.types import ReviewState


def st(tid: str, rate: float | None, *, due: int = 5, interval: int = 1, graduated: bool = False,
       skipped: bool = False) -> ReviewState:
    return ReviewState(task_id=tid, last_pass_rate=rate, due=due, interval=interval, graduated=graduated,
                       skipped=skipped)


def test_definitions_on_hand_made_states():
    before = {
        "kept": st("kept", 0.8),          # correct -> correct
        "lost": st("lost", 0.75),         # correct -> wrong (and it passed something: at risk)
        "lapsed": st("lapsed", 0.25),     # wrong but > 0 -> 0: a lapse, no turnover
        "gained": st("gained", 0.0),      # wrong -> correct
        "idle": st("idle", 1.0, due=3, interval=4),     # not scheduled, overdue at round 4
        "later": st("later", 0.0, due=9, interval=16),  # not scheduled, not due
        "grad": st("grad", 1.0, graduated=True, interval=40),
    }
    after = {
        "kept": st("kept", 0.9, due=6, interval=2),
        "lost": st("lost", 0.25, due=5, interval=1),
        "lapsed": st("lapsed", 0.0, due=5, interval=1),
        "gained": st("gained", 0.5, due=6, interval=2),
        "fresh": st("fresh", 1.0, graduated=True),  # new this round
    }
    rate = {"kept": 0.9, "lost": 0.25, "lapsed": 0.0, "gained": 0.5, "fresh": 1.0}
    m = compute(4, before, after, rate, pairs=10)
    assert m["reviewed"] == 4
    assert (m["turnover_lost"], m["turnover_gained"]) == (1, 1)
    # correct after the round: kept, gained, fresh (now) + idle, grad (last review)
    assert m["correct_set"] == 5 and m["turnover_rate"] == pytest.approx(2 / 5)
    assert m["lapse_rate"] == pytest.approx(1 / 3)  # at risk: kept, lost, lapsed; lapsed: lapsed
    assert (m["seen"], m["graduated"], m["skipped"], m["active"]) == (8, 2, 0, 6)
    assert m["due_backlog"] == 1  # idle
    assert m["due"] == 3  # lost, lapsed, idle are due at round 5
    assert m["interval_hist"] == {"1": 2, "2": 2, "3-4": 1, "5-8": 0, "9-16": 1, "17-32": 0, "33+": 0}
    assert m["mean_interval"] == pytest.approx((2 + 1 + 1 + 2 + 4 + 16) / 6)
    assert m["pairs_per_task"] == pytest.approx(10 / 5)


def test_interval_buckets():
    assert [interval_bucket(i) for i in (0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 1000)] == [
        "1", "1", "2", "3-4", "3-4", "5-8", "5-8", "9-16", "9-16", "17-32", "17-32", "33+", "33+"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("retention")
    cfg = validate(fake_config(rounds=6, **{"validation.every": 0}))
    Engine(cfg, cfg.model_dump(mode="json"), d, extra_plugins=[fake_stages], quiet=True).run()
    return d


def test_engine_time_metrics_equal_the_replay(recorded):
    led = Ledger(recorded, create=False)
    try:
        history = retention_history(led)
        assert sorted(history) == [1, 2, 3, 4, 5, 6]
        for r in range(1, 7):
            # what the engine computed in SQL before the commit == the replay from memory_log
            recorded_metrics = led.round_row(r)["metrics"]
            for key, want in history[r].items():
                got = recorded_metrics[key]
                assert got == (pytest.approx(want) if isinstance(want, float) else want), (r, key)
        # the fast path (the memory table) and the replay give the same states
        last = led.last_round()
        fast = states_as_of(led, last)
        replay = {}
        for tid, text in led.db.execute("SELECT task_id, state FROM memory_log ORDER BY round"):
            replay[tid] = state_from_json(text)
        assert fast == replay
    finally:
        led.close()


def test_replay_agrees_with_the_engines_counts(recorded):
    led = Ledger(recorded, create=False)
    try:
        records = {m["round"]: m for m in round_records(led)}
    finally:
        led.close()
    lines = {m["round"]: m for m in map(json.loads, (recorded / "metrics.jsonl").read_text().splitlines())}
    assert sorted(records) == sorted(lines) == [1, 2, 3, 4, 5, 6]
    saw_lapse = saw_turnover = False
    for r, rec in records.items():
        for key in ("seen", "graduated", "skipped", "due", "active"):  # the engine's memory_counts(r + 1)
            assert rec[key] == lines[r][key], (r, key)
        assert (rec["lapse_rate"] > 0) == (lines[r]["lapses"] > 0), r
        assert rec["reviewed"] == lines[r]["review"]
        assert sum(rec["interval_hist"].values()) == rec["active"]
        saw_lapse |= rec["lapse_rate"] > 0
        saw_turnover |= rec["turnover_lost"] + rec["turnover_gained"] > 0
    assert saw_lapse and saw_turnover  # the fake run exercises both
