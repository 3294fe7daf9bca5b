"""Retention metrics: how the curriculum's memory moves from round to round.

The engine's round metrics already hold the round's pass rates (``pass_rate``,
``pass_rate_new``, ``pass_rate_review``), ``lapses``, ``timeout_rate`` and ``dpo_pairs``.
This module adds what needs the memory's history:

``correct_set``      tasks whose latest review was *correct* (pass rate >= ``threshold``,
                     default 0.5: the mean test pass rate of the task's candidates)
``turnover_lost``    tasks reviewed this round that were correct at their previous review
                     and are not now (forgotten)
``turnover_gained``  the reverse: incorrect at their previous review, correct now
``turnover_rate``    (lost + gained) / max(correct_set, 1)
``lapse_rate``       reviewed tasks that passed something before (pass rate > 0) and
                     pass nothing now, over the reviewed tasks that passed something before
``due_backlog``      active tasks overdue after this round (due <= round, not reviewed)
``seen graduated skipped active due``   memory totals after the round (``due``: due next round)
``interval_hist``    active tasks per review-interval bucket (``"1"``, ``"2"``, ``"3-4"``, ...)
``mean_interval``    mean interval of the active tasks
``reviewed``         tasks of this round that had been seen before
``pairs_per_task``   DPO pairs over the round's tasks (when ``pairs`` is given)

Everything is computed from :class:`~srscode.core.types.ReviewState` records, so any memory
policy that sets ``last_pass_rate`` in ``update`` (as ``sm2`` and ``none`` do) gets them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .ledger import CORRECT_THRESHOLD, INTERVAL_BUCKETS, Ledger, interval_bucket, state_from_json, state_totals
from .types import ReviewState

def states_as_of(ledger: Ledger, round_: int) -> dict[str, ReviewState]:
    """Every seen task's state after round ``round_`` (0 = before the run)."""
    if round_ == ledger.last_round():  # the ``memory`` table is exactly that state
        return {s.task_id: s for s in ledger.all_states()}
    out: dict[str, ReviewState] = {}
    q = "SELECT task_id, state FROM memory_log WHERE round <= ? ORDER BY round"
    for tid, text in ledger.db.execute(q, (round_,)):
        out[tid] = state_from_json(text)
    return out


def retention_metrics(
    ledger: Ledger,
    round: int,
    after_states: Mapping[str, ReviewState],
    task_rate: Mapping[str, float],
    *,
    pairs: int | None = None,
    threshold: float = CORRECT_THRESHOLD,
) -> dict[str, Any]:
    """Retention metrics of round ``round`` for the engine, called before ``commit_round``
    (the ``memory`` table still holds the state after round ``round - 1``).

    ``after_states``: task id -> state after this round's memory update, for every task
    scheduled this round. ``task_rate``: task id -> this round's mean pass rate (a missing
    task counts as 0). ``pairs``: DPO pairs built this round, for ``pairs_per_task``.

    Same numbers as :func:`compute`, but the tasks not reviewed this round are
    aggregated inside SQLite (indexed columns of the ``memory`` table) instead of being
    loaded: the cost stays flat at hundreds of thousands of tasks.
    """
    before = ledger.get_states(list(after_states))
    out = compute(round, before, after_states, task_rate, pairs=pairs, threshold=threshold)
    # the untouched tasks = the running totals minus what the round's tasks held before
    untouched = dict(ledger.totals())
    for state in before.values():
        for k, v in state_totals(state).items():
            untouched[k] = untouched.get(k, 0.0) - v

    def count_due(step: int) -> int:
        q = "SELECT COUNT(*) FROM memory WHERE active=1 AND due<=?"
        return int(ledger.db.execute(q, (step,)).fetchone()[0]) - sum(
            1 for s in before.values() if s.active and s.due <= step)

    out["seen"] += int(untouched.get("seen", 0))
    out["graduated"] += int(untouched.get("graduated", 0))
    out["skipped"] += int(untouched.get("skipped", 0))
    out["due"] += count_due(round + 1)
    out["due_backlog"] = count_due(round)  # only untouched tasks can be overdue after the round
    if threshold == CORRECT_THRESHOLD:
        out["correct_set"] += int(untouched.get("correct", 0))
    else:  # another threshold than the running total's: count it in SQL
        q = "SELECT COUNT(*) FROM memory WHERE last_pass_rate>=?"
        out["correct_set"] += int(ledger.db.execute(q, (threshold,)).fetchone()[0]) - sum(
            1 for s in before.values() if s.last_pass_rate is not None and s.last_pass_rate >= threshold)
    active = int(untouched.get("active", 0))
    total_active = out["active"] + active
    interval_sum = out["mean_interval"] * out["active"] + untouched.get("interval_sum", 0.0)
    out["mean_interval"] = interval_sum / total_active if total_active else 0.0
    out["active"] = total_active
    for _, _, label in INTERVAL_BUCKETS:
        out["interval_hist"][label] += int(untouched.get(f"interval:{label}", 0))
    out["turnover_rate"] = (out["turnover_lost"] + out["turnover_gained"]) / max(out["correct_set"], 1)
    return out


