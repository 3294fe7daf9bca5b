"""pass@k on a validation set (the held-out split or a validation source): the unbiased
estimator of Chen et al. (2021), and the per-task counts paired comparisons need."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from .types import Verdict


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): probability that k of n samples (c correct) hold a pass."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def summarize(verdicts: Iterable[Verdict], ks: Sequence[int]) -> dict[str, float]:
    per_task: dict[str, list[bool]] = defaultdict(list)
    for v in verdicts:
        per_task[v.task_id].append(v.passed)
    out: dict[str, float] = {"tasks": float(len(per_task))}
    if not per_task:
        return out
    for k in ks:
        scores = [pass_at_k(len(r), sum(r), k) for r in per_task.values() if len(r) >= k]
        if scores:
            mean = sum(scores) / len(scores)
            out[f"pass@{k}"] = mean
            # normal-approximation 95% interval over tasks, for the report's error bars
            if len(scores) > 1:
                var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
                out[f"pass@{k}_ci95"] = 1.96 * math.sqrt(var / len(scores))
    return out


def per_task(verdicts: Iterable[Verdict]) -> dict[str, list[int]]:
    """``{task_id: [n_passed, n_samples]}``, sorted by id: what paired comparisons across runs
    (same tasks, same samples per task) are computed from."""
    out: dict[str, list[int]] = {}
    for v in verdicts:
        row = out.setdefault(v.task_id, [0, 0])
        row[0] += int(v.passed)
        row[1] += 1
    return dict(sorted(out.items()))


def validation_metrics(verdicts: Sequence[Verdict], ks: Sequence[int], n_candidates: int) -> dict[str, Any]:
    """One validation set's recorded metrics: :func:`summarize`'s, ``candidates`` and ``per_task``."""
    metrics: dict[str, Any] = dict(summarize(verdicts, ks))
    metrics.update(candidates=n_candidates, per_task=per_task(verdicts))
    return metrics
