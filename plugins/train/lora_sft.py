"""Trainer ``lora-sft``: peft LoRA trained with TRL's ``SFTTrainer`` on prompt -> completion.

* Data: one prompt-completion row per ``SFTExample`` (the prompt as the generator saw it,
  the reference solution as the completion); TRL masks the prompt, so the loss is on the
  completion only (``completion_only_loss=True``) and appends the eos token.
* Per-task weights (``SFTExample.weight``, from the memory policy): **weighted sampling**.
  Each epoch draws ``len(examples)`` rows with replacement with probability proportional
  to the weight (``torch.utils.data.WeightedRandomSampler``), so the expected gradient is
  the weight-averaged one, with TRL's loss left untouched. Rows of weight 0 are dropped;
  when all weights are equal the usual shuffled pass over the data is used. The sampler is
  seeded, so under ``accelerate launch`` every process draws the same order and accelerate
  shards it.
* The adapter continues across rounds: ``init`` is loaded as trainable (its own LoRA
  config then wins over r / alpha / target_modules); without it a fresh LoRA is made from
  the params. The adapter is saved into ``out_dir`` (only the main process writes).
* Speed (``packing``, on by default): examples are packed best-fit-decreasing into rows of
  ``max_length`` tokens (TRL's ``packing_strategy="bfd"``), so ``batch_size`` rows make a
  token budget of ``batch_size * max_length`` per step and almost no padding is computed.
  Each example attends only to itself: the rows carry ``position_ids`` restarting at 0 per
  example and no ``attention_mask``, from which transformers (5.17 and 5.24,
  ``masking_utils.find_packed_sequence_indices``) builds a block-diagonal causal mask that
  sdpa, eager and flex attention all honour, so the per-token loss is the padded batch's.
  Why our own collator (:class:`PackedRowsCollator`) rather than TRL's padding-free one:
  TRL flattens the whole batch into one row, which only FlashAttention's varlen kernel
  runs in time linear in the examples; under sdpa that row costs attention over
  ``(batch_size * max_length)**2`` pairs. Rows of ``max_length`` keep it to
  ``batch_size * max_length**2``. With weights, packing draws the weighted sample first
  (seeded, the same on every process) and packs the drawn rows.
* Liger kernels (``liger``): TRL's ``use_liger_kernel`` (Triton RMSNorm / SwiGLU / RoPE;
  TRL 1.16 already computes the loss through its own chunked LM head, without the
  vocabulary-wide logits, so liger's fused cross-entropy is neither needed nor allowed).
  ``auto`` uses them where the package is importable and the backend is an accelerator.
* Under mixed precision (bf16/fp16 autocast) the LoRA layers run leaner than peft's forward
  (``lib/lora_training.py``): their input stays in the compute dtype (peft casts it to the
  fp32 adapter's dtype and autocast casts it back) and the adapter's scaled product is added
  by one ``addmm``; the same GEMM inputs with fewer activation-sized kernels.
* Graphed decoder layers (``graphs``, ``lib/graphed_layers.py``): where the backend captures
  graphs for training (CUDA), each decoder layer's forward and backward replay as captured
  graphs instead of ~200 kernel launches each from Python; packed rows are then padded to
  ``max_length`` so that every full batch has the captured shape (an epoch's last, smaller
  batch runs eagerly). Off with several processes (DDP), gradient checkpointing or packing off.
* Host reads (``lib/deferred_metrics.py``, ``lib/packed_mask.py``): a step reads nothing back
  from the device between logs, so an accelerator never idles while the host catches up. TRL's
  loss is computed as TRL computes it, with its metrics (entropy, token accuracy) and the
  token count summed on the device and read when the Trainer logs (every ``log_every`` steps,
  the first and the last); transformers' NaN filter (a read per micro-batch) is off;
  transformers' packed-mask check (a read per forward) is replaced by the same numbering
  without it; batches go to the device without a wait (pinned, non-blocking).
* Gradient checkpointing is off by default (TRL's SFTConfig turns it on): a LoRA on a
  frozen model has room for its activations at these lengths, and recomputing the forward
  costs about a third more compute.
* Progress: one ``ctx.progress`` bar per stage with the loss (:class:`StageProgress`), not
  transformers' tqdm bar.
* Precision and device from the hardware backend (``bf16`` / ``fp16`` / ``use_cpu``); no
  device branches. Training goes through TRL's accelerate-based Trainer, so
  ``accelerate launch`` of the same command trains data-parallel.
* The cached base model is left clean afterwards (LoRA layers unloaded, eval mode), so the
  generator's peft path works on it next round without reloading; what the Trainer patched
  on it and in its modeling module (liger's kernels, process-wide) is put back
  (``lib/model_patches.py``), so the next round decodes with transformers' own layers and its
  compiled decoder is not compiled again.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, ComponentSpec, SFTExample, TrainResult

from ..lib import hf_model
from ..lib.compact_lm_head import compact_lm_head
from ..lib.deferred_metrics import DeferredSFTMetrics
from ..lib.graphed_layers import graphed_decoder_layers
from ..lib.lora_training import mixed_precision_lora
from ..lib.model_patches import model_patches_undone
from ..lib.packed_mask import packed_mask_without_sync
from ..lib.hf_model import known_library_deprecations

log = logging.getLogger(__name__)


class LoRAParams(BaseModel):
    """LoRA shape and optimisation settings shared by ``lora-sft`` and ``dpo``."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank (vLLM serves ranks up to max_lora_rank).")
    alpha: float = Field(32.0, gt=0.0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or module names.")
    lr: float = Field(1.0e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(4, ge=1, description=(
        "Per-device batch size (lora-sft with packing: rows of max_length tokens). Fewer, larger steps keep an "
        "accelerator busier, at the cost of fewer optimizer steps per epoch: LoRA SFT on a 1.5B model trained at "
        "32.7 % MFU on an H100 with 8 rows of 1,024 tokens a step (graphed layers, no host reads between logs; "
        "17.6 % with neither) and, before both, at 19 % with 8 rows and 31 % with 16 on an H200 "
        "(docs/benchmarks.md)."))
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8, description="Tokens per example (prompt + completion), truncated.")
    seed: int | None = Field(None, description="Training seed; default: the run's seed.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Linear warmup, as a fraction of the steps.")
    log_every: int = Field(10, ge=1, description=(
        "Log the loss (progress bar, the trainer's log history) every this many steps, and at the first and "
        "last. Each log reads the loss from the device, which idles an accelerator until the host catches up; "
        "1 logs every step."))
    liger: Literal["auto"] | bool = Field(
        "auto",
        description="Liger's Triton kernels (RMSNorm, SwiGLU, RoPE) through TRL's use_liger_kernel; "
        "auto: where liger-kernel is installed and the backend is an accelerator.",
    )


    attention: Literal["auto", "sdpa", "flex_attention", "eager"] = Field(
        "auto",
        description="The model's attention implementation while this stage trains (restored afterwards). "
        "flex_attention: PyTorch FlexAttention, whose block mask skips the blocks a packed row's "
        "documents never attend to (CUDA: it has no CPU backward; uncompiled, as trained here, it "
        "measured 3.6x slower than sdpa on an H100, docs/benchmarks.md). auto: the model's own (sdpa).",
    )


class LoRASFTParams(LoRAParams):
    packing: bool = Field(
        True,
        description="Pack examples into rows of max_length tokens, each attending only to itself "
        "(same per-token loss as padding); batch_size then counts rows, a budget of batch_size x max_length tokens.",
    )
    graphs: Literal["auto"] | bool = Field(
        "auto",
        description="Replay the decoder layers' forward and backward as captured device graphs (CUDA graphs) "
        "instead of launching their kernels one by one from Python; packed rows are then padded to max_length "
        "so that every full batch has one shape (an epoch's last, smaller batch runs eagerly). auto: on where "
        "the backend captures graphs for training, with packing, one process and no gradient checkpointing.",
    )


def lora_config(p: LoRAParams) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=p.r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=p.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )


