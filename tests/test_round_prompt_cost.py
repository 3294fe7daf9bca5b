"""A round's prompt cost in its metrics: total prompt and completion tokens, and the mean
prompt length of new and of review tasks apart (what a reflection prompt costs, issue 18)."""
from __future__ import annotations

from pathlib import Path

from srscode.core.generate_evaluate import GenEval
from srscode.core.metrics import _outcome
from srscode.core.round_files import RoundFiles
from srscode.core.round_state import RoundState
from srscode.core.types import Candidate, ReviewState, Schedule, Verdict


def _state(tmp_path: Path, tokens: dict[str, int]) -> RoundState:
    sched = Schedule(new=("n1", "n2"), review=("r1",))
    cands = [Candidate(t, i, "text", "code", prompt_tokens=tokens[t], completion_tokens=10 + i)
             for t in sched.task_ids for i in range(2)]
    verdicts = [Verdict(c.task_id, c.index, "failed", 0, 1) for c in cands]
    states = {t: ReviewState(t) for t in sched.task_ids}
    return RoundState(round=1, adapter=None, files=RoundFiles(tmp_path, 1, writes=False), schedule=sched,
                      before=states, after=states, generated=GenEval(cands, verdicts),
                      task_rate={t: 0.0 for t in sched.task_ids})


def test_prompt_tokens_split_new_and_review(tmp_path):
    m = _outcome(_state(tmp_path, {"n1": 100, "n2": 120, "r1": 400}))
    assert m["prompt_tokens"] == 2 * (100 + 120 + 400)
    assert m["completion_tokens"] == 3 * (10 + 11)
    assert m["prompt_tokens_new_mean"] == 110.0
    assert m["prompt_tokens_review_mean"] == 400.0


def test_no_token_counts_no_cost_keys(tmp_path):
    # a generator that counts nothing (replay) must not report a prompt cost of 0
    m = _outcome(_state(tmp_path, {"n1": 0, "n2": 0, "r1": 0}))
    assert not any(k.startswith(("prompt_tokens", "completion_tokens")) for k in m)
