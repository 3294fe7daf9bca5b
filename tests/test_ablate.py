"""``srscode ablate``: two dry (model-free, replay generator) arms × 2 seeds finish, a rerun
does nothing, an interrupted seed resumes, and ``srscode report --compare`` shows the
paired differences."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from srscode.cli.main import main
from srscode.core.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TINY = ["--set", "rounds=2", "--set", "batch_size=4", "--set", "validation.limit=4", "--set", "retention.at_end=true"]


@pytest.fixture
def arms(tmp_path, monkeypatch):
    monkeypatch.setenv("SRSCODE_PROGRESS", "off")
    monkeypatch.setenv("SRSCODE_CACHE_DIR", str(tmp_path / "cache"))
    # two arms; the file stem names the arm
    srs, uni = tmp_path / "srs.yaml", tmp_path / "uniform.yaml"
    shutil.copy(EXAMPLES / "srs-dry.yaml", srs)
    shutil.copy(EXAMPLES / "uniform-dry.yaml", uni)
    return [str(srs), str(uni)]


def ablate(arms, out, *extra) -> int:
    return main(["-q", "ablate", *arms, "--seeds", "2", "--out", str(out), *TINY, *extra])


def test_ablate_runs_resumes_and_compares(arms, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="srscode report needs matplotlib")
    out = tmp_path / "abl"
    assert ablate(arms, out) == 0
    printed = capsys.readouterr().out
    runs = [out / arm / f"seed{i}" for arm in ("srs", "uniform") for i in range(2)]
    for d in runs:
        assert str(d) in printed
        led = Ledger(d, create=False)
        try:
            cfg = led.get_meta("config")
            assert cfg["seed"] == int(d.name[4:]) and cfg["rounds"] == 2  # seed = config seed (0) + i
            assert led.last_round() == 2 and any(v.get("label") == "final" for v in led.validations().values())
        finally:
            led.close()
    assert f"srscode report --compare {out}" in printed
    manifest = json.loads((out / "ablation.json").read_text())
    assert manifest["order"] == ["srs", "uniform"] and manifest["arms"]["uniform"]["seeds"] == [0, 1]

    # a rerun does nothing: every arm/seed is skipped and no ledger changes
    before = {d: (d / "ledger.sqlite").stat().st_mtime_ns for d in runs}
    assert ablate(arms, out) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4
    assert {d: (d / "ledger.sqlite").stat().st_mtime_ns for d in runs} == before

    # an interrupted seed (its last round and final validation not committed) resumes
    victim = out / "uniform" / "seed1"
    (victim / "ablate-done.json").unlink()
    led = Ledger(victim, create=False)
    try:
        led.db.execute("DELETE FROM rounds WHERE round = 2")
        led.db.execute("DELETE FROM validations WHERE round = 3")
    finally:
        led.close()
    assert ablate(arms, out) == 0
    text = capsys.readouterr().out
    assert text.count("finished, skipped") == 3 and f"uniform seed 1 -> {victim}" in text
    led = Ledger(victim, create=False)
    try:
        assert led.last_round() == 2 and 3 in led.validations()
    finally:
        led.close()

    # the paired comparison, on stdout and in the page
    assert main(["-q", "report", "--compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "## held-out: paired difference in pass@1" in table
    row = re.search(r"^\| srs − uniform \| ([+-]\d\.\d{3}) \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\] \| 2 \| (\d+) \| "
                    r"(yes|no) \|$", table, re.M)
    assert row, table
    mean, lo, hi = map(float, row.group(1, 2, 3))
    assert lo <= mean <= hi and row.group(5) == ("yes" if lo > 0 or hi < 0 else "no")
    assert re.search(r"^\| srs \| 2 \| 4 \| \d\.\d{3} \[", table, re.M), table  # 4 validation tasks per seed
    # retention per arm (the final probe of each seed), with its interval
    assert re.search(r"^\| uniform \| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \| 2 \| \d+ \|$", table, re.M), table
    page = (out / "report-compare" / "report.html").read_text()
    assert "Paired comparison of arms" in page and "srs − uniform on held-out pass@1" in page
    assert ("excludes 0: significant" in page) == (row.group(5) == "yes")
    # the ablation dir alone (no --compare) is compared the same way
    assert main(["-q", "report", str(out), "-o", str(tmp_path / "alone")]) == 0
    assert row.group(0) in capsys.readouterr().out and (tmp_path / "alone" / "report.html").exists()


def test_ablate_refuses_bad_input_before_running(arms, tmp_path, capsys):
    out = tmp_path / "abl"
    twin = tmp_path / "other"
    twin.mkdir()
    shutil.copy(arms[0], twin / "srs.yaml")
    assert main(["ablate", arms[0], str(twin / "srs.yaml"), "--out", str(out)]) != 0
    assert "two configs are named 'srs'" in capsys.readouterr().err
    assert main(["ablate", arms[0], "--seeds", "0", "--out", str(out)]) != 0
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert main(["ablate", arms[0], "--out", str(out), "--set", "rounds=0"]) != 0
    assert "rounds" in capsys.readouterr().err
    assert not out.exists()  # nothing ran


def _rounds(run_dir: Path) -> dict[int, dict]:
    """Committed rounds' metrics without wall times (which differ run to run)."""
    led = Ledger(run_dir, create=False)
    try:
        return {r: {k: v for k, v in led.round_row(r)["metrics"].items() if k not in ("seconds", "streaming")}
                for r in range(1, led.last_round() + 1)}
    finally:
        led.close()


