"""Lifecycle plugin: one log line per committed round, and one per validation.

    round 3/20: 12 new + 8 review | pass 0.412 (new 0.500, review 0.281) | graduated 14,
    skipped 2, due 9 | DPO pairs 31 | loss 0.8123 | 56.0s: generate 12.1s, evaluate 3.4s, ...

It also names the round in progress bars (``round 3 generate: ...``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from srscode.core import progress
from srscode.core.hookspecs import hookimpl

log = logging.getLogger("srscode.round")

# per run: the planned number of rounds (hooks after run start carry no run dir, and a
# process runs one engine at a time, so the latest run start is the current run)
_planned: dict[str, Any] = {"rounds": None}


def _secs(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _num(v: Any, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def format_round(round_: int, metrics: Mapping[str, Any], planned: int | None = None) -> str:
    """The per-round line (pure, for tests and other front ends)."""
    m = metrics
    head = f"round {round_}" + (f"/{planned}" if planned else "")
    parts = [
        f"{head}: {m.get('new', 0)} new + {m.get('review', 0)} review",
        f"pass {_num(m.get('pass_rate'))} (new {_num(m.get('pass_rate_new')) if m.get('new') else '-'}, "
        f"review {_num(m.get('pass_rate_review')) if m.get('review') else '-'})",
        f"graduated {m.get('graduated', '-')}, skipped {m.get('skipped', '-')}, due {m.get('due', '-')}",
        f"DPO pairs {m.get('dpo_pairs', 0)}",
    ]
    loss = m.get("train_loss")
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.4f}")
    timeout = m.get("timeout_rate")
    if isinstance(timeout, (int, float)) and timeout > 0:
        parts.append(f"timeouts {100 * timeout:.1f}%")
    if "turnover_lost" in m:
        parts.append(f"turnover -{m['turnover_lost']} +{m.get('turnover_gained', 0)}")
    secs = m.get("seconds") or {}
    if secs:
        shown = ", ".join(f"{k} {_secs(v)}" for k, v in secs.items() if v >= 0.05)
        parts.append(_secs(sum(secs.values())) + (f": {shown}" if shown else ""))
    return " | ".join(parts)


def format_validation(round_: int, info: Mapping[str, Any], planned: int | None = None) -> str:
    if round_ == 0:
        when = "before training"
    elif planned is not None and round_ > planned:
        when = "final"
    else:
        when = f"after round {round_}"
    ks = []
    for k, v in info.items():
        if k.startswith("pass@") and not k.endswith("_ci95"):
            ci = info.get(f"{k}_ci95")
            ks.append(f"{k} {v:.3f}" + (f" ± {ci:.3f}" if isinstance(ci, float) else ""))
    tasks = info.get("tasks")
    return f"validation ({when}): " + (", ".join(ks) or "no scores") + (f" on {int(tasks)} tasks" if tasks else "")


@hookimpl
def srscode_run_start(run_dir: str, config: Mapping[str, Any], resumed_from: int) -> None:
    _planned["rounds"] = config.get("rounds")
    progress.set_prefix("")


@hookimpl
def srscode_stage_start(round: int, stage: str) -> None:
    planned = _planned["rounds"]
    if stage == "validate":
        progress.set_prefix("validation")
    elif round >= 1 and (planned is None or round <= planned):
        progress.set_prefix(f"round {round}")
    else:
        progress.set_prefix("")


@hookimpl
def srscode_stage_finish(round: int, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
    if stage == "validate":
        log.info("%s", format_validation(round, info, _planned["rounds"]))


@hookimpl
def srscode_round_end(round: int, metrics: Mapping[str, Any]) -> None:
    log.info("%s", format_round(round, metrics, _planned["rounds"]))


@hookimpl
def srscode_run_finish(run_dir: str, summary: Mapping[str, Any]) -> None:
    progress.set_prefix("")
