"""The ``replay`` generator: deterministic choice, fewer recorded than asked, adapter echo,
the ledger source."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from srscode.core.errors import ConfigError, StageError
from srscode.core.registry import validate_params
from srscode.core.types import AdapterRef, Prompt, RecordedTrial, Task
from srscode.plugins.generate import replay as R
from srscode.plugins.generate.replay import ReplayGenerator, ReplayParams


@dataclass
class Ctx:
    tasks: dict = field(default_factory=dict)


def task(task_id: str, codes: list[str]) -> Task:
    trials = tuple(RecordedTrial(f"t{i}", c, "Pass") for i, c in enumerate(codes))
    return Task(task_id, "q", "def ref():\n    pass\n", "def test_x():\n    pass\n", trials=trials)


CODES = [f"def f():\n    return {i}\n" for i in range(6)]
TASKS = {"A": task("A", CODES), "B": task("B", CODES[:2]), "E": task("E", [])}
ADAPTER = AdapterRef("/runs/x/rounds/000001/adapter", "ab" * 32)


def gen(**params) -> ReplayGenerator:
    return ReplayGenerator(ReplayParams(**params), Ctx(TASKS))


def prompts(*ids: str) -> list[Prompt]:
    return [Prompt(task_id=i, text=f"prompt {i}") for i in ids]


def codes(cands, task_id):
    return [c.code for c in cands if c.task_id == task_id]


def test_deterministic_by_seed_and_independent_of_batch():
    a = gen().generate(prompts("A", "B"), 4, None, seed=7)
    b = gen().generate(prompts("A", "B"), 4, None, seed=7)
    assert a == b
    # a task's draw depends on (seed, task_id) only, not on its neighbours in the batch
    alone = gen().generate(prompts("A"), 4, None, seed=7)
    assert codes(alone, "A") == codes(a, "A")
    seeds = {tuple(codes(gen().generate(prompts("A"), 4, None, seed=s), "A")) for s in range(10)}
    assert len(seeds) > 1  # the seed matters


def test_n_distinct_when_enough_recorded():
    cands = gen().generate(prompts("A"), 4, None, seed=1)
    assert [c.index for c in cands] == [0, 1, 2, 3]
    assert len(set(codes(cands, "A"))) == 4 and set(codes(cands, "A")) <= set(CODES)
    assert all(c.candidate_id == f"A#{c.index}" for c in cands)


def test_more_than_recorded_serves_each_then_repeats():
    cands = gen().generate(prompts("B"), 5, None, seed=3)
    got = codes(cands, "B")
    assert len(got) == 5 and set(got) == set(CODES[:2])  # both served, the rest repeated


def test_text_is_fenced_code():
    (c,) = gen().generate(prompts("A"), 1, None, seed=0)
    assert c.text == f"```python\n{c.code.rstrip()}\n```\n"


def test_adapter_is_echoed():
    cands = gen().generate(prompts("A", "B"), 2, ADAPTER, seed=0)
    assert all(c.adapter == ADAPTER for c in cands)
    assert all(c.adapter is None for c in gen().generate(prompts("A"), 2, None, seed=0))


def test_task_without_trials_gets_empty_candidates_and_is_counted(caplog):
    g = gen()
    with caplog.at_level("WARNING", logger="srscode.plugins.generate.replay"):
        cands = g.generate(prompts("E", "A"), 2, None, seed=0)
    empty = [c for c in cands if c.task_id == "E"]
    assert [(c.index, c.code, c.text) for c in empty] == [(0, "", ""), (1, "", "")]
    assert g.stats["empty_tasks"] == 1 and "1 of 2 tasks" in caplog.text


def test_trials_source_needs_the_tasks():
    with pytest.raises(StageError, match=r"ctx\.tasks"):
        ReplayGenerator(ReplayParams(), Ctx()).generate(prompts("A"), 1, None, seed=0)
    with pytest.raises(StageError, match="'Z'"):
        gen().generate(prompts("Z"), 1, None, seed=0)


def write_round(run_dir, rnd: int, records: list[dict]) -> None:
    d = run_dir / "rounds" / f"{rnd:06d}"
    d.mkdir(parents=True)
    (d / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_ledger_source_replays_a_previous_run(tmp_path):
    write_round(tmp_path, 1, [
        {"task_id": "A", "index": 0, "text": "raw answer 0", "code": "c0\n", "adapter": None},
        {"task_id": "A", "index": 1, "text": "raw answer 1", "code": "c1\n"},
        {"task_id": "L", "index": 0, "text": "only", "code": "l0\n"},
    ])
    write_round(tmp_path, 2, [{"task_id": "A", "index": 0, "text": "raw answer 2", "code": "c2\n"}])
    g = ReplayGenerator(ReplayParams(source="ledger", run_dir=str(tmp_path)), Ctx())  # no tasks needed
    cands = g.generate(prompts("A", "L", "missing"), 3, ADAPTER, seed=5)
    by_code = {c.code: c.text for c in cands if c.task_id == "A"}
    assert by_code == {"c0\n": "raw answer 0", "c1\n": "raw answer 1", "c2\n": "raw answer 2"}
    assert codes(cands, "L") == ["l0\n"] * 3
    assert codes(cands, "missing") == ["", "", ""] and g.stats["empty_tasks"] == 1
    assert all(c.adapter == ADAPTER for c in cands)
    assert cands == ReplayGenerator(ReplayParams(source="ledger", run_dir=str(tmp_path)), Ctx()).generate(
        prompts("A", "L", "missing"), 3, ADAPTER, seed=5
    )


def test_ledger_errors(tmp_path):
    with pytest.raises(ConfigError, match="run_dir"):
        validate_params(ReplayParams, {"source": "ledger"}, "stages.generator.params")
    with pytest.raises(ConfigError, match="holds no rounds"):
        ReplayGenerator(ReplayParams(source="ledger", run_dir=str(tmp_path)), Ctx())
    write_round(tmp_path, 1, [{"index": 0, "code": "x"}])
    with pytest.raises(StageError, match="line 1"):
        ReplayGenerator(ReplayParams(source="ledger", run_dir=str(tmp_path)), Ctx())


def test_registered_as_replay():
    (spec,) = list(R.srscode_generators())
    assert spec.name == "replay"
    built = spec.factory(validate_params(spec.params, {}, "stages.generator.params"), Ctx(TASKS))
    assert len(built.generate(prompts("A"), 2, None, seed=0)) == 2
