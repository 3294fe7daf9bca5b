"""SIGINT / SIGTERM in the middle of a round: the run abandons the round in progress, exits
non-zero with a message that says how to resume, releases the run-dir lock and leaves no
process behind; the same command then finishes the run with the result of an
uninterrupted one."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import fake_stages
import fault_stages as fs
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import Interrupted
from srscode.core.ledger import Ledger, RunLock


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    fs.become_subreaper()
    return fs.shared_reference(tmp_path_factory)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _lock_is_free(run_dir: Path) -> bool:
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except Exception:
        return False
    lock.release()
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize("moment", ["evaluate", "train"])
def test_signal_mid_round_then_resume(tmp_path: Path, reference: dict[str, Any], sig: signal.Signals,
                                      moment: str) -> None:
    run_dir = tmp_path / "run"
    marker = tmp_path / "training"
    env = fs.cli_env(SRSCODE_TEST_PAUSE=f"2:60:{marker}") if moment == "train" else fs.cli_env()
    before = fs.live_children()
    proc = subprocess.Popen(fs.cli_command(reference["config"], run_dir), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if moment == "train":
            _wait_for(marker, proc)  # the 2nd SFT call is sleeping: round 2's train stage
        else:
            # round 2's candidates are written as the generate stage ends; evaluation follows
            _wait_for(run_dir / "rounds" / "000002" / "candidates.jsonl", proc)
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - sent
    assert proc.returncode == 130, f"rc {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert "run the same command again to resume" in err, err
    assert took < 30, f"the run took {took:.1f} s to stop"
    assert _lock_is_free(run_dir), "the run-dir lock was not released"
    assert fs.strays(before) == [], "processes outlived the interrupted run"
    assert fs.stale_files(run_dir) == []
    led = Ledger(run_dir, create=False)
    try:
        assert led.last_round() == 1, "round 2 was committed although it was interrupted"
        led.verify_round(1)
    finally:
        led.close()
    proc2 = fs.run_cli(reference["config"], run_dir)
    assert proc2.returncode == 0, proc2.stderr
    got, want = fs.snapshot(run_dir), reference["snapshot"]
    for key in want:
        assert got[key] == want[key], f"{sig.name} during {moment}: {key} differs from the uninterrupted run"
    assert fs.strays(before) == []


# ------------------------------------------------------------------ in process


def _engine(run_dir: Path) -> Engine:
    cfg_dict = fake_config(rounds=3)
    cfg_dict["stages"]["trainer"] = {"name": "fault-train"}
    cfg_dict["dpo"] = {"name": "fault-dpo", "every": "end"}
    cfg = validate(cfg_dict)
    return Engine(cfg, cfg.model_dump(mode="json"), run_dir, extra_plugins=[fake_stages, fs], quiet=True)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_in_process_interrupt_releases_lock_and_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         sig: str) -> None:
    """The engine turns the signal into ``Interrupted`` in the middle of the train stage,
    releases the lock (flock is per open file, so a second lock in this same process
    would fail if it were still held) and restores the SIGTERM handler it replaced."""
    fake_stages.reset()
    fs.reset_calls()
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("SRSCODE_TEST_SIGNAL", f"2:{sig}")
    with pytest.raises(Interrupted) as info:
        _engine(tmp_path / "run").run()
    assert "stopped" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is before
    assert _lock_is_free(tmp_path / "run")
    led = Ledger(tmp_path / "run", create=False)
    assert led.last_round() == 1
    led.close()
    monkeypatch.delenv("SRSCODE_TEST_SIGNAL")
    fs.reset_calls()
    summary = _engine(tmp_path / "run").run()
    assert summary["round"] == 3
    _engine(tmp_path / "ref").run()
    assert fs.snapshot(tmp_path / "run") == {**fs.snapshot(tmp_path / "ref")}
