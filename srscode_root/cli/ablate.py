"""``srscode ablate CONFIG [CONFIG ...] --seeds N --out DIR [--set k=v ...]``: every config
(an *arm*, named by the config file's stem) with N seeds, one after another, each a plain
``srscode run`` into ``DIR/<arm>/seed<i>/`` (``--jobs J``: J runs at once, each a
``srscode run`` subprocess with its log in ``DIR/logs/``: small models leave most of one
accelerator idle, and one run's evaluation waits on the CPU while another generates).

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
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
    if args.jobs < 1:
        raise ConfigError(f"ablate: --jobs must be at least 1, got {args.jobs}")
    if args.jobs > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("ablate: --jobs runs arms as separate processes and cannot be combined with "
                          "`accelerate launch` (several ranks); use one or the other")
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

    todo: list[tuple[int, str, int, Path, Any, dict[str, Any], str]] = []
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
        todo.append((n, arm, i, run_dir, cfg, data, digest))

    if args.jobs > 1 and todo:
        failed = _run_parallel(args, arms, overrides, todo, len(plans), out)
    else:
        failed = []
        for n, arm, i, run_dir, cfg, data, digest in todo:
            print(f"[{n}/{len(plans)}] {arm} seed {cfg.seed} -> {run_dir}", flush=True)
            engine = Engine(cfg, data, run_dir, quiet=args.quiet)
            engine.run()
            if engine.dist.is_main:
                _mark_done(run_dir, arm, i, cfg.seed, digest)

    print("\nrun dirs:")
    for arm, i, run_dir, cfg, _ in plans:
        print(f"  {arm:<16} seed {cfg.seed:<4} {run_dir}")
    if failed:
        print(f"\n{len(failed)} of {len(todo)} runs failed (run the same command again to resume them):",
              file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"\nnext: srscode report --compare {out}")
    return 0


def _mark_done(run_dir: Path, arm: str, seed_index: int, seed: int, digest: str) -> None:
    """A run's ``ablate-done.json``: a rerun of the same config skips it."""
    from srscode.core.ledger import write_json

    write_json(run_dir / DONE_FILE, {"arm": arm, "seed_index": seed_index, "seed": seed, "config_hash": digest})


def _run_parallel(args: argparse.Namespace, arms: dict[str, Path], overrides: Sequence[str],
                  todo: Sequence[tuple[int, str, int, Path, Any, dict[str, Any], str]], total: int, out: Path) -> list[str]:
    """Each pending arm/seed as its own ``srscode run`` process, ``args.jobs`` at a time.

    Subprocesses, not threads: every run owns a CUDA context, a generator and an evaluator
    pool, and a crash in one must not take the others down. Each child gets the same
    overrides and seed the sequential path would, and its own session, so a SIGINT/SIGTERM
    to this process is forwarded once to every child (each stops at its safe point, keeping
    its last committed round) instead of racing the terminal's own SIGINT."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        with lock:
            for proc in children.values():
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass

    def one(item: tuple[int, str, int, Path, Any, dict[str, Any], str]) -> str | None:
        n, arm, i, run_dir, cfg, _data, digest = item
        if stopping.is_set():
            return f"{arm} seed {cfg.seed}: not started (interrupted)"
        log_path = logs / f"{arm}-seed{i}.log"
        cmd = [sys.executable, "-m", "srscode", "-q", "run", str(arms[arm]), "--run-dir", str(run_dir)]
        for o in (*overrides, f"seed={cfg.seed}"):
            cmd += ["--set", o]
        with lock:
            print(f"[{n}/{total}] {arm} seed {cfg.seed} -> {run_dir} (log {log_path})", flush=True)
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            with lock:
                children[n] = proc
                if stopping.is_set():  # a signal between the check above and this registration
                    os.killpg(proc.pid, signal.SIGTERM)
            rc = proc.wait()
        if rc == 0:
            _mark_done(run_dir, arm, i, cfg.seed, digest)
            with lock:
                print(f"[{n}/{total}] {arm} seed {cfg.seed}: finished", flush=True)
            return None
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
        return f"{arm} seed {cfg.seed}: exit code {rc}, log {log_path}: {tail[0]}"

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, forward)
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, todo))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return [r for r in results if r is not None]


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
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="runs at once, each an `srscode run` subprocess logging to DIR/logs/ (default 1: one "
                        "after another in this process); for small models, whose runs leave an accelerator idle")
    p.set_defaults(func=_cmd_ablate)
    return p
