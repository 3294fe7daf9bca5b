"""plugins/ is grouped by stage: each module directly in a stage folder registers hooks (it is
a stage implementation, loaded from DEFAULT_PLUGINS like a third party), and helper libraries
(plugins/lib, the sandbox) register none, so a reader can tell the two apart by the path."""
from __future__ import annotations

import importlib
from pathlib import Path

from srscode.core.registry import DEFAULT_PLUGINS

ROOT = Path(__file__).resolve().parents[1] / "plugins"
HELPER_FOLDERS = {ROOT / "lib", ROOT / "evaluate" / "sandbox"}


def _module_name(path: Path) -> str:
    return "srscode.plugins." + ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _hook_names(module) -> list[str]:
    return [name for name, obj in vars(module).items()
            if name.startswith("srscode_") and callable(obj) and hasattr(obj, "srscode_impl")]


def test_every_stage_module_registers_hooks_and_is_loaded_by_default() -> None:
    stage_modules = [p for p in ROOT.glob("*/*.py") if p.name != "__init__.py" and p.parent not in HELPER_FOLDERS]
    assert len(stage_modules) >= 15, stage_modules
    for path in stage_modules:
        name = _module_name(path)
        assert _hook_names(importlib.import_module(name)), f"{name} is in a stage folder but registers no hook"
        assert name in DEFAULT_PLUGINS, f"{name} registers hooks but DEFAULT_PLUGINS does not load it"


def test_helpers_register_no_hooks_and_no_module_sits_at_the_top() -> None:
    helpers = [p for folder in HELPER_FOLDERS for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert helpers
    for path in helpers:
        name = _module_name(path)
        assert not _hook_names(importlib.import_module(name)), f"{name} is a helper but registers hooks"
    loose = [p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a stage folder: {loose}"
