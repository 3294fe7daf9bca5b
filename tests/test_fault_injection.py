"""Crash safety, proven by fault injection.

A multi-round run (the starter set, the built-in ``replay`` generator, a real evaluator,
fake trainers that write real adapter folders, the real ledger) runs in a subprocess and
SIGKILLs itself at a checkpoint chosen from a seed (``SRSCODE_FAULT=*:<n>``: the n-th
checkpoint of any kind: stage start/end, a temp file written, its rename, the round
sealed, the ledger transaction, half an adapter written). It is resumed, sometimes
killed again, and finally resumed to the end. After every kill: each committed round
passes its checksums, is unchanged from what was committed before, and equals the
uninterrupted reference's round; the memory equals the reference's memory after the same
round. At the end the whole run (schedule, memory, memory log, validations, round files,
adapters, final DPO) equals the uninterrupted reference, and no temp file, uncommitted
round or stray process is left.

The default suite walks ``QUICK_POINTS`` kill points (seed ``SEED``); ``-m slow`` walks
``FULL_POINTS`` (seed ``SEED + 1``). A failure message names the seed, the plan and the
exact command lines to replay it by hand; ``SRSCODE_FAULT_SEED=<n>`` runs the sweeps
with other seeds.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest

import fault_stages as fs
from srscode.core.ledger import Ledger, state_to_json

SEED = int(os.environ.get("SRSCODE_FAULT_SEED", "20240611"))
QUICK_POINTS = 8
FULL_POINTS = 56
SECOND_KILL_P = 0.35  # share of plans that kill the resumed run again


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run: its snapshot and the list of checkpoints it passed."""
    fs.become_subreaper()
    return fs.shared_reference(tmp_path_factory)


def plans(n_plans: int, seed: int) -> list[tuple[float, float | None]]:
    """Kill plans as fractions of the reference's checkpoint count (the count is known
    only once the reference ran): (first kill, second kill of the resumed run or None).
    The first kills are spread evenly over the run with a seeded jitter, so a sweep of any
    size covers every stage."""
    rng = random.Random(seed)
    out = []
    for i in range(n_plans):
        first = (i + rng.random()) / n_plans if i else 0.0  # plan 0: the very first checkpoint
        second = rng.random() if rng.random() < SECOND_KILL_P else None
        out.append((first, second))
    return out


def _committed(run_dir: Path) -> dict[int, dict[str, Any]]:
    led = Ledger(run_dir, create=False)
    try:
        return {r["round"]: r for r in led.rounds()}
    finally:
        led.close()


def check_after_kill(run_dir: Path, ref: dict[str, Any], seen: dict[int, dict[str, Any]], where: str) -> None:
    """What a killed run must leave: committed rounds intact, unchanged, and equal to the
    reference's; the memory equal to the reference's after the last committed round."""
    if not (run_dir / "ledger.sqlite").exists():
        return  # killed before the ledger existed
    rows = _committed(run_dir)
    for r, row in seen.items():
        assert r in rows, f"{where}: committed round {r} was lost"
        assert rows[r] == row, f"{where}: committed round {r} was altered"
    seen.update(rows)
    led = Ledger(run_dir, create=False)
    try:
        for r in rows:
            led.verify_round(r)  # every file listed in COMMIT, checksums match
        memory = [json.loads(state_to_json(s)) for s in led.all_states()]
    finally:
        led.close()
    snap = ref["snapshot"]
    last = max(rows, default=0)
    for r in rows:
        got = fs.round_files(run_dir, r)
        assert got == snap["files"][r], f"{where}: committed round {r}'s files differ from the reference"
    assert memory == fs.memory_after(snap, last), f"{where}: memory after round {last} differs from the reference"


def check_final(run_dir: Path, ref: dict[str, Any], where: str) -> None:
    got = fs.snapshot(run_dir)
    want = ref["snapshot"]
    for key in want:
        assert got[key] == want[key], f"{where}: {key} differs from the uninterrupted run"
    assert fs.stale_files(run_dir) == [], f"{where}: temp files left behind"
    assert sorted(p.name for p in (run_dir / "rounds").iterdir()) == [f"{r:06d}" for r in want["rounds"]]
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored == want["meta"]["config"], f"{where}: config.json differs from the stored config"
    assert (run_dir / "config.yaml").exists(), f"{where}: config.yaml is missing"


def crash_and_resume(tmp_path: Path, ref: dict[str, Any], plan: tuple[float, float | None], label: str) -> None:
    total = len(ref["points"])
    kills = [1 + int(plan[0] * total)]
    if plan[1] is not None:
        kills.append(1 + int(plan[1] * total))
    run_dir = tmp_path / "run"
    cfg = ref["config"]
    replay = " then ".join(
        f"SRSCODE_FAULT='*:{n}' {shlex.join(fs.cli_command(cfg, run_dir))}" for n in kills
    )
    where = (f"{label} (kill at checkpoint {' then '.join(map(str, kills))} of {total}: "
             f"{ref['points'][kills[0] - 1]}; replay: {replay}; then run it without SRSCODE_FAULT)")
    seen: dict[int, dict[str, Any]] = {}
    before = fs.live_children()
    for n in kills:
        proc = fs.run_cli(cfg, run_dir, SRSCODE_FAULT=f"*:{n}")
        assert proc.returncode in (-signal.SIGKILL, 0), f"{where}: rc {proc.returncode}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"{where}: {proc.stderr}"
        check_after_kill(run_dir, ref, seen, where)
        assert fs.strays(before) == [], f"{where}: processes outlived the killed run"
    proc = fs.run_cli(cfg, run_dir)
    assert proc.returncode == 0, f"{where}: resume failed\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"{where}: {proc.stderr}"
    check_final(run_dir, ref, where)
    assert fs.strays(before) == [], f"{where}: processes outlived the run"


