"""Fake ``vllm.lora.request`` (vLLM 0.23.0): ``LoRARequest`` with the real fields and checks."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoRARequest:
    # vllm/lora/request.py (0.23.0): a msgspec.Struct with these fields, in this order
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None
    tensorizer_config_dict: dict | None = None
    load_inplace: bool = False
    is_3d_lora_weight: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str):
            raise TypeError(f"lora_name must be str, got {type(self.lora_name).__name__}")
        if not isinstance(self.lora_int_id, int) or isinstance(self.lora_int_id, bool):
            raise TypeError(f"lora_int_id must be int, got {type(self.lora_int_id).__name__}")
        if not isinstance(self.lora_path, str):
            raise TypeError(f"lora_path must be str, got {type(self.lora_path).__name__}")
        if self.lora_int_id < 1:  # same check and message as vLLM
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path

    def __eq__(self, value: object) -> bool:  # vLLM compares LoRA requests by name
        return isinstance(value, self.__class__) and self.lora_name == value.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)
