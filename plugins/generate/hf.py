"""Generator ``hf``: a fast decode loop (or transformers ``generate``) on any backend, with
the round's LoRA via peft.

* Decoding (``decode``): ``fast`` = :mod:`srscode.plugins.lib.fast_decode` (Llama-family models:
  prefix sharing, a static KV cache, one device graph per step where the hardware backend
  offers graph capture, its pieces compiled once per process on accelerators, the base
  weights packed for the GEMM library where the backend offers a packer (the CPU; in bf16
  where the CPU runs bf16 GEMMs natively, ``pack_precision``), exact
  top-p without a full vocabulary sort); ``generate`` = transformers ``generate``;
  ``auto`` (default) = fast where the model is supported, else
  ``generate`` with a log line saying why. Both sample the same distribution
  (temperature, then top-p; EOS per sequence) and agree token for token when greedy
  (on a CPU whose packer rounds to bf16, with ``pack_precision: model``).
* Batch size: ``batch_size`` prompts per batch, each giving ``n`` rows. The default 64
  makes 256 rows at n=4: the fast loop's step reads the weights once for all rows, so
  tokens/s grow almost linearly with rows until the KV cache read dominates (measured in
  benchmarks/generate.py); 256 rows x 1k tokens of a 7B model's cache is ~15 GB.
* Streaming: :meth:`HFGenerator.generate_iter` yields candidates as soon as they are
  decoded: the fast loop gives out a batch's finished rows every few steps while its long
  rows still decode, so the engine evaluates them meanwhile and the evaluation left after
  the last step is only that of the longest rows. Prompts are sorted by length inside the
  call, longest first (``LONGEST_FIRST``): the last batch, which the evaluator still runs
  after generation ends, holds the shortest (on an H100 round of 512 KodCode tasks x 8 the
  evaluation tail fell from 3.1-3.7 s to 2.1-2.2 s), and the first, widest batch's cache
  serves the later ones; ``generate`` collects them in the order of the prompts given.
* ``generate`` path batching: ``batch_size`` prompts per ``generate`` call, left padding, and
  ``num_return_sequences=n`` candidates per prompt (greedy decoding generates once and
  repeats it, since greedy samples are identical). Prompts are sorted by length inside a
  call to waste less padding; candidates come back in the order of the prompts given.
* Adapter: loaded through peft onto the cached base (``hf_model.load_base``; the base is
  never reloaded between rounds) under one fixed name (a new adapter replaces the one
  loaded: the fast loop's compiled pieces guard on the name, see ``compile``); ``None``
  runs with adapters disabled (the base model). The ``Candidate.adapter`` it reports is
  hashed from the files it actually loaded (``AdapterRef.from_dir``), not copied from its
  argument, so the engine's identity check catches a stale or missing adapter.
* Stop strings (``Prompt.stop``): both ways. The sequence ends early (saves compute:
  transformers' ``stop_strings``; in the fast loop a stop string that is one special
  token acts as an EOS, others are looked for in the decoded text every few steps), and
  the decoded text is then cut before the first stop string (what vLLM returns with
  ``include_stop_str_in_output=False``), so all paths give the same text and token
  count. Special tokens are skipped when decoding.
* Seeded with ``seed`` (``torch.manual_seed``) before the first batch: reproducible on
  one device and path; the fast loop and ``generate`` draw differently from the same seed.
* Code is extracted with the run's prompt builder (``ctx.prompt_builder``, set by the
  engine), else the configured builder from ``srscode.plugins.prompt.builders``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from typing import Any, Callable, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt

from ..lib import hf_model

log = logging.getLogger(__name__)


class HFGeneratorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(
        64, ge=1, description="Prompts per batch (each yields n sequences); 64 x 4 candidates = 256 rows per step."
    )
    do_sample: bool = Field(True, description="False (or temperature 0) decodes greedily.")
    decode: Literal["auto", "fast", "generate"] = Field(
        "auto",
        description="auto: the fast loop where the model is a supported Llama-family model, else "
        "transformers generate(); fast: the fast loop or an error; generate: always generate().",
    )
    min_new_tokens: int = Field(0, ge=0, description="EOS is suppressed before this many new tokens (benchmarks).")
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile the fast loop's per-layer pieces around attention (one compilation serves "
        "every layer, every batch size, and every round's adapter: it is made once per process; the prefill "
        "runs through them too, 1.11-1.12x the engine call's tokens/s on an H100 and an H200), and its "
        "sampler (one fused exact draw per row; ~1.15x the tokens/s of the top-k sampler at 256 rows on an "
        "H100), captured with each step and its bookkeeping in its device graph where the backend has graphs "
        "(1.13-1.15x more on an H100). "
        "auto: on "
        "where the backend is an accelerator (the CPU step is bound by its GEMMs, not by kernel launches); "
        "a compiler failure falls back to the eager pieces with a warning.",
    )
    pack_weights: bool = Field(
        True,
        description="The fast loop multiplies the frozen base weights packed once per call for the device's "
        "GEMM library, where the backend offers it (the CPU: oneDNN's layout, ~2.5x faster GEMMs on a few rows), "
        "in the precision pack_precision picks; elsewhere (the accelerators, or a compiled loop) each layer's "
        "q/k/v and gate/up run as one GEMM each through concatenated copies made per call where they fit in half "
        "the free memory (+1.7 GB on the 1.5B shape in bf16; 1.11x faster GEMMs at 256 rows on an H100).",
    )
    pack_precision: Literal["auto", "model", "bf16"] = Field(
        "auto",
        description="The packed weights' precision. model: the model's dtype (exact up to summation order). "
        "bf16: bf16 copies of fp32 weights (inputs cast for each GEMM and back, so activations, KV cache "
        "and sampler stay fp32; a LoRA adapter's A is stacked under the packed base and its B applied after, "
        "so its delta is rounded relative to itself, never merged into the rounded base). auto: bf16 where the backend runs bf16 GEMMs natively (CPUs with AVX512-BF16 or AMX; on 2 "
        "cores 1.25x the tokens/s of fp32 packed at the demo's 15 rows, 1.03-1.16x with an adapter, 1.41x for 64 "
        "prompts at once: docs/benchmarks.md), else model. Training is unaffected.",
    )


ADAPTER_SLOT = "srscode"  # the one peft adapter name every round's LoRA is loaded under
# Batches go longest prompts first: the widest batch (the most memory) comes first, where a
# shortage shows at once, and the last batch, whose candidates the evaluator still has to
# run after generation ends, is the one with the shortest prompts (longest work first
# shortens a pipeline's tail). False: shortest first (what the loop did before; a baseline).
LONGEST_FIRST = True


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def resolve_extractor(ctx: Any) -> Callable[[str, Prompt], str]:
    """``extract(output, prompt) -> code`` from the run's prompt builder (``ctx.prompt_builder``);
    a generator used on its own builds the configured one from the built-in builders."""
    builder = ctx.prompt_builder
    if builder is None:
        from srscode.core.registry import validate_params
        from srscode.plugins.prompt import builders as prompts

        ref = ctx.config.stages.prompt
        for spec in prompts.srscode_prompt_builders():
            if spec.name == ref.name:
                params = validate_params(spec.params, ref.params, "stages.prompt.params")
                builder = spec.factory(params, ctx)
                break
        else:
            raise StageError(
                f"stages.prompt: no prompt builder {ref.name!r} to extract code with; the engine sets "
                "ctx.prompt_builder to the run's builder before generating."
            )
        ctx.prompt_builder = builder
    try:
        takes_prompt = len(inspect.signature(builder.extract).parameters) >= 2
    except (TypeError, ValueError):
        takes_prompt = False
    if takes_prompt:
        return lambda text, prompt: builder.extract(text, prompt)
    return lambda text, prompt: builder.extract(text)


def completion_length(ids: Sequence[int], eos_ids: set[int], pad_id: int | None) -> int:
    """Tokens the model generated: through the first eos, else up to the padding."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return i + 1
        if t == pad_id:
            return i
    return len(ids)


