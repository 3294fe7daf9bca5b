"""A fake ``vllm`` 0.23.0 for tests: same public signatures, recorded calls, no model.

What it checks (from vLLM 0.23.0's source): ``LLM.__init__`` takes ``model`` positionally
and everything else by keyword, extra keywords must be ``EngineArgs`` fields (the subset
below, with their types: ``max_lora_rank`` one of ``MaxLoRARanks``, ``dtype`` one of
``ModelDType``); ``generate(prompts, sampling_params=None, *, use_tqdm=True,
lora_request=None, priority=None, tokenization_kwargs=None, mm_processor_kwargs=None)``;
``sleep(level=1, mode="abort")`` needs ``enable_sleep_mode=True``; ``wake_up(tags=None)``.
``SamplingParams`` is keyword-built with the real field names and validation.

Generated text is deterministic: ``"<adapter name or base>|<k>|<prompt tail>"`` and the
adapter served is the one cached under the request's ``lora_int_id`` (like vLLM's LoRA
cache without ``load_inplace``), so a reused id with new weights is visible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence, get_args

from .lora.request import LoRARequest

__version__ = "0.23.0"

CALLS: list[tuple[str, dict[str, Any]]] = []
INSTANCES: list["LLM"] = []

ModelDType = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]

# EngineArgs fields (vllm/engine/arg_utils.py, 0.23.0) this fake accepts through **kwargs
ENGINE_ARGS: dict[str, Callable[[Any], bool]] = {
    "enable_lora": lambda v: isinstance(v, bool),
    "max_loras": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "max_lora_rank": lambda v: v in get_args(MaxLoRARanks),
    "max_cpu_loras": lambda v: v is None or (isinstance(v, int) and v >= 1),
    "max_model_len": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
    "enable_sleep_mode": lambda v: isinstance(v, bool),
    "enable_prefix_caching": lambda v: v is None or isinstance(v, bool),
    "disable_log_stats": lambda v: isinstance(v, bool),
}


def reset() -> None:
    CALLS.clear()
    INSTANCES.clear()


@dataclass
class SamplingParams:
    # vllm/sampling_params.py (0.23.0) fields used by srs-code, same names and defaults
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        if not all(isinstance(s, str) for s in self.stop):
            raise TypeError("stop must be a str or a list of str")


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: LoRARequest | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    metrics: Any = None
    lora_request: LoRARequest | None = None


@dataclass
class _State:
    asleep: bool = False
    loras: dict[int, str] = field(default_factory=dict)  # lora_int_id -> path first loaded


class LLM:
    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: ModelDType = "auto",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {type(model).__name__}")
        if dtype not in get_args(ModelDType):
            raise ValueError(f"dtype {dtype!r} is not one of {get_args(ModelDType)}")
        if not isinstance(gpu_memory_utilization, float) or not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be a float in (0, 1], got {gpu_memory_utilization!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be a positive int, got {tensor_parallel_size!r}")
        for key, value in kwargs.items():
            check = ENGINE_ARGS.get(key)
            if check is None:
                raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{key}'")
            if not check(value):
                raise ValueError(f"invalid value for EngineArgs.{key}: {value!r}")
        if not os.path.isdir(model):
            raise OSError(f"fake vllm only loads local model folders; {model!r} is not one")
        self.model = model
        self.engine_args: dict[str, Any] = dict(
            tokenizer=tokenizer, trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size,
            dtype=dtype, revision=revision, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager, **kwargs,
        )
        self.state = _State()
        CALLS.append(("LLM", {"model": model, **self.engine_args}))
        INSTANCES.append(self)

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool | Callable[..., Any] = True,
        lora_request: Sequence[LoRARequest] | LoRARequest | None = None,
        priority: list[int] | None = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        CALLS.append(("generate", {"prompts": prompts, "sampling_params": sampling_params,
                                   "use_tqdm": use_tqdm, "lora_request": lora_request}))
        if self.state.asleep:
            raise RuntimeError("fake vllm: generate() while the engine sleeps; call wake_up() first")
        single = isinstance(prompts, str)
        plist = [prompts] if single else list(prompts)
        if not all(isinstance(p, str) for p in plist):
            raise TypeError("fake vllm: prompts must be text prompts (str)")
        if sampling_params is None:
            sampling_params = SamplingParams()
        sps = [sampling_params] * len(plist) if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(sps) != len(plist) or not all(isinstance(s, SamplingParams) for s in sps):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        loras = lora_request if isinstance(lora_request, Sequence) else [lora_request] * len(plist)
        if len(loras) != len(plist):
            raise ValueError("The lengths of prompts and lora_request must be the same.")
        outs = []
        for i, (prompt, sp, lora) in enumerate(zip(plist, sps, loras)):
            served = self._serve(lora)
            tail = prompt.split()[-1] if prompt.split() else ""
            cands = []
            for k in range(sp.n):
                text = f"{served}|{k}|{tail}"
                for s in sp.stop:  # stop strings are left out of the text, as in vLLM
                    at = text.find(s)
                    if at >= 0:
                        text = text[:at]
                ids = list(range(1000, 1000 + min(len(text.split("|")) + 1, sp.max_tokens or 16)))
                cands.append(CompletionOutput(k, text, ids, None, None, "stop", None, lora))
            outs.append(RequestOutput(str(i), prompt, list(range(len(prompt.split()))), None, cands, True,
                                      lora_request=lora))
        return outs

    def _serve(self, lora: LoRARequest | None) -> str:
        if lora is None:
            return "base"
        if not isinstance(lora, LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora).__name__}")
        if not self.engine_args.get("enable_lora"):
            raise ValueError(f"LoRA is not enabled! Got lora_request={lora}")
        if not os.path.isfile(os.path.join(lora.lora_path, "adapter_config.json")):
            raise ValueError(f"Loading lora {lora.lora_name} failed: no adapter found for {lora.lora_path}")
        # vLLM keeps the adapter first loaded under an id (load_inplace=False)
        path = self.state.loras.setdefault(lora.lora_int_id, lora.lora_path)
        return os.path.basename(path.rstrip("/"))

    def sleep(self, level: int = 1, mode: Literal["abort", "wait", "keep"] = "abort") -> None:
        CALLS.append(("sleep", {"level": level, "mode": mode}))
        if not self.engine_args.get("enable_sleep_mode"):
            raise ValueError("Sleep mode is not enabled. Please set enable_sleep_mode=True.")
        if level not in (0, 1, 2):
            raise ValueError(f"sleep level must be 0, 1 or 2, got {level!r}")
        self.state.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        CALLS.append(("wake_up", {"tags": tags}))
        if tags is not None and not set(tags) <= {"weights", "kv_cache", "scheduling"}:
            raise ValueError(f"unknown wake_up tags {tags}")
        self.state.asleep = False


__all__ = ["LLM", "SamplingParams", "LoRARequest", "CALLS", "INSTANCES", "reset", "__version__"]
