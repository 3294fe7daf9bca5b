"""The registry: built-ins through the same path as third parties, a real third-party
package found through the ``srscode`` entry-point group, and the error cases."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import ConfigError, RegistryError
from srscode.core.hookspecs import hookimpl
from srscode.core.ledger import Ledger
from srscode.core.registry import DEFAULT_PLUGINS, make_plugin_manager
from srscode.core.types import ComponentSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@pytest.fixture(scope="module")
def leitner_site(tmp_path_factory):
    """pip-install the third-party package (its own pyproject declares the entry point)
    into a private target dir and put it on sys.path, as an installed plugin would be."""
    root = tmp_path_factory.mktemp("leitner")
    src = root / "src"
    shutil.copytree(HERE / "thirdparty" / "srscode-leitner", src)
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        check=True, capture_output=True,
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    for mod in [m for m in sys.modules if m.startswith("srscode_leitner")]:
        del sys.modules[mod]
    importlib.invalidate_caches()


def test_every_builtin_is_registered_through_the_plugin_manager():
    reg = make_plugin_manager(load_entry_points=False)
    assert [p.name for p in reg.plugins if p.builtin] == list(DEFAULT_PLUGINS)
    expected = {
        "prompt": {"qwen", "deepseek", "codellama", "base", "chat"},
        "generator": {"replay", "hf", "vllm"},
        "evaluator": {"subprocess", "pytest-xdist"},
        "memory": {"sm2", "none"},
        "scheduler": {"ratio", "uniform", "learnability"},
        "trainer": {"none", "lora-sft", "dpo"},
        "dataset": {"kodcode", "starter"},
        "backend": {"cpu", "cuda", "ascend"},
    }
    for stage, names in expected.items():
        assert names <= set(reg.names(stage)), stage


def test_third_party_memory_policy_runs_from_its_entry_point(leitner_site, tmp_path):
    reg = make_plugin_manager()
    provided = reg.get("memory", "leitner", "stages.memory.name")
    assert provided.plugin.dist == "srscode-leitner" and provided.plugin.version == "0.3.1"
    cfg_dict = fake_config(rounds=3)
    cfg_dict["stages"]["memory"] = {"name": "leitner", "params": {"boxes": 3}}
    cfg = validate(cfg_dict)
    Engine(cfg, cfg.model_dump(mode="json"), tmp_path, extra_plugins=[fake_stages], quiet=True).run()
    led = Ledger(tmp_path, create=False)
    boxes = {s.extra["box"] for s in led.all_states()}
    assert boxes >= {1, 2}  # the policy's own state reached the ledger
    led.close()
    # and it is listed by `srscode plugins`
    out = subprocess.run([sys.executable, "-m", "srscode.cli.main", "plugins"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(leitner_site), os.environ.get("PYTHONPATH", "")) if p)},
                         check=True).stdout
    assert "leitner (srscode-leitner 0.3.1, third-party)" in out and "memory: leitner" in out


def test_third_party_params_are_validated(leitner_site):
    reg = make_plugin_manager()
    with pytest.raises(ConfigError, match=r"stages\.memory\.params\.boxs: unknown key"):
        reg.build("memory", "leitner", {"boxs": 3}, None, "stages.memory")
    with pytest.raises(ConfigError, match=r"stages\.memory\.params\.boxes: .*greater than or equal to 2"):
        reg.build("memory", "leitner", {"boxes": 1}, None, "stages.memory")


def _broken_dist(tmp_path: Path) -> Path:
    site = tmp_path / "broken-site"
    dist = site / "srscode_broken-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: srscode-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[srscode]\nbroken = srscode_broken_plugin\n")
    (site / "srscode_broken_plugin.py").write_text("import a_module_that_does_not_exist\n")
    return site


def test_plugin_that_fails_to_import_warns_then_errors_when_used(tmp_path, monkeypatch):
    site = _broken_dist(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    with pytest.warns(RuntimeWarning, match=r"plugin 'broken' from srscode-broken 1.0 failed to import"):
        reg = make_plugin_manager()
    assert "sm2" in reg.names("memory")  # the rest of the engine still works
    with pytest.raises(RegistryError, match=r"unknown memory 'fsrs'.*broken: ModuleNotFoundError"):
        reg.get("memory", "fsrs", "stages.memory.name")


def test_unknown_name_lists_the_choices():
    reg = make_plugin_manager(load_entry_points=False)
    with pytest.raises(RegistryError, match=r"stages\.scheduler\.name: unknown scheduler 'ratoi'\. Available: learnability, ratio, uniform"):
        reg.get("scheduler", "ratoi", "stages.scheduler.name")


def test_a_name_provided_twice_names_both_plugins():
    dup = types.ModuleType("dup_plugin")

    @hookimpl
    def srscode_memory_policies():
        yield ComponentSpec("sm2", lambda p, c: None)

    dup.srscode_memory_policies = srscode_memory_policies
    with pytest.raises(RegistryError, match=r"memory name 'sm2' is provided twice: by plugin 'srscode.plugins.memory.sm2'.*dup_plugin"):
        make_plugin_manager([dup], load_entry_points=False)


def test_builtin_params_unknown_key_and_wrong_type():
    reg = make_plugin_manager(load_entry_points=False)
    with pytest.raises(ConfigError, match=r"stages\.scheduler\.params\.new_ratio: unknown key.*Allowed keys: new_task_ratio"):
        reg.build("scheduler", "ratio", {"new_ratio": 0.5}, None, "stages.scheduler")
    with pytest.raises(ConfigError, match=r"stages\.scheduler\.params\.new_task_ratio: .*1(\.0)?.*got 1\.5"):
        reg.build("scheduler", "ratio", {"new_task_ratio": 1.5}, None, "stages.scheduler")
    with pytest.raises(ConfigError, match=r"stages\.memory\.params\.initial_ef: .*got 'high'"):
        reg.build("memory", "sm2", {"initial_ef": "high"}, None, "stages.memory")
    with pytest.raises(ConfigError, match=r"stages\.scheduler\.params: this component takes no params"):
        reg.build("scheduler", "uniform", {"x": 1}, None, "stages.scheduler")


def test_the_new_evaluator_walkthrough_runs_through_srscode_evaluate(tmp_path):
    """docs/plugins.md's evaluator, saved as the module it names and registered through
    SRSCODE_PLUGINS, judges a file with `python -m srscode evaluate --evaluator threads`."""
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = page.split("\n## A new evaluator\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "srscode_threads.py").write_text(code)
    ref, test = "def add(a, b):\n    return a + b\n", "def test_add():\n    assert add(2, 3) == 5\n"
    lines = [{"id": "ok", "solution": ref, "test": test, "reference": ref},
             {"id": "wrong", "solution": "def add(a, b):\n    return a - b\n", "test": test, "reference": ref},
             {"id": "exit", "solution": "import os\nos._exit(0)\n", "test": test}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    env = {**os.environ, "SRSCODE_PLUGINS": "srscode_threads",
           "PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "srscode", "evaluate", "in.jsonl", "-o", "out.jsonl", "--evaluator", "threads",
                           "--workers", "2", "--timeout", "20", "--cache", "none"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [("ok", "passed"), ("wrong", "failed"), ("exit", "crashed")]
    assert "evaluated 3 line(s)" in proc.stderr
