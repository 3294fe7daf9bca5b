"""Per arm of an `srscode ablate` dir: what a round cost and how reviews went, from each run's
metrics.jsonl (mean over rounds, then over seeds): prompt and completion tokens per round, mean
prompt length of new and of review candidates (a reflection prompt's price), training pass
rates, and wall seconds per stage. A markdown table on stdout.

    python tools/gpu-experiment/costs.py runs/experiment
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

COLUMNS = [("rounds", None), ("prompt tokens / round", "prompt_tokens"),
           ("completion tokens / round", "completion_tokens"),
           ("prompt tokens / new candidate", "prompt_tokens_new_mean"),
           ("prompt tokens / review candidate", "prompt_tokens_review_mean"),
           ("pass rate new", "pass_rate_new"), ("pass rate review", "pass_rate_review"),
           ("generate s / round", "seconds.generate"), ("evaluate s / round", "seconds.evaluate"),
           ("train s / round", "seconds.train")]


def value(row: dict, key: str):
    for part in key.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row if isinstance(row, (int, float)) else None


def main(root: str) -> int:
    base = Path(root)
    try:
        order = json.loads((base / "ablation.json").read_text())["order"]
    except (OSError, ValueError, KeyError):
        order = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name != "logs")
    print("| arm | seeds | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for arm in order:
        runs = sorted((base / arm).glob("seed*/metrics.jsonl"))
        per_seed = []
        for f in runs:
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            rows = [r for r in rows if isinstance(r.get("round"), int)]
            # a resumed run may list a round twice: keep its last record
            rows = list({r["round"]: r for r in rows}.values())
            per_seed.append(rows)
        cells = []
        for _, key in COLUMNS:
            if key is None:
                cells.append(" / ".join(str(len(r)) for r in per_seed))
                continue
            seeds = [mean(v) for v in ([value(r, key) for r in rows if value(r, key) is not None]
                                       for rows in per_seed) if v]
            cells.append(f"{mean(seeds):,.3f}" if seeds and max(seeds) < 10 else
                         f"{mean(seeds):,.0f}" if seeds else "–")
        print(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/experiment"))
