"""A round's metrics (``metrics.json``, the ledger row, ``srscode_round_end``) and the run's
status summary (``srscode status``, ``srscode_run_finish``)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from .ledger import FINAL_DPO, Ledger
from .retention import retention_metrics
from .round_state import RoundState
from .types import Candidate


def round_metrics(ledger: Ledger, s: RoundState, seconds: Mapping[str, float], world: int) -> dict[str, Any]:
    """Everything recorded about round ``s``: counts and pass rates, the trainers' metrics,
    validation, wall seconds, and the retention metrics (before the round commits)."""
    metrics = _outcome(s)
    metrics.update(s.sft_metrics)  # empty unless sft.target is own_pass or mixed
    metrics.update(s.train_metrics)
    metrics.update(s.dpo_metrics)
    if s.validation:
        metrics["validation"] = s.validation
    metrics["seconds"] = dict(seconds)
    if s.generated.timing:  # under "seconds" like every wall-time figure (readers treat those as volatile)
        metrics["streaming"] = {"seconds": s.generated.timing}
    if world > 1:
        metrics["world_size"] = world
    metrics.update(retention_metrics(ledger, s.round, s.after, s.task_rate, pairs=len(s.pairs)))
    return metrics


def _outcome(s: RoundState) -> dict[str, Any]:
    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    candidates, verdicts = s.generated.candidates, s.generated.verdicts
    # sampling that collapses onto one solution shows here first (the evaluator runs
    # each distinct one once, so this is also the share of runs it saved)
    seen: set[tuple[str, str]] = set()
    copies = 0
    for c in candidates:
        copies += (c.task_id, c.code) in seen
        seen.add((c.task_id, c.code))

    sched, rate, before, after = s.schedule, s.task_rate, s.before, s.after
    ids = list(sched.task_ids)
    statuses = Counter(v.status for v in verdicts)
    return {**_prompt_cost(candidates, sched.review),
        "round": s.round,
        "new": len(sched.new),
        "review": len(sched.review),
        "candidates": len(verdicts),
        "pass_rate": mean([rate.get(t, 0.0) for t in ids]),
        "pass_rate_new": mean([rate.get(t, 0.0) for t in sched.new]),
        "pass_rate_review": mean([rate.get(t, 0.0) for t in sched.review]),
        "candidate_pass_rate": mean([float(v.passed) for v in verdicts]),
        "tasks_solved": sum(1 for t in ids if any(v.passed for v in verdicts if v.task_id == t)),
        "statuses": dict(sorted(statuses.items())),
        "timeout_rate": statuses.get("timeout", 0) / len(verdicts) if verdicts else 0.0,
        "duplicate_rate": copies / len(candidates) if candidates else 0.0,
        "newly_graduated": sum(1 for t in ids if after[t].graduated and not before[t].graduated),
        "newly_skipped": sum(1 for t in ids if after[t].skipped and not before[t].skipped),
        "lapses": sum(1 for t in sched.review if (before[t].last_pass_rate or 0) > 0 and rate.get(t, 0.0) == 0),
        "dpo_pairs": len(s.pairs),
    }


def _prompt_cost(candidates: Sequence[Candidate], review: Sequence[str]) -> dict[str, Any]:
    """What the round's prompts cost in tokens (the generator's count per candidate), overall
    and for review tasks: a reflection prompt carries the last attempt and its failure, and
    this is its price. Absent where the generator counts no tokens (replay)."""
    if not any(c.prompt_tokens for c in candidates):
        return {}
    due = set(review)
    rev = [c.prompt_tokens for c in candidates if c.task_id in due]
    new = [c.prompt_tokens for c in candidates if c.task_id not in due]
    out: dict[str, Any] = {"prompt_tokens": sum(new) + sum(rev),
                           "completion_tokens": sum(c.completion_tokens for c in candidates)}
    if new:
        out["prompt_tokens_new_mean"] = sum(new) / len(new)
    if rev:
        out["prompt_tokens_review_mean"] = sum(rev) / len(rev)
    return out


def prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with every key starting with ``prefix`` (the DPO trainer's, next to SFT's)."""
    return {k if k.startswith(prefix) else prefix + k: v for k, v in metrics.items()}


def status_summary(ledger: Ledger) -> dict[str, Any]:
    last = ledger.last_round()
    row = ledger.round_row(last) if last else None
    config = ledger.get_meta("config") or {}
    # per-task counts stay in the ledger (Ledger.validations(), for paired comparisons), not the summary
    vals = {r: _without_per_task(v) for r, v in ledger.validations().items()}
    dpo = ledger.stage(FINAL_DPO)
    probes = ledger.retention_probes()
    # only runs with the retention probe on carry the key (status output unchanged otherwise)
    retention = {"retention": {r: {k: v for k, v in p.items() if k not in ("per_task", "pass_rate")}
                               for r, p in probes.items()}} if probes else {}
    return {
        "run_dir": str(ledger.run_dir),
        "round": last,
        "rounds_planned": config.get("rounds"),
        "memory": ledger.memory_counts(last + 1),
        "n_train": ledger.get_meta("n_train"),
        "n_val": ledger.get_meta("n_val"),
        "last_metrics": _without_per_task(row["metrics"], "validation") if row else {},
        "adapter": row["adapter_path"] if row else None,
        "validations": vals,
        "final_dpo": dpo["metrics"] if dpo else None,
        **retention,
    }


def _without_per_task(metrics: Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
    """Validation metrics (``metrics[key]`` when ``key`` is given) without their per-task counts."""
    if key is not None:
        inner = metrics.get(key)
        return {**metrics, key: _without_per_task(inner)} if isinstance(inner, Mapping) else dict(metrics)
    out = {k: v for k, v in metrics.items() if k != "per_task"}
    if isinstance(out.get("sources"), Mapping):
        out["sources"] = {name: {k: v for k, v in m.items() if k != "per_task"} for name, m in out["sources"].items()}
    return out
