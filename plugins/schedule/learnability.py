"""Scheduler ``learnability``: the tasks the model can just about solve, plus re-tests of
solved ones (an alternative curriculum to ``ratio`` + SM-2; issue 17).

Each round every training task gets a recent pass rate ``p``: the pass rate of its last
review (the memory's ``last_pass_rate``), or ``new_task_prior`` for a task never seen.
A task is *solved* when ``p >= solved_threshold``. The batch is filled:

1. ``round(batch_size * retest_share)`` slots re-test solved tasks, the ones whose last
   test is oldest first (a forgetting check, as in prioritized replay with re-tests);
2. the rest goes to unsolved tasks by learnability ``p * (1 - p)``, highest first (0.25
   at p = 0.5: half the samples pass, the most to learn from, as in LILO);
3. when either group runs short the other fills the batch, so every round works on
   ``batch_size`` tasks while the split has that many (equal budget across arms).

Ties (every unseen task under the prior, equal last rounds) are broken by a hash of the
run seed and the task id, so the schedule is a pure function of (seed, round, memory):
the state is empty and a resumed run schedules exactly as an uninterrupted one.
Graduated and skipped tasks are not special: a graduated task is solved, a skipped one
(p = 0) ranks last. ``min_gap`` keeps a task out for that many rounds after a test.

The memory view must offer ``get_states(task_ids)`` (the run's ledger does); the plain
``MemoryView`` protocol has no pass rates.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, MemoryView, ReviewState, Schedule


class LearnabilityParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retest_share: float = Field(0.1, ge=0.0, le=1.0, description=(
        "Share of the batch reserved for re-testing solved tasks, oldest last test first "
        "(a forgetting check); unused slots go to learnable tasks."))
    new_task_prior: float = Field(0.5, ge=0.0, le=1.0, description=(
        "Pass rate assumed for a task never tested (0.5: maximal learnability, so unseen "
        "tasks compete with the most learnable seen ones)."))
    solved_threshold: float = Field(0.9, gt=0.0, le=1.0, description=(
        "A task whose last pass rate reaches this is solved: it leaves the learnability "
        "pool and becomes a re-test candidate."))
    min_gap: int = Field(1, ge=1, description=(
        "Rounds after a test before a task may be scheduled again (1: the next round)."))


class LearnabilityScheduler:
    def __init__(self, params: LearnabilityParams | None = None):
        self.p = params or LearnabilityParams()
        self.ids: list[str] = []
        self.seed = 0

    def setup(self, train_ids: Sequence[str], seed: int) -> None:
        self.ids = sorted(train_ids)
        self.seed = seed

    def _tie(self, task_id: str) -> bytes:
        return hashlib.sha256(f"learnability:{self.seed}:{task_id}".encode()).digest()[:8]

    def _states(self, memory: MemoryView) -> dict[str, ReviewState]:
        get_states = getattr(memory, "get_states", None)
        if not callable(get_states):
            raise StageError(
                "stages.scheduler: learnability needs each task's last pass rate, read through "
                f"get_states(task_ids) on the memory view; {type(memory).__name__} has no get_states "
                "(the run's ledger provides it)")
        return get_states(self.ids)

    def rank(self, step: int, memory: MemoryView) -> tuple[list[str], list[str], set[str]]:
        """(learnable tasks, best first; solved tasks, oldest test first) eligible at
        ``step``, and the ids of the seen tasks."""
        states = self._states(memory)
        learnable: list[tuple[float, bytes, str]] = []
        solved: list[tuple[int, bytes, str]] = []
        for tid in self.ids:
            s = states.get(tid)
            last = s.last_round if s is not None else None
            if last is not None and step - last < self.p.min_gap:
                continue
            if s is None or s.last_pass_rate is None:
                p = self.p.new_task_prior
            else:
                p = float(s.last_pass_rate)
            if s is not None and s.last_pass_rate is not None and p >= self.p.solved_threshold:
                solved.append((last if last is not None else 0, self._tie(tid), tid))
            else:
                learnable.append((-p * (1.0 - p), self._tie(tid), tid))
        learnable.sort()
        solved.sort()
        return [t for *_, t in learnable], [t for *_, t in solved], set(states)

    def schedule(self, step: int, batch_size: int, memory: MemoryView) -> Schedule:
        learnable, solved, seen = self.rank(step, memory)
        want_retest = round(batch_size * self.p.retest_share)
        take_learn = min(len(learnable), max(batch_size - want_retest, batch_size - len(solved)))
        take_retest = min(len(solved), batch_size - take_learn)
        chosen = learnable[:take_learn] + solved[:take_retest]
        new = tuple(t for t in chosen if t not in seen)
        review = tuple(t for t in chosen if t in seen)
        return Schedule(new=new, review=review)

    def state_dict(self) -> dict[str, Any]:
        # nothing to carry: the schedule is a function of (seed, round, memory)
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass  # stateless: see state_dict


@hookimpl
def srscode_schedulers():
    yield ComponentSpec("learnability", lambda params, ctx: LearnabilityScheduler(params), LearnabilityParams,
                        "learnable tasks first (max p(1-p) of the last pass rate) + re-tests of solved ones")
