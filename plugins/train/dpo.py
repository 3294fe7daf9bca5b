"""Preference trainer ``dpo``: TRL's ``DPOTrainer`` on the same LoRA adapter.

The reference model is the policy as it stands when the stage starts (base + the adapter
passed as ``init``, normally the one SFT just trained), not the bare base. TRL 1.16 has no
``model_adapter_name`` / ``ref_adapter_name`` options any more; its equivalent is built in:
given a ``PeftModel`` whose trainable adapter is named ``"default"`` and no ``ref_model``,
``DPOTrainer.__init__`` adds a frozen adapter ``"ref"`` with a copy of ``"default"``'s
weights and computes the reference log-probs under it (``use_adapter(model, "ref")``).
So the policy and the reference agree at step 0 and the first loss is log 2 (≈ 0.693).
Without ``init`` a fresh LoRA (B = 0) is trained and the reference is the base, which is
the same function. Only ``"default"`` is saved (``selected_adapters``).

Speed: gradient checkpointing off, liger's layer kernels where available (``liger``) and
leaner LoRA layers under mixed precision (``lib/lora_training.py``), as in ``lora-sft``.
Packed steps (``packing``, ``lib/packed_preference.py``): TRL pads each batch to its longest
pair (its ``padding_free`` is disabled in 1.16), so every batch has another shape and no
captured graph fits; packed, a step is ``batch_size`` rows of ``max_length`` tokens holding
whole pairs, one shape, and the policy's decoder layers replay as graphs (``graphs``,
``lib/graphed_layers.py``) while the reference's pass (no gradients, another adapter) runs
eagerly; the loss is TRL's sigmoid loss computed on the packed rows (a test holds it and the
rewards equal to TRL's). On by default where the backend captures training graphs; elsewhere
TRL's padded batches. Host reads as in ``lora-sft``: the loss logged every ``log_every`` steps
(and the first, whose loss is log 2, and the last), no NaN filter, the token count kept on the
device (``lib/deferred_metrics.DeviceTokenCount``); packed, the DPO metrics too (rewards,
log-probs, logits, accuracies; read at the log); unpacked, TRL's own loss reads them ~19 times
a step. Progress: one ``ctx.progress("dpo")`` bar with the loss. The shared base is handed back
as ``lora-sft`` hands it back (LoRA unloaded, liger's patches undone).

``beta`` comes from ``config.dpo.beta``; the rest (LoRA shape for a fresh adapter, lr,
epochs, batch size, ...) from ``dpo.params``. Precision/device from the hardware backend.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import Field

from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, ComponentSpec, DPOPair, TrainResult

from ..lib import hf_model
from ..lib.compact_lm_head import compact_lm_head
from ..lib.deferred_metrics import DeviceTokenCount
from ..lib.graphed_layers import graphed_decoder_layers
from ..lib.lora_training import mixed_precision_lora
from ..lib.packed_mask import packed_mask_without_sync
from ..lib.packed_preference import PackedDPOLoss, PackedPairsCollator, PackedPairSteps
from .lora_sft import (
    LoRAParams, common_args, known_library_deprecations, log_last_step, lora_on_shared_base, one_device_per_process,
    save_adapter, train_with_progress, training_attention, training_graph_maker,
)

log = logging.getLogger(__name__)


class DPOParams(LoRAParams):
    lr: float = Field(5.0e-5, gt=0.0, description="Learning rate (a LoRA takes more than full DPO fine-tuning).")
    loss_type: str = Field("sigmoid", description="TRL DPO loss type (sigmoid = the DPO paper's loss).")
    batch_size: int = Field(4, ge=1, description=(
        "Preference pairs per device step; with packing, rows of max_length tokens per step (as many whole pairs "
        "as fit). Fewer, larger steps keep an accelerator busier, at the cost of fewer optimizer steps per epoch "
        "and more memory: DPO on a 1.5B model's LoRA on an H100 ran 4.5x and 6.1x TRL's defaults (pairs/s, two "
        "runs) with 8 packed rows of 1,024 tokens a step (graphed layers, 22 GB), 5.1x with 16 (40 GB), and "
        "2.1-2.5x unpacked with 8 pairs a step (39 GB) (docs/benchmarks.md)."))
    packing: Literal["auto"] | bool = Field(
        "auto",
        description="Pack each step's pairs into batch_size rows of max_length tokens (whole sequences, each "
        "attending only to itself; a pair's chosen and rejected in the same step), so that every step has one "
        "shape and the decoder layers replay as graphs, and no padding between sequences is computed; "
        "batch_size then counts rows. Same loss as TRL's (sigmoid). auto: where the layers are graphed (see "
        "graphs), loss_type is sigmoid and batch_size >= 2; false: TRL's batches, padded to their longest pair.",
    )
    graphs: Literal["auto"] | bool = Field(
        "auto",
        description="Replay the decoder layers' forward and backward as captured device graphs (CUDA graphs) "
        "in the policy's pass (the reference's pass, without gradients, runs eagerly); needs packing (one shape "
        "a step; a last, smaller step runs eagerly). auto: on where the backend captures graphs for training, "
        "one process and no gradient checkpointing.",
    )


class DPOTrainerStage:
    def __init__(self, params: DPOParams, ctx: Any):
        self.params = params
        self.ctx = ctx

    @property
    def adapter_rank(self) -> int:
        """The LoRA rank of the adapters it saves (the vLLM generator sizes its slots with it)."""
        return self.params.r

    @property
    def beta(self) -> float:
        return float(self.ctx.config.dpo.beta)

    def build_trainer(self, pairs: Sequence[DPOPair], model: Any, scratch: str, **overrides: Any) -> Any:
        """The TRL ``DPOTrainer`` this stage trains with; ``overrides`` replace DPOConfig
        arguments (the benchmark sets ``max_steps``)."""
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        p = self.params
        _, tokenizer = hf_model.load_base(self.ctx)
        data = Dataset.from_dict(
            {
                "prompt": [x.prompt for x in pairs],
                "chosen": [x.chosen for x in pairs],
                "rejected": [x.rejected for x in pairs],
            }
        )
        kw = {**common_args(p, self.ctx, scratch), **overrides}
        args = one_device_per_process(DPOConfig(beta=self.beta, loss_type=[p.loss_type], **kw))
        packed = self.packs(args, model)
        if packed:
            args.per_device_train_batch_size = 1  # one planned step (batch_size rows) per item
            args.remove_unused_columns = False  # the items are steps, not rows of named model inputs

        class StageDPOTrainer(PackedDPOLoss, DeviceTokenCount, DPOTrainer):
            pass

        with known_library_deprecations():
            trainer = StageDPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        if packed:
            # TRL tokenised the pairs (prompt_ids, chosen_ids, rejected_ids); the steps are planned from those
            trainer.train_dataset = PackedPairSteps(trainer.train_dataset, rows=p.batch_size, row_length=p.max_length)
            trainer.data_collator = PackedPairsCollator(trainer.processing_class.pad_token_id, p.max_length)
        trainer.srscode_packed = packed
        return log_last_step(trainer)

    def packs(self, args: Any, model: Any) -> bool:
        """Whether this stage trains on packed steps (``params.packing``, lib/packed_preference.py)."""
        p = self.params
        if p.graphs is True and p.packing is False:
            raise StageError("dpo: params.graphs is true but packing is false: TRL's padded batches change shape "
                             "every step, so no captured graph fits (set packing: auto or graphs: auto)")
        if p.packing is False:
            return False
        why = PackedDPOLoss.packable(args, model)
        if p.packing is True:
            if why is not None:
                raise StageError(f"dpo: params.packing is true but {why} (set packing: auto or false)")
            if p.batch_size < 2:
                raise StageError("dpo: params.packing is true but batch_size is 1: a packed step needs >= 2 rows "
                                 "(a pair's two sequences may each fill a row)")
            return True
        return why is None and p.batch_size >= 2 and self.graph_maker(args, packed=True) is not None

    def graph_maker(self, args: Any, packed: bool) -> Any:
        """The backend's ``make_graphed_callables`` where the policy's pass replays as graphs, else None."""
        p = self.params
        return training_graph_maker(p.graphs, self.ctx, args, one_shape=packed, checkpointing=p.gradient_checkpointing,
                                    where="dpo")

    def train_pairs(self, pairs: Sequence[DPOPair], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        if not pairs:
            return TrainResult(adapter=init, metrics={"dpo_pairs": 0.0})
        if self.ctx.quiet:
            hf_model.quiet_libraries()
        else:
            hf_model.quiet_datasets()
        hf_model.load_base(self.ctx)
        started = time.perf_counter()
        with lora_on_shared_base(self.ctx, init, self.params) as (model, undone), \
                tempfile.TemporaryDirectory(prefix="srscode-dpo-") as scratch:
            trainer = self.build_trainer(pairs, model, scratch)
            if init is not None and "ref" not in model.peft_config:
                raise StageError(
                    "dpo: this TRL version did not add the frozen 'ref' adapter copy, so the reference "
                    "would be the bare base instead of the policy at the stage's start; use trl>=1.0."
                )
            with dpo_speedups(self, trainer, model) as on:
                output = train_with_progress(trainer, self.ctx, "dpo")
            compact, lean, graphed = on["compact"], on["lean"], on["graphs"]
            adapter = save_adapter(trainer, model, Path(out_dir), selected_adapters=["default"])
        seconds = time.perf_counter() - started
        logs = [h for h in trainer.state.log_history if "loss" in h]
        tokens = float(trainer.state.num_input_tokens_seen or 0)
        metrics = {
            "dpo_pairs": float(len(pairs)),
            "dpo_loss": float(output.training_loss),
            "dpo_first_loss": float(logs[0]["loss"]) if logs else float("nan"),
            # TRL's averages over the last log interval (up to log_every steps, ending at the last)
            "dpo_reward_accuracy": float(logs[-1].get("rewards/accuracies", float("nan"))) if logs else float("nan"),
            "dpo_reward_margin": float(logs[-1].get("rewards/margins", float("nan"))) if logs else float("nan"),
            "dpo_steps": float(trainer.state.global_step),
            "dpo_tokens": tokens,
            "dpo_seconds": seconds,
            "dpo_liger": float(bool(trainer.args.use_liger_kernel)),
            "dpo_compact_head": float(compact),  # the LM head scored only labelled tokens (compact_lm_head)
            "dpo_lora_inputs_uncast": float(lean["uncast"]),  # LoRA inputs stayed bf16/fp16 (mixed_precision_lora)
            "dpo_lora_fused_add": float(lean["fused_add"]),  # the adapter's product added by one addmm
            "dpo_patches_undone": float(undone["restored"]),  # attributes training patched, put back (model_patches)
            "dpo_packed": float(trainer.srscode_packed),  # steps of packed rows (lib/packed_preference.py)
            # the policy pass's decoder layers replayed as captured graphs: captures, and the share of
            # layer calls (reference passes included) that replayed
            "dpo_graph_captures": float(graphed["captures"]),
            "dpo_graph_replayed": graphed["replays"] / max(1, graphed["replays"] + graphed["own_calls"]),
        }
        return TrainResult(adapter=adapter, metrics=metrics)


@contextlib.contextmanager
def dpo_speedups(stage: DPOTrainerStage, trainer: Any, model: Any) -> Iterator[dict[str, Any]]:
    """What ``dpo`` trains under, entered and undone together: its attention, the compact LM head,
    the lean LoRA layers and, with packing, packed masks without a host read and the graphed decoder
    layers (innermost: they capture the lean layers). Yields what each switched on."""
    import torch

    packed = bool(getattr(trainer, "srscode_packed", False))
    make = stage.graph_maker(trainer.args, packed=packed) if packed else None
    device_type = torch.device(stage.ctx.backend.device).type
    with training_attention(model, stage.params.attention), compact_lm_head(stage.ctx.backend) as compact, \
            (packed_mask_without_sync() if packed else contextlib.nullcontext(False)) as packed_mask, \
            mixed_precision_lora(model, trainer.args) as lean, \
            graphed_decoder_layers(model, make, device_type) as graphs:
        yield {"compact": compact, "packed_mask": packed_mask, "lean": lean, "graphs": graphs}


@hookimpl
def srscode_trainers():
    yield ComponentSpec(
        "dpo",
        lambda params, ctx: DPOTrainerStage(params, ctx),
        DPOParams,
        "TRL DPOTrainer on the LoRA adapter; reference = the policy at the stage's start",
    )
