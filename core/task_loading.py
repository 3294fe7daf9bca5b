"""The run's tasks: loaded from the configured dataset source (every rank loads them), and
split into training and validation sets that stay fixed across resumes."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .config import RunConfig
from .errors import DataError
from .types import Task

log = logging.getLogger("srscode.engine")


def _load(registry: Any, ctx: Any, name: str, params: Any, path: str | None, key: str, params_key: str | None,
          what: str) -> tuple[dict[str, Task], Any]:
    """One dataset source's tasks by id and its load report; skipped rows are logged."""
    source = registry.build("dataset", name, params, ctx, key, params_key)
    report = source.load(path)
    for reason, count in sorted(report.skipped.items()):
        examples = ", ".join(report.examples.get(reason, [])[:3])
        log.warning("%s: skipped %d rows: %s%s", what, count, reason, f" (e.g. {examples})" if examples else "")
    return {t.task_id: t for t in report.tasks}, report


def load_tasks(config: RunConfig, registry: Any, ctx: Any) -> dict[str, Task]:
    """The configured source's tasks by id (at most ``data.limit``, a seeded choice); the
    rows it skipped are logged with their reasons."""
    cfg = config.data
    tasks, report = _load(registry, ctx, cfg.source, cfg.params, cfg.path, "data.source", None, "data")
    if cfg.limit is not None and len(tasks) > cfg.limit:
        keep = sorted(tasks, key=lambda t: hashlib.sha256(f"limit:{config.seed}:{t}".encode()).digest())
        tasks = {t: tasks[t] for t in sorted(keep[: cfg.limit])}
    if not tasks:
        raise DataError(
            f"data: source {cfg.source!r} gave no usable tasks from {cfg.path or '(its default)'}; "
            f"skipped: {dict(report.skipped) or 'none'}."
        )
    return tasks


def load_validation_sources(config: RunConfig, registry: Any, ctx: Any) -> dict[str, dict[str, Task]]:
    """``validation.sources``: each source's tasks by id (at most its ``limit``, the first by
    id), keyed by its label; a source that gives no task is an error naming it."""
    out: dict[str, dict[str, Task]] = {}
    for i, src in enumerate(config.validation.sources):
        where = f"validation.sources[{i}]"
        tasks, report = _load(registry, ctx, src.name, src.params, src.path, f"{where}.name", f"{where}.params",
                              f"{where} ({src.key})")
        if src.limit is not None:
            tasks = {t: tasks[t] for t in sorted(tasks)[: src.limit]}
        if not tasks:
            raise DataError(
                f"{where}: source {src.name!r} gave no usable tasks from {src.path or '(its default)'}; "
                f"skipped: {dict(report.skipped) or 'none'}."
            )
        out[src.key] = dict(sorted(tasks.items()))
    return out


def ids_digest(task_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(task_ids)).encode()).hexdigest()


def check_same_tasks(digests: Sequence[str], config: RunConfig) -> None:
    """Every rank builds prompts and evaluates, so all must have loaded the same tasks."""
    if len(set(digests)) > 1:
        raise DataError(
            f"the ranks loaded different task sets from {config.data.path or config.data.source!r} "
            f"(task-id digests {', '.join(d[:12] for d in digests)}); every process must read the same data."
        )


def split_tasks(task_ids: Sequence[str], train_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Fixed train/validation split: a task's side depends only on (seed, id), so it is
    stable across resumes and unaffected by row order or by rows added later."""
    train, val = [], []
    for tid in sorted(task_ids):
        h = int.from_bytes(hashlib.sha256(f"split:{seed}:{tid}".encode()).digest()[:8], "big")
        (train if h / 2**64 < train_ratio else val).append(tid)
    return train, val


@dataclass(frozen=True)
class Split:
    """The run's training tasks (the scheduler's pool) and validation tasks, sorted."""

    train: list[str]
    val: list[str]

    @staticmethod
    def of(task_ids: Sequence[str], config: RunConfig) -> "Split":
        train, val = split_tasks(task_ids, config.data.train_ratio, config.seed)
        if config.validation.limit is not None:
            val = val[: config.validation.limit]
        return Split(train, val)

    @property
    def digest(self) -> str:
        """The training split's identity, stored in the ledger: a resume must find it again."""
        return ids_digest(self.train)
