"""Disk full: the run stops with a clear message, the last committed round stays intact,
and the same command resumes to the result of an uninterrupted run.

Two ways to make writes fail:

* in process: the ledger's atomic writes get a file object whose ``write`` stores half the
  bytes and then raises ``ENOSPC``, at the n-th write of a run (fake model stages, so it
  is fast and every round file can be hit);
* in a subprocess with ``RLIMIT_FSIZE``: every file of the run, the SQLite ledger and its
  WAL included, stops growing at the limit (Python ignores ``SIGXFSZ``, so writes fail
  with ``EFBIG``; SQLite reports them as an I/O error). Real evaluator, real CLI.
"""
from __future__ import annotations

import contextlib
import errno
import io
import re
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

import fault_stages as fs
from fake_stages import fake_config
from srscode.cli import main as cli
from srscode.core import ledger as ledger_mod
from srscode.core.ledger import Ledger


class _FullFile(io.FileIO):
    """Accepts half of the first write, then the disk is full."""

    def write(self, data: Any) -> int:  # type: ignore[override]
        super().write(bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, "No space left on device")


class _Writes:
    """Counts the ledger module's binary writes; the n-th one hits a full disk."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.count = 0
        self.failed: str | None = None

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode:
            self.count += 1
            if self.count == self.fail_at:
                self.failed = str(file)
                return _FullFile(file, "w")
        return open(file, mode, *args, **kwargs)


def _main(config: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(["-q", "run", str(config), "--run-dir", str(run_dir)])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted reference, and how many writes it made."""
    root = tmp_path_factory.mktemp("enospc-ref")
    cfg = fs.write_config(root / "config.yaml", fake_config(rounds=4))
    writes = _Writes()
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("SRSCODE_PLUGINS", "fake_stages")
        mp.setattr(ledger_mod, "open", writes, raising=False)
        rc = cli.main(["-q", "run", str(cfg), "--run-dir", str(root / "ref")])
    assert rc == 0, err.getvalue()
    return {"config": cfg, "writes": writes.count, "snapshot": fs.snapshot(root / "ref")}


@pytest.mark.parametrize("share", [0.0, 0.13, 0.31, 0.5, 0.77, 0.99])
def test_enospc_stops_cleanly_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], fake_run: dict[str, Any],
                                          share: float) -> None:
    monkeypatch.setenv("SRSCODE_PLUGINS", "fake_stages")
    run_dir = tmp_path / "run"
    writes = _Writes(fail_at=1 + int(share * fake_run["writes"]))
    monkeypatch.setattr(ledger_mod, "open", writes, raising=False)
    rc, err = _main(fake_run["config"], run_dir, capsys)
    monkeypatch.delattr(ledger_mod, "open")
    where = f"ENOSPC at write {writes.fail_at} of {fake_run['writes']} ({writes.failed})"
    assert writes.failed, where
    assert rc == 2, f"{where}: {err}"
    assert "Traceback" not in err, err
    tmp = Path(writes.failed)
    target = tmp.parent / tmp.name[1:].split(".tmp-")[0]  # .NAME.tmp-PID -> NAME
    assert f"cannot write {target} (No space left on device)" in err, f"{where}: {err}"
    assert "disk is full" in err and "run the same command again to resume" in err, err
    # the failed write left no partial file, and every committed round is intact
    assert fs.stale_files(run_dir) == [], where
    led = Ledger(run_dir, create=False)
    try:
        committed = [r["round"] for r in led.rounds()]
        for r in committed:
            led.verify_round(r)
        last = led.last_round()
        said = f"round {last} (the last committed one) is intact" if last else "no round had been committed yet"
        assert said in err, err
    finally:
        led.close()
    snap = fake_run["snapshot"]
    for r in committed:
        assert fs.round_files(run_dir, r) == snap["files"][r], where
    # space is back: the same command finishes the run as if nothing happened
    rc, err = _main(fake_run["config"], run_dir, capsys)
    assert rc == 0, f"{where}: resume failed: {err}"
    got = fs.snapshot(run_dir)
    for key in snap:
        assert got[key] == snap[key], f"{where}: {key} differs from the uninterrupted run"


# ------------------------------------------------------------------ subprocess, RLIMIT_FSIZE


def _limited(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return preexec


@pytest.fixture(scope="module")
def real_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return fs.shared_reference(tmp_path_factory)


# Where the limit stops this run (the WAL grows with every transaction): 64 KiB while the
# ledger is being created, about 152 KiB after round 1. Exact rounds vary with the size of
# the timing fields, so the test asserts only that the run stopped before its end.
@pytest.mark.parametrize("limit_kib", [64, 152])
def test_file_size_limit_hits_the_ledger_and_resume_recovers(tmp_path: Path, real_reference: dict[str, Any],
                                                              limit_kib: int) -> None:
    run_dir = tmp_path / "run"
    cmd = fs.cli_command(real_reference["config"], run_dir)
    proc = subprocess.run(cmd, env=fs.cli_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(limit_kib * 1024))
    err = proc.stderr
    assert proc.returncode == 2, f"limit {limit_kib} KiB: rc {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert re.search(r"cannot (read or )?write \S*ledger\.sqlite \(disk I/O error\)", err), err
    assert "run the same command again to resume" in err, err
    led = Ledger(run_dir, create=False)
    try:
        committed = [r["round"] for r in led.rounds()]
        for r in committed:
            led.verify_round(r)
    finally:
        led.close()
    assert committed != list(real_reference["snapshot"]["rounds"]), "the limit never stopped the run"
    for r in committed:
        assert fs.round_files(run_dir, r) == real_reference["snapshot"]["files"][r]
    proc = fs.run_cli(real_reference["config"], run_dir)
    assert proc.returncode == 0, proc.stderr
    got, want = fs.snapshot(run_dir), real_reference["snapshot"]
    for key in want:
        assert got[key] == want[key], f"limit {limit_kib} KiB: {key} differs from the uninterrupted run"
    assert fs.stale_files(run_dir) == []