def test_ablate_jobs_runs_the_same_rounds_as_one_after_another(arms, tmp_path, capsys):
    one, par = tmp_path / "one", tmp_path / "par"
    assert ablate(arms, one) == 0
    assert ablate(arms, par, "--jobs", "3") == 0
    printed = capsys.readouterr().out
    for arm in ("srs", "uniform"):
        for i in range(2):
            log = par / "logs" / f"{arm}-seed{i}.log"
            assert f"{arm} seed {i}: finished" in printed and log.is_file()
            assert "done      2 of 2 rounds committed" in log.read_text()
            assert (par / arm / f"seed{i}" / "ablate-done.json").is_file()
            assert _rounds(par / arm / f"seed{i}") == _rounds(one / arm / f"seed{i}")
    # the finished ablation is skipped the same way, whichever way it ran
    assert ablate(arms, par, "--jobs", "3") == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4


def test_ablate_jobs_stops_every_child_on_sigterm_and_resumes(arms, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "abl"
    # slow enough to be interrupted mid-run: each generation batch waits 0.3 s
    cmd = [sys.executable, "-m", "srscode", "-q", "ablate", *arms, "--seeds", "1", "--out", str(out),
           "--jobs", "2", "--set", "rounds=8", "--set", "batch_size=4", "--set", "validation.limit=2",
           "--set", "stages.generator.params={batch_delay_s: 0.3, batch_tasks: 1}"]
    env = {**os.environ, "SRSCODE_PROGRESS": "off"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ledgers = [out / arm / "seed0" / "ledger.sqlite" for arm in ("srs", "uniform")]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in ledgers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(p.exists() for p in ledgers), "the runs never started"
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "2 of 2 runs failed (run the same command again to resume them)" in err
    assert not any((out / arm / "seed0" / "ablate-done.json").exists() for arm in ("srs", "uniform"))
    for arm in ("srs", "uniform"):
        assert "stopped by signal SIGTERM" in (out / "logs" / f"{arm}-seed0.log").read_text()
    # no child outlived the parent (each had its own session, so only the forwarded signal stopped it)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in ps
    # the same command resumes both from their last committed round and finishes them
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for arm in ("srs", "uniform"):
        assert (out / arm / "seed0" / "ablate-done.json").is_file()
        led = Ledger(out / arm / "seed0", create=False)
        try:
            assert led.last_round() == 8
        finally:
            led.close()


def test_ablate_jobs_refuses_bad_input(arms, tmp_path, capsys, monkeypatch):
    out = tmp_path / "abl"
    assert main(["ablate", arms[0], "--jobs", "0", "--out", str(out)]) != 0
    assert "--jobs must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["ablate", arms[0], "--jobs", "2", "--out", str(out)]) != 0
    assert "cannot be combined with `accelerate launch`" in capsys.readouterr().err
    assert not out.exists()
