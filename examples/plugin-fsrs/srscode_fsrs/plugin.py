"""Memory policy ``fsrs``: FSRS-style spaced repetition for code tasks.

FSRS (Ye, 2022-2024) models each item's memory with two numbers: *stability* S, the
time after which the probability of recall R drops to 90 %, and *difficulty* D in
[1, 10]. Recall decays as ``R(t) = (1 + t / (9 S)) ** -1``. A review graded G in
1..4 (again, hard, good, easy) updates D towards easier or harder and S up (success,
more for a hard-won recall at low R) or down (a lapse). The next review is due when R
would fall to the requested ``retention``: ``interval = 9 S (1 / retention - 1)``.

Here a "review" is a round in which the task was scheduled, the time unit is one round,
and the grade comes from the task's pass rate over its candidates. A task graduates
when its stability reaches ``graduate_stability`` rounds and is parked (skipped) after
``skip_after_zero_rounds`` reviews in a row without a passing test.

Everything the policy needs lives in the ``ReviewState`` (S and D in ``extra``), which
srs-code stores in its ledger, so a resumed run continues exactly.
"""
from __future__ import annotations

import dataclasses
import math

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, ReviewState, Task

# FSRS v4 default weights w0..w16
DEFAULT_WEIGHTS = (0.4, 0.6, 2.4, 5.8, 4.93, 0.94, 0.86, 0.01, 1.49, 0.14, 0.94, 2.18, 0.05, 0.34, 1.26, 0.29, 2.61)

AGAIN, HARD, GOOD, EASY = 1, 2, 3, 4


class FSRSParams(BaseModel):
    """Params of ``stages.memory.params`` (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention: float = Field(0.9, gt=0.0, lt=1.0, description="Recall probability at which a review falls due.")
    weights: tuple[float, ...] = Field(DEFAULT_WEIGHTS, min_length=17, max_length=17, description="FSRS v4 weights.")
    good_at: float = Field(0.5, ge=0.0, le=1.0, description="Lowest pass rate graded 'good' (below: 'hard').")
    graduate_stability: float = Field(20.0, gt=0.0, description="Graduate once stability reaches this many rounds.")
    max_interval: int = Field(50, ge=1, description="Longest review interval in rounds.")
    skip_after_zero_rounds: int = Field(4, ge=1, description="Park a task after this many zero-pass reviews in a row.")


class FSRSMemory:
    """The ``MemoryPolicy`` protocol: ``initial``, ``update`` and ``weight``."""

    def __init__(self, params: FSRSParams | None = None):
        self.p = params or FSRSParams()
        self.w = self.p.weights

    # ------------------------------------------------------------------ FSRS formulas
    def grade(self, pass_rate: float) -> int:
        if pass_rate <= 0.0:
            return AGAIN
        if pass_rate >= 1.0:
            return EASY
        return GOOD if pass_rate >= self.p.good_at else HARD

    @staticmethod
    def retrievability(elapsed: float, stability: float) -> float:
        return (1.0 + elapsed / (9.0 * stability)) ** -1.0

    def _init_difficulty(self, g: int) -> float:
        return min(10.0, max(1.0, self.w[4] - (g - 3) * self.w[5]))

    def _next_difficulty(self, d: float, g: int) -> float:
        d2 = d - self.w[6] * (g - 3)
        return min(10.0, max(1.0, self.w[7] * self._init_difficulty(GOOD) + (1 - self.w[7]) * d2))

    def _success_stability(self, d: float, s: float, r: float, g: int) -> float:
        w = self.w
        bonus = (w[15] if g == HARD else 1.0) * (w[16] if g == EASY else 1.0)
        return s * (1 + math.exp(w[8]) * (11 - d) * s ** -w[9] * (math.exp(w[10] * (1 - r)) - 1) * bonus)

    def _failure_stability(self, d: float, s: float, r: float) -> float:
        w = self.w
        return min(s, w[11] * d ** -w[12] * ((s + 1) ** w[13] - 1) * math.exp(w[14] * (1 - r)))

    def interval(self, stability: float) -> int:
        days = 9.0 * stability * (1.0 / self.p.retention - 1.0)
        return max(1, min(self.p.max_interval, round(days)))

    # ------------------------------------------------------------------ MemoryPolicy
    def initial(self, task: Task) -> ReviewState:
        # unseen: no stability yet; priority orders due reviews (lower first)
        return ReviewState(task_id=task.task_id, priority=0.0, extra={"S": None, "D": None, "zero": 0})

    def update(self, state: ReviewState, pass_rate: float, step: int) -> ReviewState:
        g = self.grade(pass_rate)
        s_old, d_old = state.extra.get("S"), state.extra.get("D")
        if s_old is None or d_old is None:  # first review
            s, d = self.w[g - 1], self._init_difficulty(g)
        else:
            elapsed = max(step - (state.last_round if state.last_round is not None else step), 0)
            r = self.retrievability(elapsed, s_old)
            d = self._next_difficulty(d_old, g)
            s = self._failure_stability(d_old, s_old, r) if g == AGAIN else self._success_stability(d_old, s_old, r, g)
        zero = state.extra.get("zero", 0) + 1 if pass_rate <= 0.0 else 0
        interval = self.interval(s)
        return dataclasses.replace(
            state,
            interval=interval,
            due=step + interval,
            reviews=state.reviews + 1,
            streak=state.streak + 1 if g >= GOOD else 0,
            repeat_fail=zero,
            last_pass_rate=pass_rate,  # srs-code's retention metrics read this
            last_round=step,
            priority=s,  # fragile (low-stability) reviews first
            graduated=s >= self.p.graduate_stability,
            skipped=s < self.p.graduate_stability and zero >= self.p.skip_after_zero_rounds,
            extra={"S": round(s, 6), "D": round(d, 6), "zero": zero, "grade": g},
        )

    def weight(self, state: ReviewState) -> float:
        """SFT weight: harder tasks (high D) train more; 1.0 for an average task (D = 5)."""
        d = state.extra.get("D")
        return 1.0 if d is None else d / 5.0


@hookimpl
def srscode_memory_policies():
    yield ComponentSpec("fsrs", lambda params, ctx: FSRSMemory(params), FSRSParams,
                        "FSRS-style stability/difficulty memory (example plugin)")
