"""What the evaluator's integrity checks (issue 20) cost, and what strict equality changes.

In one run, on the shared KodCode rows (every task's reference and recorded trials):

  (a) CPU per candidate in a warm worker (the candidate's process + the worker's share,
      expected ids already learned: ``benchmarks/evaluator.py``'s ``ours_cpu``), with the
      integrity hook off and on, interleaved ``--rounds`` times (off, on, off, on, ...) so
      drift on a shared machine hits both alike; the ratio on/off of the medians;
  (b) agreement with the recorded verdicts of the default evaluator (integrity on) and of
      strict equality, and the candidates whose verdict strict equality flips.

"off" is this evaluator with only the hook disarmed: the collector's phase wrappers and
the debugging plugin (both part of this change) run in both. ``--baseline DIR`` adds, in
the same interleaved rounds, the evaluator of another checkout installed into DIR
(``pip install --no-deps --target DIR <checkout>``; "before"), run in a subprocess with
``PYTHONPATH=DIR``.

    python benchmarks/evaluator_integrity.py [--sample 120] [--rounds 2] [--baseline DIR] [--json OUT]
    python benchmarks/evaluator_integrity.py --smoke   # the starter set's first 3 tasks
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sample", type=int, default=120, help="candidates timed per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout installed with pip --target: timed too, as 'before'")
    ap.add_argument("--json", type=Path, default=None)
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
