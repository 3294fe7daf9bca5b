"""The seed's approach as an execution pool: one fresh ``python -m pytest`` per candidate.

Each candidate gets a fresh temp dir and a fresh interpreter (about 0.2-0.5 CPU-s of
start-up), judged from the same per-test outcome events as the fork server. Isolation
is what a plain subprocess allows: own session killed and reaped on timeout, resource
limits, scrubbed environment. No namespaces: no network cut, no read-only file system,
and a daemon that leaves the session is not caught (the fork server catches it).
"""
from __future__ import annotations

import itertools
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from .harness import INI_TEXT, SOLUTION_FILE, TEST_FILE, inner_pytest_args, test_source
from .limits import Limits, cpu_seconds_for, scrubbed_env
from .worker import OUTPUT_TAIL, RESULT_CAP, _read_all_nonblocking, _Sink

if TYPE_CHECKING:
    from .service import ExecutionJob

# a fresh interpreter with pytest imported maps ~300 MB before the candidate runs
SUBPROCESS_BASE_VM = 512 * 1024 * 1024
# interpreter + pytest start-up is not the candidate's time: the timeout starts when the
# session does (the collector's "start" event); start-up itself gets this long
STARTUP_ALLOWANCE_S = 30.0
STARTUP_CPU_S = 5


def run_one(job: ExecutionJob, limits: Limits, plugins: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one job in a fresh pytest subprocess; returns its raw result (the same dict
    a fork-server worker answers)."""
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="srscode-sub-")
    result: dict[str, Any] = {"id": job.get("id"), "cand_dir": tmp}
    try:
        os.makedirs(os.path.join(tmp, "tmp"))
        with open(os.path.join(tmp, SOLUTION_FILE), "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(job["solution"])
        test_path = os.path.join(tmp, TEST_FILE)
        with open(test_path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(test_source(job["test"]))
        ini = os.path.join(tmp, "pytest.ini")
        with open(ini, "w") as fh:
            fh.write(INI_TEXT)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        result["sandbox_error"] = f"could not prepare the candidate's files: {exc}"
        return result
    timeout = float(job.get("timeout", 10.0))
    mb = 1024 * 1024
    rl = [
        (resource.RLIMIT_AS, SUBPROCESS_BASE_VM + limits.memory_mb * mb),
        (resource.RLIMIT_CPU, cpu_seconds_for(timeout) + STARTUP_CPU_S),
        (resource.RLIMIT_FSIZE, limits.file_mb * mb),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ]

    def preexec() -> None:  # runs between fork and exec: only async-safe calls
        for res, val in rl:
            try:
                resource.setrlimit(res, (val, val))
            except (ValueError, OSError):
                pass
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    res_r, res_w = os.pipe()
    env = scrubbed_env(tmp, extra={"SRSCODE_RESULT_FD": str(res_w)})
    args = [sys.executable, "-m", "pytest", *inner_pytest_args(tmp, test_path, ini, plugins), "-p", "srscode.plugins.evaluate.sandbox.collector"]
    try:
        proc = subprocess.Popen(
            args,
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(res_w,),
            start_new_session=True,
            preexec_fn=preexec,
        )
    except OSError as exc:
        os.close(res_r)
        os.close(res_w)
        shutil.rmtree(tmp, ignore_errors=True)
        result["sandbox_error"] = f"could not start pytest: {exc}"
        return result
    os.close(res_w)
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    sinks = {res_r: _Sink(RESULT_CAP, tail=False), out_fd: _Sink(OUTPUT_TAIL, tail=True)}
    for fd in sinks:
        os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout + STARTUP_ALLOWANCE_S
    started = False
    open_fds = set(sinks)
    timed_out = False
    while True:
        if not started and b'"t": "start"' in sinks[res_r].buf:
            started = True
            deadline = time.monotonic() + timeout
        # detect exit without reaping, so the group can be killed before the pid is freed
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        if not open_fds:  # both pipes closed: only the exit is left to wait for
            time.sleep(min(remaining, 0.05))
            continue
        ready, _, _ = select.select(list(open_fds), [], [], min(remaining, 0.05))
        for fd in ready:
            if _read_all_nonblocking(fd, sinks[fd]):
                open_fds.discard(fd)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    status = proc.wait()
    for fd in sinks:
        _read_all_nonblocking(fd, sinks[fd])
    os.close(res_r)
    proc.stdout.close()
    shutil.rmtree(tmp, ignore_errors=True)
    result["timed_out"] = timed_out
    if status < 0:
        result["signal"] = -status
    else:
        result["exit_code"] = status
    res, out = sinks[res_r], sinks[out_fd]
    result["events_raw"] = res.data().decode("utf-8", "replace")
    result["events_truncated"] = res.total > res.cap
    result["output_tail"] = out.data().decode("utf-8", "replace")
    result["output_bytes"] = out.total
    result["duration_s"] = round(time.monotonic() - t0, 6)
    return result


class SubprocessPool:
    """An :class:`~.service.ExecutionPool` over a thread pool: each job in a fresh
    pytest subprocess (:func:`run_one`)."""

    def __init__(self, workers: int, limits: Limits, plugins: tuple[str, ...] = ()) -> None:
        self.n = max(1, int(workers))
        self.limits = limits
        self.plugins = tuple(plugins)
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.info: dict[str, Any] = {
            "network": "NOT cut (plain subprocess)",
            "filesystem": "writable wherever the user can write",
            "processes": "own session killed and reaped on timeout; daemons that leave the session are not caught",
            "user": "same user as the evaluator",
        }
        self.restarts = 0

    def start(self) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._dispatch, name=f"srscode-sub-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, job: ExecutionJob, priority: int = 1) -> None:
        if self._closed:
            raise RuntimeError("the evaluation pool is closed")
        self._jobs.put((priority, next(self._seq), job))

    def _dispatch(self) -> None:
        while True:
            _p, _s, job = self._jobs.get()
            if job is None:
                return
            try:
                res = run_one(job, self.limits, self.plugins)
            except BaseException as exc:
                res = {"id": job.get("id"), "sandbox_error": f"{type(exc).__name__}: {exc}"}
            self.results.put(res)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put((-1, -1, None))
        for t in self._threads:
            t.join(timeout=30)
