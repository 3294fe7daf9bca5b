""".ci/check_install_sets.py: pip's resolver, run against the real index metadata, rejects an
unsatisfiable pin set and names the conflict. The network test resolves only the old
[ascend] pair (torch==2.10.0 + vllm==0.23.0, whose CUDA wheel requires torch==2.11.0) and
skips when PyPI cannot be reached."""
from __future__ import annotations

import importlib.util
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("check_install_sets", ROOT / ".ci" / "check_install_sets.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_install_sets", mod)
    spec.loader.exec_module(mod)
    return mod


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5).close()
        return True
    except OSError:
        return False


def test_requirements_come_from_pyproject():
    cis = _script()
    reqs = cis.project_requirements("ascend")
    assert any(r.startswith("vllm-ascend==") for r in reqs)
    assert any(r.startswith("transformers") for r in reqs)  # the base dependencies come too
    assert cis.tox_cpu_torch().startswith("torch==")


def test_failure_summary_names_the_conflict():
    cis = _script()
    output = "\n".join([
        "Collecting vllm==0.23.0",
        "INFO: pip is looking at multiple versions of vllm to determine which version is compatible.",
        "ERROR: Cannot install vllm==0.23.0 and torch==2.10.0 because these package versions have conflicting dependencies.",
        "",
        "The conflict is caused by:",
        "    The user requested torch==2.10.0",
        "    vllm 0.23.0 depends on torch==2.11.0",
        "",
        "To fix this you could try to:",
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/",
    ])
    text = cis.summarize_failure(output)
    assert "Cannot install vllm==0.23.0 and torch==2.10.0" in text
    assert "vllm 0.23.0 depends on torch==2.11.0" in text
    assert "Collecting" not in text and "To fix" not in text


def test_the_marker_environment_is_the_targets():
    cis = _script()
    env = cis.marker_env(cis.TARGETS["ascend-aarch64"])
    assert env["platform_machine"] == "aarch64" and env["python_version"] == "3.11"
    assert "manylinux_2_17_aarch64" in cis.platforms(cis.TARGETS["ascend-aarch64"])


@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI (https://pypi.org/simple) is not reachable from here")
def test_old_ascend_pair_is_reported_unsatisfiable():
    cis = _script()
    target = cis.Target("old-ascend", "ascend", "3.11", "aarch64")
    result = cis.check_target(target, requirements=["torch==2.10.0", "vllm==0.23.0"], timeout=240)
    assert not result.ok, result.message
    assert "pip cannot resolve this set" in result.message
    assert "torch==2.11.0" in result.message and "torch==2.10.0" in result.message, result.message
