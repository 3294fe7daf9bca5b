"""What every pool-based evaluator shares: expected-test learning, timeout scaling,
streaming. Where candidates run is an :class:`ExecutionPool`; a new evaluator brings
one (docs/plugins.md, "A new evaluator").

``submit`` takes a candidate as soon as it exists. The first candidate of a test file
whose expected ids are unknown queues a reference run (the task's reference solution
against the same file, ahead of every candidate); candidates of that file wait for it,
then run with a timeout scaled from the reference's runtime:
``min(max_timeout_s, max(min_timeout_s, timeout_factor * reference_s))`` (the evalplus
approach, so verdicts do not flip with machine load), or ``timeout_s`` when no
reference time is known. A background thread turns raw results into verdicts, so
reference runs complete and candidates start even while nobody is reading results.

Identical candidates run once (``dedupe``, on by default): a candidate whose solution,
test file and reference equal those of one already judged (or in flight) gets a copy of
that verdict under its own id, and a candidate whose solution is the reference itself
takes its verdict from the reference run that learned the file's ids. Sampling N
candidates per task at a low temperature, or a tuned model on easy tasks, produces many
such copies; on the KodCode rows 463 of 751 candidates are copies of another. The verdict
of a test whose outcome is random or load-dependent is then shared, not drawn again;
``dedupe: false`` runs every copy.
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Protocol, Sequence, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.types import Candidate, Task, Verdict

from .expected import ReferenceCache, expected_key
from .harness import sha256, static_test_ids
from .verdicts import Expected, classify, expected_from_reference


class ExecutionJob(TypedDict):
    """One run an :class:`ExecutionPool` is asked for: ``solution`` as ``solution.py``,
    ``test`` as the pytest file beside it (``harness.test_source``), killed after
    ``timeout`` seconds."""

    id: int  # echoed in the raw result
    solution: str
    test: str
    timeout: float


@runtime_checkable
class ExecutionPool(Protocol):
    """Where an :class:`EvaluationService` runs candidates: the fork-server
    :class:`~.pool.WorkerPool`, the one-subprocess-per-candidate
    :class:`~.subproc.SubprocessPool`, or a third party's (a container, a remote host).

    ``start()`` is called once before the first ``submit``; ``close()`` once at the end
    (it must stop every process the pool started). ``submit`` must not block on the run:
    the job's raw result arrives later on ``results``, from any thread, exactly once per
    job, whatever happens to the run. ``priority`` 0 marks reference runs and 1
    candidates; honouring it only orders work (candidates that need a reference's
    result are submitted after it arrives). ``info`` describes the isolation a
    candidate gets (``check-data`` reports it), filled in by ``start()`` at the latest.

    A raw result is a dict with the job's ``id`` and either ``sandbox_error`` (text: the
    pool could not run it), ``worker_died`` with ``detail`` (the run killed its runner),
    or what the run left: ``events_raw`` (the JSON lines that the pytest plugin
    ``srscode.plugins.evaluate.sandbox.collector`` wrote; the verdict is read from
    them, never from an exit code), ``output_tail`` (the end of stdout/stderr),
    ``exit_code`` or ``signal``, ``timed_out``, ``duration_s`` and optionally
    ``cand_dir`` (the run's directory, cut from the paths in the excerpt).
    ``subproc.run_one(job, limits)`` produces one in a fresh local pytest process.
    """

    results: queue.Queue[dict[str, Any]]
    info: dict[str, Any]

    def start(self) -> None: ...

    def submit(self, job: ExecutionJob, priority: int = 1) -> None: ...

    def close(self) -> None: ...


class TimeoutSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(10.0, gt=0, description="Per-candidate timeout when no reference runtime is known.")
    min_timeout_s: float = Field(2.0, gt=0, description="Lower bound of a scaled timeout.")
    timeout_factor: float = Field(5.0, gt=0, description="Scaled timeout = factor x the reference solution's runtime.")
    max_timeout_s: float = Field(60.0, gt=0, description="Upper bound of a scaled timeout.")
    reference_timeout_s: float | None = Field(None, gt=0, description="Timeout of a reference solution's own run (default: max_timeout_s; a reference slower than any candidate may be is of no use).")


def reference_limit(s: TimeoutSettings) -> float:
    """Timeout of a reference solution's own run."""
    return s.reference_timeout_s or s.max_timeout_s


def scaled_timeout(s: TimeoutSettings, ref_s: float | None) -> float:
    if ref_s is None:
        return min(s.timeout_s, s.max_timeout_s)
    return min(s.max_timeout_s, max(s.min_timeout_s, s.timeout_factor * float(ref_s)))


@dataclass
class _Pending:
    seq: int
    task_id: str
    index: int
    solution: str
    test: str
    key: str
    timeout: float = 0.0
    run_key: str = ""  # identical candidates share it (empty: dedupe off)


# Verdicts copies never take: the run failed for a reason of ours, not the candidate's.
UNSHARED = ("sandbox-error",)
MEMO_SIZE = 10_000  # verdicts kept for later identical candidates (a few KB each)


def _sandbox_error(pend: _Pending, exc: BaseException) -> Verdict:
    return Verdict(pend.task_id, pend.index, "sandbox-error", 0, 0, {}, 0.0, f"{type(exc).__name__}: {exc}")


class EvaluationService:
    """Streaming evaluation over an :class:`ExecutionPool`."""

    def __init__(self, pool: ExecutionPool, settings: TimeoutSettings, cache: ReferenceCache, dedupe: bool = True) -> None:
        self.pool = pool
        self.variant = str(getattr(pool, "verdict_variant", ""))  # part of the reference-cache key
        self.settings = settings
        self.cache = cache
        self.dedupe = dedupe
        self.reused = 0  # candidates that got a copy of an identical run's verdict
        self._memo: OrderedDict[str, Verdict] = OrderedDict()  # run key -> verdict
        self._followers: dict[str, list[_Pending]] = {}  # run key in flight -> its identical candidates
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._jobs: dict[int, _Pending] = {}  # candidate jobs in flight, by seq
        self._ref_jobs: dict[int, tuple[str, str, str]] = {}  # seq -> (key, test, reference)
        self._ref_waiters: dict[str, list[_Pending]] = {}
        self._ref_callbacks: dict[str, list[Any]] = {}
        self._verdicts: queue.Queue[tuple[int, Verdict]] = queue.Queue()
        self._unyielded = 0  # candidates submitted whose verdict was not yet yielded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="srscode-eval-results", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ submit
    def submit_code(self, task_id: str, index: int, solution: str, test: str, reference: str | None) -> int:
        """Queue one candidate; returns its sequence number (see :meth:`results_with_seq`)."""
        key = expected_key(test, reference, self.variant)
        seq = next(self._seq)
        pend = _Pending(seq, task_id, index, solution, test, key, run_key=sha256(key, solution) if self.dedupe else "")
        with self._lock:
            self._unyielded += 1
            if pend.run_key:
                done = self._memo.get(pend.run_key)
                if done is not None:
                    self._memo.move_to_end(pend.run_key)
                    self.reused += 1
                    self._verdicts.put((seq, replace(done, task_id=task_id, index=index)))
                    return seq
                if pend.run_key in self._followers:
                    self._followers[pend.run_key].append(pend)
                    return seq
                self._followers[pend.run_key] = []
            self._jobs[seq] = pend
            exp = self.cache.get(key)
            if exp is None:
                if key in self._ref_waiters:
                    self._ref_waiters[key].append(pend)
                    return seq
                if reference:
                    self._ref_waiters[key] = [pend]
                    self._submit_reference(key, test, reference)
                    return seq
                exp = self._static(test)
                self.cache.put(key, exp)
        self._launch(pend, exp)
        return seq

    def submit(self, task: Task, candidate: Candidate) -> None:
        self.submit_code(task.task_id, candidate.index, candidate.code, task.test_code, task.solution)

    def learn(self, test: str, reference: str | None, callback: Any = None) -> None:
        """Make sure the expected ids of (test, reference) are known; ``callback(key,
        expected)`` runs (in the result thread) once they are."""
        key = expected_key(test, reference, self.variant)
        with self._lock:
            exp = self.cache.get(key)
            if exp is None and reference:
                if callback is not None:
                    self._ref_callbacks.setdefault(key, []).append(callback)
                if key not in self._ref_waiters:
                    self._ref_waiters[key] = []
                    self._submit_reference(key, test, reference)
                return
            if exp is None:
                exp = self._static(test)
                self.cache.put(key, exp)
        if callback is not None:
            callback(key, exp)

    def _static(self, test: str) -> Expected:
        ids = static_test_ids(test)
        return Expected(tuple(ids), "static" if ids else "none")

    def _submit_reference(self, key: str, test: str, reference: str) -> None:
        seq = next(self._seq)
        self._ref_jobs[seq] = (key, test, reference)
        limit = reference_limit(self.settings)
        self.pool.submit({"id": seq, "solution": reference, "test": test, "timeout": limit}, priority=0)

    def _launch(self, pend: _Pending, exp: Expected) -> None:
        pend.timeout = scaled_timeout(self.settings, exp.ref_s)
        self.pool.submit({"id": pend.seq, "solution": pend.solution, "test": pend.test, "timeout": pend.timeout}, priority=1)

    # ------------------------------------------------------------------ results
    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.pool.results.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(raw)
            except BaseException as exc:  # never leave a candidate without a verdict
                seq = raw.get("id")
                with self._lock:
                    pend = self._jobs.pop(seq, None)
                if pend is not None:
                    self._finish(pend, _sandbox_error(pend, exc))

    def _handle(self, raw: Mapping[str, Any]) -> None:
        seq = raw.get("id")
        with self._lock:
            ref = self._ref_jobs.pop(seq, None)
        if ref is not None:
            key, test, reference = ref
            limit = reference_limit(self.settings)
            try:
                exp = expected_from_reference(raw, static_test_ids(test), limit)
            except Exception as exc:  # the waiting candidates must still run
                exp = Expected(tuple(static_test_ids(test)), "static", None, "sandbox-error", f"{type(exc).__name__}: {exc}")
            self.cache.put(key, exp)
            with self._lock:
                waiters = self._ref_waiters.pop(key, [])
                callbacks = self._ref_callbacks.pop(key, [])
            for pend in waiters:
                try:
                    if pend.run_key and pend.solution == reference and exp.ref_status not in UNSHARED:
                        # this candidate is the reference: the run that learned the ids was its run
                        v = classify(raw, exp, pend.task_id, pend.index, limit)
                        with self._lock:
                            self._jobs.pop(pend.seq, None)
                            self.reused += 1
                        self._finish(pend, v)
                    else:
                        self._launch(pend, exp)
                except Exception as exc:  # a waiting candidate must still get a verdict
                    with self._lock:
                        self._jobs.pop(pend.seq, None)
                    self._finish(pend, _sandbox_error(pend, exc))
            for cb in callbacks:
                cb(key, exp)
            return
        with self._lock:
            pend = self._jobs.pop(seq, None)
        if pend is None:
            return
        exp = self.cache.get(pend.key) or self._static(pend.test)
        self._finish(pend, classify(raw, exp, pend.task_id, pend.index, pend.timeout))

    def _finish(self, pend: _Pending, v: Verdict) -> None:
        """Hand out ``pend``'s verdict, and copies of it to the identical candidates that
        waited for it; remember it for later ones."""
        self._verdicts.put((pend.seq, v))
        if not pend.run_key:
            return
        with self._lock:
            followers = self._followers.pop(pend.run_key, [])
            if v.status not in UNSHARED:
                self._memo[pend.run_key] = v
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
        for f in followers:
            if v.status in UNSHARED:  # our failure, not the candidate's: each copy runs itself
                f.run_key = ""
                with self._lock:
                    self._jobs[f.seq] = f
                self._launch(f, self.cache.get(f.key) or self._static(f.test))
            else:
                with self._lock:
                    self.reused += 1
                self._verdicts.put((f.seq, replace(v, task_id=f.task_id, index=f.index)))

    def results_with_seq(self) -> Iterator[tuple[int, Verdict]]:
        """Verdicts as they finish, until every candidate submitted so far has one.

        One consumer at a time: verdicts are handed out once."""
        while True:
            with self._lock:
                if self._unyielded <= 0:
                    return
            try:
                item = self._verdicts.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                self._unyielded -= 1
            yield item

    def results(self) -> Iterator[Verdict]:
        for _seq, v in self.results_with_seq():
            yield v

    def wait_references(self) -> None:
        """Block until no reference run is in flight (used by ``check-data``)."""
        import time

        while True:
            with self._lock:
                if not self._ref_jobs:
                    return
            time.sleep(0.05)

    def evaluate(
        self, tasks: Mapping[str, Task], candidates: Sequence[Candidate], progress: Any = None
    ) -> list[Verdict]:
        """``progress``: an optional bar (``ctx.progress``) advanced per verdict with its status."""
        order: dict[int, int] = {}
        for i, cand in enumerate(candidates):
            task = tasks[cand.task_id]
            order[self.submit_code(task.task_id, cand.index, cand.code, task.test_code, task.solution)] = i
        out: list[Verdict | None] = [None] * len(candidates)
        for seq, v in self.results_with_seq():
            if seq in order:
                out[order[seq]] = v
                if progress is not None:
                    progress.advance(1, **{v.status: 1})
        self.cache.save()
        return [v for v in out if v is not None]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.cache.save()
        finally:
            self.pool.close()


class CommonParams(TimeoutSettings):
    """Params both built-in evaluators take (unknown keys are an error)."""

    workers: int | str = Field("auto", description="Parallel candidates: 'auto' (one per usable core, divided among the ranks of this host) or a number.")
    memory_mb: int = Field(2048, ge=64, description="Address space a candidate may add (MB).")
    file_mb: int = Field(64, ge=1, description="Largest file a candidate may write (MB).")
    open_files: int = Field(256, ge=16, description="Open file descriptors per candidate.")
    processes: int = Field(64, ge=1, description="Processes and threads per candidate (where enforceable).")
    plugins: list[str] = Field(default_factory=list, description="Extra pytest plugins (-p NAME) in each candidate's session.")
    dedupe: bool = Field(True, description="Run identical candidates (same solution, test file and reference) once and give each a copy of the verdict; false runs every copy.")
    cache_path: str | None = Field(None, description="Reference cache file (expected test ids, reference runtimes); default ~/.cache/srscode/reference-cache.json; 'none' keeps it in memory.")

    def n_workers(self) -> int:
        from .pool import auto_workers

        if isinstance(self.workers, str):
            if self.workers != "auto":
                raise ValueError(f"workers must be 'auto' or a positive number, got {self.workers!r}")
            return auto_workers()
        return max(1, int(self.workers))

    def limits(self) -> Any:
        from .limits import Limits

        return Limits(memory_mb=self.memory_mb, file_mb=self.file_mb, open_files=self.open_files, processes=self.processes)

    def make_cache(self) -> ReferenceCache:
        from .expected import default_cache_path

        if self.cache_path and self.cache_path.lower() == "none":
            return ReferenceCache(None)
        return ReferenceCache(self.cache_path or default_cache_path())

    def timeouts(self) -> TimeoutSettings:
        return TimeoutSettings(**{k: getattr(self, k) for k in TimeoutSettings.model_fields})


class ServiceEvaluator:
    """Evaluator + StreamingEvaluator over an :class:`EvaluationService`. A subclass
    says where candidates run by returning an :class:`ExecutionPool` from
    :meth:`_make_pool`; the pool is started on first use and stopped by :meth:`close`
    (also a context manager)."""

    def __init__(self, params: CommonParams, ctx: Any = None) -> None:
        self.params = params
        self.ctx = ctx
        self._service: EvaluationService | None = None
        self._lock = threading.Lock()

    def _make_pool(self) -> ExecutionPool:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def service(self) -> EvaluationService:
        with self._lock:
            if self._service is None:
                pool = self._make_pool()
                pool.start()
                self._service = EvaluationService(pool, self.params.timeouts(), self.params.make_cache(), dedupe=self.params.dedupe)
            return self._service

    @property
    def isolation(self) -> dict[str, Any]:
        return dict(self.service.pool.info)

    def submit(self, task: Task, candidate: Candidate) -> None:
        self.service.submit(task, candidate)

    def results(self) -> Iterator[Verdict]:
        return self.service.results()

    def evaluate(self, tasks: Mapping[str, Task], candidates: Sequence[Candidate]) -> list[Verdict]:
        if not candidates:
            return []
        if self.ctx is None or not hasattr(self.ctx, "progress"):
            return self.service.evaluate(tasks, candidates)
        with self.ctx.progress("evaluate", total=len(candidates), unit="cand") as bar:
            return self.service.evaluate(tasks, candidates, progress=bar)

    def close(self) -> None:
        with self._lock:
            svc, self._service = self._service, None
        if svc is not None:
            svc.close()

    def __enter__(self) -> "ServiceEvaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: never leave workers behind
        try:
            self.close()
        except Exception:
            pass
