"""``srscode ablate CONFIG [CONFIG ...] --seeds N --out DIR [--set k=v ...]``: every config
(an *arm*, named by the config file's stem) with N seeds, one after another, each a plain
``srscode run`` into ``DIR/<arm>/seed<i>/``.

Seed ``i`` (0 … N-1) runs with ``seed = <the config's seed> + i`` (after ``--set``), so
arms whose configs share a seed are paired seed by seed; ``srscode report --compare DIR``
pairs the runs of two arms by their ``seed<i>`` folder. A finished arm/seed is skipped (it
carries ``ablate-done.json``, written once its run returned); an interrupted one resumes
from its last committed round, exactly as ``srscode run`` does; rerunning the same command
picks up where it stopped."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from srscode.core.errors import ConfigError

log = logging.getLogger("srscode")

DONE_FILE = "ablate-done.json"


def _cmd_ablate(args: argparse.Namespace) -> int:
    from srscode.core.config import load_config
    from srscode.core.engine import Engine
    from srscode.core.ledger import config_hash, write_json

    from .compare import ABLATION_FILE

    if args.seeds < 1:
        raise ConfigError(f"ablate: --seeds must be at least 1, got {args.seeds}")
    overrides = list(args.set or ())
    arms: dict[str, Path] = {}
    for path in args.config:
        arm = Path(path).stem
        if arm in arms:
            raise ConfigError(f"ablate: two configs are named {arm!r} ({arms[arm]} and {path}); the arm is the "
                              "config file's stem, so give each arm a distinct file name")
        if not Path(path).is_file():
            raise ConfigError(f"ablate: config {path} does not exist")
        arms[arm] = Path(path)
    # every config (with the overrides) is validated before the first run starts
    plans: list[tuple[str, int, Path, Any, dict[str, Any]]] = []
    for arm, path in arms.items():
        base, _ = load_config(path, overrides)
        for i in range(args.seeds):
            cfg, data = load_config(path, [*overrides, f"seed={base.seed + i}"])
            plans.append((arm, i, Path(args.out) / arm / f"seed{i}", cfg, data))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"arms": {arm: {"config": str(path.resolve()),
                               "seeds": [cfg.seed for a, _, _, cfg, _ in plans if a == arm]}
                         for arm, path in arms.items()},
                "order": list(arms), "seeds": args.seeds, "set": overrides}
    write_json(out / ABLATION_FILE, manifest)

    for n, (arm, i, run_dir, cfg, data) in enumerate(plans, 1):
        done = run_dir / DONE_FILE
        digest = config_hash(data)
        if done.exists():
            try:
                finished = json.loads(done.read_text()).get("config_hash") == digest
            except (OSError, ValueError):
                finished = False
            if finished:
                print(f"[{n}/{len(plans)}] {arm} seed {cfg.seed} ({run_dir}): finished, skipped")
                continue
        print(f"[{n}/{len(plans)}] {arm} seed {cfg.seed} -> {run_dir}", flush=True)
        engine = Engine(cfg, data, run_dir, quiet=args.quiet)
        engine.run()
        if engine.dist.is_main:
            write_json(done, {"arm": arm, "seed_index": i, "seed": cfg.seed, "config_hash": digest})

    print("\nrun dirs:")
    for arm, i, run_dir, cfg, _ in plans:
        print(f"  {arm:<16} seed {cfg.seed:<4} {run_dir}")
    print(f"\nnext: srscode report --compare {out}")
    return 0


def add_ablate_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ablate",
        help="run several configs (arms) over several seeds, resumably, for `srscode report --compare`",
        description="Run every CONFIG (an arm, named by the file's stem) with N seeds into DIR/<arm>/seed<i>/, "
                    "one run after another. Seed i runs with seed = the config's seed + i. A finished run is "
                    "skipped and an interrupted one resumes, so the same command continues an ablation. "
                    "Then `srscode report --compare DIR` pairs the arms by seed and task.",
    )
    p.add_argument("config", nargs="+", help="YAML config files, one per arm")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per arm (default 3)")
    p.add_argument("--out", required=True, metavar="DIR", help="ablation directory (DIR/<arm>/seed<i>/)")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a config value in every arm (repeatable)")
    p.set_defaults(func=_cmd_ablate)
    return p