def trainer_precision(backend: Any) -> dict[str, Any]:
    """TrainingArguments precision/device flags from the hardware backend."""
    mp = backend.mixed_precision
    return {"bf16": mp == "bf16", "fp16": mp == "fp16", "use_cpu": bool(backend.use_cpu)}


def _checkpointing_key() -> str:
    """transformers 5.2x renamed ``gradient_checkpointing`` to ``activation_checkpointing``
    (the old name warns); earlier 5.x only has the old one."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def use_liger(setting: Literal["auto"] | bool, backend: Any, where: str = "trainer") -> bool:
    """Whether to switch on liger's kernels. They are Triton kernels for accelerators, so
    ``auto`` asks the backend (``use_cpu``) rather than naming a device."""
    import importlib.util

    installed = importlib.util.find_spec("liger_kernel") is not None
    if setting is True and not installed:
        raise StageError(f"{where}: params.liger is true but the liger-kernel package is not installed "
                         "(pip install liger-kernel, or set liger: auto)")
    if setting == "auto":
        return installed and not backend.use_cpu
    return bool(setting)


def common_args(p: LoRAParams, ctx: Any, scratch: str) -> dict[str, Any]:
    """Arguments SFTConfig and DPOConfig share (both are transformers TrainingArguments)."""
    pinned = not ctx.backend.use_cpu
    return dict(
        output_dir=scratch,
        learning_rate=p.lr,
        num_train_epochs=p.epochs,
        per_device_train_batch_size=p.batch_size,
        gradient_accumulation_steps=p.grad_accum,
        max_length=p.max_length,
        seed=ctx.seed if p.seed is None else p.seed,
        **{_checkpointing_key(): p.gradient_checkpointing},
        warmup_steps=p.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the steps
        # a log reads the loss (and the deferred metrics, lib/deferred_metrics.py) from the
        # device: every log_every steps, not every step; the first (a DPO sanity check: log 2)
        # and the last (log_last_step) too
        logging_steps=p.log_every,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # it reads every micro-batch's loss; a NaN is logged as NaN instead
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,  # progress goes through ctx.progress (StageProgress)
        dataloader_pin_memory=pinned,
        accelerator_config={"non_blocking": pinned},  # batches copied without waiting for the device
        include_num_input_tokens_seen="no",  # counted on the device (DeviceTokenCount), read per log
        # every LoRA weight gets a gradient each step; left unset, Trainer asks DDP to search
        # the autograd graph for unused parameters every step (it does so for any model that
        # is not a PreTrainedModel, and a PeftModel is not one)
        ddp_find_unused_parameters=False,
        use_liger_kernel=use_liger(p.liger, ctx.backend),
        **trainer_precision(ctx.backend),
    )


def training_graph_maker(setting: Literal["auto"] | bool, ctx: Any, args: Any, one_shape: bool,
                         checkpointing: bool, where: str = "trainer") -> Any:
    """The backend's ``make_graphed_callables`` where a stage's decoder layers replay as graphs
    (:mod:`~srscode.plugins.lib.graphed_layers`), else None. ``auto``: where the backend captures
    graphs for training, every full batch has ``one_shape``, one process (DDP's reducer hooks into
    the backward) and no gradient checkpointing (the layers would recompute); ``True`` insists."""
    if setting is False:
        return None
    factory = getattr(ctx.backend, "graph_runner", None)
    runner = factory() if factory is not None else None
    make = getattr(runner, "make_graphed_callables", None) if runner is not None else None
    if setting is True:
        if make is None:
            raise StageError(f"{where}: params.graphs is true but the {getattr(ctx.backend, 'name', '?')!r} backend "
                             "captures no graphs for training (set graphs: auto or false)")
        if args.world_size > 1:
            raise StageError(f"{where}: params.graphs is true but training runs in several processes; graphed "
                             "layers bypass DDP's gradient hooks (set graphs: auto or false)")
        return make
    if not one_shape or checkpointing or args.world_size > 1:
        return None  # shapes that vary per batch, layers recomputed, or DDP's hooks
    return make


def one_device_per_process(args: Any) -> Any:
    """Train on this process's one device. Without a launcher, transformers' Trainer would
    wrap the model in ``nn.DataParallel`` over every visible GPU (which TRL's trainers
    refuse); several devices are the launcher's job (``accelerate launch``, one process
    each, DDP). ``n_gpu`` is read first so the device setup is cached before the pin."""
    if args.n_gpu > 1 and args.world_size == 1:
        args._n_gpu = 1
    return args


def peft_model_for(ctx: Any, init: AdapterRef | None, p: LoRAParams) -> Any:
    """The cached base wrapped in a ``PeftModel`` with one trainable adapter named "default":
    ``init`` when continuing (its own LoRA config wins), else a fresh LoRA from the params.

    Wrapped here rather than by the TRL trainer (``peft_config=``) so that the LoRA layers
    can always be unloaded from the shared base afterwards, even when the trainer fails.
    """
    from peft import PeftModel, get_peft_model

    base = hf_model.release_peft(ctx)  # the generator's LoRA layers, if any
    if base is None:
        base, _ = hf_model.load_base(ctx)
    if init is not None and not (Path(init.path) / "adapter_config.json").is_file():
        raise StageError(f"trainer: the adapter to continue from, {init.path!r}, has no adapter_config.json")
    with known_library_deprecations():
        if init is None:
            import torch

            # peft draws lora_A from torch's global CPU stream (it builds the layers on the CPU,
            # then moves them), whose state depends on what ran before (the hf generator seeds
            # it, vLLM does not): seeded from the run's seed so that a fresh adapter starts the
            # same in every run of one config, the caller's stream left as it was
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(int(getattr(ctx.config, "seed", 0)))
                return get_peft_model(base, lora_config(p), adapter_name="default")
        return PeftModel.from_pretrained(base, init.path, adapter_name="default", is_trainable=True)


def save_adapter(trainer: Any, model: Any, out_dir: Path, **save_kw: Any) -> AdapterRef:
    """Save the trained adapter into ``out_dir`` (main process only) and hash it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_world_process_zero():
        model.save_pretrained(str(out_dir), **save_kw)
    trainer.accelerator.wait_for_everyone()
    return AdapterRef.from_dir(out_dir)


