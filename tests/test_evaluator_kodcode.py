"""Agreement with the verdicts KodCode's authors recorded for real Qwen2.5 trials.

Uses ``../shared/data/kodcode/`` (skipped when absent, as on a user's machine). The
default suite checks a slice of the tasks; ``-m slow`` checks all 548 trials. Every
disagreement must have a known cause (a package this machine lacks, a yield-style test
that today's pytest rejects, a timing-dependent test); anything else fails the test.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodcode"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared KodCode rows not found at {DATA}")


def decode(text: str) -> str:
    if text[:1] in ("'", '"'):
        try:
            value = ast.literal_eval(text)
            return value if isinstance(value, str) else text
        except (ValueError, SyntaxError):
            return text
    return text


def load(limit_per_file: int | None) -> list[dict]:
    items = []
    for f in sorted(DATA.glob("*.json")):
        rows = json.loads(f.read_text())
        for row in rows[:limit_per_file] if limit_per_file else rows:
            ref = decode(row["solution"])
            items.append({"id": f"{row['question_id']}::reference", "solution": ref, "test": decode(row["test_code"]), "reference": ref, "recorded": None})
            for key, trial in row["trials"].items():
                items.append({"id": f"{row['question_id']}::{key}", "solution": decode(trial["solution_code"]), "test": decode(trial["test_code"]), "reference": ref, "recorded": trial["test_result"]})
    return items


def known_cause(item: dict, status: str, excerpt: str) -> str | None:
    if "No module named" in excerpt:
        return "package missing on this machine"
    if "'yield' keyword is allowed in fixtures, but not in tests" in excerpt:
        return "yield-style test rejected by pytest >= 4"
    if status == "timeout" or item["recorded"] == "Fail - Timed Out":
        return "timing-dependent"
    return None


def check(items: list[dict]) -> tuple[int, int, list[str], list[str]]:
    """(agreeing trials, trials, disagreements with no known cause, trials this machine cannot
    run because a package their test imports is missing here)."""
    ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none"))
    try:
        svc = ev.service
        seqs = {svc.submit_code(it["id"], 0, it["solution"], it["test"], it["reference"]): it for it in items}
        verdicts = {seqs[s]["id"]: v for s, v in svc.results_with_seq()}
    finally:
        ev.close()
    agree = total = 0
    unexplained, missing = [], []
    for it in items:
        v = verdicts[it["id"]]
        if it["recorded"] is None:  # reference solutions: they pass unless a known cause
            if not v.passed and known_cause(it, v.status, v.excerpt) is None:
                unexplained.append(f"{it['id']}: reference {v.status}: {v.excerpt[:200]}")
            continue
        total += 1
        if v.passed == (it["recorded"] == "Pass"):
            agree += 1
        else:
            cause = known_cause(it, v.status, v.excerpt)
            if cause is None:
                unexplained.append(f"{it['id']}: recorded {it['recorded']}, ours {v.status}: {v.excerpt[:300]}")
            elif cause == "package missing on this machine":
                missing.append(it["id"])
    return agree, total, unexplained, missing


def test_agreement_on_a_slice() -> None:
    agree, total, unexplained, _ = check(load(limit_per_file=6))
    assert total > 20
    assert unexplained == []
    assert agree >= total - 2


@pytest.mark.slow
def test_agreement_on_every_recorded_trial() -> None:
    agree, total, unexplained, missing = check(load(limit_per_file=None))
    assert total == 548
    assert unexplained == []
    # the seed-style runner (exit code 0 = pass) agrees with 544-546/548 here, depending on
    # load; the two yield-style trials are the only disagreements left: docs/benchmarks.md.
    # Trials whose tests import a package this machine lacks (scipy is not among the project's
    # dependencies: two trials of one row) cannot run here, so they do not count against us.
    assert len(missing) <= 2, missing
    assert agree + len(missing) >= 546
