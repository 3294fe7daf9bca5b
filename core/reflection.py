"""What a reflection round remembers of a task: its last failing attempt, chosen at commit."""
from __future__ import annotations

from typing import Mapping, Sequence

from .failure_excerpt import STORED_MAX_CHARS, sanitize_excerpt
from .types import Candidate, FailedAttempt, Task, Verdict


def last_failed_attempts(round_: int, task_ids: Sequence[str], candidates: Sequence[Candidate],
                         verdicts: Sequence[Verdict], tasks: Mapping[str, Task],
                         paths: Mapping[str, str]) -> dict[str, FailedAttempt | None]:
    """Each scheduled task's new last failing attempt, or None (forget the kept one) when none
    of its candidates failed this round: a task whose latest review passed gets a plain prompt
    next time. The attempt kept is the failing candidate with the highest pass rate (ties: one
    with code, then the lowest index), its excerpt sanitised. A task whose candidates all met
    a sandbox error is left out: it keeps what it had (nothing was learnt)."""
    by_id = {(v.task_id, v.index): v for v in verdicts}
    judged: dict[str, list[tuple[Candidate, Verdict]]] = {}
    for c in candidates:
        v = by_id.get((c.task_id, c.index))
        if v is not None and v.status != "sandbox-error":
            judged.setdefault(c.task_id, []).append((c, v))
    out: dict[str, FailedAttempt | None] = {}
    for tid in task_ids:
        if tid not in judged:
            continue
        failing = [(c, v) for c, v in judged[tid] if not v.passed]
        if not failing:
            out[tid] = None
            continue
        c, v = min(failing, key=lambda cv: (-cv[1].pass_rate, not cv[0].code.strip(), cv[0].index))
        excerpt = sanitize_excerpt(v.excerpt, max_chars=STORED_MAX_CHARS, test_code=tasks[tid].test_code, paths=paths)
        out[tid] = FailedAttempt(tid, round_, c.index, v.status, v.pass_rate, c.code, excerpt)
    return out
