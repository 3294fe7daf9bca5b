"""benchmarks/kernel_profile.py: a real torch.profiler run summarised by kind and per step."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from kernel_profile import kernel_summary, kind_of, summary_lines  # noqa: E402


def test_kinds_of_known_kernel_names():
    assert kind_of("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert kind_of("nvjet_hsh_192x128_64x4_1x2_h_bz_coopA_NTN") == "gemm"
    assert kind_of("void pytorch_flash::flash_fwd_kernel<...>") == "attention"
    assert kind_of("aten::mm") == "gemm"
    assert kind_of("void at::native::multi_tensor_apply_kernel<...FusedAdamMathFunctor...>") == "optimizer"
    assert kind_of("_rms_norm_forward_kernel_triton") == "triton"
    assert kind_of("void at::native::vectorized_elementwise_kernel<4, ...>") == "other"


def test_summary_of_a_real_cpu_profile():
    import torch
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(128, 128)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            (a @ a).exp().sum()
    r = kernel_summary(prof, steps=3, top=5, wall_ms_per_step=10.0)
    assert r["what"].startswith("CPU operators")
    assert r["by_kind_ms_per_step"]["gemm"] > 0  # aten::mm, three calls
    mm = next(row for row in r["top"] if row["name"] == "aten::mm")
    assert mm["calls_per_step"] == 1.0 and mm["kind"] == "gemm"
    assert len(r["top"]) <= 5 and r["kernels_per_step"] >= 3
    # Both figures are rounded to 3 places from the same total, so they agree to within one unit.
    assert r["device_busy"] == pytest.approx(r["device_ms_per_step"] / 10.0, abs=1e-3)
    lines = summary_lines(r)
    assert "device busy" in lines[0] and lines[1].startswith("by kind: ")
