"""Stage timing: each stage of a round between its lifecycle hooks and fault checkpoints,
and its wall seconds for the round's ``metrics["seconds"]``."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from .faults import checkpoint
from .types import STAGES


class StageTimer:
    """``seconds`` partitions a round's wall time by stage; ``notify(hook_name, **kwargs)``
    tells the observers (the engine's, which only rank 0 calls through)."""

    def __init__(self, notify: Callable[..., None]):
        self.notify = notify
        self.seconds: dict[str, float] = {}

    def new_round(self) -> None:
        self.seconds = {}

    @contextlib.contextmanager
    def stage(self, round_: int, name: str, timed: bool = True) -> Iterator[dict[str, Any]]:
        """Run a stage; the caller fills the yielded ``info`` with counts for the observers.
        ``timed=False``: a stage inside another one (generation inside validation), which
        counts in the outer stage and tells nobody."""
        assert name in STAGES, name
        info: dict[str, Any] = {}
        if not timed:
            yield info
            return
        self.notify("srscode_stage_start", round=round_, stage=name)
        checkpoint(f"stage-start:{name}")
        start = time.perf_counter()
        try:
            yield info
        except BaseException as exc:
            self.notify("srscode_stage_error", round=round_, stage=name, error=exc)
            raise
        checkpoint(f"stage-end:{name}")
        seconds = time.perf_counter() - start
        self.charge(name, seconds)
        self.notify("srscode_stage_finish", round=round_, stage=name, seconds=seconds, info=info)

    def charge(self, name: str, seconds: float) -> None:
        """Add round wall time spent outside any stage's hooks (``gather``)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
