"""One engine round with generation and evaluation overlapped (issue 7, target 3).

    python benchmarks/round.py --smollm2-gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR
    python benchmarks/round.py --smoke [--out DIR]     # CPU, tiny model, starter tasks only

A whole ``Engine`` round (schedule, prompts, generate, evaluate, memory, pairs, commit) on
``--tasks`` tasks x ``--candidates`` candidates with the ``hf`` generator and the
``pytest-xdist`` evaluator (``--workers``), training off (this is about the generation /
evaluation overlap) unless ``--trainer lora-sft``: then the round also trains on its tasks and
the round's time is compared with its generation + training (issue 19: <= 1.15). Tasks: the KodCode rows under ``--kodcode`` plus the packaged
starter set, cycled with distinct ids (``<id>__c<k>``) up to ``--tasks``, written as one
KodCode-schema JSONL and read by the ``kodcode`` source.

Up to four runs of the same round, each in a fresh run dir with a cold reference cache
(``cache_path: none``) and a freshly loaded model, after an optional warm-up round of
``--warmup-tasks`` tasks (reported apart; it fills the compiler's caches so that no
compared run carries the process's first compilation):

1. ``streamed``: the engine's overlapped path (``generate_iter`` + ``submit``/``results``),
   the fast loop giving out each batch's rows as they finish, batches longest prompts first;
2. ``shortest-first`` (``--shortest-first``): the same with batches shortest prompts first
   (``hf.LONGEST_FIRST = False``, the order before);
3. ``batch-streamed`` (``--batch-streamed``): shortest first and rows given out only when
   their whole batch ends (``fast_decode.GIVE_OUT_EARLY = False``): the loop before both;
4. ``sequential`` (the baseline): the same generator behind a wrapper without
   ``generate_iter``, so the engine generates everything, then evaluates.

Without a warm-up the streamed run goes first, so any one-time warm-up (kernels, graph
capture) is charged to it, not to the baselines. Printed: the per-stage wall-time breakdown of each, the
streamed runs' spans (generation, evaluator busy span, evaluation tail = last candidate
to last verdict) and the tail as a % of generation time (target: <= 10 %), and last the
ratios of the baselines' round time (and tail) to the streamed run's. Writes
``DIR/round.json`` and ``DIR/round.log``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlog import close_log, log_file, open_log, out_dir, say  # noqa: E402  (benchmarks/ is on sys.path above)


def default_kodcode() -> Path | None:
    for cand in (ROOT / ".devcarry" / "kodcode", ROOT.parent / "shared" / "data" / "kodcode"):
        if cand.is_dir():
            return cand
    return None


def ensure_importable() -> None:
    from gpu_model_stages import ensure_srscode_importable

    ensure_srscode_importable()


def task_rows(kodcode: Path | None, n: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """KodCode-schema rows: the KodCode files' rows and the starter set's, cycled with
    distinct ids to ``n``."""
    import importlib.resources

    from srscode.plugins.data.kodcode import iter_json_lines, iter_local, local_files

    base: list[dict[str, Any]] = []
    counts = {"kodcode": 0, "starter": 0}
    if kodcode is not None:
        files = local_files(str(kodcode)) or []
        for _where, row in iter_local(files):
            if isinstance(row, dict):
                base.append(row)
                counts["kodcode"] += 1
    data = (importlib.resources.files("srscode.plugins.data.starter_set") / "tasks.jsonl").read_bytes()
    for _where, row in iter_json_lines(data, "starter"):
        base.append(row)
        counts["starter"] += 1
    rows = []
    for k, row in zip(range(n), itertools.cycle(base)):
        copy = k // len(base)
        rows.append(dict(row, question_id=row["question_id"] if copy == 0 else f"{row['question_id']}__c{copy}"))
    return rows, counts


class SequentialGenerator:
    """The hf generator without ``generate_iter``: the engine's sequential path."""

    def __init__(self, inner: Any):
        self.inner = inner

    def generate(self, prompts: Sequence[Any], n: int, adapter: Any, seed: int) -> list[Any]:
        return self.inner.generate(prompts, n, adapter, seed)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


