"""Backend resolution with the real probes, on this machine and on faked CUDA / Ascend hosts."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest
from srscode.core.config import HardwareConfig, load_config
from srscode.core.errors import ConfigError
from srscode.core.hookspecs import hookimpl
from srscode.hardware import (
    Backend,
    ProbeResult,
    builtin_registry,
    reset_cache,
    resolve_backend,
)
from srscode.hardware import backends as hw_backends
from srscode.hardware.testing import (
    fake_ascend,
    fake_cuda,
    fake_vllm,
    no_cuda,
    record_start_method,
)

# One config file for every host: the shipped real-run example, no device names in it.
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kodcode-qwen-vllm.yaml"


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv("SRSCODE_BACKEND", raising=False)
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    reset_cache()
    yield record_start_method(monkeypatch)
    reset_cache()


@pytest.fixture
def example_hw() -> HardwareConfig:
    cfg, _ = load_config(EXAMPLE)
    assert (cfg.hardware.backend, cfg.hardware.dtype) == ("auto", "auto")
    return cfg.hardware


def resolve(hw: HardwareConfig | None = None, **kw):
    return resolve_backend(hw or HardwareConfig(**kw), builtin_registry())


def accelerator_here() -> bool:
    import torch

    return importlib.util.find_spec("torch_npu") is not None or torch.cuda.device_count() > 0


# ------------------------------------------------------------------------ the three hosts


def test_fake_ascend_resolves_npu_hccl_bf16_vllm(monkeypatch, example_hw, clean):
    no_cuda(monkeypatch)
    fake_ascend(monkeypatch, count=8, name="Ascend910B3")
    fake_vllm(monkeypatch, ascend_plugin=True)
    b = resolve(example_hw)
    assert (b.name, b.device_type, b.collective, b.visible_devices_var) == (
        "ascend", "npu", "hccl", "ASCEND_RT_VISIBLE_DEVICES"
    )
    assert (b.dtype_name, b.mixed_precision, b.use_cpu) == ("bf16", "bf16", False)
    assert b.preferred_generator == "vllm"
    assert (b.device_count, b.device_name, b.source) == (8, "Ascend910B3", "probe")
    import torch

    assert b.torch_dtype is torch.bfloat16
    # env preparation: vLLM workers spawned, torch multiprocessing asked for spawn
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert clean == ["spawn"]


def test_fake_910a_without_bf16_falls_back_to_fp16_or_errors(monkeypatch, clean):
    no_cuda(monkeypatch)
    fake_ascend(monkeypatch, name="Ascend910A", bf16=False)
    b = resolve()
    assert (b.name, b.dtype_name, b.mixed_precision) == ("ascend", "fp16", "fp16")
    reset_cache()
    with pytest.raises(ConfigError, match="require_bf16.*no bf16"):
        resolve(require_bf16=True)
    reset_cache()
    with pytest.raises(ConfigError, match="no bf16"):
        resolve(dtype="bf16")


def test_ascend_vllm_needs_its_platform_plugin(monkeypatch):
    no_cuda(monkeypatch)
    fake_ascend(monkeypatch)
    fake_vllm(monkeypatch, ascend_plugin=False)  # vLLM alone cannot drive an NPU
    assert resolve().preferred_generator == "hf"


def test_ascend_is_probed_before_cuda(monkeypatch):
    fake_cuda(monkeypatch)
    fake_ascend(monkeypatch)
    assert resolve().name == "ascend"


def test_fake_cuda_resolves_cuda_nccl_bf16(monkeypatch, example_hw, clean):
    fake_cuda(monkeypatch, count=2, name="NVIDIA L40S", compute_capability=(8, 9))
    fake_vllm(monkeypatch)
    b = resolve(example_hw)
    assert (b.name, b.device_type, b.collective, b.visible_devices_var) == (
        "cuda", "cuda", "nccl", "CUDA_VISIBLE_DEVICES"
    )
    assert (b.dtype_name, b.mixed_precision, b.use_cpu, b.preferred_generator) == ("bf16", "bf16", False, "vllm")
    assert (b.device_count, b.device_name) == (2, "NVIDIA L40S")
    assert clean == []  # CUDA keeps the default start method
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in os.environ


def test_fake_cuda_without_vllm_prefers_hf(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec() answers None: vLLM absent
    assert resolve().preferred_generator == "hf"


def test_pre_ampere_cuda_gets_fp16(monkeypatch):
    fake_cuda(monkeypatch, name="Tesla V100", compute_capability=(7, 0))
    assert resolve().dtype_name == "fp16"
    reset_cache()
    with pytest.raises(ConfigError, match="no bf16"):
        resolve(dtype="bf16")


def test_cuda_probe_does_not_call_is_available(monkeypatch):
    # torch.cuda.is_available() runs cuInit by default and poisons fork; the probe must not use it
    import torch

    def boom():
        raise AssertionError("probe called torch.cuda.is_available()")

    monkeypatch.setattr(torch.cuda, "is_available", boom)
    fake_cuda(monkeypatch)
    assert resolve().name == "cuda"


def test_this_machine_resolves_cpu(example_hw, caplog):
    if accelerator_here():
        pytest.skip("this machine has an accelerator; the fake-free CPU path is checked on CPU hosts")
    with caplog.at_level(logging.WARNING, logger="srscode.hardware"):
        b = resolve(example_hw)
    assert (b.name, b.device_type, b.collective, b.visible_devices_var) == ("cpu", "cpu", "gloo", None)
    assert (b.dtype_name, b.mixed_precision, b.use_cpu, b.preferred_generator) == ("fp32", "no", True, "hf")
    assert "no accelerator found" in caplog.text
    import torch

    assert b.device == torch.device("cpu")  # through accelerate's PartialState


# (host, expected: backend, device type, collective, visible var, dtype, mixed precision, use_cpu, generator)
TABLE = {
    "ascend-910b": ("ascend", "npu", "hccl", "ASCEND_RT_VISIBLE_DEVICES", "bf16", "bf16", False, "vllm"),
    "cuda-l40s": ("cuda", "cuda", "nccl", "CUDA_VISIBLE_DEVICES", "bf16", "bf16", False, "vllm"),
    "cpu": ("cpu", "cpu", "gloo", None, "fp32", "no", True, "hf"),
}


@pytest.mark.parametrize("host", sorted(TABLE))
def test_one_config_three_hosts(host, monkeypatch, example_hw):
    fake_vllm(monkeypatch, ascend_plugin=True)  # installed everywhere: only accelerators use it
    if host == "ascend-910b":
        no_cuda(monkeypatch)
        fake_ascend(monkeypatch)
    elif host == "cuda-l40s":
        fake_cuda(monkeypatch)
    else:
        no_cuda(monkeypatch)
    b = resolve(example_hw)
    row = (b.name, b.device_type, b.collective, b.visible_devices_var, b.dtype_name,
           b.mixed_precision, b.use_cpu, b.preferred_generator)
    assert row == TABLE[host]


class _NoVllmAscend:
    """A meta-path finder that fails the test if anything looks up vllm_ascend."""

    def find_spec(self, name, path=None, target=None):
        if name == "vllm_ascend" or name.startswith("vllm_ascend."):
            raise AssertionError(f"{name} was looked up")


def test_cuda_never_imports_vllm_ascend(monkeypatch):
    monkeypatch.delitem(sys.modules, "vllm_ascend", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoVllmAscend(), *sys.meta_path])
    fake_cuda(monkeypatch)
    fake_vllm(monkeypatch)
    b = resolve()
    assert b.preferred_generator == "vllm"
    b.metadata()
    b.check_compat(tp=2, lora=True)
    assert "vllm_ascend" not in sys.modules


def test_the_vllm_ascend_finder_does_catch_a_lookup(monkeypatch):
    # control for the test above: on Ascend the lookup happens and the finder trips
    monkeypatch.delitem(sys.modules, "vllm_ascend", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoVllmAscend(), *sys.meta_path])
    no_cuda(monkeypatch)
    fake_ascend(monkeypatch)
    fake_vllm(monkeypatch)
    with pytest.raises(AssertionError, match="vllm_ascend was looked up"):
        _ = resolve().preferred_generator


# ------------------------------------------------------------------ config and SRSCODE_BACKEND


def test_env_picks_backend_when_config_is_auto(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
    b = resolve()
    assert (b.name, b.source, b.dtype_name) == ("cpu", "env", "fp32")


def test_env_auto_means_probe(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setenv("SRSCODE_BACKEND", "auto")
    assert (resolve().name, resolve().source) == ("cuda", "probe")


def test_explicit_config_wins_over_env(monkeypatch, caplog):
    fake_cuda(monkeypatch)
    monkeypatch.setenv("SRSCODE_BACKEND", "cuda")
    with caplog.at_level(logging.WARNING, logger="srscode.hardware"):
        b = resolve(backend="cpu")
    assert (b.name, b.source) == ("cpu", "config")
    assert "SRSCODE_BACKEND=cuda is ignored" in caplog.text


def test_env_backend_not_usable_says_why(monkeypatch):
    monkeypatch.setenv("SRSCODE_BACKEND", "ascend")
    with pytest.raises(ConfigError) as err:
        resolve()
    text = str(err.value)
    assert "SRSCODE_BACKEND" in text and "'ascend' is not usable here" in text and "torch_npu is not installed" in text


def test_config_backend_not_usable_says_why(monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(ConfigError, match=r"hardware.backend: backend 'cuda' is not usable here: .*(without CUDA|no CUDA device)"):
        resolve(backend="cuda")


def test_unknown_backend_lists_choices(monkeypatch):
    monkeypatch.setenv("SRSCODE_BACKEND", "tpu")
    with pytest.raises(ConfigError, match=r"unknown backend 'tpu'\. Available: ascend, cpu, cuda"):
        resolve()


# ------------------------------------------------------------------------------ dtype on CPU


def test_cpu_dtype_rules(monkeypatch):
    no_cuda(monkeypatch)
    b = resolve(dtype="bf16")
    assert (b.dtype_name, b.mixed_precision, b.use_cpu) == ("bf16", "bf16", True)
    reset_cache()
    assert resolve(require_bf16=True).dtype_name == "bf16"  # bf16 asked for, and the CPU has it
    reset_cache()
    with pytest.raises(ConfigError, match="fp16 mixed precision needs an accelerator"):
        resolve(dtype="fp16")
    reset_cache()
    with pytest.raises(ConfigError, match="require_bf16 is true but the dtype is set to fp32"):
        resolve(dtype="fp32", require_bf16=True)


# ------------------------------------------------------------------------ cache and registry


def _counting(backend: Backend, calls: list[str]) -> Backend:
    from dataclasses import replace

    def probe() -> ProbeResult:
        calls.append(backend.name)
        return backend.probe()

    return replace(backend, probe=probe)


def _registry_with(*records: Backend):
    import pluggy
    from srscode.core import hookspecs
    from srscode.core.registry import Registry

    class Plugin:
        @hookimpl
        def srscode_backends(self):
            yield from records

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="test-backends")
    return Registry(pm, [], {})


def test_resolved_once_per_process(monkeypatch):
    no_cuda(monkeypatch)
    calls: list[str] = []
    reg = _registry_with(_counting(hw_backends.CPU, calls))
    first = resolve_backend(HardwareConfig(), reg)
    assert resolve_backend(HardwareConfig(), reg) is first
    assert calls == ["cpu"]
    reset_cache()
    assert resolve_backend(HardwareConfig(), reg) is not first
    assert calls == ["cpu", "cpu"]


def test_third_party_backend_by_priority():
    xpu = Backend(
        name="xpu", device_type="xpu", collective="ccl", visible_devices_var="ZE_AFFINITY_MASK",
        env_prefixes=("ZE_",), probe=lambda: ProbeResult(True, "fake", "Fake XPU", 4),
        bf16_supported=lambda: True, priority=5,
    )
    b = resolve_backend(HardwareConfig(), _registry_with(xpu, hw_backends.CPU))
    assert (b.name, b.collective, b.dtype_name, b.device_count) == ("xpu", "ccl", "bf16", 4)


def test_registry_none_builds_the_plugin_manager(monkeypatch):
    from srscode.core import registry

    monkeypatch.setattr(registry, "DEFAULT_PLUGINS", ("srscode.hardware.backends",))
    monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
    assert resolve_backend(HardwareConfig()).name == "cpu"


# ------------------------------------------------------------------------------- env and names


def test_ascend_prepare_env_keeps_user_choice():
    env = {"VLLM_WORKER_MULTIPROC_METHOD": "forkserver"}
    hw_backends.ASCEND.prepare_env(env)
    assert env == {"VLLM_WORKER_MULTIPROC_METHOD": "forkserver"}
    env = {}
    hw_backends.ASCEND.prepare_env(env)
    assert env == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"}


def test_launcher_env_forwards_backend_variables(monkeypatch):
    no_cuda(monkeypatch)
    fake_ascend(monkeypatch)
    env = {"ASCEND_RT_VISIBLE_DEVICES": "0,1", "ASCEND_TOOLKIT_HOME": "/x", "HCCL_CONNECT_TIMEOUT": "600",
           "LD_LIBRARY_PATH": "/lib", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0"}
    out = resolve().launcher_env(env)
    assert out == {k: env[k] for k in ("ASCEND_RT_VISIBLE_DEVICES", "ASCEND_TOOLKIT_HOME", "HCCL_CONNECT_TIMEOUT", "LD_LIBRARY_PATH")}


def test_unreadable_device_name_is_none(monkeypatch, caplog):
    no_cuda(monkeypatch)
    npu = fake_ascend(monkeypatch)

    def broken(index=0):
        raise RuntimeError("device busy")

    npu.get_device_name = broken
    with caplog.at_level(logging.WARNING, logger="srscode.hardware"):
        b = resolve()
        assert b.device_name is None
    assert "device busy" in caplog.text
    assert b.metadata()["device_name"] is None
