"""Every hook srs-code calls, in one file.

Two kinds of hooks:

*Registration hooks* are collected from every plugin (pluggy calls all of them and
we keep every result). Each yields :class:`~srscode.core.types.ComponentSpec`
records; the config picks one implementation per stage **by name**, never by
registration order, so the same config means the same run whatever else is
installed. A name provided by two plugins is an error naming both.

*Lifecycle hooks* are observers: return values are ignored. Loggers, progress
displays and reporters hang here. They must not raise; an exception from an
observer is logged and the run goes on. Under data parallelism only rank 0 calls
them, so observers see one run.

What a factory's ``ctx`` (:class:`~srscode.core.context.StageContext`) holds for every
stage: the config, the run dir, the hardware backend; before the first round the engine
also sets ``ctx.tasks`` (the loaded tasks by id), ``ctx.prompt_builder`` (the run's
builder, which generators extract code with) and ``ctx.adapter_rank`` (the largest LoRA
rank the configured trainers produce).

Built-in plugins (``srscode.core.registry.DEFAULT_PLUGINS``) register through these same
hooks, exactly like third-party ones.

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
    """Yield prompt builders: ``factory(params, ctx)`` returns a ``PromptBuilder``, which owns
    the text format both ways: ``build(task) -> Prompt``, ``extract(output, prompt) -> str``
    (the code in a completion) and ``render_target(task, prompt, code=None) -> str`` (the SFT
    target and the reference-as-chosen DPO answer, in the completion format its prompts ask
    for). Config: ``stages.prompt``."""


@hookspec
def srscode_generators() -> Iterable[ComponentSpec]:
    """Yield generators: ``factory(params, ctx)`` returns a ``Generator`` that samples
    N candidates per prompt with a given LoRA adapter (every candidate records the adapter
    it was sampled with; the engine refuses any other). Config: ``stages.generator``.
    Optional: ``generate_iter`` (batch by batch; the engine then overlaps evaluation with
    generation) and ``seeds_per_task``; see ``srscode.core.types.StreamingGenerator``."""


@hookspec
def srscode_evaluators() -> Iterable[ComponentSpec]:
    """Yield evaluators: ``factory(params, ctx)`` returns an ``Evaluator`` giving one
    ``Verdict`` per candidate. Config: ``stages.evaluator``. Optional: ``submit`` and
    ``results`` (see ``srscode.core.types.StreamingEvaluator``)."""


@hookspec
def srscode_memory_policies() -> Iterable[ComponentSpec]:
    """Yield memory policies: ``factory(params, ctx)`` returns a ``MemoryPolicy``
    (initial state, update from a pass rate, training weight). Config: ``stages.memory``."""


@hookspec
def srscode_schedulers() -> Iterable[ComponentSpec]:
    """Yield schedulers: ``factory(params, ctx)`` returns a ``Scheduler`` that picks
    each round's new and review tasks (each task at most once: a ``Schedule`` naming a
    task twice stops the run). Config: ``stages.scheduler``."""


@hookspec
def srscode_trainers() -> Iterable[ComponentSpec]:
    """Yield trainers: SFT trainers (``train_sft``) for ``stages.trainer`` and
    preference trainers (``train_pairs``) for ``dpo.name``. Optional attribute
    ``adapter_rank``: the LoRA rank of the adapters it saves (None: none)."""


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
    """A stage of ``round`` starts; ``stage`` is one of ``srscode.core.types.STAGES``, in the
    order a round runs them: ``schedule``, ``prompt``, ``generate``, ``evaluate``,
    ``memory``, ``train``, ``pairs`` (DPO pairs from this round's candidates), ``dpo`` (every
    ``dpo.every`` rounds, or once after the last round with ``round`` = the last round) and
    ``validate`` (``round`` 0 before training, ``rounds + 1`` the final one). Generation and
    evaluation inside ``validate`` report no stages of their own."""


@hookspec
def srscode_stage_finish(round: int, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
    """A stage finished in ``seconds`` (this process's wall time); ``info`` holds counts the
    stage reported (``candidates``, ``passed``, ``pairs``, the trainers' metrics, ...).

    The round's ``metrics["seconds"]`` sums these per stage and adds what no stage covers,
    so that together they are the round's wall time: ``gather`` under several ranks (the
    wait for the slowest rank's generation and evaluation, merging their results and writing
    them), which has no stage hooks. With streaming, ``generate`` ends at the last candidate
    and ``evaluate`` is only the tail after it (``metrics["streaming"]`` has the spans)."""


@hookspec
def srscode_stage_error(round: int, stage: str, error: BaseException) -> None:
    """A stage raised ``error``; the run stops after observers are told."""


@hookspec
def srscode_round_end(round: int, metrics: Mapping[str, Any]) -> None:
    """A round was committed to the ledger with these metrics (also in its ``metrics.json``)."""


@hookspec
def srscode_run_finish(run_dir: str, summary: Mapping[str, Any]) -> None:
    """The run finished all its rounds (not called when it stops on an error); ``summary``
    is what ``srscode status`` shows."""
