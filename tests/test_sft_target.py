"""sft.target: which SFT examples reach the trainer (issue 18, part 2).

``reference`` (the default) trains every scheduled task on its reference solution, as
before; ``own_pass`` only on the model's own passing code of the round (rejection-sampling
SFT); ``mixed`` on the own passing code where a candidate passed, else the reference. Every
example keeps the prompt the task got this round, and so do the DPO pairs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import random

import pytest

import fake_stages
from fake_stages import FakeTrainer, fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.sft_target import own_passing_code
from srscode.core.errors import ConfigError, StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt, Schedule, Verdict
from srscode.plugins.prompt.builders import QwenBuilder

# task number % 4 -> the code of its 4 candidates (index 0..3); the evaluator passes code
# starting with "ok", except "ok_f" (flaky) which fails at odd indexes
CODES = {
    0: ["FAIL_a", "FAIL_bb", "FAIL_c", "FAIL_dddd"],            # nothing passes
    1: ["ok_long_solution", "FAIL", "ok_b", "ok_a"],             # shortest passing: ok_b/ok_a tie -> index 2
    2: ["ok_f", "ok_f", "ok_longer", "FAIL"],                    # flaky ok_f never taken -> ok_longer
    3: ["ok_f", "ok_f", "FAIL_x", "FAIL_y"],                     # only flaky code passed -> nothing
}
EXPECTED_OWN = {1: "ok_b", 2: "ok_longer"}
RECORDED: list[tuple[int, list]] = []  # (round, the examples train_sft got)


def _kind(task_id: str) -> int:
    return int(task_id[1:]) % 4


class SFTGen:
    def __init__(self, all_fail: bool):
        self.all_fail = all_fail

    def generate(self, prompts, n, adapter, seed):
        out = []
        for p in prompts:
            for i in range(n):
                code = "FAIL_all" if self.all_fail else CODES[_kind(p.task_id)][i % 4]
                out.append(Candidate(p.task_id, i, f"```python\n{code}\n```", code,
                                     adapter=AdapterRef.from_dir(adapter.path) if adapter else None))
        return out


def _passes(code: str, index: int) -> bool:
    return code.startswith("ok") and not (code == "ok_f" and index % 2 == 1)


class SFTEval:
    def evaluate(self, tasks, candidates):
        return [Verdict(c.task_id, c.index, "passed" if _passes(c.code, c.index) else "failed",
                        int(_passes(c.code, c.index)), 1) for c in candidates]


class RecordingTrainer(FakeTrainer):
    def train_sft(self, examples, init, out_dir):
        RECORDED.append((int(out_dir.parent.name), list(examples)))
        return super().train_sft(examples, init, out_dir)


class CountingBuilder(QwenBuilder):
    """qwen prompts that differ on every build: a stage that rebuilt a prompt instead of
    using the round's would show (a stand-in for a reflection prompt)."""

    calls = 0

    def build(self, task):
        CountingBuilder.calls += 1
        p = super().build(task)
        return Prompt(p.task_id, p.text + f"# attempt {CountingBuilder.calls}\n", p.messages, p.stop, p.format)


class NoReferenceData(fake_stages.FakeData):
    """fake-data with an empty reference solution for every eighth task."""

    def load(self, path):
        report = super().load(path)
        report.tasks[:] = [dataclasses.replace(t, solution="") if int(t.task_id[1:]) % 8 == 0 else t
                           for t in report.tasks]
        return report


class Plugin:
    @hookimpl
    def srscode_datasets(self):
        yield ComponentSpec("no-ref-data", lambda params, ctx: NoReferenceData(40), None, "some without reference")

    @hookimpl
    def srscode_generators(self):
        from pydantic import BaseModel, ConfigDict

        class P(BaseModel):
            model_config = ConfigDict(extra="forbid")
            all_fail: bool = False

        yield ComponentSpec("sft-gen", lambda params, ctx: SFTGen(params.all_fail), P, "fixed codes")

    @hookimpl
    def srscode_evaluators(self):
        yield ComponentSpec("sft-eval", lambda params, ctx: SFTEval(), None, "passes ok*")

    @hookimpl
    def srscode_trainers(self):
        yield ComponentSpec("recording-train", lambda params, ctx: RecordingTrainer(), None, "records examples")

    @hookimpl
    def srscode_prompt_builders(self):
        yield ComponentSpec("counting", lambda params, ctx: CountingBuilder(), None, "qwen, numbered")


@pytest.fixture(autouse=True)
def _reset():
    RECORDED.clear()
    fake_stages.reset()
    yield
    RECORDED.clear()


