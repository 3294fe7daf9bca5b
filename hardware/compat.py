"""The startup check: refuse known-incompatible vllm / vllm-ascend / torch / torch_npu sets.

It reads versions only (a mapping from :func:`srscode.hardware.versions.package_versions`),
so it is a pure function and is tested with made-up version tables.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from packaging.version import InvalidVersion, Version
from srscode.core.errors import ConfigError

log = logging.getLogger("srscode.hardware")

# The Ascend stack moves as one set; this is the one srs-code pins in its [ascend] extra.
ASCEND_SET: dict[str, str] = {
    "vllm-ascend": "0.23.0",
    "vllm": "0.23.0",
    "torch": "2.10.0",
    "torch-npu": "2.10.0.post4",
    "cann": "9.1.0",
}
ASCEND_PYTHON = ((3, 10), (3, 12))  # inclusive

SUPPORTED_TEXT = (
    "the supported Ascend set is vllm-ascend 0.23.0 = vLLM 0.23.0 = torch 2.10.0 = "
    "torch_npu 2.10.0.post4, CANN 9.1.0, Python 3.10-3.12 "
    "(vLLM 0.23.0 built for an empty device, then pip install 'srs-code[ascend]': docs/hardware.md)"
)


def _v(text: str | None) -> Version | None:
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _release3(v: Version) -> tuple[int, ...]:
    return (tuple(v.release) + (0, 0, 0))[:3]


def check_compat(
    versions: Mapping[str, str | None],
    backend: str,
    *,
    tp: int = 1,
    lora: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Raise :class:`ConfigError` for a known-incompatible set; return (and log) warnings.

    ``tp`` is the generator's tensor-parallel size, ``lora`` whether it serves a LoRA
    adapter. ``environ`` is consulted for ``VLLM_PLUGINS`` only.
    """
    env = environ if environ is not None else {}
    errors: list[str] = []
    warns: list[str] = []
    torch_v = _v(versions.get("torch"))
    npu_v = _v(versions.get("torch-npu"))
    vllm_v = _v(versions.get("vllm"))
    va_v = _v(versions.get("vllm-ascend"))

    if npu_v is not None:
        if torch_v is None:
            errors.append(f"torch_npu {npu_v} is installed but torch is not")
        elif _release3(torch_v) != _release3(npu_v):
            errors.append(
                f"torch_npu {npu_v} is built for torch {'.'.join(map(str, _release3(npu_v)))}, "
                f"but torch {torch_v} is installed"
            )

    if va_v is not None:
        if vllm_v is None:
            errors.append(f"vllm-ascend {va_v} is installed but vLLM is not")
        elif _release3(vllm_v) != _release3(va_v):
            errors.append(f"vllm-ascend {va_v} needs the vLLM release of the same number, but vLLM {vllm_v} is installed")
        if npu_v is None:
            errors.append(f"vllm-ascend {va_v} is installed but torch_npu is not")
        py = _v(versions.get("python"))
        if py is not None and not (ASCEND_PYTHON[0] <= tuple(py.release[:2]) <= ASCEND_PYTHON[1]):
            errors.append(f"vllm-ascend runs on Python 3.10-3.12, this is Python {py}")
        if str(va_v) == ASCEND_SET["vllm-ascend"]:
            if torch_v is not None and torch_v.public != ASCEND_SET["torch"]:
                errors.append(f"vllm-ascend {va_v} is built against torch {ASCEND_SET['torch']}, but torch {torch_v} is installed")
            if npu_v is not None and str(npu_v) != ASCEND_SET["torch-npu"]:
                errors.append(
                    f"vllm-ascend {va_v} is built against torch_npu {ASCEND_SET['torch-npu']}, but torch_npu {npu_v} is installed"
                )
            cann = versions.get("cann")
            if cann and cann != ASCEND_SET["cann"]:
                warns.append(f"CANN {cann} is not the CANN {ASCEND_SET['cann']} that vllm-ascend {va_v} is verified with")
        elif not errors:
            warns.append(f"vllm-ascend {va_v} with vLLM {vllm_v} is consistent but not the verified set; {SUPPORTED_TEXT}")

        if backend == "cuda":
            allowed = env.get("VLLM_PLUGINS")
            if allowed is None or "ascend" in [p.strip() for p in allowed.split(",")]:
                errors.append(
                    "vllm-ascend is installed in a CUDA environment: vLLM activates every installed "
                    "platform plugin, so it would import vllm_ascend and pick the NPU platform. "
                    "Uninstall vllm-ascend here, or set VLLM_PLUGINS to the plugins you want (without 'ascend')"
                )

    if backend == "ascend" and lora and tp > 1:
        warns.append(
            f"LoRA with tensor_parallel_size={tp} on vllm-ascend is reported broken upstream "
            "(LoRA there is experimental); plan tensor_parallel_size=1 for LoRA rollouts"
        )

    if errors:
        raise ConfigError(
            "incompatible accelerator packages: " + "; ".join(errors) + f". {SUPPORTED_TEXT[:1].upper()}{SUPPORTED_TEXT[1:]}. "
            "Run `srscode env` to see every version found."
        )
    for w in warns:
        log.warning(w)
    return warns
