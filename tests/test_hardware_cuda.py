"""On a real NVIDIA GPU (skipped elsewhere; must run under `tox -e cuda`)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from srscode.core.config import HardwareConfig
from srscode.hardware import builtin_registry, reset_cache, resolve_backend

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("SRSCODE_BACKEND", raising=False)
    reset_cache()
    yield
    reset_cache()


def test_probe_leaves_cuda_uninitialised():
    # In a fresh interpreter: resolving (probe, name, bf16 check) must not initialise CUDA,
    # so the process can still fork and no GPU memory is taken.
    code = textwrap.dedent(
        """
        import json, torch
        from srscode.core.config import HardwareConfig
        from srscode.hardware import builtin_registry, resolve_backend
        b = resolve_backend(HardwareConfig(), builtin_registry())
        print(json.dumps([b.name, b.dtype_name, b.device_name, b.device_count, torch.cuda.is_initialized()]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    name, dtype, device_name, count, initialised = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert (name, initialised) == ("cuda", False)
    assert count >= 1 and device_name  # read through NVML
    assert dtype in ("bf16", "fp16")


def test_resolve_and_compute_on_the_gpu():
    import torch
    from accelerate import PartialState

    b = resolve_backend(HardwareConfig(), builtin_registry())
    assert (b.name, b.device_type, b.collective, b.visible_devices_var) == ("cuda", "cuda", "nccl", "CUDA_VISIBLE_DEVICES")
    assert b.device_count == torch.cuda.device_count() >= 1
    major, _ = torch.cuda.get_device_capability(0)
    expected = "bf16" if major >= 8 else "fp16"  # L40S (8.9) and H100 (9.0): bf16
    assert (b.dtype_name, b.mixed_precision, b.use_cpu) == (expected, expected, False)
    assert b.device_name == torch.cuda.get_device_name(0)  # NVML's name is torch's name

    dev = b.device
    assert dev.type == "cuda" and PartialState().device.type == "cuda"
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(128, 128, generator=gen)
    y = torch.randn(128, 128, generator=gen)
    got = (x.to(dev, b.torch_dtype) @ y.to(dev, b.torch_dtype)).float().cpu()
    torch.testing.assert_close(got, x @ y, rtol=0.05, atol=0.5)

    meta = b.metadata()
    assert meta["backend"] == "cuda" and meta["device_name"] == b.device_name
    assert meta["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert b.check_compat() == []
