"""``srscode report``: plots and a self-contained HTML page from a small run recorded in
the test with fake stages, alone and compared with a second run."""
from __future__ import annotations

import argparse
import base64
import re
from pathlib import Path

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import LedgerError
from srscode.core.ledger import Ledger

pytest.importorskip("matplotlib", reason="srscode report needs matplotlib (pip install matplotlib)")

from matplotlib.image import imread  # noqa: E402

from srscode.cli.report_render import PLOTS, load_run, write_report  # noqa: E402
from srscode.cli.report import add_report_parser  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(run_dir: Path, **overrides) -> Path:
    cfg = validate(fake_config(**{"rounds": 4, "validation.every": 2, **overrides}))
    Engine(cfg, cfg.model_dump(mode="json"), run_dir, extra_plugins=[fake_stages], quiet=True).run()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    fake_stages.reset()
    return (record(root / "srs"),
            record(root / "uniform", **{"stages.scheduler": {"name": "uniform"}, "stages.memory": {"name": "none"}}))


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    img = imread(path)  # decodes the whole image
    h, w = img.shape[:2]
    assert 300 <= h <= 1000 and 600 <= w <= 1800, (path.name, img.shape)
    assert img[..., :3].std() > 0.01, f"{path.name} is blank"


def test_report_of_one_run(runs):
    page = write_report([runs[0]])
    out = runs[0] / "report"
    assert page == out / "report.html"
    pngs = sorted(out.glob("*.png"))
    # the fake trainer reports a loss; the retention plot needs the retention probe (off here)
    assert {p.stem for p in pngs} == {key for key, _, _ in PLOTS} - {"retention"}
    for p in pngs:
        check_png(p)
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == len(pngs)
    assert all(base64.b64decode(e).startswith(PNG_MAGIC) for e in embedded)
    assert not re.search(r"(src|href)=['\"](https?:|//|[^'\"#d])", html)  # nothing outside the page
    assert "srs" in html and "Correct-set turnover" in html and "pass@1" in html


def test_report_reads_what_the_ledger_holds(runs):
    data = load_run(runs[0])
    led = Ledger(runs[0], create=False)
    try:
        assert [m["round"] for m in data.rounds] == [1, 2, 3, 4]
        assert data.rounds[-1]["pass_rate"] == led.round_row(4)["metrics"]["pass_rate"]
        assert data.rounds[-1]["graduated"] == led.memory_counts(5)["graduated"]
        assert sorted(data.validations) == [0, 2, 5]
    finally:
        led.close()


def test_compare_overlays_runs_through_the_command(runs, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="srscode")
    add_report_parser(parser.add_subparsers())
    out = tmp_path / "cmp"
    args = parser.parse_args(["report", str(runs[0]), "--compare", str(runs[1]), "-o", str(out)])
    assert args.func(args) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    for p in out.glob("*.png"):
        check_png(p)
    html = (out / "report.html").read_text()
    assert html.count("<tr><td>srs</td>") == 1 and html.count("<tr><td>uniform</td>") == 1


def test_a_run_without_rounds_still_renders(tmp_path):
    Ledger(tmp_path / "empty").close()
    page = write_report([tmp_path / "empty"])
    assert page.exists() and (tmp_path / "empty" / "report" / "pass_rate.png").exists()


def test_not_a_run_dir(tmp_path):
    with pytest.raises(LedgerError, match="not a srscode run dir"):
        write_report([tmp_path])
