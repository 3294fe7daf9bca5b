"""The ``srscode`` command line. argparse (stdlib) keeps ``srscode --help`` fast: no
heavy import happens before a subcommand needs it."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from srscode.core.errors import SrsError

log = logging.getLogger("srscode")

# subcommand module -> the functions that add its parsers (each module imports its heavy
# dependencies only when its command runs, so `srscode --help` stays fast)
SUBCOMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "srscode.cli.evaluate": ("add_evaluate_parser", "add_check_data_parser"),
    "srscode.cli.env": ("add_env_parser",),
    "srscode.cli.report": ("add_report_parser",),
    "srscode.cli.ablate": ("add_ablate_parser",),
}


class SubcommandImportError(ImportError):
    """A subcommand module of the CLI itself failed to import: a broken install or a bug,
    never a reason to drop its commands silently."""


def _cmd_run(args: argparse.Namespace) -> int:
    from srscode.core.config import load_config
    from srscode.core.engine import Engine

    cfg, data = load_config(args.config, args.set or ())
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    force = [k.strip() for item in (args.force or ()) for k in item.split(",") if k.strip()]
    engine = Engine(cfg, data, run_dir, force_keys=force, quiet=args.quiet)
    started = time.monotonic()
    summary = engine.run()
    if engine.dist.is_main:  # under `accelerate launch`, one status, not one per rank
        _print_status(summary, args)
        if not getattr(args, "json", False):
            _print_run_end(summary, time.monotonic() - started)
    return 0


def _print_run_end(summary: dict[str, Any], seconds: float) -> None:
    """After the status: what this run did, in one sentence, where its trained adapter is, and
    where its report goes (``srscode report`` draws it from the ledger; not written here, so a
    run needs no matplotlib)."""
    run_dir = Path(summary["run_dir"])
    dpo = summary.get("final_dpo") or {}
    did = f"{summary['round']} of {summary.get('rounds_planned')} rounds committed"
    if dpo:
        did += f", final DPO on {int(dpo.get('dpo_pairs_trained', dpo.get('dpo_pairs', 0)))} pairs"
    if summary.get("validations"):
        did += ", validated before and after"
    mins, secs = divmod(int(round(seconds)), 60)
    print(f"done      {did} ({mins} min {secs:02d} s in this call)")
    final = run_dir / "final" / "adapter-dpo"  # where the engine's final DPO stage saves its adapter
    adapter = str(final) if dpo and (final / "adapter_config.json").is_file() else summary.get("adapter")
    if adapter:
        print(f"adapter   {adapter}  (the trained LoRA adapter)")
    print(f"report    srscode report {run_dir}  (writes {run_dir / 'report' / 'report.html'}; "
          f"metrics per round: {run_dir / 'metrics.jsonl'})")


def _launched_rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 otherwise)."""
    import os

    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from srscode.core.registry import STAGE_HOOKS, make_plugin_manager

    reg = make_plugin_manager()
    rows: dict[str, dict[str, list[str]]] = {}
    for stage in STAGE_HOOKS:
        for name, provided in reg.components[stage].items():
            rows.setdefault(provided.plugin.name, {}).setdefault(stage, []).append(name)
    if args.json:
        print(json.dumps({
            "plugins": [
                {"name": p.name, "dist": p.dist, "version": p.version, "builtin": p.builtin,
                 "provides": rows.get(p.name, {})}
                for p in reg.plugins
            ],
            "failed": reg.failed,
        }, indent=1))
        return 0
    for p in reg.plugins:
        provides = "; ".join(f"{stage}: {', '.join(sorted(names))}" for stage, names in rows.get(p.name, {}).items())
        kind = "built-in" if p.builtin else "third-party"
        print(f"{p.name} ({p.dist} {p.version}, {kind})\n    {provides or '(provides no components)'}")
    for name, err in reg.failed.items():
        print(f"{name} FAILED TO IMPORT: {err}")
    print()
    for stage in STAGE_HOOKS:
        summaries = [
            f"{n}" + (f" — {reg.components[stage][n].spec.summary}" if getattr(reg.components[stage][n].spec, "summary", "") else "")
            for n in reg.names(stage)
        ]
        print(f"{stage}:")
        for s in summaries:
            print(f"    {s}")
    return 0


