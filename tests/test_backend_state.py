"""No test hands process-wide backend state (accelerate's shared state, the resolved
backend) to a later test in the same process (``backend_state.py``).

On a GPU host, ``pytest -n 8`` failed GPU tests with "accelerate's state in this process
uses 'cpu'": an earlier test in the same xdist worker had trained with ``use_cpu=True``.
This reproduces that on any machine: in one pytest process, a first test initialises
accelerate for another device than the one a second test resolves; the second test must
find a clean state and get its own device. A control run without the fixture shows the
reproduction really fails there, so the check cannot pass vacuously.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

LEAKY_MODULE = textwrap.dedent(
    """
    import torch
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    from srscode.core.config import HardwareConfig
    from srscode.hardware import builtin_registry, resolve_backend
    from srscode.hardware import resolve as hw_resolve


    def test_1_leaves_accelerate_on_another_device(monkeypatch):
        # what a CPU-pinned trainer test does (TRL's Trainer: PartialState(cpu=True), then
        # Accelerator(cpu=True)), and it resolves a backend too
        monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
        assert resolve_backend(HardwareConfig(), builtin_registry()).device.type == "cpu"
        Accelerator(cpu=True)
        assert AcceleratorState._shared_state
        # this host has no GPU: stand in for "initialised for a device other than the one
        # the next test resolves", which on a GPU host is simply cpu vs cuda
        PartialState._shared_state["device"] = torch.device("meta")
        assert hw_resolve._cache


    def test_2_resolves_its_own_device():
        from accelerate.state import GradientState

        assert not PartialState._shared_state, "PartialState leaked from the test before"
        assert not AcceleratorState._shared_state and not GradientState._shared_state
        assert not hw_resolve._cache, "the resolved backend leaked from the test before"
        b = resolve_backend(HardwareConfig(backend="cpu"), builtin_registry())
        assert b.device == torch.device("cpu")  # ConfigError here when the state leaked
    """
)


def run_pair(tmp_path: Path, with_fixture: bool) -> subprocess.CompletedProcess:
    """Both tests in one fresh pytest process (no xdist), in file order."""
    (tmp_path / "test_pair.py").write_text(LEAKY_MODULE)
    # the same wiring as tests/conftest.py, or none for the control run
    conftest = "from backend_state import clean_backend_state  # noqa: F401\n" if with_fixture else ""
    (tmp_path / "conftest.py").write_text(conftest)
    env = {k: v for k, v in os.environ.items() if k not in ("SRSCODE_BACKEND", "SRSCODE_EXPECT_BACKEND", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no xdist, no timeout plugin: one plain process
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--rootdir", str(tmp_path),
         "-c", os.devnull, str(tmp_path / "test_pair.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_test_that_initialises_accelerate_leaves_a_clean_state_for_the_next(tmp_path):
    proc = run_pair(tmp_path, with_fixture=True)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_without_the_fixture_the_reproduction_fails_as_on_the_gpu_host(tmp_path):
    proc = run_pair(tmp_path, with_fixture=False)
    out = proc.stdout
    assert proc.returncode == 1 and "1 failed, 1 passed" in out, out[-4000:] + proc.stderr[-2000:]
    assert "PASSED test_pair.py::test_1_leaves_accelerate_on_another_device" in out
    assert "FAILED test_pair.py::test_2_resolves_its_own_device" in out and "PartialState leaked" in out


def test_the_leaked_state_is_what_the_backend_check_refuses():
    """The check the GPU tests tripped over (``ResolvedBackend.device``) refuses accelerate
    state made for another device, so the state, not the check, has to be clean."""
    import torch
    from accelerate import PartialState

    from srscode.core.config import HardwareConfig
    from srscode.core.errors import ConfigError
    from srscode.hardware import builtin_registry, resolve_backend

    b = resolve_backend(HardwareConfig(backend="cpu"), builtin_registry())
    PartialState(cpu=True)
    PartialState._shared_state["device"] = torch.device("meta")
    with pytest.raises(ConfigError, match="accelerate's state in this process uses 'meta'"):
        b.device
    # the autouse fixture resets it after this test; test_a_test_that_initialises... shows that


def test_every_test_here_runs_with_the_fixture(request):
    from backend_state import accelerate_initialised

    assert "clean_backend_state" in request.fixturenames  # wired for the whole suite by conftest.py
    assert accelerate_initialised() == {"PartialState": False, "AcceleratorState": False, "GradientState": False}
