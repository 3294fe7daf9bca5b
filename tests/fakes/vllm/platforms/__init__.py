"""``vllm.platforms.current_platform`` of the fake: vLLM 0.23.0's ``Platform.device_type`` is the
torch device type vLLM runs on. Tests set ``current_platform.device_type`` to pick one."""
from __future__ import annotations


class _Platform:
    device_type: str = "cuda"


current_platform = _Platform()
