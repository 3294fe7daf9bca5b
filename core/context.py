"""What every stage factory receives besides its params: ``factory(params, ctx)``."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .types import PromptBuilder, Task


@dataclass
class SharedModels:
    """The model objects the model stages share within one process, so the generator and the
    trainers never load the base model twice. :mod:`srscode.plugins.lib.hf_model` fills it on
    first use; a model-free run leaves it empty."""

    source: Any = None  # hf_model.ModelSource: what from_pretrained loads
    tokenizer: Any = None
    base_model: Any = None  # eval mode, on the backend's device; no LoRA layers when a stage hands over
    peft_model: Any = None  # the generator's PeftModel around base_model, kept between its calls
    peft_adapter: str | None = None  # sha256 of the adapter files loaded into peft_model's one slot


@dataclass
class StageContext:
    """Run-wide facts and shared objects.

    The engine sets ``tasks`` (the run's loaded tasks, by id), ``prompt_builder`` (the run's
    builder, which generators extract code with) and ``adapter_rank`` (the largest LoRA rank the
    configured trainers produce, None without a LoRA trainer) before the first round.
    ``models`` holds the loaded base model and tokenizer. ``backend`` is the hardware backend
    resolved once per process, on first use, so a model-free run never imports torch.
    """

    config: RunConfig
    run_dir: Path | None = None
    registry: Any = None
    quiet: bool = False
    tasks: Mapping[str, Task] = field(default_factory=dict)
    prompt_builder: PromptBuilder | None = None
    adapter_rank: int | None = None
    models: SharedModels = field(default_factory=SharedModels)
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

    def progress(self, name: str, total: int | None = None, unit: str = "it") -> Any:
        """A progress bar for a long stage (see :mod:`srscode.core.progress`): live bars in a
        terminal, rate-limited plain log lines otherwise, driven by ``quiet`` and the env."""
        from .progress import make_progress

        return make_progress(name, total, unit, quiet=self.quiet)
