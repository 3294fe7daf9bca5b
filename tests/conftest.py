"""Backend guard (nothing else belongs here).

* Tests marked ``cuda`` / ``ascend`` / ``accelerator`` skip where that hardware is absent.
* Under a tox hardware env, ``SRSCODE_EXPECT_BACKEND`` names the backend the env is for:
  the session fails at once when the backend resolved here differs, tests marked for it
  must run (a skip counts as a failure), and tests marked for other hardware skip.
  So an accelerator env cannot pass green by skipping everything.
* Every test starts and ends with a clean backend state (no accelerate state, no resolved
  backend): the autouse ``clean_backend_state`` from ``backend_state.py``, so a CPU-pinned
  test cannot leave accelerate on the CPU for a later GPU test in the same xdist worker.
"""
from __future__ import annotations

import os

import pytest

from backend_state import clean_backend_state  # noqa: F401  (autouse for every test here)

HW_MARKERS = ("cuda", "ascend", "accelerator")
EXPECT = os.environ.get("SRSCODE_EXPECT_BACKEND", "").strip()


def _wanted(expected: str) -> set[str]:
    return {expected} | ({"accelerator"} if expected not in ("", "cpu") else set())


def _hw_marks(item: pytest.Item) -> set[str]:
    return {m for m in HW_MARKERS if item.get_closest_marker(m) is not None}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not EXPECT:
        return
    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, reset_cache, resolve_backend

    try:
        got = resolve_backend(HardwareConfig(), builtin_registry())
    except Exception as exc:  # noqa: BLE001 - any failure to resolve fails the session
        pytest.exit(f"SRSCODE_EXPECT_BACKEND={EXPECT} but resolving the backend failed: {exc}", returncode=3)
    reset_cache()  # tests start from a clean resolution
    if got.name != EXPECT:
        pytest.exit(
            f"SRSCODE_EXPECT_BACKEND={EXPECT} but this machine resolved backend {got.name!r} "
            f"({got.probe.reason}); this tox env is for {EXPECT} hardware",
            returncode=3,
        )


def pytest_report_header(config: pytest.Config) -> str | None:
    return f"srscode expected backend: {EXPECT}" if EXPECT else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [(item, _hw_marks(item)) for item in items]
    if not any(m for _, m in marked):
        return
    if EXPECT:
        runnable, why = _wanted(EXPECT), f"runs under SRSCODE_EXPECT_BACKEND for other hardware (this is {EXPECT})"
    else:
        from srscode.hardware.backends import ASCEND, CUDA

        runnable = {b.name for b in (ASCEND, CUDA) if b.probe().usable}
        runnable |= {"accelerator"} if runnable else set()
        why = "needs hardware this machine does not have"
    for item, marks in marked:
        if marks and not marks & runnable:
            item.add_marker(pytest.mark.skip(reason=f"{'/'.join(sorted(marks))}: {why}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if EXPECT and report.skipped and _hw_marks(item) & _wanted(EXPECT) and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is marked for {EXPECT} hardware and SRSCODE_EXPECT_BACKEND={EXPECT}, "
            f"so it must run, but it skipped: {report.longrepr}"
        )
    return report
