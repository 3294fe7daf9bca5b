"""What the SFT stage trains on under ``sft.target`` own_pass / mixed: the model's own passing
code, picked the same way on every rank."""
from __future__ import annotations

from typing import Sequence

from .errors import StageError
from .types import Candidate, Verdict


def own_passing_code(candidates: Sequence[Candidate], verdicts: Sequence[Verdict]) -> dict[str, str]:
    """task id -> the code of its passing candidate to train on (sft.target own_pass/mixed).

    Deterministic whatever order the candidates arrive in (ranks, streaming): the shortest
    passing code (stripped), ties by the lowest candidate index. Shortest because, among
    solutions that pass the same tests, it carries the least that the tests did not check
    (dead code, debugging prints, chatter). Code that is empty, or that did not pass in
    another candidate of the task (flaky, or a sandbox error there), is never taken: only
    code that passed every time it ran.
    """
    passed: dict[str, list[tuple[int, int, str, str]]] = {}  # task -> (length, index, key, code)
    failed: dict[str, set[str]] = {}
    for cand, verdict in zip(candidates, verdicts, strict=True):
        if (cand.task_id, cand.index) != (verdict.task_id, verdict.index):
            raise StageError(f"sft: verdict {verdict.candidate_id} does not belong to candidate {cand.candidate_id}")
        key = cand.code.strip()
        if not key:
            continue
        if verdict.passed:
            passed.setdefault(cand.task_id, []).append((len(key), cand.index, key, cand.code))
        else:
            failed.setdefault(cand.task_id, set()).add(key)
    out: dict[str, str] = {}
    for tid, found in passed.items():
        ok = [x for x in found if x[2] not in failed.get(tid, set())]
        if ok:
            out[tid] = min(ok)[3]
    return out
