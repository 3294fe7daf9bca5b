"""Generator ``vllm``: vLLM's offline ``LLM`` with the round's LoRA as a ``LoRARequest``.

Targets vLLM 0.23.0 (the version vllm-ascend 0.23.0 pairs with), following its documented
API exactly:

* ``vllm.LLM(model, *, tokenizer, revision, trust_remote_code, dtype, seed,
  gpu_memory_utilization, tensor_parallel_size, enforce_eager, **engine_args)`` with the
  ``EngineArgs`` fields ``enable_lora``, ``max_loras``, ``max_lora_rank`` (one of 1, 8, 16,
  32, 64, 128, 256, 320, 512), ``max_model_len`` and ``enable_sleep_mode``;
* ``vllm.SamplingParams(n, temperature, top_p, max_tokens, stop, seed)`` (stop strings are
  left out of the text: ``include_stop_str_in_output`` defaults to False);
* ``vllm.lora.request.LoRARequest(lora_name, lora_int_id, lora_path)``: ``lora_int_id`` must
  be >= 1 and unique per adapter — vLLM caches adapters by id and would silently reuse a
  stale one under a reused id — so every new adapter content gets a new id;
* ``LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request)`` returning one
  ``RequestOutput`` per prompt (``prompt_token_ids``, ``outputs[i].text`` / ``.token_ids``,
  ``lora_request``);
* ``LLM.sleep(level=1)`` / ``LLM.wake_up()`` when built with ``enable_sleep_mode=True``:
  with ``sleep_between_calls`` the engine offloads its weights and drops its KV cache after
  each generate, so the trainer gets the device memory (the alternative is a low
  ``gpu_memory_utilization``).

On Ascend the same code runs: vllm-ascend registers itself as a vLLM platform plugin, so
``vllm_ascend`` is never imported here. vLLM is an optional extra, imported lazily.

Adapter identity: each candidate reports the adapter of the ``RequestOutput``'s own
``lora_request`` (what vLLM says it used), hashed from the adapter folder at request time;
a request that came back without one is reported as the base model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt

from . import hf_model
from .hf_generator import resolve_extractor

log = logging.getLogger(__name__)

VLLM_VERSION_TARGETED = "0.23.0"
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class VLLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, description="New tokens per candidate.")
    gpu_memory_utilization: float = Field(
        0.5, gt=0.0, le=1.0, description="Fraction of device memory vLLM takes; leave room for training."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length (default: the model's).")
    tensor_parallel_size: int = Field(1, ge=1, description="Keep 1 with LoRA on vllm-ascend.")
    max_loras: int = Field(1, ge=1)
    max_lora_rank: int | None = Field(
        None, ge=1, description="Default: the trainers' largest r; rounded up to a rank vLLM accepts."
    )
    enforce_eager: bool = False
    sleep_between_calls: bool = Field(
        False, description="enable_sleep_mode; sleep(level=1) after each generate, wake_up() before the next."
    )


def import_vllm() -> Any:
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise StageError(
            f"stages.generator: 'vllm' needs the vllm package ({exc}). Install the extra for your "
            "hardware: pip install 'srs-code[cuda]' (NVIDIA) or 'srs-code[ascend]' (Ascend, with "
            "vllm-ascend), or use the 'hf' generator."
        ) from exc
    return vllm, LoRARequest


def vllm_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that holds rank ``r``."""
    for allowed in MAX_LORA_RANKS:
        if r <= allowed:
            return allowed
    raise StageError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {MAX_LORA_RANKS[-1]}")


def trainer_lora_rank(cfg: Any) -> int:
    """The largest r the configured trainers will produce (SFT, and DPO when it runs)."""
    ranks = [int(cfg.stages.trainer.params.get("r", 16))]
    if cfg.dpo.every != "never":
        ranks.append(int(cfg.dpo.params.get("r", 16)))
    return max(ranks)


