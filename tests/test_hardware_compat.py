"""The startup compatibility check and the version record."""
from __future__ import annotations

import platform

import pytest
from srscode.core.errors import ConfigError
from srscode.hardware.backends import ASCEND, CPU, CUDA
from srscode.hardware.compat import check_compat
from srscode.hardware.versions import cann_version, dist_version, package_versions

GOOD = {
    "python": "3.11.7",
    "torch": "2.10.0",
    "torch-npu": "2.10.0.post4",
    "vllm": "0.23.0",
    "vllm-ascend": "0.23.0",
    "cann": "9.1.0",
}


def with_(**changes):
    out = dict(GOOD)
    out.update({k.replace("_", "-"): v for k, v in changes.items()})
    return out


def test_verified_ascend_set_passes_quietly():
    assert check_compat(GOOD, ASCEND) == []


def test_plain_cpu_or_cuda_install_passes():
    assert check_compat({"python": "3.11.7", "torch": "2.13.0+cpu"}, CPU) == []
    assert check_compat({"python": "3.12.3", "torch": "2.11.0", "vllm": "0.24.1"}, CUDA) == []


@pytest.mark.parametrize(
    "versions, needle",
    [
        (with_(torch="2.11.0"), "torch_npu 2.10.0.post4 is built for torch 2.10.0, but torch 2.11.0"),
        (with_(vllm="0.24.0"), "needs the vLLM release of the same number, but vLLM 0.24.0"),
        (with_(vllm=None), "vllm-ascend 0.23.0 is installed but vLLM is not"),
        (with_(torch_npu=None), "vllm-ascend 0.23.0 is installed but torch_npu is not"),
        (with_(python="3.13.1"), "vllm-ascend runs on Python 3.10-3.12, this is Python 3.13.1"),
        (with_(torch_npu="2.10.0.post2"), "built against torch_npu 2.10.0.post4, but torch_npu 2.10.0.post2"),
        ({"python": "3.11.7", "torch": None, "torch-npu": "2.10.0"}, "torch_npu 2.10.0 is installed but torch is not"),
    ],
)
def test_known_incompatible_sets_are_refused(versions, needle):
    with pytest.raises(ConfigError) as err:
        check_compat(versions, ASCEND)
    text = str(err.value)
    assert needle in text
    # the message names the supported set
    assert "vllm-ascend 0.23.0 = vLLM 0.23.0 = torch 2.10.0 = torch_npu 2.10.0.post4, CANN 9.1.0, Python 3.10-3.12" in text


def test_torch_local_label_is_fine():
    assert check_compat(with_(torch="2.10.0+cpu"), ASCEND) == []


def test_other_consistent_set_warns_unverified():
    versions = with_(vllm="0.24.0", vllm_ascend="0.24.0", torch="2.11.0", torch_npu="2.11.0")
    warns = check_compat(versions, ASCEND)
    assert len(warns) == 1 and "not the verified set" in warns[0]


def test_other_cann_warns():
    warns = check_compat(with_(cann="8.3.RC1"), ASCEND)
    assert warns == ["CANN 8.3.RC1 is not the CANN 9.1.0 that vllm-ascend 0.23.0 is verified with"]


def test_lora_with_tensor_parallel_on_ascend_warns():
    assert check_compat(GOOD, ASCEND, tp=1, lora=True) == []
    assert check_compat(GOOD, ASCEND, tp=2, lora=False) == []
    (warn,) = check_compat(GOOD, ASCEND, tp=2, lora=True)
    assert "tensor_parallel_size=2" in warn and "broken upstream" in warn


def test_vllm_ascend_in_a_cuda_env_is_refused_unless_filtered():
    versions = {"python": "3.11.7", "torch": "2.10.0", "vllm": "0.23.0", "vllm-ascend": "0.23.0", "torch-npu": "2.10.0.post4"}
    with pytest.raises(ConfigError, match="vllm-ascend is installed in a CUDA environment"):
        check_compat(versions, CUDA)
    with pytest.raises(ConfigError, match="CUDA environment"):
        check_compat(versions, CUDA, environ={"VLLM_PLUGINS": "ascend,lora_resolver"})
    assert check_compat(versions, CUDA, environ={"VLLM_PLUGINS": "lora_resolver"}) == []


def test_resolved_backend_check_compat_uses_its_rules(monkeypatch):
    from srscode.core.config import HardwareConfig
    from srscode.hardware import builtin_registry, reset_cache, resolve_backend

    monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
    reset_cache()
    try:
        b = resolve_backend(HardwareConfig(), builtin_registry())
        assert b.check_compat() == []  # this machine's real versions
        assert b.check_compat(tp=2, lora=True, versions=GOOD) == []  # the LoRA/TP warning is for Ascend only
        with pytest.raises(ConfigError):
            b.check_compat(versions=with_(vllm="0.22.0"))
    finally:
        reset_cache()


# ------------------------------------------------------------------------------- versions


def test_package_versions_here():
    import torch

    v = package_versions(environ={})
    assert v["python"] == platform.python_version()
    # metadata may lack the local label torch.__version__ carries (2.11.0 vs 2.11.0+cu130)
    assert v["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for name in ("torch-npu", "vllm", "vllm-ascend", "transformers", "peft", "trl", "accelerate", "cann"):
        assert name in v
    assert v["cann"] is None


def test_dist_version_normalises_names():
    assert dist_version("pytest_xdist") == dist_version("pytest-xdist") is not None
    assert dist_version("no-such-distribution-srscode") is None


def test_cann_version_from_toolkit_info(tmp_path):
    arch = tmp_path / f"{platform.machine()}-linux"
    arch.mkdir()
    (arch / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\nversion=9.1.0\narch=x\n")
    assert cann_version({"ASCEND_TOOLKIT_HOME": str(tmp_path)}) == "9.1.0"
    assert cann_version({"ASCEND_HOME_PATH": str(tmp_path)}) == "9.1.0"


def test_cann_version_from_compiler_info(tmp_path):
    (tmp_path / "compiler").mkdir()
    (tmp_path / "compiler" / "version.info").write_text("Version=8.3.RC1\n")
    assert cann_version({"ASCEND_HOME_PATH": str(tmp_path)}) == "8.3.RC1"


def test_cann_version_unreadable_is_none(tmp_path):
    assert cann_version({}) is None
    assert cann_version({"ASCEND_TOOLKIT_HOME": str(tmp_path / "missing")}) is None
