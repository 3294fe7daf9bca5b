"""What the evaluator's integrity checks (issue 20) cost, and what strict equality changes.

In one run, on the shared KodCode rows (every task's reference and recorded trials):

  (a) CPU per candidate in a warm worker (the candidate's process + the worker's share,
      expected ids already learned: ``benchmarks/evaluator.py``'s ``ours_cpu``), with the
      integrity hook off and on, interleaved ``--rounds`` times (off, on, off, on, ...) so
      drift on a shared machine hits both alike; the ratio on/off of the medians;
  (b) the same CPU side by side (``--paired`` repetitions): one warm worker per variant,
      each candidate run on every worker in turn (random order) before the next one, and
      the median of the candidates' ratios on/before and on/off: on a shared machine the
      rounds of (a) drift apart by more than the difference measured, these do not;
  (c) agreement with the recorded verdicts of the default evaluator (integrity on) and of
      strict equality, and the candidates whose verdict strict equality flips.

"off" is this evaluator with only the hook disarmed: the collector's phase wrappers and
the debugging plugin (both part of this change) run in both. ``--baseline DIR`` adds, in
the same interleaved rounds, the evaluator of another checkout installed into DIR
(``pip install --no-deps --target DIR <checkout>``; "before"), run in a subprocess with
``PYTHONPATH=DIR``, and to (b) a third worker started with that ``PYTHONPATH``.

    python benchmarks/evaluator_integrity.py [--sample 120] [--rounds 2] [--paired 2] [--baseline DIR] [--json OUT]
    python benchmarks/evaluator_integrity.py --smoke   # the starter set's first 3 tasks
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluator import DATA, agreement, load_average, load_items, ours_cpu, run_ours, starter_items  # noqa: E402


def baseline_cpu(baseline: Path, sample: list[dict[str, Any]]) -> list[float]:
    """``ours_cpu`` of the evaluator installed in ``baseline``, in a subprocess that imports
    srscode from there (the worker it starts inherits the PYTHONPATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sample.json"
        src.write_text(json.dumps(sample))
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); from evaluator import ours_cpu; "
            "print(json.dumps(ours_cpu(json.load(open(sys.argv[2])))))"
        )
        env = dict(os.environ, PYTHONPATH=f"{baseline}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep))
        out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(src)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def paired_cpu(sample: list[dict[str, Any]], reps: int, baseline: Path | None) -> dict[str, list[float]]:
    """CPU per candidate of warm workers run side by side: one worker per variant ("before"
    from ``baseline``, "off", "on"), each candidate run on every worker in a random order
    before the next one, ``reps`` times. Load that comes and goes on a shared machine then
    hits the variants alike, so the ratios of the same candidate's runs are steadier than
    the rounds' medians. Talks to the workers over their own protocol (a config line, a
    hello, one job and one result per line), which the baseline's worker speaks too."""
    import random

    from srscode.plugins.evaluate.sandbox.limits import Limits, hidden_devices, scrubbed_env

    variants = ([("before", baseline, False)] if baseline else []) + [("off", None, False), ("on", None, True)]
    base = tempfile.mkdtemp(prefix="srscode-paired-")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, path, integrity in variants:
            work = os.path.join(base, name)
            os.makedirs(work)
            hidden = hidden_devices()
            env = scrubbed_env(os.path.join(work, "c"), hidden=hidden)
            if path is not None:
                env["PYTHONPATH"] = str(path)
            cfg = {"hidden_devices": hidden, "dir": work, "home": os.path.expanduser("~"), "preload": [], "plugins": [],
                   "limits": Limits().to_dict(), "isolation": True, "sandbox_uid": None, "as_user": False,
                   "integrity": integrity, "strict_equality": False,
                   "env_source": {k: v for k, v in env.items() if k in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH")}}
            proc = subprocess.Popen([sys.executable, "-c", "from srscode.plugins.evaluate.sandbox.worker import main; main()"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=work,
                                    start_new_session=True)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(cfg) + "\n").encode())
            proc.stdin.flush()
            hello = json.loads(proc.stdout.readline() or b"{}")
            if hello.get("t") != "hello":
                raise RuntimeError(f"the {name} worker did not start")
            procs[name] = proc
        cpu: dict[str, list[float]] = {name: [] for name in procs}
        for _ in range(reps):
            for i, it in enumerate(sample):
                order = list(procs)
                random.shuffle(order)
                for name in order:
                    proc = procs[name]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write((json.dumps({"id": i, "solution": it["solution"], "test": it["test"], "timeout": 5}) + "\n").encode())
                    proc.stdin.flush()
                    res = json.loads(proc.stdout.readline())
                    cpu[name].append(res.get("cpu_s", 0.0) + res.get("worker_cpu_s", 0.0))
        return cpu
    finally:
        for proc in procs.values():
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sample", type=int, default=120, help="candidates timed per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout installed with pip --target: timed too, as 'before'")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--paired", type=int, default=2, help="repetitions of the side-by-side runs (one worker per variant, each candidate on all of them in turn); 0: none")
    ap.add_argument("--smoke", action="store_true", help="the starter set's first 3 tasks, 1 round of 4 candidates")
    args = ap.parse_args(argv)
    if args.smoke:
        items = [it for it in starter_items() if it["id"].split("::")[0] in sorted({i["id"].split("::")[0] for i in starter_items()})[:3]]
        args.sample, args.rounds, args.workers = 4, 1, 2
    elif not args.data.is_dir():
        print(f"no data at {args.data} (the shared KodCode rows); nothing to benchmark", file=sys.stderr)
        return 2
    else:
        items = load_items(args.data)
    sample = [it for it in items if it["recorded"] is not None][: args.sample] or items[: args.sample]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    if args.baseline:
        cpu["before"] = []
    per_round: dict[str, list[float]] = {k: [] for k in cpu}  # each round's median: the noise
    for _ in range(args.rounds):
        got: dict[str, list[float]] = {}
        if args.baseline:
            got["before"] = baseline_cpu(args.baseline, sample)
        for variant in ("off", "on"):
            got[variant] = ours_cpu(sample, integrity=variant == "on")
        for k, v in got.items():
            cpu[k] += v
            per_round[k].append(round(statistics.median(v) * 1000, 2))
    med = {k: statistics.median(v) for k, v in cpu.items()}
    mean = {k: statistics.fmean(v) for k, v in cpu.items()}
    report: dict[str, Any] = {
        "started": started,
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}, load {load_average()}",
        "candidates_timed": len(sample),
        "rounds": args.rounds,
        "cpu_ms_median": {k: round(v * 1000, 2) for k, v in med.items()},
        "cpu_ms_mean": {k: round(v * 1000, 2) for k, v in mean.items()},
        "cpu_ms_median_per_round": per_round,
        "ratio_on_off_median": round(med["on"] / med["off"], 3) if med["off"] else None,
        "ratio_on_off_mean": round(mean["on"] / mean["off"], 3) if mean["off"] else None,
    }
    if args.baseline:
        report["ratio_on_before_median"] = round(med["on"] / med["before"], 3)
        report["ratio_on_before_mean"] = round(mean["on"] / mean["before"], 3)
    if args.paired > 0:
        paired = paired_cpu(sample, args.paired, args.baseline)
        pmed = {k: round(statistics.median(v) * 1000, 2) for k, v in paired.items()}
        report["paired"] = {"reps": args.paired, "cpu_ms_median": pmed, "load_after": load_average()}
        for ref in ("before", "off"):
            if ref in paired:
                ratios = [b / a for a, b in zip(paired[ref], paired["on"]) if a > 0]
                report["paired"][f"ratio_on_{ref}_median_of_pairs"] = round(statistics.median(ratios), 3)
                report["paired"][f"ratio_on_{ref}_of_medians"] = round(statistics.median(paired["on"]) / statistics.median(paired[ref]), 3)
    verdicts: dict[str, dict[str, Any]] = {}
    for name, params in (("default", {}), ("strict", {"strict_equality": True})):
        res, elapsed, _, _ = run_ours(items, args.workers, dedupe=False, **params)
        agree, total, dis = agreement(items, res, "excerpt")
        verdicts[name] = res
        report[f"agreement_{name}"] = {"agree": agree, "total": total, "wall_s": round(elapsed, 1), "disagreements": dis}
    flipped = sorted(k for k in verdicts["default"] if not k.startswith("__") and verdicts["strict"].get(k, {}).get("passed") != verdicts["default"][k]["passed"])
    report["strict_flipped"] = [{"id": k, "default": verdicts["default"][k]["status"], "strict": verdicts["strict"][k]["status"], "excerpt": verdicts["strict"][k]["excerpt"][:300]} for k in flipped]
    print("| variant | CPU ms / candidate, median | mean |")
    print("|---|---|---|")
    for k in cpu:
        label = f"before ({args.baseline})" if k == "before" else f"integrity {k}"
        print(f"| {label} | {report['cpu_ms_median'][k]} (rounds: {', '.join(map(str, per_round[k]))}) | {report['cpu_ms_mean'][k]} |")
    print(f"RATIO integrity on/off per-candidate CPU: median {report['ratio_on_off_median']}, mean {report['ratio_on_off_mean']}")
    if args.baseline:
        print(f"RATIO integrity on/before per-candidate CPU: median {report['ratio_on_before_median']}, mean {report['ratio_on_before_mean']}")
    if "paired" in report:
        pr = report["paired"]
        print(f"PAIRED ({pr['reps']} x {len(sample)} candidates, every candidate on each worker in turn): median ms "
              + ", ".join(f"{k} {v}" for k, v in pr["cpu_ms_median"].items()))
        for ref in ("before", "off"):
            if f"ratio_on_{ref}_median_of_pairs" in pr:
                print(f"PAIRED RATIO on/{ref}: median of the candidates' ratios {pr[f'ratio_on_{ref}_median_of_pairs']}, of the medians {pr[f'ratio_on_{ref}_of_medians']}")
    for name in ("default", "strict"):
        a = report[f"agreement_{name}"]
        print(f"agreement {name}: {a['agree']}/{a['total']} with the recorded verdicts")
    print(f"strict equality flips {len(flipped)} verdict(s) of {sum(1 for k in verdicts['default'] if not k.startswith('__'))}")
    for f in report["strict_flipped"][:20]:
        print(f"  {f['id']}: {f['default']} -> {f['strict']}: {f['excerpt'][:160]!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
