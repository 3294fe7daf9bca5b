"""Scheduler ``ratio``: the seed's mix of unseen tasks and due reviews.

``new_task_ratio`` of the batch comes from unseen tasks (in an order shuffled once with
the run's seed), the rest from due reviews (the memory's order: lowest priority first,
EF ascending for SM-2). When reviews run short the batch fills with new tasks, when new
tasks run short it fills with reviews, when both run short it takes all. The state is a
cursor into the shuffled order, saved with every committed round.
"""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, MemoryView, Schedule


class RatioParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    new_task_ratio: float = Field(0.7, ge=0.0, le=1.0)


class RatioScheduler:
    def __init__(self, params: RatioParams | None = None):
        self.p = params or RatioParams()
        self.order: list[str] = []
        self.cursor = 0

    def setup(self, train_ids: Sequence[str], seed: int) -> None:
        # sort first so the order depends on the ids, not on the dataset's row order
        self.order = sorted(train_ids)
        random.Random(f"ratio:{seed}").shuffle(self.order)

    def schedule(self, step: int, batch_size: int, memory: MemoryView) -> Schedule:
        reviews = memory.due(step, batch_size)
        available_new = len(self.order) - self.cursor
        want_new = round(batch_size * self.p.new_task_ratio)
        take_new = min(available_new, max(want_new, batch_size - len(reviews)))
        take_review = min(len(reviews), batch_size - take_new)
        new = tuple(self.order[self.cursor : self.cursor + take_new])
        self.cursor += take_new
        return Schedule(new=new, review=tuple(reviews[:take_review]))

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "size": len(self.order)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.cursor = int(state.get("cursor", 0))


@hookimpl
def srscode_schedulers():
    yield ComponentSpec("ratio", lambda params, ctx: RatioScheduler(params), RatioParams, "new tasks + due reviews at a fixed ratio (the seed's)")
