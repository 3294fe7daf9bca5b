"""Fake model stages registered through the plugin manager, the way a third party
would: a synthetic dataset, a generator whose candidates' correctness depends on
(task, round seed, adapter), an evaluator that reads the verdict the candidate code
announces, and a trainer that writes a real adapter folder. Used by the engine tests.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from srscode.core.hookspecs import hookimpl
from srscode.core.types import (
    AdapterRef, Candidate, ComponentSpec, LoadReport, Task, TrainResult, Verdict,
)

# set by tests to simulate a crash inside a stage: stage -> the call number (1-based,
# counted from the last reset) at which it raises RuntimeError
FAIL_ON_CALL: dict[str, int] = {}
CALLS: dict[str, int] = {}


def reset() -> None:
    FAIL_ON_CALL.clear()
    CALLS.clear()


def _maybe_fail(stage: str) -> None:
    CALLS[stage] = CALLS.get(stage, 0) + 1
    if FAIL_ON_CALL.get(stage) == CALLS[stage]:
        raise RuntimeError(f"injected failure in {stage} call {CALLS[stage]}")


def _h(*parts: Any) -> float:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") / 2**64


class FakeData:
    def __init__(self, n: int):
        self.n = n

    def load(self, path: str | None) -> LoadReport:
        tasks = [
            Task(task_id=f"T{i:05d}", question=f"q{i}", solution=f"def f{i}(): return {i}",
                 test_code=f"def test_f():\n    assert f{i}() == {i}\n", difficulty="easy",
                 pass_percentage=_h("pp", i))
            for i in range(self.n)
        ]
        return LoadReport(tasks=tasks)


class FakeGenerator:
    """Each task has a hidden difficulty; each round and adapter shifts the odds."""

    def __init__(self, ignore_adapter: bool = False):
        self.ignore_adapter = ignore_adapter

    def generate(self, prompts: Sequence[Any], n: int, adapter: AdapterRef | None, seed: int) -> list[Candidate]:
        _maybe_fail("generate")
        used = None
        if adapter is not None and not self.ignore_adapter:
            used = AdapterRef.from_dir(adapter.path)  # identity from the files, as a real generator must
        skill = 0.0 if used is None else 0.1
        out = []
        for p in prompts:
            for i in range(n):
                ok = _h("gen", p.task_id, seed, i) < _h("difficulty", p.task_id) + skill
                code = "PASS" if ok else "FAIL"
                out.append(Candidate(p.task_id, i, f"```python\n{code}\n```", code, adapter=used))
        return out


class FakeEvaluator:
    def evaluate(self, tasks: Mapping[str, Task], candidates: Sequence[Candidate]) -> list[Verdict]:
        _maybe_fail("evaluate")
        return [
            Verdict(c.task_id, c.index, "passed" if c.code == "PASS" else "failed",
                    1 if c.code == "PASS" else 0, 1, {"test_f": "passed" if c.code == "PASS" else "failed"})
            for c in candidates
        ]


class FakeTrainer:
    def train_sft(self, examples: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        _maybe_fail("train")
        out_dir.mkdir(parents=True, exist_ok=True)
        body = {"init": init.sha256 if init else None,
                "examples": sorted((e.task_id, round(e.weight, 6)) for e in examples)}
        (out_dir / "adapter_model.json").write_text(json.dumps(body, sort_keys=True))
        return TrainResult(AdapterRef.from_dir(out_dir), {"train_loss": 1.0 / (1 + len(examples))})

    def train_pairs(self, pairs: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        body = {"init": init.sha256 if init else None, "pairs": len(pairs)}
        (out_dir / "adapter_model.json").write_text(json.dumps(body, sort_keys=True))
        return TrainResult(AdapterRef.from_dir(out_dir), {"loss": 0.69})


@hookimpl
def srscode_datasets():
    from pydantic import BaseModel, ConfigDict

    class P(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int = 200

    yield ComponentSpec("fake-data", lambda params, ctx: FakeData(params.n), P, "synthetic tasks")


@hookimpl
def srscode_generators():
    from pydantic import BaseModel, ConfigDict

    class P(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ignore_adapter: bool = False

    yield ComponentSpec("fake-gen", lambda params, ctx: FakeGenerator(params.ignore_adapter), P, "fake")


@hookimpl
def srscode_evaluators():
    yield ComponentSpec("fake-eval", lambda params, ctx: FakeEvaluator(), None, "fake")


@hookimpl
def srscode_trainers():
    yield ComponentSpec("fake-train", lambda params, ctx: FakeTrainer(), None, "fake")
    yield ComponentSpec("fake-dpo", lambda params, ctx: FakeTrainer(), None, "fake")


def fake_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "seed": 7,
        "data": {"source": "fake-data", "params": {"n": 120}, "train_ratio": 0.8},
        "rounds": 6,
        "batch_size": 24,
        "candidates": 4,
        "stages": {
            "prompt": {"name": "qwen"},
            "generator": {"name": "fake-gen"},
            "evaluator": {"name": "fake-eval"},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio", "params": {"new_task_ratio": 0.5}},
            "trainer": {"name": "fake-train"},
        },
        "dpo": {"name": "fake-dpo", "every": "end"},
        "validation": {"every": 2, "candidates": 2, "k": [1, 2]},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
