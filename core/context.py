"""What every stage factory receives besides its params: ``factory(params, ctx)``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig


@dataclass
class StageContext:
    """Run-wide facts and shared objects.

    ``cache`` holds objects stages share within one process (the loaded base model and
    tokenizer, so the generator and the trainer never load it twice). ``backend`` is the
    hardware backend resolved once per process, on first use, so a model-free run never
    imports torch.
    """

    config: RunConfig
    run_dir: Path | None = None
    registry: Any = None
    quiet: bool = False
    cache: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("srscode"))
    _backend: Any = None

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from srscode.hardware.resolve import resolve_backend

            self._backend = resolve_backend(self.config.hardware, self.registry)
        return self._backend

    @property
    def hook(self) -> Any:
        return self.registry.pm.hook if self.registry is not None else None

    def progress(self, name: str, total: int | None = None, unit: str = "it") -> Any:
        """A progress bar for a long stage (see :mod:`srscode.core.progress`): live bars in a
        terminal, rate-limited plain log lines otherwise, driven by ``quiet`` and the env."""
        from .progress import make_progress

        return make_progress(name, total, unit, quiet=self.quiet)