class SequentialPlugin:
    """Registers ``hf-sequential`` (hf's params, hf's factory, wrapped)."""

    from srscode.core.hookspecs import hookimpl as _hookimpl

    @_hookimpl
    def srscode_generators(self):
        from srscode.core.types import ComponentSpec
        from srscode.plugins.generate import hf as hf_generator

        spec = next(s for s in hf_generator.srscode_generators() if s.name == "hf")
        yield ComponentSpec("hf-sequential", lambda params, ctx: SequentialGenerator(spec.factory(params, ctx)),
                            spec.params, "benchmark: hf without generate_iter")


def config(args: argparse.Namespace, data_path: Path, generator: str) -> dict[str, Any]:
    model: dict[str, Any] = {"name_or_path": args.model or "", "family": "chat"}
    if args.smollm2_gguf:
        gguf = Path(args.smollm2_gguf)
        model.update(name_or_path=str(gguf.parent), gguf_file=gguf.name)
    return {
        "seed": 0,
        "model": model,
        "data": {"source": "kodcode", "path": str(data_path), "train_ratio": 1.0},
        "rounds": 1,
        "batch_size": args.tasks,
        "candidates": args.candidates,
        "stages": {
            "prompt": {"name": "chat"},
            "generator": {"name": generator, "params": {"max_new_tokens": args.max_new_tokens,
                                                        "batch_size": args.gen_batch,
                                                        "compile": {"auto": "auto", "true": True, "false": False}[args.compile]}},
            "evaluator": {"name": "pytest-xdist", "params": {"workers": args.workers, "cache_path": "none"}},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio", "params": {"new_task_ratio": 1.0}},
            "trainer": {"name": args.trainer},
        },
        "dpo": {"name": "none", "every": "never"},
        "validation": {"every": 0, "at_start": False, "at_end": False},
        **({"hardware": {"backend": "cpu"}} if args.smoke else {}),
    }


def run_round(args: argparse.Namespace, data_path: Path, generator: str, run_dir: Path) -> dict[str, Any]:
    from srscode.core.config import validate
    from srscode.core.engine import Engine

    cfg = validate(config(args, data_path, generator))
    started = time.perf_counter()
    Engine(cfg, cfg.model_dump(mode="json"), run_dir, quiet=True, extra_plugins=[SequentialPlugin()]).run()
    wall = time.perf_counter() - started
    m = json.loads((run_dir / "rounds" / "000001" / "metrics.json").read_text())
    sec = m["seconds"]
    model_s = sec.get("generate", 0.0) + sec.get("train", 0.0)
    return {
        "wall_s": round(wall, 2),
        # issue 19 target 4: the round costs little beyond its two model stages
        "round_over_generate_plus_train": round(sum(sec.values()) / model_s, 3) if model_s else None,
        "round_s": round(sum(m["seconds"].values()), 2),
        "seconds": {k: round(v, 3) for k, v in m["seconds"].items()},
        "streaming": {k: round(v, 3) for k, v in (m.get("streaming") or {}).get("seconds", {}).items()},
        "candidates": m["candidates"],
        "tasks": m["new"] + m["review"],
        "pass_rate": round(m["pass_rate"], 4),
        "duplicate_rate": round(m.get("duplicate_rate", 0.0), 4),
        "statuses": m["statuses"],
    }


def export_candidates(run_dir: Path, rows: list[dict[str, Any]], path: Path) -> dict[str, int]:
    """Write the round's candidates as ``srscode evaluate`` input (id, solution, test,
    reference), for benchmarks/evaluator.py --input (the round's ``duplicate_rate`` says
    how many repeat an earlier candidate of their task)."""
    from srscode.core.ledger import read_jsonl
    from srscode.plugins.data.kodcode import map_rows

    tasks = {t.task_id: t for t in map_rows((f"row {i}", r) for i, r in enumerate(rows)).tasks}
    n = 0
    with open(path, "w") as fh:
        for c in read_jsonl(run_dir / "rounds" / "000001" / "candidates.jsonl"):
            task = tasks[c["task_id"]]
            fh.write(json.dumps({"id": f"{c['task_id']}#{c['index']}", "task_id": c["task_id"], "solution": c["code"],
                                 "test": task.test_code, "reference": task.solution}) + "\n")
            n += 1
    return {"candidates": n}


