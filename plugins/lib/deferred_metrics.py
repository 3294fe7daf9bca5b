"""Training metrics kept on the device and read once per log, not once per micro-batch.

An accelerator runs ahead of the host only while the host never waits for a result. Every
``.item()`` (or a tensor in an ``if``) makes the host wait until the device has finished all
the work queued so far; the device then idles while the host walks through the Python that
comes next (the optimizer, callbacks, the next batch, the next forward's preamble) until it
queues the next large kernel. With lora-sft's decoder layers replayed as graphs on an H100,
a 1.5B step was 144 ms of device work in 236 ms of wall time (docs/benchmarks.md, issue 19),
and per micro-batch the libraries read: TRL's SFT metrics (entropy, token accuracy, token
count: four reads after the forward), transformers' token count
(``include_num_input_tokens_seen``: one) and its NaN/inf loss filter (one, after the
backward). The mixins here keep the same numbers as running sums on the device and read them
when the Trainer logs; the stages also log every ``log_every`` steps rather than every step
(``lora_sft.common_args``).

* :class:`DeviceTokenCount` (any transformers ``Trainer``): the non-padding input tokens by
  transformers' own rule (the attention mask's sum, else the tokens that are not the pad id;
  a packing collator's ``token_count`` where it gives one),
  added to ``state.num_input_tokens_seen`` at each log and when training ends. Use with
  ``include_num_input_tokens_seen="no"``.
* :class:`DeferredSFTMetrics` (TRL's ``SFTTrainer``): TRL's loss through its fused LM head,
  computed as TRL computes it (``tests/test_deferred_metrics.py`` holds the two equal on the
  same batch), with ``entropy`` and ``mean_token_accuracy`` summed over the tokens of the log
  interval (TRL averages per-micro-batch ratios; equal when micro-batches hold as many
  labelled tokens) and ``num_tokens`` the non-padding tokens seen. Every case it does not
  cover (another loss type, label smoothing, a custom loss function, MoE auxiliary loss,
  sequence parallelism, ``return_outputs``, a TRL without the fused head) goes to TRL's own
  ``compute_loss``.
"""
from __future__ import annotations

from typing import Any


def _fused_lm_head_available() -> bool:
    try:
        from trl.trainer import utils
    except ImportError:
        return False
    return callable(getattr(utils, "add_fused_lm_head", None))


class DeviceTokenCount:
    """Trainer mixin (put it before the Trainer class): counts the non-padding input tokens
    on the device per micro-batch and adds them to ``state.num_input_tokens_seen`` with one
    read per log and one when ``train()`` returns, over all processes."""

    _tokens_pending: Any = None

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self._count_tokens(inputs)
        return super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        import torch

        if getattr(self.args, "include_num_input_tokens_seen", "no") not in ("no", False):  # type: ignore[attr-defined]
            return  # the Trainer counts them itself (a read per micro-batch)
        if "token_count" in inputs:  # a packing collator's own count (lib/packed_preference.py)
            n = inputs["token_count"]
        elif "attention_mask" in inputs:
            n = inputs["attention_mask"].sum()
        else:
            ids = inputs[getattr(self.model, "main_input_name", "input_ids")]  # type: ignore[attr-defined]
            pad = getattr(self.processing_class, "pad_token_id", None)  # type: ignore[attr-defined]
            n = ids.numel() if pad is None else (ids != pad).sum()
        n = torch.as_tensor(n, dtype=torch.int64, device=self.args.device)  # type: ignore[attr-defined]
        self._tokens_pending = n if self._tokens_pending is None else self._tokens_pending + n

    def flush_token_count(self) -> int:
        """Add the pending count (all processes) to ``state.num_input_tokens_seen``; returns it.
        A collective under DDP: every process calls it at the same points (log, train's end)."""
        import torch

        pending = self._tokens_pending
        if pending is None:
            pending = torch.zeros((), dtype=torch.int64, device=self.args.device)  # type: ignore[attr-defined]
        self._tokens_pending = None
        total = int(self.accelerator.gather(pending.reshape(1)).sum().item())  # type: ignore[attr-defined]
        self.state.num_input_tokens_seen += total  # type: ignore[attr-defined]
        return self.state.num_input_tokens_seen  # type: ignore[attr-defined]

    def _flush_for_log(self) -> None:
        self.flush_token_count()

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        self._flush_for_log()
        super().log(logs, *args, **kwargs)  # type: ignore[misc]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        out = super().train(*args, **kwargs)  # type: ignore[misc]
        self.flush_token_count()  # the steps after the last log
        return out


class DeferredSFTMetrics(DeviceTokenCount):
    """``SFTTrainer`` mixin (before ``SFTTrainer`` in the bases): TRL's loss without a host
    read per micro-batch; its metrics summed on the device and read when it logs."""

    _metric_sums: Any = None
    defer_metrics = True  # False: TRL's own compute_loss (the benchmark's baseline)

    def _plain_nll(self, return_outputs: bool) -> bool:
        """The case the lean loss reproduces; anything else is TRL's."""
        parallel = getattr(self.accelerator, "parallelism_config", None)  # type: ignore[attr-defined]
        return (self.defer_metrics and not return_outputs
                and getattr(self, "compute_loss_func", None) is None
                and getattr(self, "label_smoother", None) is None
                and getattr(self.args, "loss_type", None) == "nll"  # type: ignore[attr-defined]
                and getattr(self, "aux_loss_enabled", True) is False
                and not (parallel is not None and getattr(parallel, "sp_enabled", False))
                and _fused_lm_head_available())

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not self._plain_nll(return_outputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,  # type: ignore[misc]
                                        num_items_in_batch=num_items_in_batch)
        import torch

        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        valid = outputs.label_mask.sum()
        num_tokens = valid if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # type: ignore[attr-defined]
            # as TRL and Trainer: num_items_in_batch counts every rank's tokens, DDP averages the gradients
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # type: ignore[attr-defined]
        sums = torch.stack([valid.float(), outputs.entropy.detach().float().sum(), outputs.is_top1.float().sum()])
        mode = "train" if self.model.training else "eval"  # type: ignore[attr-defined]
        self._metric_sums = self._metric_sums or {}
        self._metric_sums[mode] = sums if mode not in self._metric_sums else self._metric_sums[mode] + sums
        return loss

    def flush_metrics(self, mode: str) -> None:
        """Turn the device sums of ``mode`` into TRL's logged metrics (one read, all processes)."""
        pending = (self._metric_sums or {}).pop(mode, None)
        if pending is None:
            return
        valid, entropy, correct = self.accelerator.gather(pending.reshape(1, 3)).sum(0).tolist()  # type: ignore[attr-defined]
        metrics = self._metrics[mode]  # type: ignore[attr-defined]
        metrics["entropy"] = [entropy / valid if valid > 0 else 0.0]
        metrics["mean_token_accuracy"] = [correct / valid if valid > 0 else 0.0]
        metrics["num_tokens"] = [self.state.num_input_tokens_seen]  # type: ignore[attr-defined]

    def _flush_for_log(self) -> None:
        super()._flush_for_log()  # the token count first: num_tokens reports it
        self.flush_metrics("train" if self.model.training else "eval")  # type: ignore[attr-defined]
