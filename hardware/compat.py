"""The startup check: refuse known-incompatible vllm / vllm-ascend / torch / torch_npu sets.

It reads versions only (a mapping from :func:`srscode.hardware.versions.package_versions`),
so it is a pure function and is tested with made-up version tables. The package sets are
checked whatever the backend (an installed stack is consistent or not everywhere); what
is wrong only on one backend is that record's ``compat_rules``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from packaging.version import InvalidVersion, Version
from srscode.core.errors import ConfigError

from .backend import Backend, CompatFacts

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


def parse_version(text: str | None) -> Version | None:
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
    backend: Backend,
    *,
    tp: int = 1,
    lora: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Raise :class:`ConfigError` for a known-incompatible set; return (and log) warnings.

    ``tp`` is the generator's tensor-parallel size, ``lora`` whether it serves a LoRA
    adapter; with ``environ`` they are the facts ``backend.compat_rules`` look at.
    """
    errors: list[str] = []
    warns: list[str] = []
    torch_v = parse_version(versions.get("torch"))
    npu_v = parse_version(versions.get("torch-npu"))
    vllm_v = parse_version(versions.get("vllm"))
    va_v = parse_version(versions.get("vllm-ascend"))

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
        py = parse_version(versions.get("python"))
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

    facts = CompatFacts(versions, tp=tp, lora=lora, environ=environ if environ is not None else {})
    for rule in backend.compat_rules:
        if rule.applies(facts):
            (errors if rule.error else warns).append(rule.message.format(tp=tp))

    if errors:
        raise ConfigError(
            "incompatible accelerator packages: " + "; ".join(errors) + f". {SUPPORTED_TEXT[:1].upper()}{SUPPORTED_TEXT[1:]}. "
            "Run `srscode env` to see every version found."
        )
    for w in warns:
        log.warning(w)
    return warns
