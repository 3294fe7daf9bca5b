"""Fake trainers for whole runs on the starter set: the fault-injection, signal, disk-full
tests and the soak benchmark (in-process: ``extra_plugins=[fault_stages]``; in a subprocess:
``SRSCODE_PLUGINS=srscode.testing.fault_stages``).

Only the trainers are fake. Everything else is built in: the ``starter`` dataset, the
``replay`` generator (the starter set's recorded right-and-wrong candidates, chosen
deterministically from the round seed) and a real evaluator, so the candidates really
run under pytest.

``fault-train`` / ``fault-dpo`` write a real adapter folder (config + a weights file whose
bytes derive from the examples and the initial adapter), non-atomically and with a fault
checkpoint halfway through the weights file, so a kill can leave a half-written adapter
behind, the way a real trainer killed mid-save would.

Test-only knobs come from the environment, not the config, so the stored config of an
interrupted run equals the one it resumes with:

* ``SRSCODE_TEST_PAUSE=<call>:<seconds>:<marker file>``: on the ``<call>``-th SFT call of
  this process, write the marker file and sleep, so a test can send a signal while the
  train stage is running.
* ``SRSCODE_TEST_SIGNAL=<call>:<SIGNAME>``: on the ``<call>``-th SFT call, send that signal
  to this process (in-process tests: deterministic delivery in the middle of a stage).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Sequence

from srscode.core.faults import checkpoint
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, ComponentSpec, TrainResult

_calls = {"sft": 0}


def _weights(seed_text: str, size: int = 8192) -> bytes:
    """Deterministic pseudo-weights: a SHA-256 stream of the training inputs."""
    out = bytearray()
    block = hashlib.sha256(seed_text.encode()).digest()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:size])


def write_adapter(out_dir: Path, body: dict[str, Any]) -> AdapterRef:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                   sort_keys=True)
    )
    data = _weights(json.dumps(body, sort_keys=True))
    with open(out_dir / "adapter_model.bin", "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        checkpoint("fake-train:half-written")  # a kill here leaves half a weights file
        fh.write(data[len(data) // 2 :])
    return AdapterRef.from_dir(out_dir)


def _maybe_pause() -> None:
    spec = os.environ.get("SRSCODE_TEST_PAUSE", "")
    if spec:
        call, seconds, marker = spec.split(":", 2)
        if _calls["sft"] == int(call):
            Path(marker).write_text(str(os.getpid()))
            time.sleep(float(seconds))
    spec = os.environ.get("SRSCODE_TEST_SIGNAL", "")
    if spec:
        call, name = spec.split(":", 1)
        if _calls["sft"] == int(call):
            os.kill(os.getpid(), getattr(signal, name))
            time.sleep(5)  # the handler raises here; reaching the end means it did not


def reset_calls() -> None:
    _calls["sft"] = 0


class FaultTrainer:
    def train_sft(self, examples: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        _calls["sft"] += 1
        _maybe_pause()
        body = {"init": init.sha256 if init else None,
                "examples": sorted((e.task_id, round(e.weight, 6)) for e in examples)}
        adapter = write_adapter(out_dir, body)
        return TrainResult(adapter, {"train_loss": round(1.0 / (1 + len(examples)), 6)})

    def train_pairs(self, pairs: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        body = {"init": init.sha256 if init else None,
                "pairs": sorted(hashlib.sha256(f"{p.chosen}\0{p.rejected}".encode()).hexdigest() for p in pairs)}
        adapter = write_adapter(out_dir, body)
        return TrainResult(adapter, {"loss": 0.69})


@hookimpl
def srscode_trainers():
    yield ComponentSpec("fault-train", lambda params, ctx: FaultTrainer(), None, "fake LoRA SFT (tests)")
    yield ComponentSpec("fault-dpo", lambda params, ctx: FaultTrainer(), None, "fake DPO (tests)")


def fault_config(evaluator: str, cache: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """A small multi-round run on the starter set: a few seconds on 2 cores. ``cache``: the
    evaluator's reference cache file (expected test ids, reference runtimes), kept beside
    the reference run so the user's ~/.cache is never touched and resumed runs need not
    re-run the reference solutions."""
    cfg: dict[str, Any] = {
        "seed": 3,
        "data": {"source": "starter", "train_ratio": 0.8},
        "rounds": 3,
        "batch_size": 4,
        "candidates": 2,
        "stages": {
            "prompt": {"name": "qwen"},
            "generator": {"name": "replay"},
            # generous timeouts: a verdict must not depend on the machine's load, or an
            # interrupted run could not equal its reference
            "evaluator": {"name": evaluator, "params": {"timeout_s": 60, "min_timeout_s": 30,
                                                        "cache_path": str(cache) if cache else "none"}},
            "memory": {"name": "sm2"},
            "scheduler": {"name": "ratio", "params": {"new_task_ratio": 0.5}},
            "trainer": {"name": "fault-train"},
        },
        "dpo": {"name": "fault-dpo", "every": "end"},
        "validation": {"every": 2, "candidates": 1, "k": [1], "limit": 2},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg
