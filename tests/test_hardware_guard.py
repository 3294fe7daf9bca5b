"""The tox backend guard in tests/conftest.py, run on small generated test dirs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = (Path(__file__).parent / "conftest.py").read_text()
BACKEND_STATE = (Path(__file__).parent / "backend_state.py").read_text()  # conftest.py imports it

FAKE_CUDA = """
import torch
from srscode.hardware import nvml
torch.backends.cuda.is_built = lambda: True
torch.cuda.device_count = lambda: 1
nvml.device_info = lambda: nvml.NvmlInfo("NVIDIA H100", (9, 0))
"""

TESTS = """
import pytest

@pytest.mark.cuda
def test_cuda_runs():
    pass

@pytest.mark.cuda
def test_cuda_skips_itself():
    pytest.skip("no GPU after all")

@pytest.mark.ascend
def test_ascend():
    pass

@pytest.mark.accelerator
def test_any_accelerator():
    pass

def test_plain():
    pass
"""


def run_dir(tmp_path: Path, prelude: str, expect: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(GUARD + "\n" + prelude)  # hooks run after the fakes load
    (tmp_path / "backend_state.py").write_text(BACKEND_STATE)
    (tmp_path / "test_x.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    cuda: x\n    ascend: x\n    accelerator: x\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SRSCODE_EXPECT_BACKEND", "SRSCODE_BACKEND")}
    if expect:
        env["SRSCODE_EXPECT_BACKEND"] = expect
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA", str(tmp_path)],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )


def test_expected_backend_tests_must_run(tmp_path):
    res = run_dir(tmp_path, FAKE_CUDA, "cuda")
    out = res.stdout
    assert res.returncode == 1, out
    assert "PASSED test_x.py::test_cuda_runs" in out
    assert "PASSED test_x.py::test_any_accelerator" in out
    assert "FAILED test_x.py::test_cuda_skips_itself" in out  # a skip under the guard fails
    assert "SKIPPED" in out and "ascend: runs under SRSCODE_EXPECT_BACKEND for other hardware" in out
    assert "PASSED test_x.py::test_plain" in out


def test_wrong_backend_fails_the_session(tmp_path):
    res = run_dir(tmp_path, "", "ascend")  # no fakes: this machine is not an Ascend host
    assert res.returncode == 3
    assert "SRSCODE_EXPECT_BACKEND=ascend but" in res.stdout + res.stderr
    assert "PASSED" not in res.stdout


def test_without_guard_hardware_tests_skip(tmp_path):
    if os.environ.get("SRSCODE_EXPECT_BACKEND", "cpu") != "cpu":
        pytest.skip("checks the skip path of a machine without accelerators; this env expects one")
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU, so its cuda tests would rightly run")
    res = run_dir(tmp_path, "", None)
    out = res.stdout
    assert res.returncode == 0, out
    assert "PASSED test_x.py::test_plain" in out
    assert out.count("needs hardware this machine does not have") == 4