class HFGenerator:
    def __init__(self, params: HFGeneratorParams, ctx: Any):
        self.params = params
        self.ctx = ctx

    # ------------------------------------------------------------------ adapter
    def _model_for(self, adapter: AdapterRef | None) -> tuple[Any, AdapterRef | None, Callable[[], Any]]:
        """The module to generate with, the adapter it applies, and a factory of the context
        manager to decode in (entered per batch, so nothing leaks into the caller between
        the batches that ``generate_iter`` yields)."""
        import contextlib

        base, _ = hf_model.load_base(self.ctx)
        models = self.ctx.models
        pm = models.peft_model
        if adapter is None:
            if pm is None:
                return base, None, contextlib.nullcontext
            return pm, None, pm.disable_adapter
        from pathlib import Path

        if not (Path(adapter.path) / "adapter_config.json").is_file():
            raise StageError(
                f"generator hf: the adapter folder {adapter.path!r} has no adapter_config.json; "
                "expected a peft LoRA adapter saved by the trainer."
            )
        loaded = AdapterRef.from_dir(adapter.path)  # the bytes peft is about to read
        if pm is not None and models.peft_adapter != loaded.sha256:
            # another adapter in the slot: unload it, as the trainer does between rounds
            base = hf_model.release_peft(self.ctx)
            pm = None
        if pm is None:
            from peft import PeftModel

            # Always the same name: the fast loop's compiled pieces guard on the active
            # adapter's name, and a name per adapter (round) would compile them again every
            # round; its identity is the content hash kept beside it (``peft_adapter``)
            with hf_model.known_library_deprecations():
                pm = PeftModel.from_pretrained(base, loaded.path, adapter_name=ADAPTER_SLOT)
            models.peft_model, models.peft_adapter = pm, loaded.sha256
        pm.set_adapter(ADAPTER_SLOT)
        pm.eval()
        if pm.active_adapter != ADAPTER_SLOT:  # defensive: peft must have switched
            raise StageError(f"generator hf: peft did not activate adapter {loaded.path!r}")
        return pm, loaded, contextlib.nullcontext

    # ------------------------------------------------------------------ generate
    def generate(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> list[Candidate]:
        """``n`` candidates per prompt, in the order of ``prompts``."""
        results: dict[tuple[int, int], Candidate] = {}
        for part in self._batches(prompts, n, adapter, seed):
            for i, c in part:
                results[(i, c.index)] = c
        return [results[(i, k)] for i in range(len(prompts)) for k in range(n)]

    def generate_iter(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> Iterator[list[Candidate]]:
        """Yield candidates as soon as they are decoded: with the fast loop, the rows of a
        batch that have finished (EOS or a stop string) every few steps while the others
        still decode, then the rest when the batch ends; with ``generate``, each batch.

        Batches hold prompts of similar length (sorted inside the call, longest first: see
        ``LONGEST_FIRST``); together the parts hold exactly what ``generate`` returns, a
        prompt's candidates possibly across parts."""
        with contextlib.closing(self._batches(prompts, n, adapter, seed)) as parts:
            for part in parts:
                yield [c for _, c in part]

    def _batches(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> Iterator[list[tuple[int, Candidate]]]:
        """Parts of (index into ``prompts``, candidate), as the decoder gives rows out."""
        import torch

        if not prompts:
            return
        p = self.params
        model, used, context = self._model_for(adapter)
        _, tokenizer = hf_model.load_base(self.ctx)
        extract = resolve_extractor(self.ctx)
        device = self.ctx.backend.device
        greedy = not p.do_sample or p.temperature == 0.0
        per_call = 1 if greedy else n
        eos_ids, pad_id = _eos_and_pad(model, tokenizer)
        torch.manual_seed(seed)  # before the decoder, which takes its sampling seed from it
        decoder = self._fast_decoder(model, prompts, tokenizer)
        generate_batch = self._fast_batch(decoder, tokenizer, eos_ids, pad_id, greedy) if decoder else (
            self._generate_batch(model, tokenizer, eos_ids, pad_id, greedy, per_call)
        )

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].text), reverse=LONGEST_FIRST)
        try:
            with self.ctx.progress("generate", total=len(prompts), unit="prompt") as bar:
                for start in range(0, len(order), p.batch_size):
                    idx = order[start : start + p.batch_size]
                    batch = [prompts[i] for i in idx]
                    enc = tokenizer([b.text for b in batch], return_tensors="pt", padding=True)
                    enc = {k: v.to(device) for k, v in enc.items()}
                    prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
                    # the fast loop reports its decode step: a bar of prompts alone sits still
                    # for a whole batch
                    parts = generate_batch(enc, batch, per_call, on_step=lambda s: bar.set(step=f"{s}/{p.max_new_tokens}"))
                    try:
                        while True:
                            # the model's modes only while it decodes, never while the caller
                            # holds a part (it may evaluate it before asking for the next)
                            with context(), torch.inference_mode():
                                part = next(parts, None)
                            if part is None:
                                break
                            out: list[tuple[int, Candidate]] = []
                            for r, ids, length in zip(*part):
                                j = r // per_call  # row r is prompt j's sample r % per_call
                                raw = tokenizer.decode(ids[:length], skip_special_tokens=True)
                                text = truncate_at_stop(raw, batch[j].stop)
                                code = extract(text, batch[j])
                                # greedy decodes one row per prompt and repeats it n times
                                for k in range(r % per_call, n, per_call):
                                    out.append((idx[j], Candidate(
                                        task_id=batch[j].task_id, index=k, text=text, code=code, adapter=used,
                                        prompt_tokens=int(prompt_lens[j]), completion_tokens=length,
                                    )))
                            yield out
                    finally:
                        parts.close()  # a caller that stops early must not leave the weights packed
                    bar.advance(len(idx))
        finally:
            if decoder is not None:  # its KV cache, graphs and grouped weights, now rather than at a GC pass
                decoder.release()

    # ------------------------------------------------------------------ decoding paths
    def _fast_decoder(self, model: Any, prompts: Sequence[Prompt], tokenizer: Any) -> Any:
        """A FastDecoder for this call, or None where ``generate`` is used (and why)."""
        from ..lib import fast_decode

        mode = self.params.decode
        if mode == "generate":
            return None
        longest = max(len(tokenizer(pr.text)["input_ids"]) for pr in prompts)
        why = fast_decode.unsupported_reason(model, longest + self.params.max_new_tokens)
        if why is not None:
            if mode == "fast":
                raise StageError(f"generator hf: decode 'fast' cannot run this model: {why}")
            log.info("generator hf: using transformers generate() (fast decode loop unsupported: %s)", why)
            return None
        runner_factory = getattr(self.ctx.backend, "graph_runner", None)
        runner = runner_factory() if callable(runner_factory) else None
        # auto asks the backend (as lora_sft's liger does), not the device name: on the CPU
        # the step is bound by its GEMMs, not by launches (compiled: 115 vs 119 tok/s eager)
        compile_on = (not getattr(self.ctx.backend, "use_cpu", True)) if self.params.compile == "auto" else self.params.compile
        packer = None
        if self.params.pack_weights:
            packer_factory = getattr(self.ctx.backend, "linear_packer", None)
            packer = packer_factory(self.params.pack_precision) if callable(packer_factory) else None
        return fast_decode.FastDecoder(model, graph_runner=runner, compile=bool(compile_on), linear_packer=packer,
                                       group_linears=self.params.pack_weights)

    def _fast_batch(self, decoder: Any, tokenizer: Any, eos_ids: set[int], pad_id: int | None, greedy: bool) -> Callable:
        from ..lib import fast_decode

        p = self.params
        spec = fast_decode.SamplingSpec(
            temperature=0.0 if greedy else p.temperature,
            top_p=1.0 if greedy else p.top_p,
            eos_ids=tuple(sorted(eos_ids)),
            pad_id=pad_id if pad_id is not None else 0,
            min_new_tokens=p.min_new_tokens,
        )

        special = set(getattr(tokenizer, "all_special_tokens", ()))

        def run(
            enc: dict[str, Any], batch: Sequence[Prompt], per_call: int, on_step: Callable[[int], None] | None = None
        ) -> Iterator[tuple[list[int], list[list[int]], list[int]]]:
            stops = sorted({s for b in batch for s in b.stop if s})
            # a stop string that is one special token (a chat turn end) is that token: it
            # ends the row like an EOS (generate's stop_strings stop on it too), and the
            # decoded text, which skips special tokens, could never show it
            stop_ids = {tokenizer.convert_tokens_to_ids(s) for s in stops if s in special}
            texts = [s for s in stops if s not in special]
            check = fast_decode.stop_lengths(tokenizer, texts, eos_ids | stop_ids) if texts else None
            row_spec = dataclasses.replace(spec, eos_ids=tuple(sorted(set(spec.eos_ids) | stop_ids)))
            stream = decoder.stream(
                enc["input_ids"], enc["attention_mask"], per_call, p.max_new_tokens, row_spec, check, on_step=on_step
            )
            with contextlib.closing(stream):  # closed with this generator, not when it is collected
                for part in stream:
                    yield part.rows, part.tokens, part.lengths
            self.last_stats = dict(decoder.stats)

        return run

    def _generate_batch(
        self, model: Any, tokenizer: Any, eos_ids: set[int], pad_id: int | None, greedy: bool, per_call: int
    ) -> Callable:
        from transformers import GenerationConfig

        p = self.params
        # Sampling is what the params say, as with vLLM's SamplingParams: generate() fills
        # unset (None) fields from the checkpoint's generation_config.json (Qwen's sets
        # top_k=20, repetition_penalty=1.05), so the neutral values are explicit.
        gen_config = GenerationConfig(
            max_new_tokens=p.max_new_tokens,
            min_new_tokens=p.min_new_tokens or None,
            num_return_sequences=per_call,
            do_sample=not greedy,
            temperature=1.0 if greedy else p.temperature,
            top_p=1.0 if greedy else p.top_p,
            top_k=None if greedy else 0,  # 0 = no top-k (vLLM's default)
            repetition_penalty=1.0,
            eos_token_id=sorted(eos_ids) or None,
            bos_token_id=getattr(model.generation_config, "bos_token_id", None),
            pad_token_id=pad_id,
        )

        def run(
            enc: dict[str, Any], batch: Sequence[Prompt], per_call: int, on_step: Callable[[int], None] | None = None
        ) -> Iterator[tuple[list[int], list[list[int]], list[int]]]:
            stops = sorted({s for b in batch for s in b.stop if s})
            kwargs: dict[str, Any] = {"generation_config": gen_config}
            if stops:
                kwargs.update(stop_strings=stops, tokenizer=tokenizer)
            out = model.generate(**enc, **kwargs)
            gen = out[:, enc["input_ids"].shape[1] :].tolist()
            yield list(range(len(gen))), gen, [completion_length(ids, eos_ids, pad_id) for ids in gen]  # one part

        return run


def _eos_and_pad(model: Any, tokenizer: Any) -> tuple[set[int], int | None]:
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    return eos_ids, tokenizer.pad_token_id


def _factory(params: HFGeneratorParams, ctx: Any) -> HFGenerator:
    hf_model.ensure_tokenizer(ctx)  # the chat prompt builder needs it before the first prompt
    return HFGenerator(params, ctx)


@hookimpl
def srscode_generators():
    yield ComponentSpec(
        "hf",
        _factory,
        HFGeneratorParams,
        "fast decode loop (Llama family) or transformers generate(), with the round's LoRA through peft (any backend)",
    )


__all__ = ["ADAPTER_SLOT", "HFGenerator", "HFGeneratorParams", "completion_length", "truncate_at_stop"]
