"""The round loop with fake model stages registered through the plugin manager:
determinism, resume after a crash at any round, ledger contents, adapter identity,
the lock and stored-config checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import LedgerError, StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.ledger import Ledger, RunLock
from srscode.core.task_loading import split_tasks
from srscode.core.types import ComponentSpec, Schedule
from srscode.plugins.schedule.ratio import RatioParams, RatioScheduler


def run(tmp, cfg_dict, **kw):
    cfg = validate(cfg_dict)
    eng = Engine(cfg, cfg.model_dump(mode="json"), tmp, extra_plugins=[fake_stages], quiet=True, **kw)
    return eng.run()


def snapshot(run_dir):
    """Everything that must be identical between an interrupted and an uninterrupted run."""
    led = Ledger(run_dir, create=False)
    try:
        rounds = [(r["round"], r["new_ids"], r["review_ids"], r["scheduler_state"], r["adapter_sha"])
                  for r in led.rounds()]
        memory = [s for s in led.all_states()]
        log = list(led.db.execute("SELECT round, task_id, state FROM memory_log ORDER BY round, task_id"))
        vals = {k: {m: v for m, v in d.items()} for k, d in led.validations().items()}
        dpo = led.stage("dpo-final")
        return rounds, memory, log, vals, dpo and (dpo["metrics"], dpo["adapter"].sha256)
    finally:
        led.close()


@pytest.fixture(autouse=True)
def _reset():
    fake_stages.reset()
    yield
    fake_stages.reset()


def test_full_run_writes_every_round(tmp_path):
    summary = run(tmp_path, fake_config())
    assert summary["round"] == 6
    dup_rates = []
    for r in range(1, 7):
        d = tmp_path / "rounds" / f"{r:06d}"
        for name in ("schedule.json", "prompts.jsonl", "candidates.jsonl", "verdicts.jsonl",
                     "memory.jsonl", "pairs.jsonl", "metrics.json", "COMMIT", "adapter/adapter_model.json"):
            assert (d / name).exists(), (r, name)
        m = json.loads((d / "metrics.json").read_text())
        assert m["new"] + m["review"] <= 24 and m["candidates"] == 4 * (m["new"] + m["review"])
        cands = [json.loads(x) for x in (d / "candidates.jsonl").read_text().splitlines()]
        distinct = {(c["task_id"], c["code"]) for c in cands}
        assert m["duplicate_rate"] == pytest.approx(1 - len(distinct) / len(cands))
        dup_rates.append(m["duplicate_rate"])
    assert any(x > 0 for x in dup_rates)  # the fake generator repeats itself: the count is exercised
    led = Ledger(tmp_path, create=False)
    vals = led.validations()
    assert sorted(vals) == [0, 2, 4, 7]  # before, every 2 rounds (not the last), final
    assert vals[0]["label"] == "before" and vals[7]["label"] == "final"
    assert vals[7]["adapter"] == led.stage("dpo-final")["adapter"].sha256
    assert 0.0 <= vals[7]["pass@1"] <= vals[7]["pass@2"] <= 1.0
    # every pair is pass vs fail of the same task
    for r in range(1, 7):
        for line in (tmp_path / "rounds" / f"{r:06d}" / "pairs.jsonl").read_text().splitlines():
            p = json.loads(line)
            assert "PASS" in p["chosen"] and "FAIL" in p["rejected"]
    counts = led.memory_counts(7)
    assert counts["seen"] > 0 and counts["graduated"] > 0
    led.close()


def test_same_config_same_run(tmp_path):
    run(tmp_path / "a", fake_config())
    run(tmp_path / "b", fake_config())
    assert snapshot(tmp_path / "a")[:2] == snapshot(tmp_path / "b")[:2]
    run(tmp_path / "c", fake_config(seed=8))
    assert snapshot(tmp_path / "a")[0] != snapshot(tmp_path / "c")[0]


@pytest.mark.parametrize("stage,call", [("generate", 2), ("evaluate", 3), ("train", 3), ("generate", 6), ("train", 6)])
def test_crash_anywhere_then_resume_equals_uninterrupted(tmp_path, stage, call):
    run(tmp_path / "ref", fake_config())
    ref = snapshot(tmp_path / "ref")
    fake_stages.reset()
    fake_stages.FAIL_ON_CALL[stage] = call
    with pytest.raises(RuntimeError, match="injected failure"):
        run(tmp_path / "crash", fake_config())
    partial = snapshot(tmp_path / "crash")
    assert partial[0] == ref[0][: len(partial[0])]  # committed rounds are a prefix of the reference
    fake_stages.reset()
    run(tmp_path / "crash", fake_config())
    assert snapshot(tmp_path / "crash") == ref


def test_resume_after_each_round_by_extending_rounds(tmp_path):
    base = {"dpo.every": "never", "validation.every": 0, "validation.at_end": False}
    run(tmp_path / "ref", fake_config(**base))
    for rounds in range(1, 7):
        cfg = fake_config(rounds=rounds, **base)
        cfg_obj = validate(cfg)
        Engine(cfg_obj, cfg_obj.model_dump(mode="json"), tmp_path / "step", extra_plugins=[fake_stages],
               force_keys=["rounds"], quiet=True).run()
    assert snapshot(tmp_path / "step") == snapshot(tmp_path / "ref")


def test_changed_config_is_refused_unless_forced(tmp_path):
    run(tmp_path, fake_config(rounds=2))
    with pytest.raises(LedgerError, match=r"batch_size.*--force batch_size"):
        run(tmp_path, fake_config(rounds=2, batch_size=10))
    with pytest.raises(LedgerError, match="rounds"):
        run(tmp_path, fake_config(rounds=3))
    assert run(tmp_path, fake_config(rounds=3), force_keys=["rounds"])["round"] == 3


def test_generator_ignoring_the_adapter_is_caught(tmp_path):
    cfg = fake_config()
    cfg["stages"]["generator"] = {"name": "fake-gen", "params": {"ignore_adapter": True}}
    with pytest.raises(StageError, match=r"round 2: .*base model.*silent base-model rollouts"):
        run(tmp_path, cfg)
    assert Ledger(tmp_path, create=False).last_round() == 1  # round 1 (no adapter yet) committed


def test_lock_names_the_holder(tmp_path):
    lock = RunLock(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    lock.acquire()
    try:
        with pytest.raises(LedgerError, match=f"pid {os.getpid()}"):
            run(tmp_path, fake_config())
    finally:
        lock.release()


def test_damaged_round_is_detected_at_resume(tmp_path):
    run(tmp_path, fake_config(rounds=2))
    f = tmp_path / "rounds" / "000002" / "memory.jsonl"
    f.write_text(f.read_text()[:-20])
    with pytest.raises(LedgerError, match=r"memory.jsonl fails its checksum"):
        run(tmp_path, fake_config(rounds=3), force_keys=["rounds"])
    (tmp_path / "rounds" / "000002" / "COMMIT").unlink()
    with pytest.raises(LedgerError, match="no commit marker"):
        run(tmp_path, fake_config(rounds=3), force_keys=["rounds"])


def test_uncommitted_round_folder_is_discarded(tmp_path):
    run(tmp_path, fake_config(rounds=1))
    junk = tmp_path / "rounds" / "000002"
    junk.mkdir()
    (junk / "candidates.jsonl").write_text("half")
    run(tmp_path, fake_config(rounds=2), force_keys=["rounds"])
    assert json.loads((junk / "schedule.json").read_text())["round"] == 2
    assert (junk / "candidates.jsonl").read_text() != "half"


def test_split_is_fixed_and_seeded():
    ids = [f"x{i}" for i in range(1000)]
    tr, va = split_tasks(ids, 0.9, 0)
    assert len(tr) + len(va) == 1000 and 50 < len(va) < 150
    assert split_tasks(list(reversed(ids)), 0.9, 0) == (tr, va)
    assert split_tasks(ids, 0.9, 1) != (tr, va)
    # adding tasks never moves an existing task across the split
    tr2, va2 = split_tasks(ids + ["new1", "new2"], 0.9, 0)
    assert set(tr) <= set(tr2) and set(va) <= set(va2)


def test_status_command_of_a_finished_run(tmp_path):
    run(tmp_path, fake_config(rounds=3))
    out = subprocess.run([sys.executable, "-m", "srscode.cli.main", "status", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "round     3 of 3" in out and "graduated" in out and "validation before" in out


class RepeatingScheduler:
    """Schedules its first new task a second time, as a review (what a prefilled memory that
    overlaps the ratio scheduler's new-task pool produced)."""

    def __init__(self):
        self.inner = RatioScheduler(RatioParams(new_task_ratio=1.0))

    def setup(self, train_ids, seed):
        self.inner.setup(train_ids, seed)

    def schedule(self, step, batch_size, memory):
        sched = self.inner.schedule(step, batch_size, memory)
        return Schedule(sched.new, sched.review + sched.new[:1])

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


class RepeatingPlugin:
    @hookimpl
    def srscode_schedulers(self):
        yield ComponentSpec("repeating", lambda params, ctx: RepeatingScheduler(), None, "names a task twice")


def test_a_schedule_naming_a_task_twice_is_refused_with_the_scheduler_and_the_task(tmp_path):
    cfg = validate(fake_config(**{"stages.scheduler": {"name": "repeating"}}))
    eng = Engine(cfg, cfg.model_dump(mode="json"), tmp_path, extra_plugins=[fake_stages, RepeatingPlugin()],
                 quiet=True)
    with pytest.raises(StageError, match=r"round 1: scheduler 'repeating' named tasks more than once: "
                                         r"\S+ \(new and review\) \(1 in all\)"):
        eng.run()
    assert Ledger(tmp_path, create=False).last_round() == 0


class TwoWayBuilder:
    """A third-party builder written before render_target existed: build and extract only."""

    def build(self, task):
        from srscode.core.types import Prompt

        return Prompt(task.task_id, task.question)

    def extract(self, output, prompt=None):
        return output


class OldBuilderPlugin:
    @hookimpl
    def srscode_prompt_builders(self):
        yield ComponentSpec("old-style", lambda params, ctx: TwoWayBuilder(), None, "no render_target")


def test_a_prompt_builder_without_render_target_is_refused_before_any_round(tmp_path):
    cfg = validate(fake_config(**{"stages.prompt": {"name": "old-style"}}))
    eng = Engine(cfg, cfg.model_dump(mode="json"), tmp_path, extra_plugins=[fake_stages, OldBuilderPlugin()],
                 quiet=True)
    with pytest.raises(StageError, match=r"stages.prompt: prompt builder 'old-style' has no render_target\(\)"):
        eng.run()
    assert not (tmp_path / "rounds").exists()
