"""Lifecycle plugin: every committed round's metrics as one JSON line in
``RUN_DIR/metrics.jsonl``.

Idempotent on resume: a round already in the file is never written again, a torn last
line (a crash mid-write) is cut off, and rounds committed but missing from the file (a
crash between the ledger commit and the append) are backfilled from the ledger when the
run starts, so the file holds each committed round exactly once, in order.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from srscode.core.hookspecs import hookimpl

log = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"

# run dir -> rounds already in its file; "current" is the run of the latest run start
# (hooks after run start carry no run dir; a process runs one engine at a time)
_runs: dict[str, set[int]] = {}
_current: dict[str, str | None] = {"run_dir": None}


def read_rounds(path: Path) -> set[int]:
    """Rounds present in a metrics.jsonl; cuts off a torn last line first."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        log.warning("%s: removed a torn last line (the run stopped while writing it)", path)
        data = data[:cut]
    rounds = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            rounds.add(int(json.loads(line)["round"]))
        except (ValueError, KeyError, TypeError):
            continue
    return rounds


def _append(path: Path, rows: list[Mapping[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


@hookimpl(tryfirst=True)  # the record comes before any other observer can fail
def srscode_run_start(run_dir: str, config: Mapping[str, Any], resumed_from: int) -> None:
    path = Path(run_dir) / FILENAME
    written = read_rounds(path)
    _runs[run_dir] = written
    _current["run_dir"] = run_dir
    if resumed_from and not set(range(1, resumed_from + 1)) <= written:
        from srscode.core.ledger import Ledger
        from srscode.core.retention import round_records

        ledger = Ledger(run_dir, create=False)
        try:
            missing = [m for m in round_records(ledger) if m["round"] not in written]
        finally:
            ledger.close()
        if missing:
            _append(path, missing)
            written.update(m["round"] for m in missing)
            log.info("%s: backfilled rounds %s from the ledger", path, ", ".join(str(m["round"]) for m in missing))


@hookimpl(tryfirst=True)  # the record comes before any other observer can fail
def srscode_round_end(round: int, metrics: Mapping[str, Any]) -> None:
    run_dir = _current["run_dir"]
    if run_dir is None:
        return
    written = _runs.setdefault(run_dir, set())
    if round in written:
        return
    _append(Path(run_dir) / FILENAME, [{**metrics, "round": round, "time": time.time()}])
    written.add(round)
