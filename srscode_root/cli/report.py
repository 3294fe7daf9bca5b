"""``srscode report RUN_DIR [--compare RUN_DIR ...] [-o OUT]``: wired into the CLI with
``add_report_parser(subparsers)``; matplotlib is imported only when the command runs."""
from __future__ import annotations

import argparse
from typing import Any


def _cmd_report(args: argparse.Namespace) -> int:
    from .report_render import write_report

    page = write_report([args.run_dir, *(args.compare or [])], args.out)
    print(f"report written to {page} (plots beside it)")
    return 0


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="plots and an HTML page of a run (or several, overlaid)",
        description="Write PNG plots and one self-contained HTML page (images embedded) for a run: pass rate "
                    "(train and validation pass@1 with 95%% intervals), graduation/skip/backlog curves, "
                    "turnover, lapse and timeout rates, interval distribution, DPO pairs and stage times. "
                    "--compare overlays other runs (ablations).",
    )
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--compare", nargs="+", metavar="RUN_DIR", default=[], help="more run directories to overlay")
    p.add_argument("-o", "--out", metavar="DIR",
                   help="output directory (default RUN_DIR/report, or RUN_DIR/report-compare with --compare)")
    p.set_defaults(func=_cmd_report)
    return p