def _config(target: str | None = None, **overrides):
    cfg = fake_config(**{
        "data.params": {"n": 40}, "rounds": 3, "batch_size": 12, "candidates": 4,
        "stages.generator": {"name": "sft-gen"}, "stages.evaluator": {"name": "sft-eval"},
        "stages.trainer": {"name": "recording-train"}, "dpo.every": "never",
        "validation": {"at_start": False, "at_end": False}, **overrides,
    })
    if target is not None:
        cfg["sft"] = {"target": target}
    return cfg


def _run(tmp_path, cfg):
    c = validate(cfg)
    return Engine(c, c.model_dump(mode="json"), tmp_path, extra_plugins=[fake_stages, Plugin()], quiet=True).run()


def _round_files(run_dir, r):
    d = run_dir / "rounds" / f"{r:06d}"
    rows = lambda name: [json.loads(x) for x in (d / name).read_text().splitlines()]  # noqa: E731
    sched = json.loads((d / "schedule.json").read_text())
    return (Schedule(tuple(sched["new"]), tuple(sched["review"])), {p["task_id"]: p["text"] for p in rows("prompts.jsonl")},
            rows("candidates.jsonl"), rows("verdicts.jsonl"), json.loads((d / "metrics.json").read_text()))


def _tasks():
    return {t.task_id: t for t in fake_stages.FakeData(40).load(None).tasks}


def _render(task, prompt_text, code=None):
    return QwenBuilder().render_target(task, Prompt(task.task_id, prompt_text), code=code)


def test_the_default_trains_every_scheduled_task_on_its_reference_as_before(tmp_path):
    _run(tmp_path / "default", _config())
    default = [(r, [(e.task_id, e.prompt, e.completion, e.weight) for e in ex]) for r, ex in RECORDED]
    RECORDED.clear()
    _run(tmp_path / "explicit", _config("reference"))
    explicit = [(r, [(e.task_id, e.prompt, e.completion, e.weight) for e in ex]) for r, ex in RECORDED]
    assert default == explicit and [r for r, _ in default] == [1, 2, 3]
    tasks = _tasks()
    for r, examples in default:
        sched, prompts, _, _, metrics = _round_files(tmp_path / "default", r)
        # every scheduled task, in schedule order, on this round's prompt and its reference
        assert [e[0] for e in examples] == list(sched.task_ids)
        for tid, prompt, completion, weight in examples:
            assert prompt == prompts[tid]
            assert completion == _render(tasks[tid], prompt) == f"```python\n{tasks[tid].solution}\n```"
            assert weight > 0
        assert not any(k.startswith("sft_") for k in metrics)  # the default's metrics unchanged
    assert "sft" not in json.loads((tmp_path / "default" / "rounds" / "000001" / "metrics.json").read_text())


def test_own_pass_trains_only_on_code_that_passed(tmp_path):
    _run(tmp_path, _config("own_pass"))
    assert [r for r, _ in RECORDED] == [1, 2, 3]
    tasks = _tasks()
    for r, examples in RECORDED:
        sched, prompts, cands, verdicts, metrics = _round_files(tmp_path, r)
        ok = {(v["task_id"], v["index"]) for v in verdicts if v["status"] == "passed"}
        passing = {(c["task_id"], _render(tasks[c["task_id"]], prompts[c["task_id"]], c["code"]))
                   for c in cands if (c["task_id"], c["index"]) in ok}
        failing = {(c["task_id"], _render(tasks[c["task_id"]], prompts[c["task_id"]], c["code"]))
                   for c in cands if (c["task_id"], c["index"]) not in ok}
        want = [t for t in sched.task_ids if _kind(t) in EXPECTED_OWN]
        assert want and [e.task_id for e in examples] == want  # tasks without a usable pass give none
        for e in examples:
            assert (e.task_id, e.completion) in passing and (e.task_id, e.completion) not in failing
            assert e.completion == _render(tasks[e.task_id], prompts[e.task_id], EXPECTED_OWN[_kind(e.task_id)])
            assert e.prompt == prompts[e.task_id]
            assert tasks[e.task_id].solution not in e.completion  # never the reference
            assert "FAIL" not in e.completion and "ok_f\n" not in e.completion
        assert metrics["sft_examples"] == metrics["sft_own_pass"] == len(want)


def test_mixed_falls_back_to_the_reference_exactly_for_tasks_without_a_pass(tmp_path):
    _run(tmp_path, _config("mixed"))
    tasks = _tasks()
    for r, examples in RECORDED:
        sched, prompts, _, _, metrics = _round_files(tmp_path, r)
        assert [e.task_id for e in examples] == list(sched.task_ids)  # every task gives one
        for e in examples:
            task, kind = tasks[e.task_id], _kind(e.task_id)
            if kind in EXPECTED_OWN:
                assert e.completion == _render(task, prompts[e.task_id], EXPECTED_OWN[kind])
            else:  # no candidate passed (0), or only flaky code did (3)
                assert e.completion == _render(task, prompts[e.task_id])
        own = sum(1 for t in sched.task_ids if _kind(t) in EXPECTED_OWN)
        assert metrics["sft_own_pass"] == own and metrics["sft_examples"] == len(sched.task_ids)


