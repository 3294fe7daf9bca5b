"""Fixtures for fast model-stage tests over the tiny offline Qwen2 of
:mod:`srscode.testing.tiny_model` (shared with the benchmarks' smoke modes): the model
folder (built once per session), a CPU backend and a StageContext. Import into a test
module with ``from model_fixtures import *``.
"""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from srscode.testing.tiny_model import (
    CHATML_TEMPLATE,
    SPECIAL_TOKENS,
    build_bpe_tokenizer,
    build_tiny_model,
    make_lora_adapter,
)

__all__ = [
    "CHATML_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_tiny_model",
    "build_bpe_tokenizer",
    "cpu_backend",
    "make_ctx",
    "make_lora_adapter",
    "tiny_model_dir",
    "SimplePromptBuilder",
]


def cpu_backend() -> types.SimpleNamespace:
    """What ``ctx.backend`` (a ResolvedBackend) offers the model stages, for this CPU."""
    import torch

    return types.SimpleNamespace(
        device=torch.device("cpu"),
        torch_dtype=torch.float32,
        dtype_name="fp32",
        mixed_precision="no",
        use_cpu=True,
        name="cpu",
    )


class SimplePromptBuilder:
    """Enough of a prompt builder for the generator: the raw output is the code."""

    def build(self, task: Any) -> Any:  # pragma: no cover - unused by these tests
        raise NotImplementedError

    def extract(self, output: str, prompt: Any = None) -> str:
        return output.strip() + "\n"


def make_ctx(model_dir: str | Path, **config: Any) -> Any:
    """A StageContext for the tiny model on the CPU; ``config`` updates RunConfig fields."""
    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext

    data = {"model": {"name_or_path": str(model_dir)}}
    data.update(config)
    ctx = StageContext(config=RunConfig.model_validate(data), quiet=True, _backend=cpu_backend())
    ctx.prompt_builder = SimplePromptBuilder()
    return ctx


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    # the matrices are tiny: one thread per xdist worker beats threads fighting for 2 cores
    torch.set_num_threads(1)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))
