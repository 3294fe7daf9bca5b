"""Every hook srs-code calls, in one file.

Two kinds of hooks:

*Registration hooks* are collected from every plugin (pluggy calls all of them and
we keep every result). Each yields :class:`~srscode.core.types.ComponentSpec`
records; the config picks one implementation per stage **by name**, never by
registration order, so the same config means the same run whatever else is
installed. A name provided by two plugins is an error naming both.

*Lifecycle hooks* are observers: return values are ignored. Loggers, progress
displays and reporters hang here. They must not raise; an exception from an
observer is logged and the run goes on.

Third-party packages register a module with ``@hookimpl`` functions through the
``srscode`` entry-point group::

    [project.entry-points.srscode]
    fsrs = "srscode_fsrs.plugin"
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import pluggy

from .types import ComponentSpec

PROJECT = "srscode"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- registration hooks


@hookspec
def srscode_prompt_builders() -> Iterable[ComponentSpec]:
    """Yield prompt builders: ``factory(params, ctx)`` returns a ``PromptBuilder``
    (``build(task) -> Prompt`` and ``extract(output, prompt) -> str``). Config: ``stages.prompt``."""


@hookspec
def srscode_generators() -> Iterable[ComponentSpec]:
    """Yield generators: ``factory(params, ctx)`` returns a ``Generator`` that samples
    N candidates per prompt with a given LoRA adapter. Config: ``stages.generator``.
    Optional: ``generate_iter`` (batch by batch; the engine then overlaps evaluation with
    generation) and ``seeds_per_task``; see ``srscode.core.types.StreamingGenerator``."""


@hookspec
def srscode_evaluators() -> Iterable[ComponentSpec]:
    """Yield evaluators: ``factory(params, ctx)`` returns an ``Evaluator`` giving one
    ``Verdict`` per candidate. Config: ``stages.evaluator``."""


@hookspec
def srscode_memory_policies() -> Iterable[ComponentSpec]:
    """Yield memory policies: ``factory(params, ctx)`` returns a ``MemoryPolicy``
    (initial state, update from a pass rate, training weight). Config: ``stages.memory``."""


@hookspec
def srscode_schedulers() -> Iterable[ComponentSpec]:
    """Yield schedulers: ``factory(params, ctx)`` returns a ``Scheduler`` that picks
    each round's new and review tasks. Config: ``stages.scheduler``."""


@hookspec
def srscode_trainers() -> Iterable[ComponentSpec]:
    """Yield trainers: SFT trainers (``train_sft``) for ``stages.trainer`` and
    preference trainers (``train_pairs``) for ``dpo.name``."""


@hookspec
def srscode_datasets() -> Iterable[ComponentSpec]:
    """Yield dataset sources: ``factory(params, ctx)`` returns a ``DatasetSource`` whose
    ``load(path)`` gives a ``LoadReport``. Config: ``data.source``."""


@hookspec
def srscode_backends() -> Iterable[Any]:
    """Yield hardware backend records (``srscode.hardware.Backend``): device type,
    collective backend, probe, env preparation, dtype policy. Config: ``hardware.backend``."""


# ------------------------------------------------------------------- lifecycle hooks


@hookspec
def srscode_run_start(run_dir: str, config: Mapping[str, Any], resumed_from: int) -> None:
    """A run starts (or resumes after ``resumed_from`` committed rounds)."""


@hookspec
def srscode_stage_start(round: int, stage: str) -> None:
    """A stage of ``round`` starts: ``schedule``, ``prompt``, ``generate``, ``evaluate``,
    ``memory``, ``train``, ``dpo``, ``validate``."""


@hookspec
def srscode_stage_finish(round: int, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
    """A stage finished in ``seconds``; ``info`` holds counts the stage reported."""


@hookspec
def srscode_stage_error(round: int, stage: str, error: BaseException) -> None:
    """A stage raised ``error``; the run stops after observers are told."""


@hookspec
def srscode_round_end(round: int, metrics: Mapping[str, Any]) -> None:
    """A round was committed to the ledger with these metrics."""


@hookspec
def srscode_run_finish(run_dir: str, summary: Mapping[str, Any]) -> None:
    """The run finished all its rounds (not called when it stops on an error)."""
