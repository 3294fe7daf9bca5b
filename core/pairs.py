"""DPO pairs from a round's candidates: passing vs failing answers to the same prompt.

Tied candidates (pass/pass, fail/fail) teach nothing, so only pass x fail pairs are
built; identical code is deduplicated first; at most ``max_per_task`` pairs per task,
chosen deterministically. Optionally the reference solution stands in as ``chosen``
when no candidate of a task passed.
"""
from __future__ import annotations

import itertools
import random
from typing import Mapping, Sequence

from .types import Candidate, DPOPair, Prompt, Task, Verdict


def build_pairs(
    prompts: Mapping[str, Prompt],
    candidates: Sequence[Candidate],
    verdicts: Sequence[Verdict],
    max_per_task: int,
    seed: int,
    tasks: Mapping[str, Task] | None = None,
    reference_as_chosen: bool = False,
) -> list[DPOPair]:
    by_task: dict[str, tuple[dict[str, Candidate], dict[str, Candidate]]] = {}
    for cand, verdict in zip(candidates, verdicts, strict=True):
        if (cand.task_id, cand.index) != (verdict.task_id, verdict.index):
            raise ValueError(f"verdict {verdict.candidate_id} does not belong to candidate {cand.candidate_id}")
        passing, failing = by_task.setdefault(cand.task_id, ({}, {}))
        key = cand.code.strip()
        if not key:
            continue
        (passing if verdict.passed else failing).setdefault(key, cand)
    pairs: list[DPOPair] = []
    for task_id in sorted(by_task):
        passing, failing = by_task[task_id]
        # code that both passed and failed (flaky) is neither chosen nor rejected
        flaky = passing.keys() & failing.keys()
        chosen = [passing[k].text for k in sorted(passing) if k not in flaky]
        rejected = [failing[k].text for k in sorted(failing) if k not in flaky]
        if not chosen and reference_as_chosen and tasks and task_id in tasks:
            chosen = [f"```python\n{tasks[task_id].solution.strip()}\n```"]
        combos = list(itertools.product(chosen, rejected))
        random.Random(f"pairs:{seed}:{task_id}").shuffle(combos)
        prompt = prompts[task_id].text
        pairs.extend(DPOPair(task_id, prompt, c, r) for c, r in combos[:max_per_task])
    return pairs
