"""Parent side of the fork-server workers: start them, feed jobs, survive their death.

Each worker is a fresh ``python -c`` process (never a fork of the caller, which may hold
a model, CUDA state and threads) with a scrubbed environment, serving one job at a time
over pipes. One dispatcher thread per worker takes jobs from a shared priority queue
(reference runs first), so a slow candidate never holds up the others. A worker that
dies or stops answering is killed, replaced, and its job retried once on the new
worker; a job that kills two workers gets a ``worker_died`` result. A batch therefore
always completes with a result for every job.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from .limits import Limits, hidden_devices, scrubbed_env

if TYPE_CHECKING:
    from .service import ExecutionJob

START_TIMEOUT_S = 180.0
ANSWER_GRACE_S = 15.0  # beyond a job's own timeout before the worker is presumed hung

# What KodCode's tests and solutions import most (typing, math, heapq, re, io, random,
# collections, ...). Each preloaded module makes every fork a little dearer (page tables),
# so rarely used ones (decimal, datetime, numpy) are left to the candidates that import
# them; add them with the evaluator's ``preload`` param when a dataset needs them.
DEFAULT_PRELOAD = (
    "collections",
    "itertools",
    "functools",
    "math",
    "re",
    "heapq",
    "bisect",
    "string",
    "typing",
    "random",
    "io",
)


def auto_workers() -> int:
    """One worker per usable core, shared among the ranks of this host: under
    ``accelerate launch --num_processes N`` every rank starts its own pool, so each takes
    its share (``LOCAL_WORLD_SIZE``, set by torch elastic) instead of all N oversubscribing."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        local_ranks = 1
    return max(1, cores // local_ranks)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.buf = b""
        self.generation = 0
        self.hello: dict[str, Any] = {}
        self.log_path = ""


class WorkerPool:
    """An :class:`~.service.ExecutionPool`: N fork-server workers behind a priority
    queue; results come back on a queue."""

    def __init__(
        self,
        workers: int,
        limits: Limits,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        plugins: tuple[str, ...] = (),
        isolation: bool = True,
        sandbox_uid: int | None = None,
        base_dir: str | None = None,
        as_user: bool = False,
        integrity: bool = True,
        strict_equality: bool = False,
    ) -> None:
        self.n = max(1, int(workers))
        self.limits = limits
        self.preload = tuple(preload)
        self.plugins = tuple(plugins)
        self.isolation = isolation
        self.sandbox_uid = sandbox_uid
        self.as_user = as_user
        self.integrity = integrity
        self.strict_equality = strict_equality
        # verdicts differ under strict equality, so the reference cache keeps them apart
        self.verdict_variant = "strict-eq" if strict_equality else ""
        self.base = tempfile.mkdtemp(prefix="srscode-eval-", dir=base_dir)
        os.chmod(self.base, 0o755)  # an unprivileged candidate uid must reach its dir
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self._seq = itertools.count()
        self._slots = [_Slot(i) for i in range(self.n)]
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.restarts = 0
        self.info: dict[str, Any] = {}
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start every worker (in parallel) and wait for their hellos."""
        errors: list[BaseException] = []

        def boot(slot: _Slot) -> None:
            try:
                self._spawn(slot)
            except BaseException as exc:  # reported below
                errors.append(exc)

        boots = [threading.Thread(target=boot, args=(s,), daemon=True) for s in self._slots]
        for t in boots:
            t.start()
        for t in boots:
            t.join()
        if errors:
            self.close()
            raise RuntimeError(f"evaluation workers failed to start: {errors[0]}") from errors[0]
        self.info = dict(self._slots[0].hello.get("isolation", {}))
        self.info["preloaded"] = self._slots[0].hello.get("preloaded", [])
        self.info["traceback_patches"] = self._slots[0].hello.get("tracebacks", {})
        self.info["integrity"] = self._slots[0].hello.get("integrity", {})
        for slot in self._slots:
            t = threading.Thread(target=self._dispatch, args=(slot,), name=f"srscode-eval-{slot.index}", daemon=True)
            t.start()
            self._threads.append(t)

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        work = os.path.join(self.base, f"w{slot.index}-{slot.generation}")
        os.makedirs(work)
        slot.log_path = os.path.join(self.base, f"w{slot.index}-{slot.generation}.log")
        hidden = hidden_devices()
        env = scrubbed_env(os.path.join(work, "c"), hidden=hidden)
        cfg = {
            "hidden_devices": hidden,
            "dir": work,
            "home": os.path.expanduser("~"),
            "preload": list(self.preload),
            "plugins": list(self.plugins),
            "limits": self.limits.to_dict(),
            "isolation": self.isolation,
            "sandbox_uid": self.sandbox_uid,
            "as_user": self.as_user,
            "integrity": self.integrity,
            "strict_equality": self.strict_equality,
            "log": slot.log_path,
            "env_source": {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH")},
        }
        with open(slot.log_path, "wb") as log:
            slot.proc = subprocess.Popen(
                [sys.executable, "-c", "from srscode.plugins.evaluate.sandbox.worker import main; main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=work,
                start_new_session=True,
                close_fds=True,
            )
        slot.buf = b""
        assert slot.proc.stdin is not None
        slot.proc.stdin.write((json.dumps(cfg) + "\n").encode())
        slot.proc.stdin.flush()
        hello = self._read_line(slot, START_TIMEOUT_S)
        if hello is None or hello.get("t") != "hello":
            tail = self._log_tail(slot)
            self._kill(slot)
            raise RuntimeError(f"worker {slot.index} did not start; its log ends with:\n{tail}")
        slot.hello = hello

    def _log_tail(self, slot: _Slot, n: int = 1500) -> str:
        try:
            with open(slot.log_path, "rb") as fh:
                return fh.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _kill(self, slot: _Slot, grace_s: float = 0.0) -> None:
        proc = slot.proc
        if proc is None:
            return
        if grace_s > 0:  # a stopped worker exits by itself (and its CPU time is accounted)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable worker
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        slot.proc = None
        shutil.rmtree(os.path.join(self.base, f"w{slot.index}-{slot.generation}"), ignore_errors=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put((-1, -1, None))
        for slot in self._slots:
            proc = slot.proc
            if proc is not None and proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"t": "stop"}\n')
                    proc.stdin.flush()
                except (OSError, ValueError):
                    pass
        for t in self._threads:
            t.join(timeout=5)
        for slot in self._slots:
            self._kill(slot, grace_s=5.0)
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ jobs
    def submit(self, job: ExecutionJob, priority: int = 1) -> None:
        if self._closed:
            raise RuntimeError("the evaluation pool is closed")
        self._jobs.put((priority, next(self._seq), job))

    def _dispatch(self, slot: _Slot) -> None:
        while True:
            _prio, _seq, job = self._jobs.get()
            if job is None:
                return
            try:
                res = self._run(slot, job)
            except BaseException as exc:  # the pool itself must never lose a job
                res = {"id": job.get("id"), "sandbox_error": f"evaluation pool error: {type(exc).__name__}: {exc}"}
            self.results.put(res)

    def _run(self, slot: _Slot, job: dict[str, Any]) -> dict[str, Any]:
        detail = ""
        for attempt in range(2):
            if slot.proc is None or slot.proc.poll() is not None:
                if slot.proc is not None:
                    detail = self._log_tail(slot)
                    self._kill(slot)
                    self.restarts += 1
                try:
                    self._spawn(slot)
                except RuntimeError as exc:
                    return {"id": job.get("id"), "sandbox_error": str(exc)}
            proc = slot.proc
            assert proc is not None and proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(job) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):
                answer = None
            else:
                answer = self._read_line(slot, float(job.get("timeout", 10.0)) + ANSWER_GRACE_S)
            if answer is not None and answer.get("t") == "result":
                answer.pop("t", None)
                return answer
            detail = self._log_tail(slot) or detail
            self._kill(slot)
            self.restarts += 1
        return {
            "id": job.get("id"),
            "worker_died": True,
            "detail": "the evaluation worker died twice while running this candidate" + (f"; worker log:\n{detail}" if detail else ""),
        }

    def _read_line(self, slot: _Slot, timeout: float) -> dict[str, Any] | None:
        proc = slot.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in slot.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            slot.buf += chunk
        line, slot.buf = slot.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None]
