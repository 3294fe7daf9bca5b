"""Stages talk through typed channels only: no untyped ``ctx.cache`` side channel in plugins,
the answer format owned by the prompt builders, trainers saying their LoRA rank."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = "```" + "python"  # spelled apart so this file does not hold the literal it looks for


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def is_ctx(node: ast.expr) -> bool:
    """``ctx`` or ``<anything>.ctx``."""
    return (isinstance(node, ast.Name) and node.id == "ctx") or (isinstance(node, ast.Attribute) and node.attr == "ctx")


def cache_uses(path: Path) -> list[str]:
    """``ctx.cache`` (read or write) and any ``<x>.cache[...]`` in a module's code (docstrings
    and comments aside)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        ctx_cache = isinstance(node, ast.Attribute) and node.attr == "cache" and is_ctx(node.value)
        indexed = isinstance(node, ast.Subscript) and getattr(node.value, "attr", None) == "cache"
        if ctx_cache or indexed:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_plugin_uses_a_ctx_cache_side_channel():
    assert sources("plugins"), "no plugin sources found"
    found = [f"{path.parent.relative_to(ROOT)}/{use}" for path in sources("plugins") for use in cache_uses(path)]
    assert found == [], "plugins read or write an untyped cache; use StageContext's typed fields:\n" + "\n".join(found)


def test_the_scan_sees_cache_uses_and_nothing_else(tmp_path):
    # the test above must not pass for want of looking
    f = tmp_path / "m.py"
    f.write_text(
        '"""ctx.cache["doc"]"""\n'
        "def g(self, ctx):\n    ctx.cache.get('x')\n    self.ctx.cache['y'] = 1\n    z = self.cache['k']\n"
        "    self.cache.get('fine')  # an object's own cache, not the context's\n"
    )
    uses = {u.split(": ", 1)[1] for u in cache_uses(f)}
    assert uses == {"ctx.cache", "self.ctx.cache", "self.ctx.cache['y']", "self.cache['k']"}


def test_only_the_prompt_builders_write_the_python_fence():
    prompt_dir = ROOT / "plugins" / "prompt"
    found = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in sources("core", "plugins", "srscode_root", "hardware")
        if prompt_dir not in path.parents
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FENCE in line
    ]
    assert found == [], "the answer format belongs to the prompt builders (render_target):\n" + "\n".join(found)


def test_stage_context_has_typed_channels_and_no_cache():
    from srscode.core.config import RunConfig
    from srscode.core.context import SharedModels, StageContext

    ctx = StageContext(config=RunConfig())
    names = {f.name for f in dataclasses.fields(StageContext)}
    assert {"tasks", "prompt_builder", "adapter_rank", "models"} <= names
    assert "cache" not in names and not hasattr(ctx, "cache") and not hasattr(ctx, "hook")
    assert dict(ctx.tasks) == {} and ctx.prompt_builder is None and ctx.adapter_rank is None
    assert ctx.models == SharedModels() and ctx.models is not StageContext(config=RunConfig()).models


@pytest.mark.parametrize(
    ("name", "params", "rank"),
    [("lora-sft", {"r": 12}, 12), ("lora-sft", {}, 16), ("dpo", {"r": 32}, 32), ("none", None, None)],
)
def test_trainers_say_the_lora_rank_they_produce(name, params, rank):
    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext
    from srscode.core.registry import validate_params
    from srscode.plugins.train import dpo, lora_sft, null

    specs = [s for m in (lora_sft, dpo, null) for s in m.srscode_trainers()]
    (spec,) = [s for s in specs if s.name == name]
    p = validate_params(spec.params, params, "params") if spec.params is not None else None
    assert spec.factory(p, StageContext(config=RunConfig())).adapter_rank == rank
