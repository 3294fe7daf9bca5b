"""A progress bar that records what a stage reported (the ``ctx.progress`` interface)."""
from __future__ import annotations

from typing import Any, Callable


class RecordingBar:
    def __init__(self, name: str = "", total: int | None = None, unit: str = "it"):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.counts: dict[str, float] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[dict[str, Any]] = []  # every set() call, in order
        self.closed = False

    def __enter__(self) -> "RecordingBar":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.closed = True
        return False

    def advance(self, n: int = 1, **counts: float) -> None:
        self.done += n
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def set(self, **values: Any) -> None:
        self.values.update(values)
        self.sets.append(values)

    def close(self, error: BaseException | None = None) -> None:
        self.closed = True


def recording_progress(bars: list[RecordingBar]) -> Callable[..., RecordingBar]:
    """A ``ctx.progress`` replacement that appends each bar it makes to ``bars``."""

    def progress(name: str, total: int | None = None, unit: str = "it") -> RecordingBar:
        bars.append(RecordingBar(name, total, unit))
        return bars[-1]

    return progress
