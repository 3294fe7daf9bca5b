"""Memory policy ``sm2``: the seed's SuperMemo-2 variant, every constant a parameter.

Transitions (seed semantics, see tests/test_sm2.py for the table):
pass rate 1 -> graduate at once; else quality from the pass rate (>=0.8: 4, >=0.6: 3,
>=0.4: 2, else 1). Quality >= 3 is correct (streak +1, repeat_fail reset); otherwise
streak 0 and repeat_fail +1 only when the pass rate is exactly 0 (reset otherwise).
EF <- max(1.3, EF + 0.1 - (5-q)(0.08 + (5-q)0.02)). Interval 1 when q < 3, else 1, 2, 4
for streaks 1-3 and round(interval * EF) after. Due = step + interval. Graduate at
streak >= 3; skip after 5 consecutive zero-pass reviews. Due tasks: EF ascending.
"""
from __future__ import annotations

import dataclasses
import logging

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, ReviewState, Task

log = logging.getLogger(__name__)


class SM2Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_ef: float = Field(2.5, gt=0)
    min_ef: float = Field(1.3, gt=0)
    # (minimum pass rate, quality), checked in order; below all of them -> fallback_quality
    quality_thresholds: tuple[tuple[float, int], ...] = ((0.8, 4), (0.6, 3), (0.4, 2))
    fallback_quality: int = Field(1, ge=0, le=5)
    correct_quality: int = Field(3, ge=0, le=5)
    first_intervals: tuple[int, ...] = (1, 2, 4)
    # not in the seed: without a cap, reviews that come before their due round (e.g.
    # under the uniform scheduler) multiply the interval until it overflows
    max_interval: int = Field(100_000, ge=1)
    graduate_streak: int = Field(3, ge=1)
    graduate_on_perfect: bool = True
    skip_after_zero_rounds: int = Field(5, ge=1)
    # weight for the SFT stage: weak tasks (low EF) train harder; "uniform" = 1 for all
    weighting: str = Field("inverse_ef", pattern="^(inverse_ef|uniform)$")
    # optional: start EF from KodCode's gpt_pass_percentage (hard tasks start low)
    ef_from_pass_percentage: bool = False


class SM2Memory:
    def __init__(self, params: SM2Params | None = None):
        self.p = params or SM2Params()

    def quality(self, pass_rate: float) -> int:
        for threshold, q in self.p.quality_thresholds:
            if pass_rate >= threshold:
                return q
        return self.p.fallback_quality

    def initial(self, task: Task) -> ReviewState:
        ef = self.p.initial_ef
        if self.p.ef_from_pass_percentage and task.pass_percentage is not None:
            ef = self.p.min_ef + (self.p.initial_ef - self.p.min_ef) * float(task.pass_percentage)
        return ReviewState(task_id=task.task_id, ef=ef, priority=ef)

    def update(self, state: ReviewState, pass_rate: float, step: int) -> ReviewState:
        s = dataclasses.replace(state, extra=dict(state.extra))
        s.reviews += 1
        s.last_pass_rate = pass_rate
        s.last_round = step
        perfect = pass_rate >= 1.0
        q = 5 if perfect else self.quality(pass_rate)
        if q >= self.p.correct_quality:
            s.streak += 1
            s.repeat_fail = 0
        else:
            s.streak = 0
            s.repeat_fail = s.repeat_fail + 1 if pass_rate == 0 else 0
        s.ef = max(self.p.min_ef, s.ef + 0.1 - (5 - q) * (0.08 + (5 - q) * 0.02))
        if q < self.p.correct_quality:
            s.interval = 1
        elif s.streak <= len(self.p.first_intervals):
            s.interval = self.p.first_intervals[s.streak - 1]
        else:
            s.interval = min(self.p.max_interval, max(1, round(s.interval * s.ef)))
        s.due = step + s.interval
        s.priority = s.ef
        s.extra["quality"] = q
        if (perfect and self.p.graduate_on_perfect) or s.streak >= self.p.graduate_streak:
            s.graduated = True
        elif s.repeat_fail >= self.p.skip_after_zero_rounds:
            s.skipped = True
        log.debug("sm2 %s: rate=%.3f q=%d ef=%.3f interval=%d", s.task_id, pass_rate, q, s.ef, s.interval)
        return s

    def weight(self, state: ReviewState) -> float:
        if self.p.weighting == "uniform":
            return 1.0
        return self.p.initial_ef / max(state.ef, self.p.min_ef)


@hookimpl
def srscode_memory_policies():
    yield ComponentSpec("sm2", lambda params, ctx: SM2Memory(params), SM2Params, "SuperMemo-2 (the seed's rules)")