def test_mixed_gives_no_example_for_a_task_with_neither_a_pass_nor_a_reference(tmp_path):
    _run(tmp_path, _config("mixed", **{"data": {"source": "no-ref-data", "train_ratio": 0.8}}))
    tasks = _tasks()
    blank = lambda t: int(t[1:]) % 8 == 0  # noqa: E731  (kind 0: nothing passes either)
    seen_blank = False
    for r, examples in RECORDED:
        sched, prompts, _, _, metrics = _round_files(tmp_path, r)
        seen_blank |= any(blank(t) for t in sched.task_ids)
        assert [e.task_id for e in examples] == [t for t in sched.task_ids if not blank(t)]
        for e in examples:
            kind = _kind(e.task_id)
            want = EXPECTED_OWN.get(kind)
            assert e.completion == _render(tasks[e.task_id], prompts[e.task_id], want)
        assert metrics["sft_examples"] == len(examples)
    assert seen_blank


def test_own_pass_with_nothing_passing_trains_on_nothing_and_says_so(tmp_path, caplog):
    cfg = _config("own_pass", **{"stages.generator": {"name": "sft-gen", "params": {"all_fail": True}}})
    with caplog.at_level(logging.INFO, logger="srscode.engine"):
        summary = _run(tmp_path, cfg)
    assert summary["round"] == 3 and RECORDED == []
    for r in (1, 2, 3):
        sched, _, _, _, metrics = _round_files(tmp_path, r)
        assert sched.task_ids and metrics["sft_examples"] == 0 and metrics["sft_own_pass"] == 0
        assert "train_loss" not in metrics
        assert not (tmp_path / "rounds" / f"{r:06d}" / "adapter").exists()
    assert "round 1: no SFT examples (sft.target own_pass: no candidate passed); training skipped" in caplog.text


@pytest.mark.parametrize("target", ["reference", "own_pass"])
def test_sft_examples_and_dpo_pairs_keep_the_prompt_of_the_round(tmp_path, target):
    CountingBuilder.calls = 0
    cfg = _config(target, **{"stages.prompt": {"name": "counting"}, "dpo.every": 1,
                             "dpo.name": "fake-dpo", "dpo.reference_as_chosen": True})
    _run(tmp_path, cfg)
    n_pairs = 0
    for r, examples in RECORDED:
        _, prompts, _, _, _ = _round_files(tmp_path, r)
        assert examples and all(e.prompt == prompts[e.task_id] for e in examples)
        pairs = [json.loads(x) for x in (tmp_path / "rounds" / f"{r:06d}" / "pairs.jsonl").read_text().splitlines()]
        assert all(p["prompt"] == prompts[p["task_id"]] for p in pairs)
        assert all("# attempt " in p["prompt"] for p in pairs)
        n_pairs += len(pairs)
    assert n_pairs > 0
    # the prompts were built once per scheduled task per round, never again for training or pairs
    assert CountingBuilder.calls == sum(len(_round_files(tmp_path, r)[0].task_ids) for r in (1, 2, 3))


def test_the_passing_candidate_picked_does_not_depend_on_the_order_candidates_arrive_in():
    cands = [Candidate("A", i, "", code) for i, code in enumerate(["ok_long", "ok_b", "ok_a", "FAIL", "  "])]
    cands.append(Candidate("B", 0, "", "ok_f"))
    cands.append(Candidate("B", 1, "", "ok_f"))
    verdicts = [Verdict(c.task_id, c.index, "passed" if c.code.startswith("ok") and (c.code, c.index) != ("ok_f", 1)
                        else "failed", 0, 1) for c in cands]
    verdicts[4] = Verdict("A", 4, "passed", 1, 1)  # blank code that "passed" is never a target
    assert own_passing_code(cands, verdicts) == {"A": "ok_b"}  # shortest; tie -> lowest index; B only flaky
    order = list(range(len(cands)))
    for seed in range(5):
        random.Random(seed).shuffle(order)
        assert own_passing_code([cands[i] for i in order], [verdicts[i] for i in order]) == {"A": "ok_b"}
    with pytest.raises(StageError, match=r"verdict A#1 does not belong to candidate A#0"):
        own_passing_code(cands[:1], verdicts[1:2])


def test_an_unknown_target_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"sft\.target"):
        validate(fake_config(**{"sft.target": "own-pass"}))
