"""examples/: every config validates (schema and each component's params); the dry
ablation configs run and `srscode report --compare` draws them; the example plugin
package installs through its entry point and its own tests pass."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from srscode.core.config import load_config
from srscode.core.ledger import Ledger
from srscode.core.registry import make_plugin_manager, validate_params

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "experiment").glob("*.yaml"))
ABLATIONS = ("srs", "uniform", "sft-only", "learnability")


@pytest.fixture(scope="module")
def registry():
    return make_plugin_manager(load_entry_points=False)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(EXAMPLES)) for p in CONFIGS])
def test_every_example_config_validates(path, registry):
    cfg, _ = load_config(path)
    refs = [("prompt", cfg.stages.prompt, "stages.prompt"), ("generator", cfg.stages.generator, "stages.generator"),
            ("evaluator", cfg.stages.evaluator, "stages.evaluator"), ("memory", cfg.stages.memory, "stages.memory"),
            ("scheduler", cfg.stages.scheduler, "stages.scheduler"), ("trainer", cfg.stages.trainer, "stages.trainer")]
    for stage, ref, key in refs:
        spec = registry.get(stage, ref.name, key).spec
        validate_params(spec.params, ref.params, f"{key}.params")
    if cfg.dpo.every != "never":
        spec = registry.get("trainer", cfg.dpo.name, "dpo.name").spec
        validate_params(spec.params, cfg.dpo.params, "dpo.params")
    spec = registry.get("dataset", cfg.data.source, "data.source").spec
    validate_params(spec.params, cfg.data.params, "data.params")


def test_ablations_share_data_seed_and_budget():
    def budget(cfg):
        gen = cfg.stages.generator.params
        tokens = gen.get("max_new_tokens", gen.get("max_tokens"))
        return cfg.data, cfg.seed, cfg.model, cfg.rounds, cfg.batch_size, cfg.candidates, tokens, cfg.validation

    for suffix in ("", "-dry"):
        cfgs = {name: load_config(EXAMPLES / f"{name}{suffix}.yaml")[0] for name in ABLATIONS}
        assert len({repr(budget(c)) for c in cfgs.values()}) == 1, suffix
        srs, uniform, sft = cfgs["srs"], cfgs["uniform"], cfgs["sft-only"]
        assert (srs.stages.scheduler.name, srs.stages.memory.name, srs.dpo.every) == ("ratio", "sm2", "end")
        assert (uniform.stages.scheduler.name, uniform.stages.memory.name) == ("uniform", "none")
        assert sft.dpo.every == "never" and sft.stages.scheduler == srs.stages.scheduler
        learn = cfgs["learnability"]
        assert (learn.stages.scheduler.name, learn.dpo.every) == ("learnability", srs.dpo.every)
        if not suffix:
            assert {c.stages.generator.name for c in cfgs.values()} == {"hf"}
            assert {c.stages.trainer.name for c in cfgs.values()} == {"lora-sft"}
            assert srs.model.name_or_path == "" and srs.dpo.name == "dpo"


def test_experiment_arms_differ_only_where_their_names_say():
    """examples/experiment (the H200 experiment, docs/results.md): every arm has the same
    data, seed, model, rounds, batch, candidates, generator, evaluator, trainer, validation
    sets and retention probe; each differs from srs only in its own stage(s), and only srs
    validates before training (the others start from the same model, seed and prompts)."""
    exp = EXAMPLES / "experiment"
    dicts = {p.stem: load_config(p)[1] for p in sorted(exp.glob("*.yaml"))}
    assert set(dicts) == {"srs", "uniform", "learnability", "sft-only", "reflect"}
    differs = {"uniform": {"memory", "scheduler"}, "learnability": {"memory", "scheduler"},
               "sft-only": {"dpo"}, "reflect": {"prompt"}}
    srs = dicts["srs"]
    assert srs["validation"]["at_start"] is True

    def flat(d):
        out = {k: v for k, v in d.items() if k not in ("stages", "validation")}
        out.update(d["stages"])
        out["validation"] = {k: v for k, v in d["validation"].items() if k != "at_start"}
        return out

    base = flat(srs)
    for arm, own in differs.items():
        d = flat(dicts[arm])
        assert dicts[arm]["validation"]["at_start"] is False, arm
        changed = {k for k in set(base) | set(d) if base.get(k) != d.get(k)}
        assert changed == own, (arm, changed)
    cfg = load_config(exp / "srs.yaml")[0]
    assert (cfg.data.source, cfg.data.train_ratio, cfg.rounds) == ("kodcode", 0.7, 10)
    assert [s.name for s in cfg.validation.sources] == ["humaneval"] and cfg.validation.candidates >= 4
    assert cfg.retention.at_end and cfg.stages.prompt.name == "qwen"


def test_reflection_pair_differs_in_the_prompt_stage_only():
    """reflect / reflect-off (issue 18): srs's data, seed, model and budget; the configs are
    equal key for key except stages.prompt, reflect around qwen vs plain qwen."""
    for suffix in ("", "-dry"):
        srs = load_config(EXAMPLES / f"srs{suffix}.yaml")[0]
        on, on_dict = load_config(EXAMPLES / f"reflect{suffix}.yaml")
        off, off_dict = load_config(EXAMPLES / f"reflect-off{suffix}.yaml")
        for cfg in (on, off):
            gen, srs_gen = cfg.stages.generator.params, srs.stages.generator.params
            assert (cfg.data, cfg.seed, cfg.model, cfg.rounds, cfg.batch_size, cfg.candidates, cfg.validation) == \
                (srs.data, srs.seed, srs.model, srs.rounds, srs.batch_size, srs.candidates, srs.validation), suffix
            assert (cfg.stages.generator.name, gen.get("max_new_tokens")) == \
                (srs.stages.generator.name, srs_gen.get("max_new_tokens")), suffix
        assert (on.stages.prompt.name, on.stages.prompt.params) == ("reflect", {"inner": "qwen"}), suffix
        assert (off.stages.prompt.name, off.stages.prompt.params) == ("qwen", {}), suffix
        del on_dict["stages"]["prompt"], off_dict["stages"]["prompt"]
        assert on_dict == off_dict, suffix
        assert on.sft.target == "reference"  # the arms differ in the prompts, not in what SFT trains on


def test_dry_ablations_run_and_compare(tmp_path):
    """The four dry configs through the command line, side by side (the evaluator
    mostly waits on its workers, so four runs at once take little longer than one)."""
    pytest.importorskip("matplotlib", reason="srscode report needs matplotlib (pip install matplotlib)")
    from srscode.cli.report import add_report_parser

    dirs = [tmp_path / f"{name}-dry" for name in ABLATIONS]
    # plain progress (as in CI) and a private reference cache of the evaluator
    env = {**os.environ, "SRSCODE_PROGRESS": "plain", "SRSCODE_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "srscode.cli.main", "run", str(EXAMPLES / f"{name}-dry.yaml"),
                          "--run-dir", str(d)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for name, d in zip(ABLATIONS, dirs)
    ]
    for name, proc in zip(ABLATIONS, procs):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}-dry:\n{out[-3000:]}"
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out), "control characters in non-terminal output"
    for name, d in zip(ABLATIONS, dirs):
        cfg, _ = load_config(EXAMPLES / f"{name}-dry.yaml")
        led = Ledger(d, create=False)
        try:
            assert led.last_round() == cfg.rounds and sorted(led.validations()) == [0, cfg.rounds + 1]
        finally:
            led.close()
        assert [json.loads(x)["round"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(dirs[0]), "--compare", *map(str, dirs[1:])])
    assert args.func(args) == 0
    out = dirs[0] / "report-compare"
    assert (out / "report.html").exists() and (out / "pass_rate.png").read_bytes().startswith(b"\x89PNG")
    html = (out / "report.html").read_text()
    assert all(f"<tr><td>{d.name}</td>" in html for d in dirs)


def test_plugin_fsrs_package_passes_its_own_tests(tmp_path):
    """pip-install the example package (its pyproject declares the entry point) into a
    private target dir, then run its test suite against it in a fresh interpreter."""
    src = tmp_path / "src"
    shutil.copytree(EXAMPLES / "plugin-fsrs", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        check=True, capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p),
           "SRSCODE_PROGRESS": "off"}  # keep what the caller put on the path (an offline GPU host's wheels)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(src / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
