"""DPO pairs from a round's candidates: passing vs failing answers to the same prompt.

Tied candidates (pass/pass, fail/fail) teach nothing, so only pass x fail pairs are
built; identical code is deduplicated first; at most ``max_per_task`` pairs per task,
chosen deterministically. Optionally the reference solution stands in as ``chosen``
when no candidate of a task passed (``reference``: the prompt builder renders it in the
completion format its prompts ask for).
"""
from __future__ import annotations

import itertools
import random
from typing import Callable, Mapping, Sequence

from .types import Candidate, DPOPair, Prompt, Verdict


def build_pairs(
    prompts: Mapping[str, Prompt],
    candidates: Sequence[Candidate],
    verdicts: Sequence[Verdict],
    max_per_task: int,
    seed: int,
    reference: Callable[[str], str] | None = None,
) -> list[DPOPair]:
    """``reference(task_id)``: the chosen answer of a task none of whose candidates passed
    (its reference solution as a training target); None: such tasks give no pairs."""
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
        if not chosen and reference is not None:
            chosen = [reference(task_id)]
        combos = list(itertools.product(chosen, rejected))
        random.Random(f"pairs:{seed}:{task_id}").shuffle(combos)
        prompt = prompts[task_id].text
        pairs.extend(DPOPair(task_id, prompt, c, r) for c, r in combos[:max_per_task])
    return pairs
