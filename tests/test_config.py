"""Config loading: key paths and offending values in every error; --set overrides."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from srscode.core.config import diff_keys, load_config
from srscode.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_design_card_shape_loads(tmp_path):
    p = write(tmp_path, """
model: {name_or_path: Qwen/Qwen2.5-Coder-1.5B-Instruct, family: qwen}
data: {source: kodcode, path: KodCode/KodCode-V1, train_ratio: 0.9}
rounds: 20
batch_size: 512
candidates: 8
stages:
  prompt:    {name: chat}
  generator: {name: vllm, params: {temperature: 0.8, top_p: 0.95, max_tokens: 768}}
  evaluator: {name: pytest-xdist, params: {workers: auto, timeout_s: 10}}
  memory:    {name: sm2}
  scheduler: {name: ratio, params: {new_task_ratio: 0.7}}
  trainer:   {name: lora-sft, params: {r: 16, lr: 1.0e-4}}
dpo: {every: end, beta: 0.1}
hardware: {backend: auto, dtype: auto}
""")
    cfg, data = load_config(p)
    assert cfg.stages.generator.params["max_tokens"] == 768 and cfg.dpo.every == "end"
    assert data["model"]["family"] == "qwen"


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("rounds: 3\nbatchsize: 4\n", r"batchsize: Extra inputs are not permitted \(got 4\)"),
        ("rounds: three\n", r"rounds: .*valid integer.*got 'three'"),
        ("rounds: -1\n", r"rounds: .*greater than or equal to 1.*got -1"),
        ("candidates: 0\n", r"candidates: .*greater than or equal to 1"),
        ("data: {train_ratio: 1.5}\n", r"data\.train_ratio: .*less than or equal to 1.*got 1\.5"),
        ("stages: {memory: {name: sm2, param: {}}}\n", r"stages\.memory\.param: Extra inputs"),
        ("stages: {memory: {params: {}}}\n", r"stages\.memory\.name: Field required"),
        ("dpo: {every: 0}\n", r"dpo\.every"),
        ("hardware: {dtype: float8}\n", r"hardware\.dtype: .*got 'float8'"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("rounds: [1,\n", r"not valid YAML at line \d+, column \d+"),
    ],
)
def test_bad_configs_name_the_key_path_and_value(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, text))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00rounds")
    with pytest.raises(ConfigError, match=r"bin\.yaml cannot be read"):
        load_config(p)


def test_set_overrides_parse_yaml_values(tmp_path):
    p = write(tmp_path, "rounds: 3\n")
    cfg, _ = load_config(p, ["rounds=5", "stages.scheduler.params.new_task_ratio=0.5", "model.family=qwen"])
    assert cfg.rounds == 5 and cfg.stages.scheduler.params["new_task_ratio"] == 0.5 and cfg.model.family == "qwen"
    with pytest.raises(ConfigError, match=r"rounds: .*got 'many'"):
        load_config(p, ["rounds=many"])
    with pytest.raises(ConfigError, match=r"--set 'rounds': expected key\.path=value"):
        load_config(p, ["rounds"])
    with pytest.raises(ConfigError, match=r"--set rounds\.x: rounds is 3, not a mapping"):
        load_config(p, ["rounds.x=1"])


def test_diff_keys():
    assert diff_keys({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 1, "c": 3}, "d": 1, "e": 0}) == ["a.c", "e"]


def test_cli_reports_config_errors_without_traceback(tmp_path):
    p = write(tmp_path, "rounds: 3\nstages: {scheduler: {name: ratio, params: {new_task_ratio: 2}}}\n")
    proc = subprocess.run([sys.executable, "-m", "srscode.cli.main", "run", str(p), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "stages.scheduler.params.new_task_ratio" in proc.stderr and "Traceback" not in proc.stderr


def test_help_is_fast_and_imports_no_heavy_module():
    code = ("import sys; from srscode.cli import main as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'vllm') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from srscode.core.registry import make_plugin_manager; make_plugin_manager()\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'vllm') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
