"""Generator ``replay``: serves recorded candidates instead of sampling a model.

Sources (param ``source``):

* ``trials`` (default): the candidates recorded with each task (``Task.trials``: KodCode's
  GPT-4o/Qwen attempts, or the starter set's 2-4 right-and-wrong candidates). The tasks
  come from ``ctx.tasks`` (task id -> Task), which the engine sets before generation.
* ``ledger``: the candidates of a previous run, read from
  ``<run_dir>/rounds/<NNNNNN>/candidates.jsonl`` (one JSON object per line with at least
  ``task_id`` and ``code``; ``text`` is kept when present), every round in order.

Choice of ``n`` per task is deterministic: a ``random.Random`` seeded from
``(seed, task_id)`` (string seeding hashes with SHA-512, so it does not depend on
``PYTHONHASHSEED``). With at least ``n`` recorded, ``n`` distinct ones are drawn; with fewer,
every recorded candidate is served once and the rest are drawn with replacement, shuffled
together. A task with nothing recorded gets ``n`` empty candidates (``code == ""``, which
every evaluator fails) and is counted in ``stats["empty_tasks"]`` with a warning: the
reference solution is never served, it would make the dry run look better than any model.

Replay has no model, so each candidate echoes the ``adapter`` it was asked to use; the
engine's adapter-identity check then holds trivially.

Streaming: ``generate_iter`` yields the same candidates ``batch_tasks`` tasks at a time
(the engine then overlaps evaluation with generation). ``batch_delay_s`` sleeps before
each batch, standing in for a model's generation time in overlap tests and benchmarks.
Because every draw is keyed by (seed, task id), the generator declares
``seeds_per_task = True``: under data parallelism the engine gives every rank the round's
seed unchanged, so a run on N ranks serves exactly the candidates of a 1-process run.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from srscode.core.errors import ConfigError, StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt, Task
from srscode.plugins.prompt.builders import python_block

log = logging.getLogger(__name__)


class ReplayParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["trials", "ledger"] = Field("trials", description="Where recorded candidates come from.")
    run_dir: str | None = Field(None, description="A previous run directory (source: ledger).")
    batch_tasks: int = Field(16, ge=1, description="Tasks per batch of generate_iter (streaming).")
    batch_delay_s: float = Field(
        0.0, ge=0.0, description="Sleep before each streamed batch: a stand-in for model time in overlap tests."
    )

    @model_validator(mode="after")
    def _run_dir_for_ledger(self) -> ReplayParams:
        if self.source == "ledger" and not self.run_dir:
            raise ValueError("source 'ledger' needs run_dir (a previous run directory)")
        return self


def fence(code: str) -> str:
    """What a well-behaved instruct model would have answered."""
    return python_block(code.rstrip()) + "\n" if code.strip() else ""


def read_ledger(run_dir: str | Path) -> dict[str, list[tuple[str, str]]]:
    """``task_id -> [(text, code), ...]`` from every round's ``candidates.jsonl``."""
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"stages.generator.params.run_dir: {root} is not a directory (replay source 'ledger').")
    files = sorted((root / "rounds").glob("*/candidates.jsonl"))
    if not files:
        raise ConfigError(
            f"stages.generator.params.run_dir: {root} holds no rounds/<NNNNNN>/candidates.jsonl; "
            "is it a srs-code run directory with at least one round?"
        )
    out: dict[str, list[tuple[str, str]]] = {}
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise StageError(f"replay: cannot read ledger file {f}: {exc}") from None
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                task_id, code = str(rec["task_id"]), rec.get("code")
                if code is None:
                    code = rec["text"]
                text = rec.get("text") or fence(code)
            except (ValueError, KeyError, TypeError) as exc:
                raise StageError(
                    f"replay: {f}, line {lineno}, is not a candidate record with task_id and code ({exc})."
                ) from None
            out.setdefault(task_id, []).append((str(text), str(code)))
    return out


def choose(count: int, n: int, rng: random.Random) -> list[int]:
    """Indices of ``n`` of ``count`` recorded items (see the module docstring)."""
    if count >= n:
        return rng.sample(range(count), n)
    picks = list(range(count)) + rng.choices(range(count), k=n - count)
    rng.shuffle(picks)
    return picks


class ReplayGenerator:
    seeds_per_task = True  # draws are keyed by (seed, task id): sharding tasks changes nothing

    def __init__(self, params: ReplayParams | None = None, ctx: Any = None):
        self.params = params or ReplayParams()
        self.ctx = ctx
        self.stats: Counter[str] = Counter()
        self._ledger = read_ledger(self.params.run_dir) if self.params.source == "ledger" else None

    def _tasks(self) -> Mapping[str, Task]:
        tasks = self.ctx.tasks if self.ctx is not None else None
        if not tasks:
            raise StageError(
                "replay (source 'trials') needs the loaded tasks in ctx.tasks; the engine sets them "
                "before generation."
            )
        return tasks

    def recorded(self, task_id: str) -> list[tuple[str, str]]:
        """``[(text, code), ...]`` recorded for one task."""
        if self._ledger is not None:
            return self._ledger.get(task_id, [])
        task = self._tasks().get(task_id)
        if task is None:
            raise StageError(f"replay: prompt for task {task_id!r}, which is not among the loaded tasks.")
        return [(fence(t.solution_code), t.solution_code) for t in task.trials]

    def generate(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> list[Candidate]:
        out: list[Candidate] = []
        empty = 0
        for prompt in prompts:
            recorded = self.recorded(prompt.task_id)
            if not recorded:
                empty += 1
                out.extend(Candidate(prompt.task_id, i, "", "", adapter=adapter) for i in range(n))
                continue
            rng = random.Random(f"{seed}:{prompt.task_id}")
            for i, k in enumerate(choose(len(recorded), n, rng)):
                text, code = recorded[k]
                out.append(Candidate(prompt.task_id, i, text, code, adapter=adapter))
        self.stats["tasks"] += len(prompts)
        self.stats["candidates"] += len(out)
        if empty:
            self.stats["empty_tasks"] += empty
            log.warning("replay: %d of %d tasks have no recorded candidates; they got empty ones", empty, len(prompts))
        return out

    def generate_iter(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> Iterator[list[Candidate]]:
        """``generate`` in batches of ``batch_tasks`` prompts (same candidates, same order)."""
        step = self.params.batch_tasks
        for i in range(0, len(prompts), step):
            if self.params.batch_delay_s:
                time.sleep(self.params.batch_delay_s)
            yield self.generate(prompts[i : i + step], n, adapter, seed)


@hookimpl
def srscode_generators():
    yield ComponentSpec(
        "replay",
        factory=lambda params, ctx: ReplayGenerator(params, ctx),
        params=ReplayParams,
        summary="serve recorded candidates (task trials or a previous run's ledger); no model",
    )
