"""The logger plugins on the lifecycle hooks, with the engine run in-process on fake
stages: the console line per round, metrics.jsonl (exactly once per committed round,
also across crashes and resumes), and TensorBoard through accelerate's tracker."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import ConfigError
from srscode.core.ledger import Ledger
from srscode.plugins.log import console as console_logger
from srscode.plugins.log import trackers as tracker_logger


def run(run_dir: Path, cfg_dict: dict, **kw) -> dict:
    cfg = validate(cfg_dict)
    return Engine(cfg, cfg.model_dump(mode="json"), run_dir, extra_plugins=[fake_stages], quiet=True, **kw).run()


def jsonl_rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _reset():
    fake_stages.reset()
    yield
    fake_stages.reset()


# ------------------------------------------------------------------------ console


def test_round_line_holds_the_round_summary():
    m = {"new": 12, "review": 8, "pass_rate": 0.4125, "pass_rate_new": 0.5, "pass_rate_review": 0.28125,
         "graduated": 14, "skipped": 2, "due": 9, "dpo_pairs": 31, "train_loss": 0.81234, "timeout_rate": 0.02,
         "turnover_lost": 1, "turnover_gained": 3,
         "seconds": {"generate": 12.1, "evaluate": 3.4, "train": 95.0, "memory": 0.001}}
    line = console_logger.format_round(3, m, planned=20)
    assert line == ("round 3/20: 12 new + 8 review | pass 0.412 (new 0.500, review 0.281) | graduated 14, "
                    "skipped 2, due 9 | DPO pairs 31 | loss 0.8123 | timeouts 2.0% | turnover -1 +3 | "
                    "1m51s: generate 12.1s, evaluate 3.4s, train 1m35s")


def test_console_logs_one_line_per_round_and_each_validation(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="srscode.round")
    run(tmp_path, fake_config(rounds=3, **{"validation.every": 2}))
    lines = [r.getMessage() for r in caplog.records if r.name == "srscode.round"]
    rounds = [line for line in lines if line.startswith("round ")]
    assert [line.split(":")[0] for line in rounds] == ["round 1/3", "round 2/3", "round 3/3"]
    led = Ledger(tmp_path, create=False)
    m3 = led.round_row(3)["metrics"]
    counts = led.memory_counts(4)
    led.close()
    assert f"pass {m3['pass_rate']:.3f}" in rounds[-1] and f"graduated {counts['graduated']}," in rounds[-1]
    vals = [line for line in lines if line.startswith("validation")]
    assert [v.split(":")[0] for v in vals] == ["validation (before training)", "validation (after round 2)",
                                               "validation (final)"]
    assert "pass@1 " in vals[0] and "±" in vals[0]


# ------------------------------------------------------------------------ jsonl


def test_jsonl_has_every_round_once_with_the_round_metrics(tmp_path):
    run(tmp_path, fake_config(rounds=4))
    rows = jsonl_rounds(tmp_path)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    led = Ledger(tmp_path, create=False)
    for row in rows:
        stored = led.round_row(row["round"])["metrics"]
        for key, value in stored.items():  # the ledger's metrics, plus memory totals and time
            assert row[key] == pytest.approx(value) if isinstance(value, float) else row[key] == value, key
        assert {"graduated", "skipped", "due", "seen", "time"} <= set(row)
    led.close()


@pytest.mark.parametrize("stage,call", [("generate", 3), ("train", 2)])
def test_jsonl_after_crash_and_resume_has_no_duplicate(tmp_path, stage, call):
    fake_stages.FAIL_ON_CALL[stage] = call
    with pytest.raises(RuntimeError, match="injected"):
        run(tmp_path, fake_config(rounds=4))
    partial = [r["round"] for r in jsonl_rounds(tmp_path)]
    assert partial == list(range(1, len(partial) + 1))
    fake_stages.reset()
    run(tmp_path, fake_config(rounds=4))
    run(tmp_path, fake_config(rounds=4))  # a finished run run again: nothing to add
    assert [r["round"] for r in jsonl_rounds(tmp_path)] == [1, 2, 3, 4]


def test_jsonl_backfills_a_committed_round_and_cuts_a_torn_line(tmp_path):
    base = {"dpo.every": "never", "validation.every": 0, "validation.at_end": False}
    run(tmp_path, fake_config(rounds=3, **base))
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    reference = json.loads(lines[2])
    # the crash came after round 3's ledger commit, in the middle of writing its line
    path.write_text("".join(lines[:2]) + lines[2][:25])
    run(tmp_path, fake_config(rounds=4, **base), force_keys=["rounds"])
    rows = jsonl_rounds(tmp_path)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    backfilled = rows[2]
    for key in ("pass_rate", "new", "review", "dpo_pairs", "graduated", "skipped", "due", "seen", "active"):
        assert backfilled[key] == reference[key], key


# ------------------------------------------------------------------------ trackers


def test_log_with_names_are_validated():
    with pytest.raises(ConfigError, match=r"log_with\.0"):
        validate(fake_config(log_with=["tensorbord"]))


def test_a_missing_tracker_package_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(ConfigError, match=r"log_with: tensorboard needs the 'tensorboard' package.*pip install tensorboard"):
        tracker_logger.check_trackers(["tensorboard"])


def test_tensorboard_gets_every_round_and_the_validations(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, fake_config(rounds=3, log_with=["tensorboard"], **{"validation.every": 2}))
    acc = EventAccumulator(str(tmp_path / "tensorboard" / tmp_path.name))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"pass_rate", "seconds/generate", "graduated", "validation/pass@1", "final_dpo/dpo_loss"} <= tags
    led = Ledger(tmp_path, create=False)
    want = [led.round_row(r)["metrics"]["pass_rate"] for r in (1, 2, 3)]
    led.close()
    got = [(e.step, e.value) for e in acc.Scalars("pass_rate")]
    assert [s for s, _ in got] == [1, 2, 3] and [v for _, v in got] == pytest.approx(want, abs=1e-6)
    assert [e.step for e in acc.Scalars("validation/pass@1")] == [0, 2, 4]


def test_no_tracker_no_tensorboard_dir(tmp_path):
    run(tmp_path, fake_config(rounds=1))
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.jsonl").exists()


def test_wandb_run_is_resumable_and_gets_the_rounds(tmp_path, monkeypatch):
    """A stand-in ``wandb`` module records what accelerate's WandBTracker asks of it."""
    import importlib.machinery
    import sys
    import types

    calls: dict = {"init": [], "log": [], "finish": 0}

    class FakeRun:
        def log(self, values, step=None, **kw):
            calls["log"].append((step, dict(values)))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls["init"].append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)

    base = {"dpo.every": "never", "validation.at_end": False, "log_with": ["wandb"]}
    run(tmp_path, fake_config(rounds=2, **base))
    run(tmp_path, fake_config(rounds=3, **base), force_keys=["rounds"])
    first, second = calls["init"]
    assert first["project"] == "srs-code" and first["resume"] == "allow" and first["dir"] == str(tmp_path)
    assert first["id"] == second["id"]  # the resumed run continues the same wandb run
    assert first["config"]["stages.memory.name"] == "sm2"
    steps = [step for step, values in calls["log"] if "pass_rate" in values]
    assert steps == [1, 2, 3] and calls["finish"] == 2
