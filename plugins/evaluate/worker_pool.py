"""The built-in evaluator ``pytest-xdist``: warm fork-server workers, isolated candidates.

Each worker imports pytest (and common test dependencies) once, prepares a pytest
session up to collection, and forks one child per candidate; the child collects and runs
the task's tests in its own session, namespaces, temp dir and resource limits, and
reports per-test outcomes on a pipe (see ``srscode.plugins.evaluate.sandbox``). Candidates
stream: ``submit(task, candidate)`` as generation produces them, ``results()`` yields
verdicts as they finish; ``evaluate()`` is built on the two. No module state needs
clearing between candidates: each one runs in a copy-on-write copy of a pristine worker.

Why the workers are not pytest-xdist's: xdist distributes the items of one pytest
session that were all collected before the run starts, so it cannot take candidates as
they are generated, and each of its workers is itself inside a pytest session, so every
candidate would need a nested ``pytest.main`` (a full configuration parse per candidate)
under the outer session's capture and import hooks. ``benchmarks/evaluator.py
--xdist-layer`` measures that design next to this one (docs/benchmarks.md: about 295
CPU-ms per candidate without any isolation, against 100-145 for this one over the whole
KodCode set and a median of 37), so these workers prepare the session once and fork per
candidate instead. The registry name stays ``pytest-xdist`` (the name configs use).
"""
from __future__ import annotations

from pydantic import Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec
from srscode.plugins.evaluate.sandbox.pool import DEFAULT_PRELOAD
from srscode.plugins.evaluate.sandbox.service import CommonParams, ExecutionPool, ServiceEvaluator


class XdistParams(CommonParams):
    preload: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRELOAD),
        description="Modules each worker imports once (missing ones are skipped), e.g. add numpy.",
    )
    isolation: bool = Field(True, description="Use the namespaces/read-only mounts the OS allows (see `srscode env`).")
    sandbox_uid: int | None = Field(None, description="When running as root: uid candidates run as (default 65534).")
    integrity: bool = Field(
        True,
        description="Fingerprint pytest's runner and seal every result in the candidate's process (docs/security.md); off only to measure its cost.",
    )
    strict_equality: bool = Field(
        False,
        description="Asserts comparing a value with a literal fail when the value's type has its own __eq__ from outside the standard library (docs/security.md).",
    )


class PytestXdistEvaluator(ServiceEvaluator):
    params: XdistParams

    def _make_pool(self) -> ExecutionPool:
        from srscode.plugins.evaluate.sandbox.pool import WorkerPool

        p = self.params
        return WorkerPool(
            p.n_workers(),
            p.limits(),
            preload=tuple(p.preload),
            plugins=tuple(p.plugins),
            isolation=p.isolation,
            sandbox_uid=p.sandbox_uid,
            integrity=p.integrity,
            strict_equality=p.strict_equality,
        )


@hookimpl
def srscode_evaluators():
    yield ComponentSpec(
        "pytest-xdist",
        factory=lambda params, ctx: PytestXdistEvaluator(params, ctx),
        params=XdistParams,
        summary="Warm fork-server workers, per-candidate isolated pytest sessions, streaming (default)",
    )
