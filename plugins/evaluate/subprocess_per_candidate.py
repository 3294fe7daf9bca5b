"""The built-in evaluator ``subprocess``: the seed's approach, judged by per-test outcomes.

Every candidate gets a fresh temp dir and a fresh ``python -m pytest`` with a timeout
(about 0.2-0.5 CPU-s of interpreter and pytest start-up each), so it is the simple,
slow baseline. Unlike the seed it never reads the exit code: the same collector plugin
and rules as ``pytest-xdist`` decide (every expected test collected and passed).
Isolation is what a plain subprocess allows (session kill, rlimits, scrubbed env); see
docs/security.md.
"""
from __future__ import annotations

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec
from srscode.plugins.evaluate.sandbox.service import CommonParams, ExecutionPool, ServiceEvaluator


class SubprocessParams(CommonParams):
    pass


class SubprocessEvaluator(ServiceEvaluator):
    params: SubprocessParams

    def _make_pool(self) -> ExecutionPool:
        from srscode.plugins.evaluate.sandbox.subproc import SubprocessPool

        p = self.params
        return SubprocessPool(p.n_workers(), p.limits(), plugins=tuple(p.plugins))


@hookimpl
def srscode_evaluators():
    yield ComponentSpec(
        "subprocess",
        factory=lambda params, ctx: SubprocessEvaluator(params, ctx),
        params=SubprocessParams,
        summary="One fresh pytest subprocess per candidate (the seed's approach; slow baseline)",
    )
