"""The fork-server worker: pytest prepared once, each candidate in a forked child.

Started by :class:`~srscode.plugins.evaluate.sandbox.pool.WorkerPool` as a fresh Python process
(``python -c ...``, never forked from the caller, which may hold a model, CUDA state and
threads) with a scrubbed environment. It

1. finds the isolation this machine allows (:func:`isolation.plan_isolation`);
2. imports pytest, the modules a session imports lazily, and the configured preloads;
3. parses pytest's configuration, runs ``pytest_configure`` and ``pytest_sessionstart``
   for a fixed candidate path ``<work>/c/test_solution.py`` — everything up to
   collection — and freezes the heap (``gc.freeze``);
4. per job: writes ``solution.py`` and the harnessed test file, compiles the
   assertion-rewritten test module (cached per test file), then forks:

   worker -> intermediate (``setsid``, namespaces, read-only mounts)
          -> candidate process (PID 1 of its PID namespace: fresh /proc, dropped uid,
             nested user namespace, rlimits, scrubbed env, cwd/HOME/TMPDIR in the temp
             dir) which runs collection and the tests of the prepared session and
             reports per-test outcomes on a pipe (:mod:`.collector`).

   The worker enforces the wall timeout, kills the process group, reaps, sweeps any
   escaped descendant (it is a child subreaper), and removes the temp dir.

Why fork per candidate: nothing a candidate does (monkeypatching builtins,
``sys.modules``, pytest, the cwd) can reach the next candidate, because each one runs in
a copy-on-write copy of the pristine worker, so no module cleanup is needed between
candidates. Doing everything up to collection once in the worker matters on machines
where page faults are expensive: a child only pays for the pages it writes.

Protocol: the first stdin line is the worker config (JSON); the worker answers a
``hello`` line, then reads one job per line and writes one result per line.
"""
from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

from . import integrity, isolation, strict_eq, tracebacks
from .harness import INI_TEXT, SOLUTION_FILE, TEST_FILE, inner_pytest_args, sha256, test_source
from .limits import Limits, apply_limits, cpu_seconds_for, scrubbed_env, vm_size_bytes

OUTPUT_TAIL = 4000  # bytes of the candidate's stdout/stderr kept for the excerpt
RESULT_CAP = 8 * 1024 * 1024  # bytes of collector events kept
KILL_GRACE_S = 2.0
SANDBOX_FAIL = 71  # exit code of a candidate process whose isolation steps failed

WARMUP_SOLUTION = "def add(a, b):\n    return a + b\n"
WARMUP_TEST = '''
import unittest

import pytest

@pytest.fixture
def two():
    return 2

@pytest.mark.parametrize("a,b,c", [(1, 2, 3), (2, 2, 4)])
def test_param(a, b, c):
    assert add(a, b) == c

def test_fixtures(two, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("X", "1")
    (tmp_path / "f").write_text("x")
    print("out")
    assert capsys.readouterr().out == "out\\n"
    assert add(two, 0.1) == pytest.approx(2.1)
    with pytest.raises(TypeError):
        add(1, "a")

class TestGroup:
    def test_fail_diff(self):
        assert [1, 2, {"a": "xyz"}] == [1, 2, {"a": "xyw"}]

    def test_fail_text(self):
        assert "abc\\ndef" == "abc\\ndeg"

@pytest.mark.xfail
def test_xfail():
    assert False

@pytest.mark.skip(reason="warm-up")
def test_skip():
    pass

class TestUnit(unittest.TestCase):
    def test_ok(self):
        self.assertEqual(add(1, 1), 2)

    def test_fail(self):
        self.assertEqual(add(1, 1), 3)
'''