def compute(
    round: int,
    before: Mapping[str, ReviewState],
    after: Mapping[str, ReviewState],
    task_rate: Mapping[str, float],
    *,
    pairs: int | None = None,
    threshold: float = CORRECT_THRESHOLD,
) -> dict[str, Any]:
    """The metrics from plain states: ``before`` holds every task seen before the round."""
    lost = gained = reviewed = at_risk = lapsed = 0
    for tid in after:
        prev = before.get(tid)
        if prev is None:
            continue
        reviewed += 1
        now = task_rate.get(tid, 0.0)
        was = prev.last_pass_rate
        if was is None:
            continue
        if was >= threshold and now < threshold:
            lost += 1
        elif was < threshold and now >= threshold:
            gained += 1
        if was > 0:
            at_risk += 1
            lapsed += now == 0

    merged: dict[str, ReviewState] = dict(before)
    merged.update(after)
    correct = graduated = skipped = active = due_next = backlog = 0
    hist = {label: 0 for _, _, label in INTERVAL_BUCKETS}
    interval_sum = 0
    for tid, s in merged.items():
        rate = task_rate.get(tid, 0.0) if tid in after else s.last_pass_rate
        correct += rate is not None and rate >= threshold
        if s.graduated:
            graduated += 1
        elif s.skipped:
            skipped += 1
        else:
            active += 1
            due_next += s.due <= round + 1
            backlog += tid not in after and s.due <= round
            hist[interval_bucket(s.interval)] += 1
            interval_sum += s.interval
    out: dict[str, Any] = {
        "correct_set": correct,
        "turnover_lost": lost,
        "turnover_gained": gained,
        "turnover_rate": (lost + gained) / max(correct, 1),
        "lapse_rate": lapsed / at_risk if at_risk else 0.0,
        "reviewed": reviewed,
        "due_backlog": backlog,
        "seen": len(merged),
        "graduated": graduated,
        "skipped": skipped,
        "active": active,
        "due": due_next,
        "interval_hist": hist,
        "mean_interval": interval_sum / active if active else 0.0,
    }
    if pairs is not None:
        out["pairs_per_task"] = pairs / len(after) if after else 0.0
    return out


def retention_history(ledger: Ledger, threshold: float = CORRECT_THRESHOLD) -> dict[int, dict[str, Any]]:
    """The metrics of every committed round, replayed from ``memory_log`` (for runs whose
    rounds were recorded without them, and for the report). One pass over the log."""
    rows: dict[int, list[ReviewState]] = {}
    for r, text in ledger.db.execute("SELECT round, state FROM memory_log ORDER BY round, task_id"):
        rows.setdefault(int(r), []).append(state_from_json(text))
    out: dict[int, dict[str, Any]] = {}
    state: dict[str, ReviewState] = {}
    for row in ledger.rounds():
        r = row["round"]
        after = {s.task_id: s for s in rows.get(r, [])}
        rate = {t: s.last_pass_rate or 0.0 for t, s in after.items()}
        pairs = row["metrics"].get("dpo_pairs")
        out[r] = compute(r, state, after, rate, pairs=pairs, threshold=threshold)
        state.update(after)
    return out


def round_records(ledger: Ledger, threshold: float = CORRECT_THRESHOLD) -> list[dict[str, Any]]:
    """Each committed round's metrics with the retention metrics filled in where the
    round was recorded without them (what the JSON-lines logger backfills and the report
    plots)."""
    history = retention_history(ledger, threshold)
    out = []
    for row in ledger.rounds():
        m = dict(history.get(row["round"], {}))
        m.update(row["metrics"])  # what the engine recorded wins
        m["round"] = row["round"]
        m.setdefault("time", row["committed_at"])
        out.append(m)
    return out


def flatten(metrics: Mapping[str, Any], prefix: str = "", sep: str = "/") -> Iterable[tuple[str, float]]:
    """Numeric leaves of a nested metrics dict as ``("seconds/generate", 1.2)`` pairs."""
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            yield key, float(v)
        elif isinstance(v, (int, float)):
            yield key, float(v)
        elif isinstance(v, Mapping):
            yield from flatten(v, key + sep, sep)
