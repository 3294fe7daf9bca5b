"""Scheduler ``uniform``: a uniformly random batch of training tasks each round, ignoring
the memory — the ablation baseline for "does the curriculum help?". Tasks seen in an
earlier round are reported as reviews so metrics stay comparable."""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, MemoryView, Schedule


class UniformScheduler:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.seed = 0

    def setup(self, train_ids: Sequence[str], seed: int) -> None:
        self.ids = sorted(train_ids)
        self.seed = seed

    def schedule(self, step: int, batch_size: int, memory: MemoryView) -> Schedule:
        rng = random.Random(f"uniform:{self.seed}:{step}")  # per step: resume needs no RNG state
        chosen = rng.sample(self.ids, min(batch_size, len(self.ids)))
        new = tuple(t for t in chosen if not memory.is_seen(t))
        review = tuple(t for t in chosen if memory.is_seen(t))
        return Schedule(new=new, review=review)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


@hookimpl
def srscode_schedulers():
    yield ComponentSpec("uniform", lambda params, ctx: UniformScheduler(), None, "uniformly random tasks each round (no memory)")
