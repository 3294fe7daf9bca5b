"""Memory policy ``none``: records pass rates but never graduates, skips or reweights.

The ablation baseline (``uniform`` scheduler, no memory): every task stays active and
is due every round, and every SFT example weighs 1.
"""
from __future__ import annotations

import dataclasses

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, ReviewState, Task


class NoMemory:
    def initial(self, task: Task) -> ReviewState:
        return ReviewState(task_id=task.task_id)

    def update(self, state: ReviewState, pass_rate: float, step: int) -> ReviewState:
        return dataclasses.replace(
            state, reviews=state.reviews + 1, last_pass_rate=pass_rate, last_round=step, due=step + 1, interval=1
        )

    def weight(self, state: ReviewState) -> float:
        return 1.0


@hookimpl
def srscode_memory_policies():
    yield ComponentSpec("none", lambda params, ctx: NoMemory(), None, "no memory: never graduates, weight 1")
