"""docs/: the configuration reference is what the generator makes from the schema now
(regenerate with `python docs/gen_config_reference.py`), the quickstart shows the
README's commands and a config that exists, and relative links resolve."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", DOCS / "gen_config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configuration_reference_is_current():
    gen = _generator()
    text = gen.generate()
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == text, "docs/configuration.md is stale: run `python docs/gen_config_reference.py`"
    # and it covers what it claims: every config section and every built-in component
    for key in ("`rounds`", "`log_with`", "## `dpo`", "`dpo.every`", "### `sm2`", "`params.initial_ef`",
                "### `pytest-xdist`", "### `lora-sft`", "### `ratio`", "`params.new_task_ratio`"):
        assert key in text, key


def test_the_docs_exist_and_link_to_files_that_exist():
    for name in ("quickstart.md", "configuration.md", "plugins.md", "run-dir.md"):
        assert (DOCS / name).stat().st_size > 500, name
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_quickstart_starts_with_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(pip install [^\n]+)\n```", readme)[:2]
    assert len(commands) == 2 and all(c in quick for c in commands)
    assert quick.index(commands[0]) < quick.index("Qwen2.5-Coder-1.5B-Instruct")


def test_quickstart_gpu_config_is_the_example_file():
    quick = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", quick, re.S)]
    shown = next(b for b in blocks if isinstance(b, dict) and b.get("stages", {}).get("generator", {}).get("name") == "vllm")
    assert shown == yaml.safe_load((ROOT / "examples" / "kodcode-qwen-vllm.yaml").read_text())
    assert shown["model"]["name_or_path"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
