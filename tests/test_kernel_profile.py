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


def test_host_reads_counted_per_step():
    """The reads that make a host wait for a device (.item(), a tensor in an `if`, a boolean-mask
    index) are counted per step, so a benchmark shows where a step stalls."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(64, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            b = a @ a
            b.sum().item()
            if (b > 0).any():
                b[b > 0].sum()
    r = kernel_summary(prof, steps=2, top=5, wall_ms_per_step=5.0)
    assert r["host_reads_per_step"] == {"aten::_local_scalar_dense": 2.0, "aten::nonzero": 1.0}
    assert r["host_wait_ms_per_step"] == 0.0  # no device: nothing to wait for
    assert "device_idle_ms_per_step" not in r  # CPU operators stand in for kernels: no idle figure
    assert any(line.startswith("host waited") for line in summary_lines(r))


def test_device_idle_is_the_wall_less_the_union_of_kernel_spans():
    from types import SimpleNamespace

    import torch

    from kernel_profile import device_idle_ms

    def kernel(start_us, end_us):
        return SimpleNamespace(device_type=torch.autograd.DeviceType.CUDA,
                               time_range=SimpleNamespace(start=start_us, end=end_us))

    # two overlapping kernels (0-400, 300-500) and one apart (800-1000): 700 us busy of 1 ms
    events = [kernel(0, 400), kernel(300, 500), kernel(800, 1000)]
    assert device_idle_ms(events, wall_ms=1.0, steps=1) == pytest.approx(0.3)
    assert device_idle_ms([], wall_ms=1.0, steps=1) is None


def test_host_top_ranks_cpu_self_times():
    from types import SimpleNamespace

    import torch

    from kernel_profile import host_top

    def cpu(name, self_us):
        return SimpleNamespace(device_type=torch.autograd.DeviceType.CPU, name=name, self_cpu_time_total=self_us)

    gpu = SimpleNamespace(device_type=torch.autograd.DeviceType.CUDA, name="kernel", self_cpu_time_total=10_000)
    events = [cpu("cudaLaunchKernel", 300), cpu("cudaLaunchKernel", 300), cpu("aten::mm", 200), gpu]
    r = host_top(events, steps=2, wall_ms=1.0, top=1)
    assert r["host_ops_self_ms_per_step"] == pytest.approx(0.4)  # (300 + 300 + 200) us / 2 steps
    assert r["host_top"] == [{"name": "cudaLaunchKernel", "calls_per_step": 1.0, "self_ms_per_step": 0.3}]
    assert r["host_outside_ops_ms_per_step"] == pytest.approx(0.6)