@contextlib.contextmanager
def training_attention(model: Any, setting: str) -> Iterator[None]:
    """Switch the wrapped model's attention implementation for the stage and restore it,
    so the generator (``generate()`` uses the model's own) sees what it loaded."""
    from peft import PeftModel

    lm = model.get_base_model() if isinstance(model, PeftModel) else model
    before = getattr(lm.config, "_attn_implementation", None)
    switch = setting != "auto" and setting != before
    if switch:
        try:
            lm.set_attn_implementation(setting)
        except (ValueError, ImportError) as exc:
            raise StageError(f"trainer: params.attention {setting!r} is not available for this model: {exc}") from exc
        log.info("trainer: attention %s while training (was %s)", setting, before)
    try:
        yield
    finally:
        if switch and before is not None:
            lm.set_attn_implementation(before)


def restore_base(ctx: Any, model: Any) -> None:
    """Unload LoRA and undo what training switched on, so generation sees the plain base."""
    from peft import PeftModel

    base = hf_model.unload_lora(model) if isinstance(model, PeftModel) else model
    # transformers 5.2x: activation_*; earlier 5.x: gradient_* (now deprecated aliases)
    new = hasattr(base, "activation_checkpointing_disable")
    if getattr(base, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False):
        (base.activation_checkpointing_disable if new else base.gradient_checkpointing_disable)()
    if hasattr(base, "_require_grads_hook"):
        base.disable_input_require_grads()
    if getattr(base.config, "use_cache", None) is False:
        base.config.use_cache = True
    base.eval()
    ctx.models.base_model = base