def _read_all_nonblocking(fd: int, sink: "_Sink") -> bool:
    """Read what is available; True at end of file."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not chunk:
            return True
        sink.add(chunk)


class _Sink:
    def __init__(self, cap: int, tail: bool) -> None:
        self.cap = cap
        self.tail = tail
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.tail:
            self.buf += chunk
            if len(self.buf) > 2 * self.cap:
                del self.buf[: len(self.buf) - self.cap]
        elif len(self.buf) < self.cap:
            self.buf += chunk[: self.cap - len(self.buf)]

    def data(self) -> bytes:
        return bytes(self.buf[-self.cap :]) if self.tail else bytes(self.buf)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the worker is single-threaded)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        pass
    out = []
    try:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as fh:
                        stat = fh.read()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        pass
    return out


def sweep_children() -> int:
    """Kill and reap every child of this (subreaper) process; returns how many."""
    me = os.getpid()
    killed = 0
    for _ in range(100):
        kids = _children(me)
        if not kids:
            break
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        for k in kids:
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(k, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                time.sleep(0.002)
    # reap anything else already dead
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not pid:
            break
    return killed


def remove_tree(path: str) -> None:
    """rmtree that also handles directories a candidate made unreadable."""

    def onerror(func: Any, p: str, exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=onerror)


class Worker:
    def __init__(self, cfg: dict[str, Any], plan: isolation.Plan, report: dict[str, Any], ctl_in: int = -1, ctl_out: int = -1) -> None:
        self.cfg = cfg
        self.ctl_in, self.ctl_out = ctl_in, ctl_out
        self.work = cfg["dir"]
        self.cand = os.path.join(self.work, "c")
        self.test_path = os.path.join(self.cand, TEST_FILE)
        self.limits = Limits(**cfg.get("limits", {}))
        self.plugins = tuple(cfg.get("plugins", ()))
        self.code_cache: dict[str, Any] = {}
        # per compiled test file: the addresses of its code objects, which the integrity
        # hook accepts as the test file's (computed here once, not in every candidate)
        self._test_code_ids: dict[str, frozenset[int]] = {}
        self._job_test_codes: frozenset[int] = frozenset()
        self.plan, self.iso_report = plan, report
        self.env = scrubbed_env(self.cand, source=cfg.get("env_source", {}), hidden=cfg["hidden_devices"])
        self.preloaded = self._preload(cfg.get("preload", ()))
        self.guard: integrity.Guard | None = None
        self.used_code_keys: set[tuple[Any, ...]] = set()  # runner code the warm-up sessions ran
        self._prepare()
        self.base_vm = vm_size_bytes()  # the warm-up's candidates need it too (set again below)
        self._warm_up()
        self._map_module_files()
        if cfg.get("integrity", True):
            # after the warm-up, so the modules a session imports lazily are fingerprinted too
            self.guard = integrity.build_guard(self.config, self.session, Worker._candidate.__code__, frozenset(self.used_code_keys))
            integrity.strip_worker_ctypes(self.guard)  # once here, not in every candidate
        gc.collect()
        gc.freeze()  # children then never touch the worker's objects in a collection
        self.base_vm = vm_size_bytes()

    # ------------------------------------------------------------------ setup
    def _preload(self, names: Any) -> list[str]:
        done = []
        for name in names:
            try:
                __import__(name)
                done.append(name)
            except Exception:  # a missing optional package is not an error
                continue
        return done

    def _prepare(self) -> None:
        import _pytest.assertion.rewrite as rewrite
        import _pytest.main as pmain
        from _pytest.config import _prepareconfig

        from .collector import Collector

        ini = os.path.join(self.work, "pytest.ini")
        args = inner_pytest_args(self.cand, self.test_path, ini, self.plugins) + ["-p", "no:faulthandler"]
        self.collector = Collector(None)
        saved = os.getcwd()
        os.chdir(self.cand)
        config = _prepareconfig(args, plugins=[self.collector])
        config._do_configure()
        session = pmain.Session.from_config(config)
        session.exitstatus = 0
        config.hook.pytest_sessionstart(session=session)
        os.chdir(saved)
        self.config, self.session = config, session
        # reported in the hello: where pytest's internals differ, pytest's own (slower) path runs
        self.traceback_patches = {"statement_cache": tracebacks.install((self.cand,)), "entry_cap": tracebacks.cap_entries()}

        # Hand pytest's import hook the rewritten test module we compiled in the worker
        # (once per distinct test file) instead of having every child parse it again.
        self._precompiled: dict[str, Any] = {}
        original = rewrite._read_pyc
        pre = self._precompiled

        def _read_pyc(source: Any, pyc: Any, trace: Any = lambda x: None) -> Any:
            co = pre.get(str(source))
            return co if co is not None else original(source, pyc, trace)

        rewrite._read_pyc = _read_pyc

    def _compile_test(self, source: str, key: str) -> Any:
        import ast

        import _pytest.assertion.rewrite as rewrite

        co = self.code_cache.get(key)
        if co is None:
            data = source.encode("utf-8")
            tree = ast.parse(data, filename=self.test_path)
            if self.cfg.get("strict_equality"):
                strict_eq.rewrite(tree)
            rewrite.rewrite_asserts(tree, data, self.test_path, self.config)
            co = compile(tree, self.test_path, "exec", dont_inherit=True)
            if len(self.code_cache) >= 128:  # a bigger worker heap makes every fork dearer
                self.code_cache.pop(next(iter(self.code_cache)))
            self.code_cache[key] = co
            self._test_code_ids.pop(key, None)
        return co

    def _warm_up(self) -> None:
        """Run a representative candidate and import, in the worker, the modules the
        session imported lazily, so children do not import them again."""
        for _ in range(2):
            res = self.run({"id": -1, "solution": WARMUP_SOLUTION, "test": WARMUP_TEST, "timeout": 30, "warmup": True})
            names = []
            for line in res.get("events_raw", "").splitlines():
                if line.startswith('{"t": "modules"'):
                    names = json.loads(line)["names"]
                elif line.startswith('{"t": "codes"'):
                    self.used_code_keys.update(tuple(k) for k in json.loads(line)["keys"])
            for name in names:
                if name in sys.modules or name.split(".")[0] in ("solution", "test_solution"):
                    continue
                try:
                    __import__(name)
                except Exception:
                    pass

    @staticmethod
    def _map_module_files() -> None:
        """Fill ``inspect``'s file -> module map for every module loaded so far.

        pytest renders a failing test through ``inspect.getmodule``, whose first call in a
        process resolves the real path of every loaded module's file (tens of thousands
        of ``lstat`` calls, ~25 ms per forked candidate here). Done once in the worker,
        children only map their own two new modules."""
        import inspect

        inspect.getmodule(Worker._map_module_files.__code__)  # a code object: no __module__ shortcut

    # ------------------------------------------------------------------ per job
    def _clean(self) -> None:
        # the candidate directory itself stays: it is the writable bind mount
        for name in os.listdir(self.cand):
            remove_tree(os.path.join(self.cand, name))

    def _write_files(self, solution: str, test: str) -> None:
        self._clean()
        os.makedirs(os.path.join(self.cand, "tmp"))
        with open(os.path.join(self.cand, SOLUTION_FILE), "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(solution)
        with open(self.test_path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(test)
        os.chmod(self.cand, 0o700)
        uid = self.plan.drop_uid
        if uid is not None:
            for root, dirs, files in os.walk(self.cand):
                os.chown(root, uid, uid)
                for f in files:
                    os.chown(os.path.join(root, f), uid, uid)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        import resource

        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rs0 = resource.getrusage(resource.RUSAGE_SELF)
        result: dict[str, Any] = {"id": job.get("id"), "cand_dir": self.cand, "sealed": self.guard is not None}
        try:
            source = test_source(job["test"])
            self._write_files(job["solution"], source)
            self._precompiled.clear()
            self._job_test_codes = frozenset()
            key = sha256(source)
            try:
                self._precompiled[self.test_path] = co = self._compile_test(source, key)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass  # the child reports the collection error itself
            else:
                if self.guard is not None:
                    codes = self._test_code_ids.get(key)
                    if codes is None:
                        codes = self._test_code_ids[key] = integrity.code_ids(co)
                        while len(self._test_code_ids) > len(self.code_cache):
                            self._test_code_ids.pop(next(iter(self._test_code_ids)))
                    self._job_test_codes = codes
        except Exception as exc:
            result["sandbox_error"] = f"could not prepare the candidate's files: {type(exc).__name__}: {exc}"
            return result
        timeout = float(job.get("timeout", 10.0))
        limits = Limits(**{**self.limits.to_dict(), "cpu_s": cpu_seconds_for(timeout)})
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        ctl = tuple(fd for fd in (self.ctl_in, self.ctl_out) if fd >= 0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the candidate's process
            self._child(job, limits, res_r, res_w, out_r, out_w, ctl)
        os.close(res_w)
        os.close(out_w)
        self._supervise(pid, timeout, res_r, out_r, result)
        result["duration_s"] = round(time.monotonic() - t0, 6)
        self._learn_traceback_sources(result.get("events_raw", ""))
        result["leftovers_killed"] = sweep_children()
        try:
            self._clean()
        except OSError:
            pass
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rs1 = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 6)
        result["worker_cpu_s"] = round(rs1.ru_utime + rs1.ru_stime - rs0.ru_utime - rs0.ru_stime, 6)
        result["faults"] = ru1.ru_minflt - ru0.ru_minflt
        return result

    @staticmethod
    def _learn_traceback_sources(events: str) -> None:
        at = events.rfind('{"t": "ast_paths"')
        if at < 0:
            return
        try:
            paths = json.loads(events[at:].split("\n", 1)[0])["paths"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(paths, list):
            tracebacks.remember(paths[:64])

    def _supervise(self, pid: int, timeout: float, res_r: int, out_r: int, result: dict[str, Any]) -> None:
        res, out = _Sink(RESULT_CAP, tail=False), _Sink(OUTPUT_TAIL, tail=True)
        for fd in (res_r, out_r):
            os.set_blocking(fd, False)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1
        deadline = time.monotonic() + timeout
        poller = select.poll()
        open_fds = {res_r: res, out_r: out}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        exited = False
        status = 0
        timed_out = False
        while not exited:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            wait_ms = remaining * 1000 if pidfd >= 0 else min(remaining * 1000, 10)
            for fd, _ev in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                elif fd in open_fds:
                    if _read_all_nonblocking(fd, open_fds[fd]):
                        poller.unregister(fd)
                        del open_fds[fd]
            if pidfd < 0:
                got, st = os.waitpid(pid, os.WNOHANG)
                if got:
                    exited, status = True, st
                    pid = -pid  # already reaped
        # Kill the whole group before reaping: while the candidate's process is an
        # unreaped zombie its pid, and so the group id, cannot be reused by another process.
        if pid > 0:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if timed_out and pidfd >= 0:
                select.select([pidfd], [], [], KILL_GRACE_S)
            _, status = os.waitpid(pid, 0)
        if pidfd >= 0:
            os.close(pidfd)
        for fd, sink in list(open_fds.items()):
            _read_all_nonblocking(fd, sink)
        os.close(res_r)
        os.close(out_r)
        result["timed_out"] = timed_out
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            result["exit_code"] = os.WEXITSTATUS(status)
        result["events_raw"] = res.data().decode("utf-8", "replace")
        result["events_truncated"] = res.total > res.cap
        result["output_tail"] = out.data().decode("utf-8", "replace")
        result["output_bytes"] = out.total

    # ------------------------------------------------------------------ in the children
    def _child(self, job: dict[str, Any], limits: Limits, res_r: int, res_w: int, out_r: int, out_w: int, ctl: tuple[int, ...]) -> None:  # pragma: no cover
        try:
            os.setsid()
            isolation.set_pdeathsig(signal.SIGKILL)
            os.close(res_r)
            os.close(out_r)
            for fd in ctl:
                os.close(fd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.close(devnull)
            os.close(out_w)
        except BaseException:
            os._exit(SANDBOX_FAIL)
        self._candidate(job, limits, res_w)

    def _candidate(self, job: dict[str, Any], limits: Limits, res_w: int) -> None:  # pragma: no cover
        code = 0
        try:
            try:
                isolation.enter_candidate(self.plan)
            except OSError as exc:
                os.write(2, f"srscode sandbox: isolation failed: {exc}\n".encode())
                os._exit(SANDBOX_FAIL)
            import faulthandler
            import random
            import tempfile

            os.chdir(self.cand)
            os.environ.clear()
            os.environ.update(self.env)
            tempfile.tempdir = self.env["TMPDIR"]
            random.seed()  # as a fresh interpreter would be
            sys.dont_write_bytecode = True
            faulthandler.enable(file=sys.stderr)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG
            signal.signal(signal.SIGINT, signal.default_int_handler)
            failed = apply_limits(limits, base_vm=self.base_vm, nproc=True)
            if failed and "address space" in failed:
                os.write(2, f"srscode sandbox: could not set limits: {failed}\n".encode())
            before = set(sys.modules) if job.get("warmup") else None
            self.collector.fd = res_w
            if self.guard is not None:
                integrity.arm(self.guard, res_w, self._job_test_codes)
                self.collector.armed = True
            used: set[Any] | None = set() if job.get("warmup") else None
            if used is not None:  # which runner code a session runs: what the guard fingerprints
                sys.setprofile(lambda frame, event, arg: used.add(frame.f_code) if event == "call" else None)
            self._run_session()
            if used is not None:
                sys.setprofile(None)
                self.collector.emit({"t": "codes", "keys": integrity.code_keys(used)})
            missed = tracebacks.missed_paths()
            if missed:  # the worker learns these files once, for every later candidate
                self.collector.emit({"t": "ast_paths", "paths": missed[:64]})
            if before is not None:
                new = sorted(n for n in set(sys.modules) - before if not n.startswith(("solution", "test_solution")))
                self.collector.emit({"t": "modules", "names": new})
        except BaseException as exc:
            try:
                os.write(2, f"srscode sandbox: runner failed: {type(exc).__name__}: {exc}\n".encode())
            except OSError:
                pass
            code = 70
        os._exit(code)

    def _run_session(self) -> None:  # pragma: no cover - runs in the candidate process
        """The part of pytest's ``wrap_session`` after ``pytest_sessionstart``."""
        import _pytest._code
        import _pytest.main as pmain
        from _pytest.outcomes import Exit, Failed

        config, session = self.config, self.session
        self.collector._t0 = time.monotonic()
        try:
            session.exitstatus = pmain._main(config, session) or 0
        except Failed:
            session.exitstatus = 1
        except (KeyboardInterrupt, Exit):
            excinfo = _pytest._code.ExceptionInfo.from_current()
            session.exitstatus = 2
            config.hook.pytest_keyboard_interrupt(excinfo=excinfo)
        except BaseException as exc:
            session.exitstatus = 3
            self.collector.emit({"t": "internal", "text": f"{type(exc).__name__}: {exc}"[:2000]})
        finally:
            try:
                config.hook.pytest_sessionfinish(session=session, exitstatus=session.exitstatus)
            except BaseException as exc:
                self.collector.emit({"t": "internal", "text": f"sessionfinish: {type(exc).__name__}: {exc}"[:2000]})

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        ctl_in = self.ctl_in
        g = self.guard
        integrity_info = {"armed": g is not None, "runner_functions_warmed": len(self.used_code_keys),
                          "bindings": len(g.containers) if g else 0, "hooks": len(g.hook_callers) if g else 0}
        self._send({"t": "hello", "pid": os.getpid(), "isolation": self.iso_report, "preloaded": self.preloaded,
                    "tracebacks": self.traceback_patches, "integrity": integrity_info})
        buf = b""
        while True:
            chunk = os.read(ctl_in, 1 << 20)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                job = json.loads(line)
                if job.get("t") == "stop":
                    return
                res = self.run(job)
                self._send({"t": "result", **res})

    def _send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(self.ctl_out, view)
            view = view[n:]


