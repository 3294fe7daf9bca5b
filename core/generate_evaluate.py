"""The generate and evaluate stages over one call's prompts (a round's, or validation's),
each rank doing its share.

Data-parallel: each rank generates and evaluates ``prompts[rank::world]`` (all of one
task's candidates stay together) and the results are gathered on every rank, sorted by
(task, index) as one process would produce them; rank 0 then writes them
(:class:`~srscode.core.round_files.RoundFiles`).

Streaming: when the generator has ``generate_iter`` and the evaluator ``submit`` /
``results``, generation and evaluation overlap (each batch is submitted as it arrives).
The round's ``seconds`` then stay a partition of wall time: ``generate`` ends when the
last candidate exists and ``evaluate`` is only the tail after it;
``metrics["streaming"]["seconds"]`` adds ``generate`` (first to last candidate),
``evaluate`` (the evaluator's busy span, from the first submit to the last verdict,
overlapping generation) and ``evaluation_tail`` (last candidate to last verdict); with
several ranks, the slowest rank's spans and each rank's tail.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .config import RunConfig
from .distributed import Distributed, run_everywhere, shard
from .errors import StageError
from .round_files import RoundFiles
from .stage_timing import StageTimer
from .types import AdapterRef, Candidate, Prompt, Task, Verdict


def round_seed(seed: int, round_: int, purpose: str = "generate") -> int:
    return int.from_bytes(hashlib.sha256(f"{purpose}:{seed}:{round_}".encode()).digest()[:4], "big") >> 1


def rank_seed(seed: int, rank: int, world: int) -> int:
    """The generation seed of one rank: the round's seed in one process (so single-process
    runs are unchanged), a distinct one per rank otherwise, so that ranks do not draw the
    same random stream for their different prompts."""
    return seed if world == 1 else round_seed(seed, rank, f"rank-of-{world}")


@dataclass
class GenEval:
    """One rank's (or, gathered, every rank's) candidates and verdicts of one call."""

    candidates: list[Candidate]
    verdicts: list[Verdict]
    timing: dict[str, float] = field(default_factory=dict)  # streaming spans, when streamed
    seconds: float = 0.0  # this rank's own work, to tell the wait for the slowest rank from it


class GenerateEvaluate:
    """``gen_eval(round, prompts, n, adapter, seed, files)``: the candidates and verdicts of
    ``prompts`` on every rank, written by ``files`` (rank 0's round folder) when given."""

    def __init__(
        self, config: RunConfig, generator: Any, evaluator: Any, tasks: Mapping[str, Task],
        dist: Distributed, timer: StageTimer, progress: Callable[..., Any],
    ):
        self.generator_name = config.stages.generator.name
        self.evaluator_name = config.stages.evaluator.name
        self.generator, self.evaluator, self.tasks = generator, evaluator, tasks
        self.dist, self.timer, self.progress = dist, timer, progress

    def __call__(
        self, round_: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int,
        files: RoundFiles | None = None, timed: bool = True,
    ) -> GenEval:
        called = time.perf_counter()
        rows = run_everywhere(self.dist, f"round {round_}: generation and evaluation",
                              self._share, round_, prompts, n, adapter, seed, timed)
        gathered = time.perf_counter()
        result = rows[0] if len(rows) == 1 else _merge(rows)
        if files is not None:
            files.generation(result.candidates, result.verdicts)
        # so that the round's seconds still add up to its wall time: with several ranks, the
        # wait for the slowest one, merging and writing are its ``gather`` seconds; in one
        # process writing closes the evaluate stage
        if timed and len(rows) > 1:
            waited = gathered - called - rows[self.dist.rank].seconds
            self.timer.charge("gather", waited + time.perf_counter() - gathered)
        elif timed and prompts:
            self.timer.charge("evaluate", time.perf_counter() - gathered)
        return result

    def _share(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int, timed: bool,
    ) -> GenEval:
        """This rank's share of the prompts, generated and evaluated."""
        start = time.perf_counter()
        mine = shard(list(prompts), self.dist)
        # a generator whose draws are keyed by task (replay) samples the same whatever the
        # shard, so it keeps the round's seed and a run on N ranks equals the 1-process run
        if not getattr(self.generator, "seeds_per_task", False):
            seed = rank_seed(seed, self.dist.rank, self.dist.world)
        if not mine:
            out = GenEval([], [])
        elif self._streams():
            out = self._stream(r, mine, n, adapter, seed, timed)
        else:
            out = self._sequential(r, mine, n, adapter, seed, timed)
        out.seconds = time.perf_counter() - start
        return out

    def _streams(self) -> bool:
        return all(callable(getattr(obj, name, None)) for obj, name in
                   ((self.generator, "generate_iter"), (self.evaluator, "submit"), (self.evaluator, "results")))

    def _sequential(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int, timed: bool,
    ) -> GenEval:
        with self.timer.stage(r, "generate", timed=timed) as info:
            got = self.generator.generate(prompts, n, adapter, seed)
            candidates = self._check_candidates(r, prompts, n, adapter, got)
            info["candidates"] = len(candidates)
        with self.timer.stage(r, "evaluate", timed=timed) as info:
            verdicts = self.evaluator.evaluate(self.tasks, candidates) if candidates else []
            if len(verdicts) != len(candidates):
                raise StageError(
                    f"round {r}: evaluator returned {len(verdicts)} verdicts for {len(candidates)} candidates")
            verdicts = sorted(verdicts, key=lambda v: (v.task_id, v.index))
            info["passed"] = sum(v.passed for v in verdicts)
        return GenEval(candidates, verdicts)

    def _stream(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int, timed: bool,
    ) -> GenEval:
        """Generation and evaluation overlapped: each batch goes to the evaluator as it
        arrives. ``generate`` ends when the last candidate exists; ``evaluate`` is the tail."""
        start = time.perf_counter()
        first_submit: float | None = None
        got: list[Candidate] = []
        with self.timer.stage(r, "generate", timed=timed) as info:
            stream = iter(self.generator.generate_iter(prompts, n, adapter, seed))
            try:
                for batch in stream:
                    for c in batch:  # before submitting: never spend the sandbox on wrong rollouts
                        self._check_adapter(r, c, adapter)
                    for c in batch:
                        self.evaluator.submit(self.tasks[c.task_id], c)
                    if batch and first_submit is None:
                        first_submit = time.perf_counter()
                    got.extend(batch)
            finally:
                # closed at once when a check above stops the round: a generator may hold the
                # model in a decoding state (packed weights, a cache) until its stream ends
                close = getattr(stream, "close", None)
                if callable(close):
                    close()
            last_candidate = time.perf_counter()
            candidates = self._check_candidates(r, prompts, n, adapter, got)
            info.update(candidates=len(candidates), streamed=1)
        with self.timer.stage(r, "evaluate", timed=timed) as info:
            by_key: dict[tuple[str, int], Verdict] = {}
            # verdicts that finished during generation are counted at once, the tail live
            with self.progress("evaluate", total=len(candidates), unit="cand") as bar:
                for v in self.evaluator.results():
                    by_key[(v.task_id, v.index)] = v
                    bar.advance(1, **{v.status: 1})
            last_verdict = time.perf_counter()
            missing = [c.candidate_id for c in candidates if (c.task_id, c.index) not in by_key]
            if missing or len(by_key) != len(candidates):
                raise StageError(
                    f"round {r}: evaluator {self.evaluator_name!r} streamed {len(by_key)} verdicts "
                    f"for {len(candidates)} candidates (missing e.g. {', '.join(missing[:3]) or 'none'})."
                )
            verdicts = [by_key[(c.task_id, c.index)] for c in candidates]
            info["passed"] = sum(v.passed for v in verdicts)
        timing = {
            "generate": last_candidate - start,
            "evaluate": last_verdict - (first_submit or last_candidate),  # busy span, overlapping generation
            "evaluation_tail": last_verdict - last_candidate,
        }
        return GenEval(candidates, verdicts, timing)

    def _check_candidates(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, candidates: Sequence[Candidate],
    ) -> list[Candidate]:
        expected = {(p.task_id, i) for p in prompts for i in range(n)}
        got = {(c.task_id, c.index) for c in candidates}
        if got != expected or len(candidates) != len(expected):
            raise StageError(
                f"round {r}: generator {self.generator_name!r} returned "
                f"{len(candidates)} candidates; expected {n} for each of {len(prompts)} prompts."
            )
        for c in candidates:
            self._check_adapter(r, c, adapter)
        return sorted(candidates, key=lambda c: (c.task_id, c.index))

    def _check_adapter(self, r: int, c: Candidate, adapter: AdapterRef | None) -> None:
        want = adapter.sha256 if adapter else None
        used = c.adapter.sha256 if c.adapter else None
        if used != want:
            raise StageError(
                f"round {r}: candidate {c.candidate_id} was generated with adapter "
                f"{c.adapter.path + ' ' + used[:12] if c.adapter and used else 'none (the base model)'}, "
                f"but the trainer's latest adapter is "
                f"{adapter.path + ' ' + adapter.sha256[:12] if adapter else 'none'}. The generator "
                "did not apply the adapter it was given; refusing to continue with silent base-model rollouts."
            )


def _merge(rows: Sequence[GenEval]) -> GenEval:
    """Every rank's share in one-process order, with the streaming spans merged."""
    candidates = sorted((c for row in rows for c in row.candidates), key=lambda c: (c.task_id, c.index))
    verdicts = sorted((v for row in rows for v in row.verdicts), key=lambda v: (v.task_id, v.index))
    return GenEval(candidates, verdicts, merge_timings([row.timing for row in rows]))


def merge_timings(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Streaming spans of several ranks: the slowest rank's (the round waits for it), and
    each rank's tail."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    out = {k: max(r[k] for r in rows) for k in ("generate", "evaluate", "evaluation_tail")}
    for k, r in enumerate(rows):
        out[f"rank{k}_evaluation_tail"] = r["evaluation_tail"]
    return out
