"""The bad-input corpus (tests/badinput/cases.yaml): every malformed config, dataset row,
model path and run dir gets a one-paragraph message naming the problem and where it is,
and never a traceback unless ``--debug`` is given."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).resolve().parent / "badinput"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def _argv(case: dict[str, Any], tmp: Path) -> list[str]:
    if "config" in case:
        argv = ["-q", "run", f"{{dir}}/config/{case['config']}", "--run-dir", "{tmp}/run"]
    elif "data" in case:
        argv = ["-q", "run", "{dir}/data/run.yaml", "--set", f"data.path={{dir}}/data/{case['data']}",
                "--run-dir", "{tmp}/run"]
    else:
        argv = list(case["argv"])
    return [a.replace("{dir}", str(CORPUS)).replace("{tmp}", str(tmp)) for a in argv]


def _pattern(text: str, tmp: Path) -> str:
    return text.replace("{dir}", re.escape(str(CORPUS))).replace("{tmp}", re.escape(str(tmp)))


def _setup(kind: str | None, tmp: Path) -> None:
    if kind is None:
        return
    if kind == "directory":
        (tmp / "config.yaml").mkdir()
    elif kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("running as root: file modes do not stop root from reading a file")
        shutil.copy(CORPUS / "config" / "base.yaml", tmp / "config.yaml")
        (tmp / "config.yaml").chmod(0)
    elif kind == "other-run":
        from srscode.core.config import load_config
        from srscode.core.ledger import Ledger

        _, stored = load_config(CORPUS / "config" / "other-run.yaml")
        led = Ledger(tmp / "run")
        led.set_meta(config=stored)
        led.close()
    else:
        raise ValueError(f"unknown setup {kind!r}")


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=case["xfail"]))
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRSCODE_FAULT")}
    env["SRSCODE_CACHE_DIR"] = str(cwd / "cache")  # the evaluator's reference cache: not ~/.cache
    return subprocess.run([sys.executable, "-m", "srscode.cli.main", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: dict[str, Any], tmp_path: Path) -> None:
    argv = _argv(case, tmp_path)
    _setup(case.get("setup"), tmp_path)
    proc = run_cli(argv, tmp_path)
    err, out = proc.stderr, proc.stdout
    assert proc.returncode == case.get("rc", 2), f"rc {proc.returncode}\nstderr:\n{err}\nstdout:\n{out}"
    assert "Traceback" not in err, err
    for pat in case.get("stderr", []):
        assert re.search(_pattern(pat, tmp_path), err), f"{pat!r} not in stderr:\n{err}"
    for pat in case.get("stdout", []):
        assert re.search(_pattern(pat, tmp_path), out), f"{pat!r} not in stdout:\n{out}"
    if proc.returncode != 0:
        errors = [line for line in err.splitlines() if line.startswith("srscode: error:")]
        assert len(errors) == 1, f"expected one error paragraph:\n{err}"
        assert "internal error" not in err, err
    if case.get("untouched"):
        assert not (tmp_path / "run").exists(), "the run dir was touched before the config was found bad"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """The traceback is there for whoever asks for it."""
    argv = ["--debug", "-q", "run", str(CORPUS / "config" / "unknown-generator.yaml"), "--run-dir", str(tmp_path / "r")]
    proc = run_cli(argv, tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "unknown generator 'gpt5'" in proc.stderr


def test_a_subcommand_module_that_fails_to_import_is_a_loud_error(monkeypatch, capsys) -> None:
    """Not a command that silently goes missing from `srscode --help`."""
    from srscode.cli.main import SubcommandImportError, build_parser, main

    monkeypatch.setitem(sys.modules, "srscode.cli.report", None)  # any import of it now fails
    with pytest.raises(SubcommandImportError, match=r"subcommand module srscode\.cli\.report failed to import \(ModuleNotFoundError: import of srscode\.cli\.report halted"):
        build_parser()
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("srscode: internal error: the subcommand module srscode.cli.report failed to import"), err
    assert "Traceback" not in err and "--debug" in err
    with pytest.raises(SubcommandImportError):
        main(["--debug", "plugins"])


def test_every_corpus_file_has_a_case() -> None:
    """A malformed input added to the corpus without an expected message is a test that
    never runs."""
    named = {f"config/{c['config']}" for c in CASES if "config" in c}
    named |= {f"data/{c['data']}" for c in CASES if "data" in c}
    named |= {a.replace("{dir}/", "") for c in CASES for a in c.get("argv", []) if a.startswith("{dir}/")}
    named |= {a.split("={dir}/", 1)[1] for c in CASES for a in c.get("argv", []) if "={dir}/" in a}
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name != "cases.yaml"}
    helpers = {"config/base.yaml", "config/other-run.yaml", "data/run.yaml"}
    assert files - helpers - named == set()
    assert len({c["id"] for c in CASES}) == len(CASES), "duplicate case ids"