@contextlib.contextmanager
def lora_on_shared_base(ctx: Any, init: AdapterRef | None, p: LoRAParams) -> Iterator[tuple[Any, dict[str, int]]]:
    """The shared base wrapped for training (:func:`peft_model_for`) and, whatever happens,
    handed back as the generator wants it: LoRA unloaded (:func:`restore_base`) and what the
    Trainer patched on it put back (``lib/model_patches.py``; liger patches it while training).
    Yields the ``PeftModel`` and the patch report (its count is set on exit)."""
    with model_patches_undone(hf_model.release_peft(ctx)) as undone:
        model = peft_model_for(ctx, init, p)
        try:
            yield model, undone
        finally:
            restore_base(ctx, model)


def quiet_logs(trainer: Any) -> None:
    """No printed dict per logged step (transformers adds a ``PrinterCallback`` when its bar is
    off): the engine reports the metrics; ``logging_steps=1`` only feeds ``state.log_history``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def StageProgress(ctx: Any, name: str) -> Any:  # noqa: N802 - a class made on first use
    """A transformers ``TrainerCallback`` driving ``ctx.progress(name, total=steps, unit="step")``
    with the latest loss. Built lazily so importing this module does not import transformers."""
    from transformers import TrainerCallback

    class _StageProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar = ctx.progress(name, total=int(state.max_steps) or None, unit="step")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.advance(1)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set(loss=float(logs["loss"]))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.close()

        def close(self, error: BaseException | None = None) -> None:
            """Also called by the stage when training raised (no ``on_train_end`` then)."""
            if self.bar is not None:
                self.bar.close(error)
                self.bar = None

    return _StageProgress()


def log_last_step(trainer: Any) -> Any:
    """Have ``trainer`` log its last step too (its loss on the bar, the final metrics in the log
    history), whatever ``logging_steps`` is; returns the trainer."""
    from transformers import TrainerCallback

    class _LogLastStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True

    trainer.add_callback(_LogLastStep())
    return trainer


def train_with_progress(trainer: Any, ctx: Any, name: str) -> Any:
    """``trainer.train()`` with its steps and loss on one ``ctx.progress`` bar."""
    quiet_logs(trainer)
    progress = StageProgress(ctx, name)
    trainer.add_callback(progress)
    try:
        with known_library_deprecations():  # TRL's DPO reads the checkpointing flag while training
            return trainer.train()
    except BaseException as exc:
        progress.close(exc)
        raise


class PackedRowsCollator:
    """Batches of packed rows (TRL's ``pack_dataset`` output: ``input_ids``, ``labels``,
    ``seq_lengths``) padded to the longest row, with ``position_ids`` restarting at 0 at
    each example and no ``attention_mask``, so that transformers masks block-diagonally.

    The padding at a row's end is one more "example" (positions from 0, labels -100), so it
    needs no mask either. A label at a position 0 is dropped: the model would predict the
    first token of an example from the last token of the one before (TRL's padding-free
    collator does the same)."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to  # every batch this long (graphed layers replay one shape), else the longest row

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to is not None:
            if longest > self.pad_to:
                raise ValueError(f"packed row of {longest} tokens is longer than pad_to={self.pad_to}")
            longest = self.pad_to
        ids, labels, positions = [], [], []
        for r in rows:
            n = len(r["input_ids"])
            lengths = list(r.get("seq_lengths") or [n])
            if sum(lengths) != n:
                raise ValueError(f"packed row: seq_lengths {lengths} do not add up to its {n} tokens")
            pad = longest - n
            pos = torch.cat([torch.arange(k) for k in lengths + ([pad] if pad else [])])
            lab = torch.tensor(list(r.get("labels", r["input_ids"])) + [-100] * pad)
            lab[pos == 0] = -100
            ids.append(torch.tensor(list(r["input_ids"]) + [self.pad_token_id] * pad))
            labels.append(lab)
            positions.append(pos)
        return {"input_ids": torch.stack(ids), "labels": torch.stack(labels), "position_ids": torch.stack(positions)}