def _print_status(summary: dict[str, Any], args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=1, sort_keys=True, default=str))
        return
    mem = summary["memory"]
    m = summary.get("last_metrics") or {}
    print(f"run dir   {summary['run_dir']}")
    print(f"round     {summary['round']} of {summary.get('rounds_planned')}")
    print(f"tasks     train {summary.get('n_train')}, validation {summary.get('n_val')}")
    print(f"memory    seen {mem['seen']}, graduated {mem['graduated']}, skipped {mem['skipped']}, "
          f"active {mem['active']}, due next round {mem['due']}")
    if m:
        print(f"last      new {m.get('new')}, review {m.get('review')}, pass rate {m.get('pass_rate', 0):.3f}, "
              f"candidates {m.get('candidates')}, DPO pairs {m.get('dpo_pairs')}"
              + (f", train loss {m['train_loss']:.4f}" if isinstance(m.get("train_loss"), float) else ""))
        secs = m.get("seconds") or {}
        if secs:
            print("seconds   " + ", ".join(f"{k} {v:.2f}" for k, v in secs.items()))
    for key, v in sorted((summary.get("validations") or {}).items(), key=lambda kv: int(kv[0])):
        ks = ", ".join(f"{k} {val:.3f}" for k, val in v.items() if k.startswith("pass@") and "ci" not in k)
        when = f"validation {v.get('label', '')} (after round {min(int(key), summary.get('rounds_planned') or int(key))})"
        sources = v.get("sources") or {}
        if ks or not sources:  # the held-out split's line (absent when only sources were validated)
            print(f"{when}: {ks}")
        for name, sv in sources.items():  # each validation source on its own line
            sks = ", ".join(f"{k} {val:.3f}" for k, val in sv.items() if k.startswith("pass@") and "ci" not in k)
            print(f"{when} {name}: {sks or 'no scores'} on {int(sv.get('tasks', 0))} tasks")
    if summary.get("final_dpo"):
        print(f"final DPO {summary['final_dpo']}")
    if summary.get("retention"):
        from srscode.core.retention_probe import describe

        for key, probe in sorted(summary["retention"].items(), key=lambda kv: int(kv[0])):
            print(describe(int(key), probe, summary.get("rounds_planned")))


def _cmd_status(args: argparse.Namespace) -> int:
    from srscode.core.metrics import status_summary
    from srscode.core.ledger import Ledger

    ledger = Ledger(args.run_dir, create=False)
    try:
        _print_status(status_summary(ledger), args)
    finally:
        ledger.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srscode",
        description="Fine-tune code LLMs with execution feedback and a spaced-repetition curriculum.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run (or resume) a training run")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>); an existing one resumes")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    p.add_argument("--force", action="append", metavar="KEYS",
                   help="comma-separated config key paths allowed to differ from the stored config on resume")
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("plugins", help="list plugins and the components each provides")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("status", help="show a run's progress")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    for modname, adders in SUBCOMMAND_MODULES.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:
            raise SubcommandImportError(
                f"the subcommand module {modname} failed to import ({type(exc).__name__}: {exc}); "
                "reinstall srs-code or fix that import",
                name=modname,
            ) from exc
        for adder in adders:
            getattr(mod, adder)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except SubcommandImportError as exc:  # before argparse: --debug is read by hand
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"srscode: internal error: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if args.command == "run" and _launched_rank() > 0:
        args.quiet = True  # other ranks: warnings and errors only (rank 0 reports progress)
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    from srscode.core.progress import configure_logging  # log lines that do not tear live progress bars

    configure_logging(level, quiet=args.quiet)
    if not args.debug:
        for noisy in ("httpx", "urllib3", "filelock", "datasets"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except SrsError as exc:
        if args.debug:
            traceback.print_exc()
        rank = _launched_rank()
        print(f"srscode: error{f' (rank {rank})' if rank else ''}: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(hint, file=sys.stderr)
        if type(exc).__name__ == "Interrupted":
            print("The last committed round is intact; run the same command again to resume.", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("srscode: interrupted; run the same command again to resume from the last committed round.", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected bug: one clean line, the traceback behind --debug
        if args.debug:
            raise
        print(f"srscode: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
