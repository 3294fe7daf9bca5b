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