def _weights_or_none(weights: Sequence[float]) -> list[float] | None:
    return None if max(weights) - min(weights) <= 1e-12 else list(weights)


def weighted_draw(weights: Sequence[float], n: int, seed: int) -> list[int]:
    """``n`` row indices drawn with replacement, probability proportional to the weight; the
    same on every process (seeded), like the sampler of the unpacked path."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.tensor(weights, dtype=torch.float64), n, replacement=True, generator=gen).tolist()


class LoRASFTTrainer:
    def __init__(self, params: LoRASFTParams, ctx: Any):
        self.params = params
        self.ctx = ctx

    @property
    def adapter_rank(self) -> int:
        """The LoRA rank of the adapters it saves (the vLLM generator sizes its slots with it)."""
        return self.params.r

    def build_trainer(self, examples: Sequence[SFTExample], model: Any, scratch: str, **overrides: Any) -> Any:
        """The TRL ``SFTTrainer`` this stage trains with (examples of weight > 0 only):
        packed or weighted as the params say. ``overrides`` replace SFTConfig arguments
        (the benchmark sets ``max_steps``)."""
        import torch
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        p = self.params
        _, tokenizer = hf_model.load_base(self.ctx)
        weights = _weights_or_none([e.weight for e in examples])
        rows = list(examples)
        kw = common_args(p, self.ctx, scratch)
        if p.packing and weights is not None:
            # packing makes rows of several examples, so the weights act on the examples
            # before packing: draw the epoch(s) first, then train once over the draw
            n = max(1, round(p.epochs * len(rows)))
            rows = [rows[i] for i in weighted_draw(weights, n, kw["seed"])]
            kw["num_train_epochs"] = 1.0
            weights = None
        kw.update(overrides)
        sampler_weights = weights

        class StageSFTTrainer(DeferredSFTMetrics, SFTTrainer):
            def _get_train_sampler(self, train_dataset: Any = None) -> Any:
                if sampler_weights is None:
                    return super()._get_train_sampler(train_dataset)
                gen = torch.Generator().manual_seed(self.args.seed)
                return torch.utils.data.WeightedRandomSampler(
                    sampler_weights, num_samples=len(sampler_weights), replacement=True, generator=gen
                )

        data = Dataset.from_dict({"prompt": [e.prompt for e in rows], "completion": [e.completion for e in rows]})
        packing = dict(packing=True, packing_strategy="bfd") if p.packing else dict(packing=False)
        args = one_device_per_process(SFTConfig(completion_only_loss=True, **packing, **kw))
        with known_library_deprecations():
            trainer = StageSFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        if p.packing:
            # TRL's bfd packing switches on its padding-free collator (one flattened row per
            # batch, made for FlashAttention's varlen kernel); see the module docstring
            pad_to = p.max_length if self.graph_maker(args) is not None else None
            trainer.data_collator = PackedRowsCollator(trainer.processing_class.pad_token_id, pad_to=pad_to)
        return log_last_step(trainer)

    def graph_maker(self, args: Any) -> Any:
        """The backend's ``make_graphed_callables`` where this stage trains with graphed decoder
        layers (``params.graphs``, :mod:`~srscode.plugins.lib.graphed_layers`), else None."""
        return training_graph_maker(self.params.graphs, self.ctx, args, one_shape=self.params.packing,
                                    checkpointing=self.params.gradient_checkpointing)

    def train_sft(self, examples: Sequence[SFTExample], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        kept = [e for e in examples if e.weight > 0]
        if not kept:
            log.info("lora-sft: every example has weight 0; the adapter is unchanged")
            return TrainResult(adapter=init, metrics={"train_examples": 0.0})
        p = self.params
        if self.ctx.quiet:
            hf_model.quiet_libraries()
        else:
            hf_model.quiet_datasets()
        hf_model.load_base(self.ctx)
        weighted = _weights_or_none([e.weight for e in kept]) is not None
        started = time.perf_counter()
        with lora_on_shared_base(self.ctx, init, p) as (model, undone), \
                tempfile.TemporaryDirectory(prefix="srscode-sft-") as scratch:
            trainer = self.build_trainer(kept, model, scratch)
            with sft_speedups(self, trainer, model) as on:
                output = train_with_progress(trainer, self.ctx, "train")
            compact, lean, graphed = on["compact"], on["lean"], on["graphs"]
            adapter = save_adapter(trainer, model, Path(out_dir))
        seconds = time.perf_counter() - started
        loop = float(output.metrics.get("train_runtime") or seconds)
        tokens = float(trainer.state.num_input_tokens_seen or 0)  # non-padding, all processes (DeviceTokenCount)
        metrics = {
            "train_loss": float(output.training_loss),
            "train_tokens": tokens,
            "train_examples": float(len(kept)),
            "train_steps": float(trainer.state.global_step),
            "train_seconds": seconds,  # the whole stage: wrap, tokenise, train, save, unload
            "train_tokens_per_s": tokens / loop if loop > 0 else 0.0,  # the training loop alone
            "train_weighted": float(weighted),
            "train_packed": float(p.packing),
            "train_liger": float(bool(trainer.args.use_liger_kernel)),
            "train_compact_head": float(compact),  # the LM head scored only labelled tokens (compact_lm_head)
            "train_lora_inputs_uncast": float(lean["uncast"]),  # LoRA inputs stayed bf16/fp16 (mixed_precision_lora)
            "train_lora_fused_add": float(lean["fused_add"]),  # the adapter's product added by one addmm
            "train_patches_undone": float(undone["restored"]),  # attributes training patched, put back (model_patches)
            # decoder layers replayed as captured graphs (graphed_layers): captures, and the share
            # of layer calls that replayed (the rest ran eagerly: a last smaller batch)
            "train_graph_captures": float(graphed["captures"]),
            "train_graph_replayed": graphed["replays"] / max(1, graphed["replays"] + graphed["own_calls"]),
        }
        return TrainResult(adapter=adapter, metrics=metrics)


@contextlib.contextmanager
def sft_speedups(stage: LoRASFTTrainer, trainer: Any, model: Any) -> Iterator[dict[str, Any]]:
    """What ``lora-sft`` trains under, entered and undone together: its attention, the compact
    LM head, packed masks without a host read, the lean LoRA layers and the graphed decoder
    layers (innermost: they capture the lean layers). Yields what each switched on
    (``compact``, ``packed_mask``, ``lean``, ``graphs``)."""
    import torch

    device_type = torch.device(stage.ctx.backend.device).type
    with training_attention(model, stage.params.attention), compact_lm_head(stage.ctx.backend) as compact, \
            packed_mask_without_sync() as packed_mask, mixed_precision_lora(model, trainer.args) as lean, \
            graphed_decoder_layers(model, stage.graph_maker(trainer.args), device_type) as graphs:
        yield {"compact": compact, "packed_mask": packed_mask, "lean": lean, "graphs": graphs}


@hookimpl
def srscode_trainers():
    yield ComponentSpec(
        "lora-sft",
        lambda params, ctx: LoRASFTTrainer(params, ctx),
        LoRASFTParams,
        "peft LoRA with TRL SFTTrainer on reference solutions (loss on the completion; weighted sampling)",
    )
