"""Built-in hardware backends: ascend, cuda, cpu (a plugin module like any other).

Probes never initialise a device:

* CUDA: ``torch.cuda.device_count()``, which asks NVML first (no CUDA context, fork
  stays safe; it falls back to ``cudaGetDeviceCount`` only where NVML fails). We do
  not call ``torch.cuda.is_available()``: by default it goes straight to
  ``cudaGetDeviceCount``, which runs ``cuInit`` and poisons ``fork``. Name and
  compute capability (hence bf16 support) come from NVML as well.
* Ascend: ``find_spec("torch_npu")`` first (free); only where torch_npu is installed
  is the env prepared and torch_npu imported, then ``torch.npu.is_available()`` and
  ``device_count()``. The device name is read later, only for metadata.
* CPU: always usable.

Each record also says what the rest of the tree must not: the visible-devices variables
the evaluator's sandbox clears, the torch module to synchronise, and the startup-check
rules that hold only on that backend.

Never ``torch_npu.contrib.transfer_to_npu`` here: it rewrites ``torch.cuda`` globally.
"""
from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import MutableMapping

from srscode.core.hookspecs import hookimpl

from . import nvml
from .backend import Backend, CompatRule, ProbeResult
from .graphs import runner_factory
from .packing import onednn_packer

# ----------------------------------------------------------------------------- ascend


def _ascend_prepare_env(env: MutableMapping[str, str]) -> None:
    # HCCL and the NPU runtime do not survive fork; vLLM's workers must be spawned.
    # (torch's own start method is set through Backend.mp_start_method.)
    env.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def _ascend_probe() -> ProbeResult:
    if importlib.util.find_spec("torch_npu") is None:
        return ProbeResult(False, "torch_npu is not installed (pip install 'srs-code[ascend]' on an Ascend host)")
    # torch >= 2.5 autoloads torch_npu on `import torch`, so prepare before either.
    _ascend_prepare_env(os.environ)
    try:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)
    except Exception as exc:  # noqa: BLE001 - a broken CANN install raises all sorts of things
        return ProbeResult(
            False,
            f"importing torch_npu failed ({type(exc).__name__}: {exc}); source CANN's set_env.sh "
            "(e.g. /usr/local/Ascend/ascend-toolkit/set_env.sh) before starting srscode",
        )
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available():
        return ProbeResult(
            False,
            "torch_npu is installed but torch.npu.is_available() is False (no NPU visible: "
            "check the driver, `npu-smi info` and ASCEND_RT_VISIBLE_DEVICES)",
        )
    count = int(npu.device_count())
    return ProbeResult(True, f"{count} Ascend NPU(s) visible", None, count)


def _ascend_bf16() -> bool:
    import torch

    # accelerate's bf16 check has no NPU branch; 910A has no bf16, 910B has.
    return bool(torch.npu.is_bf16_supported())


def _ascend_name() -> str | None:
    import torch

    return str(torch.npu.get_device_name(0))


ASCEND_LORA_TP = CompatRule(
    lambda facts: facts.lora and facts.tp > 1,
    "LoRA with tensor_parallel_size={tp} on vllm-ascend is reported broken upstream "
    "(LoRA there is experimental); plan tensor_parallel_size=1 for LoRA rollouts",
)

ASCEND = Backend(
    name="ascend",
    device_type="npu",
    collective="hccl",
    visible_devices_var="ASCEND_RT_VISIBLE_DEVICES",
    env_prefixes=("ASCEND_", "HCCL_", "LD_LIBRARY_PATH"),
    probe=_ascend_probe,
    prepare_env=_ascend_prepare_env,
    bf16_supported=_ascend_bf16,
    priority=10,  # before CUDA: torch_npu patches parts of torch.cuda
    generator_modules=("vllm", "vllm_ascend"),
    mp_start_method="spawn",
    describe=_ascend_name,
    # torch_npu's aclgraph; None where absent. Decoding only: the trainers' graphed layers
    # (make_graphed_callables) have not been run on an NPU, so they stay eager there
    graph_runner=runner_factory("npu", "NPUGraph"),
    device_module="npu",
    compat_rules=(ASCEND_LORA_TP,),
    summary="Huawei Ascend NPU (910B) through torch_npu, HCCL; vLLM through vllm-ascend",
)

