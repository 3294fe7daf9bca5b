"""A tiny pytest plugin that reports per-test outcomes as JSON lines on a pipe.

The verdict is read from these events, never from an exit code or from stdout: a
candidate that calls ``os._exit(0)``, prints a fake summary or ends the session early
simply leaves expected tests without a ``passed`` report.

Loaded two ways: registered as an object by the fork worker (``Collector(fd)``), or with
``-p srscode.plugins.evaluate.sandbox.collector`` in a subprocess, where the descriptor number
comes from ``SRSCODE_RESULT_FD``.

Events: ``collected`` (node ids), ``collect_error``, ``phase`` (whether a test's
setup, call or teardown raised, seen by a wrapper the exception passes through),
``report`` (one per test phase), ``interrupted`` (``pytest.exit`` or KeyboardInterrupt),
``tamper`` and ``done``.

In the fork worker the collector is *armed* (:mod:`.integrity`): it no longer writes to
the pipe itself but hands each line to the audit hook, which checks the runner and
seals the line first.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pytest

_audit = sys.audit  # bound at import, before any candidate code could rebind sys.audit

TEXT_LIMIT = 2000  # characters of failure text kept per report


def _bounded(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    head = TEXT_LIMIT // 4
    tail = TEXT_LIMIT - head - 30
    return f"{text[:head]}\n... [cut] ...\n{text[-tail:]}"


def _guarded() -> dict[str, Any]:
    """Objects a candidate would have to replace to fake passes in-process.

    Checked again before each report is sent. This catches the naive forms of runner
    tampering (``Function.runtest = lambda self: None``, a fake ``pytest`` in
    ``sys.modules``); a candidate written against this check can defeat it, which
    docs/security.md says.
    """
    import _pytest.python as py
    import _pytest.reports as rp
    import _pytest.runner as rn
    import pytest  # noqa: F401  (so the snapshot below holds the real module)

    return {
        "Function.runtest": py.Function.runtest,
        "pytest_pyfunc_call": py.pytest_pyfunc_call,
        "CallInfo.from_call": rn.CallInfo.from_call.__func__,
        "call_and_report": rn.call_and_report,
        "pytest_runtest_call": rn.pytest_runtest_call,
        "TestReport.from_item_and_call": rp.TestReport.from_item_and_call.__func__,
        "sys.modules['pytest']": sys.modules.get("pytest"),
        "sys.modules['_pytest.python']": sys.modules.get("_pytest.python"),
    }


class Collector:
    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd
        self._guard = _guarded()
        self._tamper_sent = False
        self._t0 = time.monotonic()
        self.armed = False  # set in the candidate's process once the integrity hook is in place

    # ---------------------------------------------------------------- output
    def emit(self, event: dict[str, Any]) -> None:
        if self.fd is None:
            return
        data = (json.dumps(event, default=str) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            self.fd = None  # the reader is gone; nothing useful left to do

    def sealed(self, event: dict[str, Any]) -> None:
        """The events a verdict rests on (``collected``, ``phase``, ``done``): once armed,
        the integrity hook checks the runner, seals the event and writes it itself."""
        if self.fd is None:
            return
        if self.armed:
            _audit("srscode.emit", event)
            return
        self.emit(event)

    def _check_guard(self) -> None:
        if self._tamper_sent or self.armed:  # armed: the integrity hook checks far more
            return
        try:
            now = _guarded()
        except Exception as exc:  # modules removed from under us
            now = {"import": repr(exc)}
        changed = [k for k, v in self._guard.items() if now.get(k) is not v]
        if changed:
            self._tamper_sent = True
            self.emit({"t": "tamper", "what": changed})

    # ---------------------------------------------------------------- hooks
    def pytest_sessionstart(self, session: Any) -> None:
        self._t0 = time.monotonic()
        self.emit({"t": "start"})  # a subprocess's timeout counts from here, not from exec

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.emit({"t": "collect_error", "id": report.nodeid, "text": _bounded(str(report.longrepr))})

    def pytest_collection_finish(self, session: Any) -> None:
        self._check_guard()
        self.sealed({"t": "collected", "ids": [item.nodeid for item in session.items]})

    # The outcome of each phase, seen from inside it: the exception passes through these
    # wrappers whatever later happens to the report object built from it. Only armed runs
    # send them, sealed: every call phase (a pass rests on it), and a setup or teardown
    # phase only when it raised (it can only add a failure; a pass needs none of them).
    # (the sealed path accepts only these hook methods as callers: no helper in between)
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: Any) -> Any:
        try:
            result = yield
        except BaseException:
            if self.armed:
                self.sealed({"t": "phase", "id": item.nodeid, "when": "setup", "raised": True})
            raise
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: Any) -> Any:
        try:
            result = yield
        except BaseException:
            if self.armed:
                self.sealed({"t": "phase", "id": item.nodeid, "when": "call", "raised": True})
            raise
        if self.armed:
            self.sealed({"t": "phase", "id": item.nodeid, "when": "call", "raised": False})
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: Any, nextitem: Any) -> Any:
        try:
            result = yield
        except BaseException:
            if self.armed:
                self.sealed({"t": "phase", "id": item.nodeid, "when": "teardown", "raised": True})
            raise
        return result

    def pytest_runtest_logreport(self, report: Any) -> None:
        self._check_guard()
        event: dict[str, Any] = {
            "t": "report",
            "id": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "dur": round(float(getattr(report, "duration", 0.0)), 6),
        }
        if hasattr(report, "wasxfail"):
            event["xfail"] = True
        if report.outcome != "passed":
            text = str(report.longrepr) if report.longrepr is not None else ""
            event["text"] = _bounded(text)
        self.emit(event)

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.emit({"t": "interrupted", "text": _bounded(f"{excinfo.typename}: {excinfo.value}")})

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        self.emit({"t": "internal", "text": _bounded(str(excrepr))})

    def pytest_sessionfinish(self, session: Any, exitstatus: Any) -> None:
        self._check_guard()
        self.sealed(
            {
                "t": "done",
                "exitstatus": int(exitstatus),
                "elapsed": round(time.monotonic() - self._t0, 6),
            }
        )


def pytest_configure(config: Any) -> None:
    """Entry point when loaded with ``-p srscode.plugins.evaluate.sandbox.collector``."""
    from .tracebacks import cap_entries

    cap_entries()  # as in the fork worker, so both evaluators keep the same excerpts
    fd = os.environ.get("SRSCODE_RESULT_FD")
    if fd and not config.pluginmanager.has_plugin("srscode-collector"):
        config.pluginmanager.register(Collector(int(fd)), "srscode-collector")
