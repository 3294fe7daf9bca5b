"""Deterministic fault injection for the crash-safety tests.

``SRSCODE_FAULT=<point>:<n>`` makes the process SIGKILL itself the n-th time it passes
the named checkpoint (``*`` matches every point, so ``*:37`` dies at the 37th
checkpoint of any kind). Unset — the normal case — a checkpoint costs one dict lookup.
Points: ``stage-start:<stage>``, ``stage-end:<stage>``, ``write-tmp`` (temp file written,
before its rename), ``write-renamed`` (after the rename), ``commit-files`` (round sealed,
before the ledger transaction), ``commit-db`` (ledger transaction done).

``SRSCODE_FAULT_LOG=<file>`` appends the name of every checkpoint passed to that file
(one per line), so a harness can count the checkpoints of an uninterrupted run and pick
kill points over that range.
"""
from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("SRSCODE_FAULT", "")
_LOG = os.environ.get("SRSCODE_FAULT_LOG", "")
_count = 0
_target: tuple[str, int] | None = None
if _SPEC:
    _name, _, _n = _SPEC.rpartition(":")
    _target = (_name, int(_n))


def checkpoint(name: str) -> None:
    global _count
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    if _target is None:
        return
    point, n = _target
    if point == "*" or point == name or (point.endswith("*") and name.startswith(point[:-1])):
        _count += 1
        if _count == n:
            os.kill(os.getpid(), signal.SIGKILL)