# ------------------------------------------------------------------------------- cuda


def _cuda_probe() -> ProbeResult:
    if importlib.util.find_spec("torch") is None:
        return ProbeResult(False, "torch is not installed")
    import torch

    if not torch.backends.cuda.is_built():
        return ProbeResult(False, f"torch {torch.__version__} was built without CUDA")
    count = torch.cuda.device_count()  # NVML first: no context, fork stays safe
    if count <= 0:
        return ProbeResult(
            False, "no CUDA device visible (check the driver, `nvidia-smi` and CUDA_VISIBLE_DEVICES)"
        )
    info = nvml.device_info()
    return ProbeResult(True, f"{count} CUDA device(s) visible", info.name if info else None, count)


def _cuda_bf16() -> bool:
    info = nvml.device_info()
    if info is not None and info.compute_capability is not None:
        return info.compute_capability >= (8, 0)  # Ampere and later (A100, L40S, H100)
    import torch  # NVML unreadable: ask torch, which initialises CUDA

    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def _cuda_name() -> str | None:
    import torch

    return str(torch.cuda.get_device_name(0))


CUDA_WITH_VLLM_ASCEND = CompatRule(
    lambda facts: facts.installed("vllm-ascend") and facts.vllm_plugin_enabled("ascend"),
    "vllm-ascend is installed in a CUDA environment: vLLM activates every installed "
    "platform plugin, so it would import vllm_ascend and pick the NPU platform. "
    "Uninstall vllm-ascend here, or set VLLM_PLUGINS to the plugins you want (without 'ascend')",
    error=True,
)

CUDA = Backend(
    name="cuda",
    device_type="cuda",
    collective="nccl",
    visible_devices_var="CUDA_VISIBLE_DEVICES",
    extra_visible_devices_vars=("HIP_VISIBLE_DEVICES",),  # ROCm builds of torch drive AMD GPUs as "cuda"
    env_prefixes=("CUDA_", "NCCL_", "NVIDIA_", "LD_LIBRARY_PATH"),
    probe=_cuda_probe,
    bf16_supported=_cuda_bf16,
    priority=20,
    generator_modules=("vllm",),
    describe=_cuda_name,
    graph_runner=runner_factory("cuda", "CUDAGraph", training=True),  # training: verified on an H100
    device_module="cuda",
    varying_shapes=True,  # eager CUDA kernels; TRL already scores only labelled tokens here
    compat_rules=(CUDA_WITH_VLLM_ASCEND,),
    summary="NVIDIA GPUs (L40S, H100) through torch.cuda, NCCL; vLLM where installed",
)

# -------------------------------------------------------------------------------- cpu


def _cpu_probe() -> ProbeResult:
    name = platform.processor() or platform.machine() or "cpu"
    return ProbeResult(True, "the CPU is always usable", name, 1)


def _cpu_bf16() -> bool:
    return True  # torch runs bf16 on CPU (slowly); only chosen when the config asks


CPU = Backend(
    name="cpu",
    device_type="cpu",
    collective="gloo",
    visible_devices_var=None,
    env_prefixes=(),
    probe=_cpu_probe,
    bf16_supported=_cpu_bf16,
    priority=1000,
    accelerator=False,
    generator_modules=(),
    linear_packer=onednn_packer,  # the fast decode loop's GEMMs on a few rows (hardware/packing.py)
    varying_shapes=True,  # eager oneDNN/ATen kernels: a new size per batch compiles nothing
    summary="CPU fallback: fp32, gloo, HF generate",
)

BUILTIN_BACKENDS: tuple[Backend, ...] = (ASCEND, CUDA, CPU)


@hookimpl
def srscode_backends():
    yield from BUILTIN_BACKENDS