def main() -> None:
    # Protocol fds are private; stdin/stdout become /dev/null so a stray print (ours or
    # a library's) can never corrupt the protocol.
    ctl_in = os.dup(0)
    ctl_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    for fd in (ctl_in, ctl_out):
        os.set_inheritable(fd, False)
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(ctl_in, 1)
        if not chunk:
            return
        line += chunk
    cfg = json.loads(line)
    work = cfg["dir"]
    cand = os.path.join(work, "c")
    os.makedirs(cand, exist_ok=True)
    with open(os.path.join(work, "pytest.ini"), "w") as fh:
        fh.write(INI_TEXT)
    os.chdir(work)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", work)]
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    subreaper = isolation.set_subreaper()
    if cfg.get("isolation", True):
        plan, report = isolation.plan_isolation(work, cfg.get("home"), cfg.get("sandbox_uid"), as_user=bool(cfg.get("as_user")))
    else:
        plan, report = isolation.Plan(), {"disabled": True}
    report["subreaper"] = subreaper
    if plan.namespaces:
        isolation.enter_worker_namespaces(plan)
    if plan.pidns:
        # the serving worker is PID 1 of the new PID namespace; this process only waits
        pid = os.fork()
        if pid:
            os.close(ctl_in)
            os.close(ctl_out)
            _, st = os.waitpid(pid, 0)
            _remove_own_files(work, cfg.get("log"))
            os._exit(os.waitstatus_to_exitcode(st) & 0xFF)
        isolation.set_pdeathsig(signal.SIGKILL)
    if plan.namespaces:
        isolation.setup_worker_mounts(plan, cand)
    if plan.drop_uid is not None:
        os.chown(cand, plan.drop_uid, plan.drop_uid)
    worker = Worker(cfg, plan, report, ctl_in, ctl_out)
    worker.serve()
    if not plan.pidns:
        sweep_children()
        _remove_own_files(work, cfg.get("log"))


def _remove_own_files(work: str, log: str | None) -> None:
    """When the pool's process died without closing us (killed test run, crash), stdin
    reaches EOF and we exit: leave no directory behind either."""
    remove_tree(work)
    if log:
        try:
            os.unlink(log)
        except OSError:
            pass
    try:
        os.rmdir(os.path.dirname(work))  # the pool's base dir, once its last worker is gone
    except OSError:
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