def smoke_model(out: Path) -> Path:
    from srscode.testing.tiny_model import build_tiny_model

    return build_tiny_model(out / "tiny-model")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kodcode", type=Path, default=None, help="KodCode files (default .devcarry/kodcode or ../shared/data/kodcode)")
    ap.add_argument("--model", default=None, help="model folder or hub id")
    ap.add_argument("--smollm2-gguf", default=None, help="SmolLM2 GGUF file (its folder becomes the model)")
    ap.add_argument("--tasks", type=int, default=512)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--gen-batch", type=int, default=64, help="prompts per generator batch")
    ap.add_argument("--workers", type=int, default=16, help="evaluator workers")
    ap.add_argument("--skip-sequential", action="store_true", help="no sequential round")
    ap.add_argument("--batch-streamed", action="store_true",
                    help="also the round with rows given out per whole batch (the tail's baseline)")
    ap.add_argument("--shortest-first", action="store_true",
                    help="also the round with the generator's batches shortest prompts first (hf.LONGEST_FIRST = False)")
    ap.add_argument("--streamed-last", action="store_true",
                    help="run the streamed round after the baselines (with --warmup-tasks: shows an order effect)")
    ap.add_argument("--warmup-tasks", type=int, default=0,
                    help="first a round of this many tasks, reported apart: fills the compiler's caches, so no "
                         "compared round carries the process's first compilation")
    ap.add_argument("--trainer", choices=["none", "lora-sft"], default="none",
                    help="lora-sft: the round also trains (its default params) on the round's tasks")
    ap.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                    help="the hf generator's compile param (auto: on for accelerators, compiled once per process)")
    ap.add_argument("--export-candidates", type=Path, default=None,
                    help="write the streamed round's candidates here as `srscode evaluate` input (benchmarks/evaluator.py --input)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny random model, 24 starter tasks x 2, 2 workers, all three rounds; a part that fails fails the run")
    ap.add_argument("--out", type=Path, default=None, help="folder for round.json and round.log (--smoke: a temp dir)")
    args = ap.parse_args(argv)
    args.out = out_dir(ap, args.out, args.smoke, "round")
    open_log(args.out / "round.log", "w")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ensure_importable()
    from srscode.core.types import STAGES

    if args.smoke:
        args.tasks, args.candidates, args.max_new_tokens, args.gen_batch, args.workers = 24, 2, 16, 8, 2
        args.batch_streamed = args.shortest_first = True
        args.warmup_tasks = 8
        args.model = str(smoke_model(args.out))
        args.smollm2_gguf = None
    kodcode = args.kodcode or (None if args.smoke else default_kodcode())
    rows, counts = task_rows(kodcode, args.tasks)
    data_path = args.out / "tasks.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    say(f"tasks: {len(rows)} ({counts['kodcode']} KodCode rows from {kodcode}, {counts['starter']} starter, cycled) "
        f"x {args.candidates} candidates; model {args.smollm2_gguf or args.model or '(embedded SmolLM2)'}; "
        f"evaluator workers {args.workers}")
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "task_sources": counts}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="srscode-round-bench-") as tmp:
        from srscode.plugins.generate import hf
        from srscode.plugins.lib import fast_decode

        arms = [("warmup", "hf")] if args.warmup_tasks else []
        baselines = [("shortest-first", "hf")] * args.shortest_first + [("batch-streamed", "hf")] * args.batch_streamed
        baselines += [("sequential", "hf-sequential")] * (not args.skip_sequential)
        arms += baselines + [("streamed", "hf")] if args.streamed_last else [("streamed", "hf")] + baselines
        for label, gen in arms:
            say(f"--- {label} round ({gen})")
            # batch-streamed: the loop before rows were given out early and batches went longest first
            fast_decode.GIVE_OUT_EARLY = label != "batch-streamed"
            hf.LONGEST_FIRST = label not in ("shortest-first", "batch-streamed")
            run_args = argparse.Namespace(**{**vars(args), "tasks": args.warmup_tasks}) if label == "warmup" else args
            try:
                result[label] = run_round(run_args, data_path, gen, Path(tmp) / label)
                say(json.dumps(result[label]))
                if label == "streamed" and args.export_candidates:
                    result["exported"] = export_candidates(Path(tmp) / label, rows, args.export_candidates)
                    say(f"exported {json.dumps(result['exported'])} to {args.export_candidates}")
            except Exception as exc:  # record and go on with the next part
                result[label] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"{label} FAILED: {type(exc).__name__}: {exc}")
                log_file().write(traceback.format_exc())

    s, b, q = result.get("streamed", {}), result.get("batch-streamed", {}), result.get("sequential", {})
    f = result.get("shortest-first", {})
    say("")
    say(f"{'stage':<12}{'streamed s':>12}{'shortest-1st s':>16}{'batch-str. s':>14}{'sequential s':>14}")

    def cell(part: dict[str, Any], stage: str) -> Any:
        v = (part.get("seconds") or {}).get(stage)
        return "-" if v is None else v

    for stage in STAGES:
        if any((part.get("seconds") or {}).get(stage) is not None for part in (s, f, b, q)):
            say(f"{stage:<12}{cell(s, stage):>12}{cell(f, stage):>16}{cell(b, stage):>14}{cell(q, stage):>14}")
    say(f"{'round':<12}{s.get('round_s', '-'):>12}{f.get('round_s', '-'):>16}{b.get('round_s', '-'):>14}"
        f"{q.get('round_s', '-'):>14}")
    if s.get("round_over_generate_plus_train"):
        say(f"streamed round / (generate + train): {s['round_over_generate_plus_train']:.3f} (target <= 1.15)")
    for label, part in (("streamed", s), ("shortest-first", f), ("batch-streamed", b)):
        st = part.get("streaming") or {}
        if st:
            tail_pct = 100.0 * st["evaluation_tail"] / st["generate"] if st["generate"] > 0 else float("nan")
            part["evaluation_tail_pct_of_generate"] = round(tail_pct, 2)
            say(f"{label} spans: generate {st['generate']:.2f} s, evaluator busy {st['evaluate']:.2f} s, "
                f"evaluation tail {st['evaluation_tail']:.2f} s = {tail_pct:.1f} % of generation (target <= 10 %)")
        elif "seconds" in part:
            say(f"{label} run did not stream (the generator has no generate_iter): no spans")
    if "evaluation_tail_pct_of_generate" in s:
        result["evaluation_tail_pct_of_generate"] = s["evaluation_tail_pct_of_generate"]
    st_ = (s.get("streaming") or {}).get("evaluation_tail")
    for label, part in (("shortest_first", f), ("batch_streamed", b)):
        tail = (part.get("streaming") or {}).get("evaluation_tail")
        if tail and st_:
            result[f"tail_{label}_over_streamed"] = round(tail / st_, 3)
            say(f"evaluation tail {label.replace('_', '-')} / streamed: {result[f'tail_{label}_over_streamed']:.2f}x")
    for label, part in (("shortest_first", f), ("batch_streamed", b), ("sequential", q)):
        if s.get("round_s") and part.get("round_s"):
            result[f"{label}_over_streamed"] = round(part["round_s"] / s["round_s"], 3)
            say(f"round time {label.replace('_', '-')} / streamed: {result[f'{label}_over_streamed']:.2f}x")
    (args.out / "round.json").write_text(json.dumps(result, indent=1))
    close_log()
    return 1 if any("error" in part for part in ((s, f, b, q) if args.smoke else (s,))) else 0


if __name__ == "__main__":
    sys.exit(main())
