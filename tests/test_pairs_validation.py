"""DPO pair building (pass vs fail only) and the pass@k estimator."""
from __future__ import annotations

import math

import pytest

from srscode.core.pairs import build_pairs
from srscode.core.types import Candidate, Prompt, Task, Verdict
from srscode.core.validation import pass_at_k, summarize


def cand(task, i, code):
    return Candidate(task, i, f"```python\n{code}\n```", code)


def verdict(task, i, ok):
    return Verdict(task, i, "passed" if ok else "failed", int(ok), 1)


PROMPTS = {t: Prompt(t, f"prompt {t}") for t in ("a", "b", "c", "d")}


def test_only_pass_vs_fail_deduplicated_capped_and_deterministic():
    cands = [cand("a", 0, "good1"), cand("a", 1, "good1"), cand("a", 2, "bad1"), cand("a", 3, "bad2"),
             cand("a", 4, "good2"),
             cand("b", 0, "x"), cand("b", 1, "y"),            # all pass: no pair
             cand("c", 0, "p"), cand("c", 1, "q"),            # all fail: no pair
             cand("d", 0, "flaky"), cand("d", 1, "flaky"), cand("d", 2, "ok")]  # same code both ways
    oks = [True, True, False, False, True, True, True, False, False, True, False, False]
    verdicts = [verdict(c.task_id, c.index, ok) for c, ok in zip(cands, oks)]
    pairs = build_pairs(PROMPTS, cands, verdicts, max_per_task=3, seed=0)
    by_task = {}
    for p in pairs:
        by_task.setdefault(p.task_id, []).append(p)
        assert "good" in p.chosen and "bad" in p.rejected and p.prompt == f"prompt {p.task_id}"
    assert set(by_task) == {"a"}                       # b, c tied; d's only pair is flaky code
    assert len(by_task["a"]) == 3                      # 2 distinct good x 2 bad = 4, capped at 3
    assert len({(p.chosen, p.rejected) for p in pairs}) == len(pairs)
    assert build_pairs(PROMPTS, cands, verdicts, max_per_task=3, seed=0) == pairs


def test_reference_as_chosen_only_when_asked_and_no_candidate_passed():
    cands = [cand("c", 0, "p"), cand("c", 1, "q")]
    verdicts = [verdict("c", 0, False), verdict("c", 1, False)]
    tasks = {"c": Task("c", "q", "def ref(): pass", "def test(): pass")}
    assert build_pairs(PROMPTS, cands, verdicts, 4, 0) == []
    pairs = build_pairs(PROMPTS, cands, verdicts, 4, 0, reference=lambda t: tasks[t].solution)
    assert len(pairs) == 2 and all("def ref()" in p.chosen for p in pairs)


def test_mismatched_verdicts_are_refused():
    with pytest.raises(ValueError, match="does not belong"):
        build_pairs(PROMPTS, [cand("a", 0, "x")], [verdict("a", 1, True)], 4, 0)


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (5, 0, 2), (5, 5, 2), (4, 1, 4)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact)


def test_summarize_averages_over_tasks():
    vs = [verdict("a", 0, True), verdict("a", 1, False), verdict("b", 0, False), verdict("b", 1, False)]
    out = summarize(vs, [1, 2])
    assert out["pass@1"] == pytest.approx(0.25) and out["pass@2"] == pytest.approx(0.5) and out["tasks"] == 2
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
