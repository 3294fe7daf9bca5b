"""``srscode env`` through its argparse entry."""
from __future__ import annotations

import argparse
import json
import sys
import types

import pytest
from srscode.cli.env import add_env_parser
from srscode.hardware import reset_cache
from srscode.hardware.testing import fake_module


@pytest.fixture(autouse=True)
def cpu_backend(monkeypatch):
    from srscode.core import registry

    # only the hardware plugin: this test is about `env`, not the other stages
    monkeypatch.setattr(registry, "DEFAULT_PLUGINS", ("srscode.hardware.backends",))
    monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
    reset_cache()
    yield
    reset_cache()


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="srscode")
    add_env_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["env", *argv])
    rc = args.func(args)
    return rc, capsys.readouterr().out


def test_env_json(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "srscode.plugins.evaluate.sandbox", None)  # not written yet / absent
    rc, out = run(["--json"], capsys)
    info = json.loads(out)
    assert rc == 0
    assert (info["backend"], info["device_type"], info["collective"], info["dtype"]) == ("cpu", "cpu", "gloo", "fp32")
    assert info["source"] == "env"
    assert info["versions"]["python"] and "torch-npu" in info["versions"] and "cann" in info["versions"]
    assert info["compat_warnings"] == []
    assert info["evaluator_isolation"] == "unavailable"


def test_env_text_shows_isolation_status(monkeypatch, capsys):
    fake_module(monkeypatch, "srscode.plugins.evaluate.sandbox", isolation_status=lambda: {"namespaces": "unshare ok", "rlimits": True})
    rc, out = run([], capsys)
    assert rc == 0
    assert "backend             cpu (from env" in out
    assert "dtype               fp32 (mixed precision: no)" in out
    assert "evaluator isolation" in out and "unshare ok" in out
    assert "compat              ok" in out


def test_env_reports_unusable_backend(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hardware: {backend: ascend}\n")
    monkeypatch.setitem(sys.modules, "srscode.plugins.evaluate.sandbox", types.ModuleType("srscode.plugins.evaluate.sandbox"))
    rc, out = run([str(cfg)], capsys)
    assert rc == 2
    assert "ERROR: hardware.backend: backend 'ascend' is not usable here: torch_npu is not installed" in out
    assert "torch " in out  # versions are still printed
    assert "evaluator isolation unavailable" in out  # module without isolation_status


def test_env_set_override(capsys):
    rc, out = run(["--json", "--set", "hardware.dtype=bf16"], capsys)
    assert rc == 0 and json.loads(out)["dtype"] == "bf16"
