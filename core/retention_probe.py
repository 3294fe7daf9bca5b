"""The retention probe (config ``retention``): does the current adapter still solve the
training tasks it once solved?

At the end of a run (``retention.at_end``) and every ``retention.every`` rounds, every
training task whose pass rate reached ``retention.threshold`` at some committed review
(the ledger's ``memory_log``) is sampled ``retention.candidates`` times with the current
adapter, through the same generate + evaluate path as validation, and the result is
recorded in the ledger's ``retention_probes`` table under the round (``rounds + 1`` for
the final probe, like the final validation).

A task is *still solved* when its mean test pass rate over the probe's samples reaches
the threshold: the same measure (``Verdict.pass_rate``, averaged) that made it solved at
a review. The record (:func:`summarize_probe`)::

    label, adapter, threshold, candidates   how the probe ran
    tasks        ever-solved training tasks probed
    solved       of those, still solved
    share        solved / tasks (None when no task was ever solved)
    ci95_low, ci95_high   95 % Wilson score interval of the share (binomial over tasks)
    interval     "wilson"
    per_task     {task_id: [n_passed, n_samples]}  samples passing every test (pass@k,
                 paired comparisons across arms)
    pass_rate    {task_id: mean test pass rate}     what ``solved`` is decided on
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from .types import Verdict

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``successes`` out of ``n`` (None, None when n = 0)."""
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def probe_tasks(ever_solved: Iterable[str], train_ids: Iterable[str]) -> list[str]:
    """The tasks a probe re-tests: ever solved and in the training split, sorted."""
    train = set(train_ids)
    return sorted(t for t in ever_solved if t in train)


def summarize_probe(verdicts: Iterable[Verdict], task_ids: Sequence[str], threshold: float) -> dict[str, Any]:
    """The probe's record (without ``label``/``adapter``) from its verdicts; a task with
    no verdict counts as 0 of 0 samples, not solved."""
    by_task: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_task[v.task_id].append(v)
    per_task: dict[str, list[int]] = {}
    rates: dict[str, float] = {}
    for t in task_ids:
        vs = by_task.get(t, [])
        per_task[t] = [sum(v.passed for v in vs), len(vs)]
        rates[t] = sum(v.pass_rate for v in vs) / len(vs) if vs else 0.0
    solved = sum(1 for t in task_ids if rates[t] >= threshold)
    n = len(task_ids)
    low, high = wilson(solved, n)
    return {
        "threshold": threshold, "tasks": n, "solved": solved, "share": solved / n if n else None,
        "ci95_low": low, "ci95_high": high, "interval": "wilson", "per_task": per_task, "pass_rate": rates,
    }


def describe(key: int, probe: dict[str, Any], rounds_planned: int | None) -> str:
    """One line for ``srscode status``."""
    after = min(key, rounds_planned) if rounds_planned else key
    head = f"retention {probe.get('label', '')} (after round {after}): "
    if not probe.get("tasks"):
        return head + "no training task solved yet"
    low, high = probe.get("ci95_low"), probe.get("ci95_high")
    return (head + f"{probe['share']:.3f} still solved ({probe['solved']} of {probe['tasks']} ever-solved tasks, "
            f"95% Wilson {low:.3f}-{high:.3f}, {probe.get('candidates')} samples each)")
