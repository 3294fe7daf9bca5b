"""The whole loop through the real model stages: the tiny Qwen2 model with the ``hf``
generator, the sandboxed evaluator, SM-2, the ratio scheduler, LoRA SFT and DPO; resume
after a round picks the adapter up again. A slow test runs the SmolLM2 CPU demo."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_fixtures import *  # noqa: F401,F403  (tiny_model_dir)
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.ledger import Ledger, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(model_dir: Path, rounds: int) -> dict:
    return {
        "seed": 3,
        "model": {"name_or_path": str(model_dir), "family": "chat"},
        "data": {"source": "starter", "train_ratio": 0.85, "limit": 16},
        "rounds": rounds,
        "batch_size": 3,
        "candidates": 2,
        "stages": {
            "prompt": {"name": "chat"},
            "generator": {"name": "hf", "params": {"max_new_tokens": 24, "batch_size": 3}},
            "evaluator": {"name": "pytest-xdist", "params": {"workers": 2}},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio"},
            "trainer": {"name": "lora-sft", "params": {"r": 4, "alpha": 8, "batch_size": 2, "max_length": 2048}},
        },
        "dpo": {"name": "dpo", "every": 1, "reference_as_chosen": True, "max_pairs_per_task": 1,
                "params": {"r": 4, "alpha": 8, "batch_size": 2, "max_length": 2048}},
        "validation": {"at_start": False, "at_end": True, "candidates": 2, "k": [1, 2], "limit": 2},
    }


def run(run_dir: Path, cfg_dict: dict, **kw) -> dict:
    cfg = validate(cfg_dict)
    return Engine(cfg, cfg.model_dump(mode="json"), run_dir, quiet=True, **kw).run()


def test_one_round_through_every_stage_then_resume_restores_the_adapter(tiny_model_dir, tmp_path):
    run(tmp_path, tiny_config(tiny_model_dir, rounds=1))
    led = Ledger(tmp_path, create=False)
    row1 = led.round_row(1)
    m = row1["metrics"]
    assert m["candidates"] == 2 * (m["new"] + m["review"]) > 0
    assert m["train_loss"] > 0 and m["dpo_pairs_trained"] >= 1  # SFT ran, then DPO on the round's pairs
    adapter1 = row1["adapter_sha"]
    assert adapter1 and Path(row1["adapter_path"]).name == "adapter-dpo"
    pairs = list(read_jsonl(tmp_path / "rounds" / "000001" / "pairs.jsonl"))
    verdicts = {(v["task_id"], v["index"]): v["status"] for v in read_jsonl(tmp_path / "rounds/000001/verdicts.jsonl")}
    cands = {(c["task_id"], c["text"]): verdicts[(c["task_id"], c["index"])]
             for c in read_jsonl(tmp_path / "rounds/000001/candidates.jsonl")}
    for p in pairs:  # never a tie: a rejected answer always failed
        assert cands[(p["task_id"], p["rejected"])] != "passed"
        assert p["chosen"] != p["rejected"]
    led.close()

    # a new process resumes: round 2 must sample with the adapter round 1 saved
    run(tmp_path, tiny_config(tiny_model_dir, rounds=2), force_keys=["rounds"])
    used = {c["adapter"]["sha256"] for c in read_jsonl(tmp_path / "rounds" / "000002" / "candidates.jsonl")}
    assert used == {adapter1}
    led = Ledger(tmp_path, create=False)
    final = led.validations()[3]
    assert final["label"] == "final" and final["adapter"] == led.round_row(2)["adapter_sha"]
    assert 0.0 <= final["pass@1"] <= final["pass@2"] <= 1.0
    led.close()


@pytest.mark.slow
def test_smollm2_cpu_demo_runs_one_round(tmp_path):
    """The README's main command, cut to one round (about 4 minutes on 2 cores)."""
    proc = subprocess.run(
        [sys.executable, "-m", "srscode.cli.main", "--quiet", "run", str(ROOT / "examples" / "demo-cpu.yaml"),
         "--run-dir", str(tmp_path / "demo"), "--set", "rounds=1", "--json"],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["round"] == 1 and summary["last_metrics"]["candidates"] > 0
    assert {v["label"] for v in summary["validations"].values()} == {"before", "final"}
    assert summary["final_dpo"]["dpo_pairs_trained"] >= 1
