"""What one round carries from stage to stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .generate_evaluate import GenEval
from .round_files import RoundFiles
from .types import AdapterRef, DPOPair, Prompt, ReviewState, Schedule


@dataclass
class RoundState:
    """One round so far: each stage reads what the stages before it set and adds its own.

    On ranks other than 0, ``before``/``after`` and ``task_rate`` are rank 0's (the memory is
    updated there once) and ``pairs`` stays empty (rank 0 builds and keeps them).
    """

    round: int
    adapter: AdapterRef | None  # the latest: the one generation used until train/DPO replace it
    files: RoundFiles
    schedule: Schedule = Schedule((), ())
    before: dict[str, ReviewState] = field(default_factory=dict)  # memory of the scheduled tasks
    prompts: dict[str, Prompt] = field(default_factory=dict)
    generated: GenEval = field(default_factory=lambda: GenEval([], []))
    task_rate: dict[str, float] = field(default_factory=dict)  # mean pass rate of each task's candidates
    after: dict[str, ReviewState] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    # sft.target own_pass/mixed only: sft_examples (trained on) and sft_own_pass (of them, own passing code)
    sft_metrics: dict[str, float] = field(default_factory=dict)
    pairs: list[DPOPair] = field(default_factory=list)
    dpo_metrics: dict[str, float] = field(default_factory=dict)
    validation: dict[str, Any] | None = None

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.schedule.task_ids
