"""The engine data-parallel under ``accelerate launch`` with 2 CPU processes (gloo).

Model-free (replay generator, the sandboxed evaluator, a trainer that saves on rank 0 like
lora-sft): a 2-rank run equals the 1-process run of the same config (candidates,
verdicts, memory, schedule, adapters, validation), only rank 0 writes into the run dir,
a run killed mid-round resumes on 2 ranks, and a failure on one rank stops both with a
non-zero exit. A slow test runs the real tiny model with lora-sft on 2 ranks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import dist_fakes
from model_fixtures import *  # noqa: F401,F403  (tiny_model_dir)
from srscode.testing.ports import free_port
from srscode.core.config import validate
from srscode.core.distributed import SingleProcess, connect, run_everywhere, run_on_main, shard
from srscode.core.engine import Engine
from srscode.core.ledger import Ledger, read_jsonl

TESTS = Path(__file__).resolve().parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "-m", "srscode.cli.main"]

# an audit hook (installed by dist_fakes when this is set) logs, per rank, every file a
# process opens for writing and every SQLite database it opens under the run dir
AUDIT_ENV = "SRSCODE_TEST_WRITE_AUDIT"


def replay_config(**over) -> dict:
    cfg = {
        "seed": 3,
        "data": {"source": "starter", "train_ratio": 0.8},
        "rounds": 3,
        "batch_size": 6,
        "candidates": 2,
        "stages": {
            "prompt": {"name": "qwen"},
            # small streamed batches, so the streaming path runs on each rank
            "generator": {"name": "replay", "params": {"batch_tasks": 2}},
            "evaluator": {"name": "pytest-xdist", "params": {"workers": 1, "cache_path": "none", "timeout_s": 5}},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio", "params": {"new_task_ratio": 0.6}},
            "trainer": {"name": "rank-train"},
        },
        "dpo": {"name": "rank-dpo", "every": 2},
        "validation": {"every": 2, "candidates": 2, "k": [1, 2], "limit": 5},
        "hardware": {"backend": "cpu"},  # 2 CPU processes (gloo) on any host, a GPU host too
    }
    cfg.update(over)
    return cfg


def launch(tmp: Path, cfg: dict, run_dir: Path, extra_env: dict | None = None, timeout: int = 240):
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p), SRSCODE_PLUGINS="dist_fakes",
               SRSCODE_DIST_TIMEOUT_S="120",
               # hidden accelerators: on a 1-GPU host accelerate would put both ranks on it with NCCL
               CUDA_VISIBLE_DEVICES="", ASCEND_RT_VISIBLE_DEVICES="")
    env.pop(AUDIT_ENV, None)
    env.update(extra_env or {})
    port = ["--main_process_port", str(free_port())]  # launches on other xdist workers use their own
    return subprocess.run([*LAUNCH[:3], *port, *LAUNCH[3:], "-q", "run", str(path), "--run-dir", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def run_one_process(run_dir: Path, cfg: dict) -> dict:
    c = validate(cfg)
    return Engine(c, c.model_dump(mode="json"), run_dir, extra_plugins=[dist_fakes], quiet=True).run()


def ledger_view(run_dir: Path) -> dict:
    """What must be equal between runs of one config (volatile timing fields left out)."""
    led = Ledger(run_dir, create=False)
    try:
        rounds = [(r["round"], r["new_ids"], r["review_ids"], r["scheduler_state"], r["adapter_sha"])
                  for r in led.rounds()]
        memory = list(led.all_states())
        log = list(led.db.execute("SELECT round, task_id, state FROM memory_log ORDER BY round, task_id"))
        vals = led.validations()
        metrics = [{k: v for k, v in r["metrics"].items() if k not in ("seconds", "streaming", "world_size")}
                   for r in led.rounds()]
    finally:
        led.close()
    files = {}
    for r, *_ in rounds:
        d = run_dir / "rounds" / f"{r:06d}"
        files[r] = {
            "candidates": list(read_jsonl(d / "candidates.jsonl")),
            "verdicts": [{k: v[k] for k in ("task_id", "index", "status", "tests_passed", "tests_expected", "outcomes")}
                         for v in read_jsonl(d / "verdicts.jsonl")],
            "pairs": list(read_jsonl(d / "pairs.jsonl")),
            "memory": list(read_jsonl(d / "memory.jsonl")),
            "names": sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != "COMMIT"),
        }
        for c in files[r]["candidates"]:  # the adapter path names the run dir; its hash must match
            c["adapter"] = c["adapter"] and c["adapter"]["sha256"]
    return {"rounds": rounds, "memory": memory, "log": log, "validations": vals, "metrics": metrics, "files": files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("one-process") / "run"
    run_one_process(run_dir, replay_config())
    return ledger_view(run_dir)


# --------------------------------------------------------------------- in-process units


def test_a_single_process_never_imports_torch_for_collectives():
    code = ("import sys; from srscode.core.distributed import connect; d = connect(None); "
            "assert d.world == 1 and d.is_main and d.gather(5) == [5] and d.broadcast(7) == 7; "
            "print('torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_helpers_on_one_process():
    d = SingleProcess()
    assert shard(list(range(7)), d) == list(range(7))
    assert run_everywhere(d, "x", lambda: 3) == [3] and run_on_main(d, "x", lambda: 4) == 4
    with pytest.raises(ZeroDivisionError):
        run_everywhere(d, "x", lambda: 1 / 0)


def test_shard_keeps_every_item_once():
    class Two:
        world = 2

        def __init__(self, rank):
            self.rank = rank

    items = [f"t{i}" for i in range(7)]
    parts = [shard(items, Two(0)), shard(items, Two(1))]
    assert parts == [items[0::2], items[1::2]] and sorted(parts[0] + parts[1]) == sorted(items)


def test_world_size_must_be_a_number(monkeypatch):
    from srscode.core.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        connect(None)


# --------------------------------------------------------------------- 2 processes


def test_two_ranks_equal_one_process_and_only_rank_0_writes(reference, tmp_path):
    run_dir = tmp_path / "run"
    audit = tmp_path / "audit"
    proc = launch(tmp_path, replay_config(), run_dir, {AUDIT_ENV: f"{audit}:{run_dir}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = ledger_view(run_dir)
    assert got["rounds"] == reference["rounds"]
    assert got["files"] == reference["files"]
    assert got["memory"] == reference["memory"] and got["log"] == reference["log"]
    assert got["validations"] == reference["validations"] and got["metrics"] == reference["metrics"]
    # both ranks did work: the metrics name the world size, each rank streamed its shard
    m = json.loads((run_dir / "rounds" / "000001" / "metrics.json").read_text())
    assert m["world_size"] == 2 and {"rank0_evaluation_tail", "rank1_evaluation_tail"} <= set(m["streaming"]["seconds"])
    writes = {rank: (audit / f"rank{rank}.log").read_text().splitlines() if (audit / f"rank{rank}.log").exists() else []
              for rank in (0, 1)}
    assert any(w.endswith("ledger.sqlite") for w in writes[0]) and any("metrics.json" in w for w in writes[0])
    assert writes[1] == [], writes[1][:5]
    # one status printed, by rank 0
    assert proc.stdout.count("run dir ") == 1


def test_two_ranks_resume_after_a_kill(reference, tmp_path):
    run_dir = tmp_path / "run"
    # rank 0 dies after sealing round 2's files, before the ledger commit; the launcher
    # stops rank 1; round 2 is redone on resume
    killed = launch(tmp_path, replay_config(), run_dir, {"SRSCODE_FAULT": "commit-files:2"})
    assert killed.returncode != 0
    led = Ledger(run_dir, create=False)
    assert led.last_round() == 1
    led.close()
    resumed = launch(tmp_path, replay_config(), run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "removed 1 uncommitted round folder" in resumed.stderr
    got = ledger_view(run_dir)
    for key in ("rounds", "files", "memory", "log", "validations", "metrics"):
        assert got[key] == reference[key], key


def test_a_failure_on_one_rank_stops_every_rank(tmp_path):
    cfg = replay_config(rounds=2, validation={"every": 0, "at_start": False, "at_end": False})
    cfg["stages"]["generator"] = {"name": "rank-fail"}  # no generate_iter: the sequential path
    proc = launch(tmp_path, cfg, tmp_path / "run", {"SRSCODE_TEST_FAIL_RANK": "1"}, timeout=180)
    assert proc.returncode != 0
    err = proc.stderr
    assert "injected generator failure on rank 1" in err  # rank 1's own error
    assert "rank 1 of 2 failed with RuntimeError" in err  # rank 0's report of it
    led = Ledger(tmp_path / "run", create=False)
    assert led.last_round() == 1  # round 1 committed, round 2 not
    led.close()


# --------------------------------------------------------------------- the real tiny model


def tiny_model_config(model_dir: Path) -> dict:
    return {
        "seed": 3,
        "model": {"name_or_path": str(model_dir), "family": "chat"},
        "data": {"source": "starter", "train_ratio": 0.85, "limit": 16},
        "rounds": 2,
        "batch_size": 4,
        "candidates": 2,
        "stages": {
            "prompt": {"name": "chat"},
            "generator": {"name": "hf", "params": {"max_new_tokens": 16, "batch_size": 2}},
            "evaluator": {"name": "pytest-xdist", "params": {"workers": 1, "cache_path": "none"}},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio"},
            "trainer": {"name": "lora-sft", "params": {"r": 4, "alpha": 8, "batch_size": 1, "max_length": 512}},
        },
        "dpo": {"name": "none", "every": "never"},
        "validation": {"at_start": False, "at_end": True, "candidates": 2, "k": [1, 2], "limit": 2},
    }


@pytest.mark.slow
def test_tiny_model_lora_sft_on_two_ranks(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(tmp_path, tiny_model_config(tiny_model_dir), run_dir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    led = Ledger(run_dir, create=False)
    try:
        rows = led.rounds()
        assert [r["round"] for r in rows] == [1, 2]
        for r in rows:
            m = r["metrics"]
            assert m["world_size"] == 2 and m["candidates"] == 2 * (m["new"] + m["review"])
            assert m["train_loss"] > 0 and m["train_steps"] >= 1
            # the adapter in the ledger is the folder rank 0 saved, and every rank checked it
            from srscode.core.types import AdapterRef

            assert AdapterRef.from_dir(r["adapter_path"]).sha256 == r["adapter_sha"]
        assert rows[0]["adapter_sha"] != rows[1]["adapter_sha"]
        # round 2 was generated with round 1's adapter on both ranks (the engine's identity check)
        cands = list(read_jsonl(run_dir / "rounds" / "000002" / "candidates.jsonl"))
        assert {c["adapter"]["sha256"] for c in cands} == {rows[0]["adapter_sha"]}
        assert led.validations()
    finally:
        led.close()


@pytest.mark.slow
def test_multi_gpu_benchmark_smoke_repeats_each_n_as_its_own_run(tmp_path):
    """benchmarks/multi_gpu.py --smoke (2 CPU processes, tiny model): a repeated N is a new
    run with its own files (a reused run dir would resume instead of rerunning), and the
    efficiency compares the best run of each N."""
    out = tmp_path / "mgpu"
    proc = subprocess.run([sys.executable, str(TESTS.parent / "benchmarks" / "multi_gpu.py"), "--smoke",
                           "--out", str(out), "--gpus", "1,2,1", "--parts", "stages"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "multi_gpu.json").read_text())
    ones, twos = result["stages"]["1"], result["stages"]["2"]
    assert len(ones) == 2 and len(twos) == 1
    for row in ones + twos:
        assert row["rc"] == 0, row
        assert row["generation"]["tokens"] > 0 and row["training"]["tokens"] > 0, row
        assert row["training"]["same_adapter_on_every_rank"] is True
    assert twos[0]["world"] == 2 and twos[0]["backend"] == "gloo"
    best1 = max(r["training"]["loop_tokens_per_s"] for r in ones)
    expected = round(twos[0]["training"]["loop_tokens_per_s"] / (2 * best1), 3)
    assert result["efficiency"]["2"]["training"] == expected
    assert sorted(p.name for p in (out / "logs").glob("stages-*.log")) == ["stages-0-1.log", "stages-1-2.log", "stages-2-1.log"]
