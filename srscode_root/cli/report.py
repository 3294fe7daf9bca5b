"""``srscode report [RUN_DIR] [--compare DIR ...] [-o OUT]``: wired into the CLI with
``add_report_parser(subparsers)``; matplotlib is imported only when the command runs.

With ``--compare``, every given directory is a run dir, an arm dir (``<arm>/seed<i>/``) or
an ``srscode ablate`` dir; the runs are drawn overlaid, and when they form two or more arms
the page and stdout also carry the paired comparison of the arms (:mod:`.compare`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from srscode.core.errors import SrsError


def _cmd_report(args: argparse.Namespace) -> int:
    given = [*([args.run_dir] if args.run_dir else []), *(args.compare or [])]
    if not given:
        raise SrsError("report: give a run directory, or --compare with run or ablation directories")
    # an ablation (or arm) dir alone is compared as with --compare
    if not args.compare and ((Path(given[0]) / "ledger.sqlite").exists() or not Path(given[0]).is_dir()):
        from .report_render import write_report

        page = write_report(given, args.out)
        print(f"report written to {page} (plots beside it)")
        return 0

    from .compare import compare_runs, expand_dirs, to_html, to_markdown
    from .report_render import _matplotlib, write_report

    _matplotlib()  # say that matplotlib is missing before the statistics run
    runs = expand_dirs(given)
    comparison = compare_runs(given)
    html = ""
    if len(comparison.arms) > 1:
        print(to_markdown(comparison))
        html = to_html(comparison)
    else:
        print(f"one arm only ({', '.join(comparison.arms)}): nothing to pair; the runs are drawn overlaid")
    out = Path(args.out) if args.out else Path(given[0]) / "report-compare"
    page = write_report([d for _, _, d in runs], out, comparison=html)
    print(f"report written to {page} (plots beside it)")
    return 0


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="plots and an HTML page of a run (or several, overlaid; arms compared, paired)",
        description="Write PNG plots and one self-contained HTML page (images embedded) for a run: pass rate "
                    "(train and validation pass@1 with 95%% intervals), graduation/skip/backlog curves, "
                    "turnover, lapse and timeout rates, interval distribution, DPO pairs and stage times. "
                    "--compare overlays other runs (ablations): run dirs, or `srscode ablate` dirs whose "
                    "<arm>/seed<i>/ runs are grouped by arm. With two or more arms, the page and stdout show, "
                    "per pair of arms, the paired difference in final validation pass@1 (paired by seed and "
                    "task id) with a bootstrap 95%% interval over seeds and tasks, pass@k per arm, per "
                    "validation source, and retention per arm when recorded.",
    )
    p.add_argument("run_dir", nargs="?", help="run directory (with --compare: also a run, arm or ablation dir)")
    p.add_argument("--compare", nargs="+", metavar="DIR", default=[],
                   help="more run directories or `srscode ablate` directories to overlay and compare")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="output directory (default RUN_DIR/report, or FIRST_DIR/report-compare with --compare)")
    p.set_defaults(func=_cmd_report)
    return p
