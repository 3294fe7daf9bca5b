"""Harness for whole runs with the fake trainers of :mod:`srscode.testing.fault_stages`,
in a subprocess (``srscode run``) or in this process: the fault-injection, signal and
disk-full tests.

The fake trainers themselves, their knobs and ``fault_config`` live in the package module
(the soak benchmark uses them too); this module re-exports the plugin hook and the call
counter's reset, so tests register it as the plugin (``extra_plugins=[fs]``) as before.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Collection

import yaml

from srscode.testing.fault_stages import fault_config, reset_calls, srscode_trainers  # noqa: F401  (re-exported)

PLUGIN = "srscode.testing.fault_stages"  # what SRSCODE_PLUGINS names in a subprocess

# ------------------------------------------------------------------ harness helpers
# Shared by test_fault_injection, test_signals and test_disk_full.

TESTS_DIR = Path(__file__).resolve().parent
_TEST_ENV = ("SRSCODE_FAULT", "SRSCODE_FAULT_LOG", "SRSCODE_TEST_PAUSE", "SRSCODE_TEST_SIGNAL")


def available_evaluator() -> str:
    """The real evaluator to use: ``pytest-xdist`` (the default, and 3x faster here on
    small batches), else ``subprocess`` (one pytest process per candidate)."""
    from srscode.core.registry import make_plugin_manager

    names = make_plugin_manager().names("evaluator")
    for name in ("pytest-xdist", "subprocess"):
        if name in names:
            return name
    raise RuntimeError(f"no real evaluator is registered (have: {names})")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TEST_ENV}
    # test-only plugin modules a caller names in SRSCODE_PLUGINS (fake_stages) live in tests/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    # this module re-exports the plugin: naming both would register its trainers twice
    plugins = [p for p in env.get("SRSCODE_PLUGINS", "").split(",") if p and p not in ("fault_stages", PLUGIN)]
    env["SRSCODE_PLUGINS"] = ",".join([*plugins, PLUGIN])
    env.setdefault("SRSCODE_PROGRESS", "0")
    env.update(extra)
    return env


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli_command(config: Path, run_dir: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "srscode.cli.main", "-q", "run", str(config), "--run-dir", str(run_dir), *more]


def run_cli(config: Path, run_dir: Path, *, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(config, run_dir), env=cli_env(**env), capture_output=True,
                          text=True, timeout=timeout)


# Files whose content depends on wall time, not on the run: compared without these keys.
_VOLATILE_KEYS = {"seconds", "duration_s", "excerpt", "committed_at"}


def _clean(obj: Any, run_dir: str) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: _clean(v, run_dir) for k, v in obj.items() if k not in _VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_clean(v, run_dir) for v in obj]
    if isinstance(obj, str):
        return obj.replace(run_dir, "<RUN>")
    return obj


def round_files(run_dir: Path, round_: int) -> dict[str, Any]:
    """A committed round's files, parsed and without wall-time fields (adapters by hash)."""
    d = run_dir / "rounds" / f"{round_:06d}"
    out: dict[str, Any] = {}
    for p in sorted(d.rglob("*")):
        if not p.is_file() or p.name == "COMMIT":  # COMMIT hashes the timings too
            continue
        rel = str(p.relative_to(d))
        if p.suffix == ".json":
            out[rel] = _clean(json.loads(p.read_text()), str(run_dir))
        elif p.suffix == ".jsonl":
            out[rel] = [_clean(json.loads(line), str(run_dir)) for line in p.read_text().splitlines() if line.strip()]
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def snapshot(run_dir: Path) -> dict[str, Any]:
    """Everything that must be identical between an interrupted and an uninterrupted run."""
    from srscode.core.ledger import Ledger

    led = Ledger(run_dir, create=False)
    try:
        rounds = {r["round"]: _clean({k: v for k, v in r.items() if k != "adapter_path"}, str(run_dir))
                  for r in led.rounds()}
        for r in rounds.values():
            r.pop("commit_sha")  # hashes COMMIT, which hashes the timing fields
        return {
            "rounds": rounds,
            "files": {r: round_files(run_dir, r) for r in rounds},
            "memory": [dataclasses.asdict(s) for s in led.all_states()],
            "memory_log": list(led.db.execute("SELECT round, task_id, state FROM memory_log ORDER BY round, task_id")),
            "validations": _clean(led.validations(), str(run_dir)),
            "dpo": _clean(led.stage("dpo-final"), str(run_dir)) if led.stage("dpo-final") else None,
            "meta": {k: led.get_meta(k) for k in ("config", "config_hash", "split_sha256", "n_train", "n_val")},
        }
    finally:
        led.close()


def shared_reference(tmp_path_factory: Any) -> dict[str, Any]:
    """One uninterrupted run of :func:`fault_config` per test session, shared by every
    module and xdist worker (the first to get the lock runs it): its config file, run dir,
    snapshot and the list of fault checkpoints it passed."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "srscode-fault-reference"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "points.json"
        if not done.exists():
            shutil.rmtree(root / "run", ignore_errors=True)
            cfg = write_config(root / "config.yaml", fault_config(available_evaluator(), root / "reference-cache.json"))
            log = root / "checkpoints.log"
            log.unlink(missing_ok=True)
            proc = run_cli(cfg, root / "run", SRSCODE_FAULT_LOG=str(log))
            if proc.returncode != 0 or "Traceback" in proc.stderr:
                raise RuntimeError(f"the uninterrupted reference run failed (rc {proc.returncode}):\n{proc.stderr}")
            done.write_text(json.dumps(log.read_text().split()))
    return {"config": root / "config.yaml", "run": root / "run", "snapshot": snapshot(root / "run"),
            "points": json.loads(done.read_text())}


def memory_after(snap: dict[str, Any], round_: int) -> list[dict[str, Any]]:
    """The memory table after ``round_``, rebuilt from a snapshot's memory log."""
    state: dict[str, dict[str, Any]] = {}
    for r, task_id, text in snap["memory_log"]:
        if r <= round_:
            state[task_id] = json.loads(text)
    return [state[t] for t in sorted(state)]


def stale_files(run_dir: Path) -> list[str]:
    """Temp files of an atomic write that never got renamed."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if ".tmp-" in p.name)


# ---------------------------------------------------------------- stray processes

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux), so processes a killed run
    left behind show up as our children instead of vanishing under init."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _children(pid: int) -> list[tuple[int, str, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append((int(entry), fields[0], cmd.strip()))
    return out


def live_children() -> set[int]:
    return {pid for pid, state, _ in _children(os.getpid()) if state != "Z"}


def strays(ignore: Collection[int] = (), grace_s: float = 5.0) -> list[str]:
    """Live children of this process left over once every child we started was waited
    for (with :func:`become_subreaper`, orphaned descendants of a killed run are ours);
    zombies are reaped and not counted; ``ignore``: pids alive before the run started.
    Anything still alive after ``grace_s`` is killed and reported."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = []
        for pid, state, cmd in _children(os.getpid()):
            if pid in ignore:
                continue
            if state == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            else:
                alive.append((pid, cmd))
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid, _ in alive:
        try:
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return [f"pid {pid}: {cmd}" for pid, cmd in alive]
