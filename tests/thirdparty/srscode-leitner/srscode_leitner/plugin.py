"""Memory policy ``leitner``: boxes 1..N; a pass moves a task up one box, a failure back
to box 1; box k is reviewed every 2**(k-1) rounds; the top box graduates."""
from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, ReviewState, Task


class LeitnerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boxes: int = Field(4, ge=2)
    pass_threshold: float = Field(0.5, ge=0, le=1)


class Leitner:
    def __init__(self, params: LeitnerParams):
        self.p = params

    def initial(self, task: Task) -> ReviewState:
        return ReviewState(task_id=task.task_id, extra={"box": 1}, priority=1)

    def update(self, state: ReviewState, pass_rate: float, step: int) -> ReviewState:
        box = state.extra.get("box", 1)
        box = box + 1 if pass_rate >= self.p.pass_threshold else 1
        interval = 2 ** (box - 1)
        return dataclasses.replace(
            state, extra={"box": box}, priority=box, interval=interval, due=step + interval,
            reviews=state.reviews + 1, last_pass_rate=pass_rate, last_round=step,
            graduated=box >= self.p.boxes,
        )

    def weight(self, state: ReviewState) -> float:
        return 1.0 / state.extra.get("box", 1)


@hookimpl
def srscode_memory_policies():
    yield ComponentSpec("leitner", lambda params, ctx: Leitner(params), LeitnerParams, "Leitner boxes")
