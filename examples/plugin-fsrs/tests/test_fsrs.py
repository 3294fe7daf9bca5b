"""Tests of the example plugin: the FSRS rules, its params schema, and a short srs-code
run that picks it by name through the ``srscode`` entry point (install the package
first: ``pip install -e examples/plugin-fsrs``)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from srscode.core.errors import ConfigError
from srscode.core.ledger import state_from_json, state_to_json
from srscode.core.registry import make_plugin_manager
from srscode.core.types import Task
from srscode_fsrs.plugin import AGAIN, EASY, GOOD, HARD, FSRSMemory, FSRSParams

TASK = Task(task_id="t1", question="q", solution="def f(): pass", test_code="def test_f(): pass")


def review(mem: FSRSMemory, rates: list[float], gap: int | None = None):
    """Review at each due round (or every ``gap`` rounds) with the given pass rates."""
    s, step, out = mem.initial(TASK), 1, []
    for rate in rates:
        s = mem.update(s, rate, step)
        out.append(s)
        step = s.due if gap is None else step + gap
    return out


def test_grades_from_pass_rate():
    mem = FSRSMemory()
    assert [mem.grade(r) for r in (0.0, 0.2, 0.5, 0.99, 1.0)] == [AGAIN, HARD, GOOD, GOOD, EASY]


def test_successful_reviews_space_out_and_graduate():
    states = review(FSRSMemory(), [0.75] * 6)
    intervals = [s.interval for s in states]
    assert intervals == sorted(intervals) and intervals[-1] > intervals[0]
    assert states[0].interval == 2  # S0(good) = 2.4 rounds at 90 % retention
    grads = [s.graduated for s in states]
    assert grads[-1] and not grads[0]
    assert all(s.last_pass_rate == 0.75 for s in states)


def test_a_lapse_cuts_stability_and_brings_the_task_back_sooner():
    mem = FSRSMemory()
    good = review(mem, [0.75, 0.75])[-1]
    lapsed = mem.update(good, 0.0, good.due)
    assert lapsed.extra["S"] < good.extra["S"] and lapsed.extra["D"] > good.extra["D"]
    assert lapsed.interval < good.interval and lapsed.due == good.due + lapsed.interval
    assert not lapsed.graduated and lapsed.streak == 0


def test_hopeless_tasks_are_parked():
    states = review(FSRSMemory(FSRSParams(skip_after_zero_rounds=3)), [0.0] * 3)
    assert [s.skipped for s in states] == [False, False, True]


def test_easier_grades_give_longer_intervals():
    mem = FSRSMemory()
    s0 = mem.initial(TASK)
    assert mem.update(s0, 0.2, 1).interval <= mem.update(s0, 0.6, 1).interval < mem.update(s0, 1.0, 1).interval


def test_state_survives_the_ledger_round_trip():
    mem = FSRSMemory()
    s = review(mem, [0.6, 1.0])[-1]
    back = state_from_json(state_to_json(s))
    assert back == s
    assert mem.update(back, 0.5, s.due) == mem.update(s, 0.5, s.due)
    json.dumps(dataclasses.asdict(s))  # plain JSON, nothing custom


def test_params_are_validated_with_key_paths():
    reg = make_plugin_manager()
    with pytest.raises(ConfigError, match=r"stages\.memory\.params\.retension: unknown key"):
        reg.build("memory", "fsrs", {"retension": 0.9}, None, "stages.memory")
    with pytest.raises(ConfigError, match=r"stages\.memory\.params\.retention"):
        reg.build("memory", "fsrs", {"retention": 1.5}, None, "stages.memory")


def test_found_through_the_entry_point_and_runs_a_curriculum(tmp_path):
    from srscode.core.config import validate
    from srscode.core.engine import Engine
    from srscode.core.ledger import Ledger

    reg = make_plugin_manager()
    provided = reg.get("memory", "fsrs", "stages.memory.name")
    assert provided.plugin.dist == "srscode-fsrs" and not provided.plugin.builtin
    cfg = validate({
        "data": {"source": "starter", "train_ratio": 0.8},
        "rounds": 2, "batch_size": 6, "candidates": 2,
        "stages": {"prompt": {"name": "qwen"}, "generator": {"name": "replay"},
                   "evaluator": {"name": "pytest-xdist"}, "memory": {"name": "fsrs"},
                   "scheduler": {"name": "ratio"}, "trainer": {"name": "none"}},
        "dpo": {"every": "never"},
        "validation": {"at_start": False, "at_end": False},
    })
    Engine(cfg, cfg.model_dump(mode="json"), tmp_path / "run", registry=reg, quiet=True).run()
    led = Ledger(tmp_path / "run", create=False)
    try:
        states = list(led.all_states())
        assert states and all(s.extra.get("S") is not None for s in states)  # our state reached the ledger
        assert led.last_round() == 2
    finally:
        led.close()