@pytest.mark.parametrize("i", range(QUICK_POINTS), ids=lambda i: f"point-{i}")
def test_kill_and_resume_quick(tmp_path: Path, reference: dict[str, Any], i: int) -> None:
    crash_and_resume(tmp_path, reference, plans(QUICK_POINTS, SEED)[i], f"quick point-{i} of seed {SEED}")


@pytest.mark.slow
@pytest.mark.parametrize("i", range(FULL_POINTS), ids=lambda i: f"point-{i}")
def test_kill_and_resume_full_sweep(tmp_path: Path, reference: dict[str, Any], i: int) -> None:
    crash_and_resume(tmp_path, reference, plans(FULL_POINTS, SEED + 1)[i], f"full point-{i} of seed {SEED + 1}")


def test_reference_passes_every_kind_of_checkpoint(reference: dict[str, Any]) -> None:
    """The sweep is only as good as the points it can hit: the reference run must pass
    each kind of checkpoint, and the quick sweep must land in several distinct stages."""
    kinds = set(reference["points"])
    for stage in ("schedule", "prompt", "generate", "evaluate", "memory", "train", "pairs", "validate", "dpo"):
        assert f"stage-start:{stage}" in kinds and f"stage-end:{stage}" in kinds, stage
    assert {"write-tmp", "write-renamed", "commit-files", "commit-db", "fake-train:half-written"} <= kinds
    total = len(reference["points"])
    hit = {reference["points"][int(p * total)] for p, _ in plans(FULL_POINTS, SEED + 1)}
    assert len(hit) >= 12, hit


# ------------------------------------------------------------------ corruption at resume


@pytest.fixture()
def finished_run(tmp_path: Path, reference: dict[str, Any]) -> tuple[Path, Path]:
    """A copy of the reference run dir, extended by one round when resumed with --force."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference["run"], run_dir)
    return reference["config"], run_dir


def _resume_more(cfg: Path, run_dir: Path) -> Any:
    import subprocess

    cmd = fs.cli_command(cfg, run_dir, "--set", "rounds=4", "--force", "rounds")
    return subprocess.run(cmd, env=fs.cli_env(), capture_output=True, text=True, timeout=300)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


CORRUPTIONS = {
    # name: (damage, file named in the message, what the message says)
    "truncated-jsonl": (lambda d: _truncate(d / "rounds/000003/memory.jsonl"), "rounds/000003/memory.jsonl",
                        "fails its checksum"),
    "truncated-json": (lambda d: _truncate(d / "rounds/000003/schedule.json"), "rounds/000003/schedule.json",
                       "fails its checksum"),
    "missing-commit": (lambda d: (d / "rounds/000003/COMMIT").unlink(), "rounds/000003/COMMIT",
                       "no commit marker"),
    "truncated-commit": (lambda d: _truncate(d / "rounds/000003/COMMIT"), "rounds/000003/COMMIT",
                         "does not match the checksum"),
    "bad-checksum-adapter": (lambda d: (d / "rounds/000003/adapter/adapter_model.bin").write_bytes(b"\0" * 8192),
                             "rounds/000003/adapter/adapter_model.bin", "fails its checksum"),
    "missing-file": (lambda d: (d / "rounds/000003/verdicts.jsonl").unlink(), "rounds/000003/verdicts.jsonl",
                     "is missing"),
    # an earlier round: its pairs are read again by the final DPO stage
    "truncated-earlier-round": (lambda d: _truncate(d / "rounds/000001/pairs.jsonl"), "rounds/000001/pairs.jsonl",
                                "fails its checksum"),
    "damaged-sqlite": (lambda d: _scribble(d / "ledger.sqlite"), "ledger.sqlite", "is damaged"),
    "damaged-sqlite-index": (lambda d: _scribble_index(d / "ledger.sqlite", "memory_due"), "ledger.sqlite",
                             "is damaged"),
    "not-a-database": (lambda d: (d / "ledger.sqlite").write_bytes(b"this is not a database" * 100),
                       "ledger.sqlite", "is damaged"),
}


def _scribble(p: Path) -> None:
    """Overwrite the middle pages of the database (the WAL was checkpointed at close)."""
    for extra in ("-wal", "-shm"):
        Path(str(p) + extra).unlink(missing_ok=True)
    data = bytearray(p.read_bytes())
    start = 4096  # keep the header page so SQLite opens the file and finds the damage
    data[start : start + 8192] = b"\xab" * 8192
    p.write_bytes(bytes(data))


def _scribble_index(p: Path, index: str) -> None:
    """Zero the cells of one index page: SQLite still opens the file and answers queries
    (wrongly: the memory's due list comes from this index); only an integrity check
    finds it."""
    import sqlite3

    db = sqlite3.connect(p)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (index,)).fetchone()[0]
    db.close()
    data = bytearray(p.read_bytes())
    end = root * page_size
    data[end - 200 : end] = bytes(200)
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_damaged_run_dir_is_detected_at_resume(finished_run: tuple[Path, Path], name: str) -> None:
    cfg, run_dir = finished_run
    damage, rel, says = CORRUPTIONS[name]
    damage(run_dir)
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "rounds").rglob("*") if p.is_file()}
    proc = _resume_more(cfg, run_dir)
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr
    assert "Traceback" not in err, err
    assert str(run_dir / rel) in err and says in err, err
    assert "restore" in err.lower() or "new run dir" in err.lower(), err  # says what to do
    # the run did not continue from the damaged round
    assert not (run_dir / "rounds" / "000004").exists()
    after = {p: p.stat().st_mtime_ns for p in (run_dir / "rounds").rglob("*") if p.is_file()}
    assert after == before, "files of a damaged run dir were changed"