class VLLMGenerator:
    def __init__(self, params: VLLMParams, ctx: Any):
        self.params = params
        self.ctx = ctx
        self._llm: Any = None
        self._asleep = False
        self._max_rank = 0
        self._ids: dict[str, int] = {}  # adapter sha256 -> lora_int_id (unique per content)
        self._refs: dict[int, AdapterRef] = {}

    # ------------------------------------------------------------------ engine
    def engine(self) -> Any:
        if self._llm is None:
            vllm, _ = import_vllm()
            p = self.params
            src = hf_model.model_source(self.ctx)
            self._max_rank = vllm_lora_rank(p.max_lora_rank or trainer_lora_rank(self.ctx.config))
            kwargs: dict[str, Any] = dict(
                revision=src.revision,
                trust_remote_code=src.trust_remote_code,
                dtype=VLLM_DTYPES[self.ctx.backend.dtype_name],
                seed=int(self.ctx.seed),
                gpu_memory_utilization=p.gpu_memory_utilization,
                tensor_parallel_size=p.tensor_parallel_size,
                enforce_eager=p.enforce_eager,
                enable_lora=True,
                max_loras=p.max_loras,
                max_lora_rank=self._max_rank,
                enable_sleep_mode=p.sleep_between_calls,
            )
            if p.max_model_len is not None:
                kwargs["max_model_len"] = p.max_model_len
            log.info("starting vLLM on %s (%s)", src.origin, kwargs["dtype"])
            self._llm = vllm.LLM(src.path, **kwargs)
        elif self._asleep:
            self._llm.wake_up()
            self._asleep = False
        return self._llm

    def sleep(self) -> None:
        """Free the device for training (weights to host memory, KV cache dropped)."""
        if self._llm is not None and self.params.sleep_between_calls and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def _lora_request(self, adapter: AdapterRef, LoRARequest: Any) -> Any:
        path = Path(adapter.path)
        cfg_file = path / "adapter_config.json"
        if not cfg_file.is_file():
            raise StageError(
                f"generator vllm: the adapter folder {adapter.path!r} has no adapter_config.json; "
                "expected a peft LoRA adapter saved by the trainer."
            )
        rank = int(json.loads(cfg_file.read_text()).get("r", 0))
        if rank > self._max_rank:
            raise StageError(
                f"generator vllm: adapter {adapter.path!r} has LoRA rank {rank} but vLLM was started with "
                f"max_lora_rank={self._max_rank}; set stages.generator.params.max_lora_rank."
            )
        ref = AdapterRef.from_dir(path)  # the files vLLM is about to load
        lora_id = self._ids.get(ref.sha256)
        if lora_id is None:
            lora_id = self._ids[ref.sha256] = len(self._ids) + 1
        self._refs[lora_id] = ref
        return LoRARequest(lora_name=f"srscode-{ref.sha256[:16]}", lora_int_id=lora_id, lora_path=str(path.resolve()))

    # ------------------------------------------------------------------ generate
    def generate(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> list[Candidate]:
        if not prompts:
            return []
        vllm, LoRARequest = import_vllm()
        llm = self.engine()
        p = self.params
        extract: Callable[[str, Prompt], str] = resolve_extractor(self.ctx)
        lora = self._lora_request(adapter, LoRARequest) if adapter is not None else None
        params = [
            vllm.SamplingParams(
                n=n,
                temperature=p.temperature,
                top_p=p.top_p if p.temperature > 0 else 1.0,
                max_tokens=p.max_tokens,
                stop=[s for s in pr.stop if s] or None,
                seed=seed,
            )
            for pr in prompts
        ]
        try:
            outputs = llm.generate([pr.text for pr in prompts], params, use_tqdm=not self.ctx.quiet, lora_request=lora)
        finally:
            self.sleep()
        if len(outputs) != len(prompts):
            raise StageError(f"generator vllm: {len(outputs)} outputs for {len(prompts)} prompts")
        cands: list[Candidate] = []
        for pr, out in zip(prompts, outputs):
            req = getattr(out, "lora_request", None)
            used = self._refs.get(req.lora_int_id) if req is not None else None
            for k, o in enumerate(sorted(out.outputs, key=lambda o: o.index)):
                cands.append(
                    Candidate(
                        task_id=pr.task_id,
                        index=k,
                        text=o.text,
                        code=extract(o.text, pr),
                        adapter=used,
                        prompt_tokens=len(out.prompt_token_ids or ()),
                        completion_tokens=len(o.token_ids),
                    )
                )
        return cands


def _factory(params: VLLMParams, ctx: Any) -> VLLMGenerator:
    hf_model.ensure_tokenizer(ctx)  # the chat prompt builder needs it before the first prompt
    return VLLMGenerator(params, ctx)


@hookimpl
def srscode_generators():
    yield ComponentSpec(
        "vllm",
        _factory,
        VLLMParams,
        f"vLLM offline engine (targets {VLLM_VERSION_TARGETED}) with the round's LoRA as a LoRARequest",
    )
