"""DPO on packed rows: every step the same shape, so the graphed decoder layers replay.

Why: TRL's DPO pads each batch to its longest pair, so every batch has another shape and no
captured graph fits it; its step stayed host-bound on an H100 (7,321 kernels a step launched
from Python, 298 ms of device work in ~439 ms; docs/benchmarks.md, issue 19). TRL 1.16's own
``padding_free`` is disabled ("temporarily unavailable"). Here a DPO step is ``rows`` rows of
``row_length`` tokens (the stage's ``batch_size`` and ``max_length``), each row holding whole
sequences (prompt + chosen, prompt + rejected) one after another, position ids restarting at
each, so that transformers masks them block-diagonally as it does ``lora-sft``'s packed rows;
no padding beyond each row's end is computed, and a pair's two sequences are always in the
same step (the loss needs both).

* :class:`PackedPairSteps`: the planned steps (a torch ``Dataset``, one item per step, so the
  trainer's batch size is 1 and its sampler shuffles steps). Planning is first-fit over the
  pairs, longest first, into the last few open steps (bounded: thousands of pairs plan in
  well under a second); each sequence truncated to ``row_length`` as TRL truncates
  (``keep_start``).
* :class:`PackedPairsCollator`: a step as tensors: ``input_ids``, ``position_ids``, ``labels``
  (completion tokens; prompt, padding and each sequence's first token -100),
  ``sequence_slot`` (the sequence each token belongs to: chosen of pair ``j`` is ``j``,
  rejected ``P + j``, padding ``2P``), ``completion_tokens`` per sequence, ``token_count``.
* :class:`PackedDPOLoss` (mixin before TRL's ``DPOTrainer``): TRL's sigmoid DPO loss on
  those batches: per-sequence log-probs summed from the fused LM head's per-token ones, the
  reference's the same way under the ``ref`` adapter (or with adapters disabled, or the
  ``ref_model``), as TRL computes them (``tests/test_packed_preference.py`` holds the loss and
  rewards equal to TRL's on the same pairs). Its metrics (rewards, margins, accuracies,
  log-probs, entropy, logits, token accuracy) are summed on the device and read at the log,
  pooled over the log interval (TRL averages per-step means). Batches without
  ``sequence_slot`` go to TRL's own loss.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

# open steps a pair may still go into; older ones are closed (a bound on planning time)
_OPEN_STEPS = 16
# the device sums kept per log interval (their order in the one tensor read at the log)
_SUMS = ("pairs", "chosen_rewards", "rejected_rewards", "accuracies", "margins", "chosen_logps", "rejected_logps",
         "entropy", "completion_tokens", "chosen_logits", "chosen_tokens", "rejected_logits", "rejected_tokens",
         "chosen_top1")


def _sequences(pair: Mapping[str, Any], row_length: int) -> tuple[tuple[list[int], list[int]], ...]:
    """(ids, completion mask) of prompt + chosen and prompt + rejected, truncated as TRL's
    collator truncates them (keep the start)."""
    prompt = list(pair["prompt_ids"])
    out = []
    for key in ("chosen_ids", "rejected_ids"):
        completion = list(pair[key])
        out.append(((prompt + completion)[:row_length], ([0] * len(prompt) + [1] * len(completion))[:row_length]))
    return tuple(out)


class PackedPairSteps:
    """The training steps of packed DPO (module docstring): ``steps[i]`` is a list of
    ``rows`` rows, each a list of ``(pair index, 0 chosen / 1 rejected)``."""

    def __init__(self, pairs: Sequence[Mapping[str, Any]], rows: int, row_length: int):
        if rows < 2:
            raise ValueError(f"packed DPO needs at least 2 rows a step (batch_size), got {rows}: a pair's two "
                             "sequences may each fill a row")
        self.rows = rows
        self.row_length = row_length
        self.pairs = pairs  # as given (TRL's tokenised rows)
        self.sequences = [_sequences(p, row_length) for p in pairs]
        self.steps = self._plan()

    def _plan(self) -> list[list[list[tuple[int, int]]]]:
        lengths = [(len(c[0]), len(r[0])) for c, r in self.sequences]
        order = sorted(range(len(lengths)), key=lambda i: -(lengths[i][0] + lengths[i][1]))
        steps: list[dict[str, Any]] = []
        open_steps: list[dict[str, Any]] = []
        for i in order:
            for step in open_steps:
                if self._place(step, i, lengths[i]):
                    break
            else:
                step = {"free": [self.row_length] * self.rows, "rows": [[] for _ in range(self.rows)]}
                if not self._place(step, i, lengths[i]):  # cannot happen with rows >= 2 and sequences <= row_length
                    raise RuntimeError(f"packed DPO: pair {i} ({lengths[i]} tokens) does not fit an empty step")
                steps.append(step)
                open_steps.append(step)
                if len(open_steps) > _OPEN_STEPS:
                    open_steps.pop(0)
        return [step["rows"] for step in steps]

    @staticmethod
    def _place(step: dict[str, Any], pair: int, lengths: tuple[int, int]) -> bool:
        """Put both sequences of ``pair`` into the rows with the least room that still fits them
        (best fit), or leave the step unchanged and say no."""
        free = list(step["free"])
        where = []
        for n in lengths:
            fits = [k for k, room in enumerate(free) if room >= n]
            if not fits:
                return False
            k = min(fits, key=lambda j: free[j])
            free[k] -= n
            where.append(k)
        step["free"] = free
        for which, k in enumerate(where):
            step["rows"][k].append((pair, which))
        return True

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One step: its pairs (numbered in the step) and rows of ``(ids, completion mask, slot)``."""
        rows = self.steps[i]
        local: dict[int, int] = {}
        for row in rows:
            for pair, _ in row:
                local.setdefault(pair, len(local))
        n = len(local)
        return {"pairs": n, "rows": [[(*self.sequences[pair][which], which * n + local[pair]) for pair, which in row]
                                     for row in rows]}


class PackedPairsCollator:
    """The trainer's collator for :class:`PackedPairSteps` items (module docstring); each
    batch is ``rows`` rows per item, every row ``row_length`` long."""

    def __init__(self, pad_token_id: int, row_length: int):
        self.pad_token_id = pad_token_id
        self.row_length = row_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        total = sum(item["pairs"] for item in items)
        ids, positions, labels, slots = [], [], [], []
        completion = torch.zeros(2 * total, dtype=torch.long)
        real = 0
        offset = 0
        for item in items:
            n = item["pairs"]
            for row in item["rows"]:
                r_ids, r_pos, r_lab, r_slot = [], [], [], []
                for seq, mask, slot in row:
                    which, j = divmod(slot, n)  # slot within the step -> slot within the batch
                    g = which * total + offset + j
                    r_ids += seq
                    r_pos += range(len(seq))
                    # the first token of a sequence would be predicted from the one before it
                    r_lab += [-100] + [t if m else -100 for t, m in zip(seq[1:], mask[1:])]
                    r_slot += [g] * len(seq)
                    completion[g] = sum(mask[1:])
                used = len(r_ids)
                if used > self.row_length:
                    raise ValueError(f"packed DPO row of {used} tokens is longer than its {self.row_length}")
                pad = self.row_length - used
                real += used
                ids.append(r_ids + [self.pad_token_id] * pad)
                positions.append(r_pos + list(range(pad)))  # the padding is one more "sequence"
                labels.append(r_lab + [-100] * pad)
                slots.append(r_slot + [2 * total] * pad)
            offset += n
        return {
            "input_ids": torch.tensor(ids), "position_ids": torch.tensor(positions), "labels": torch.tensor(labels),
            "sequence_slot": torch.tensor(slots), "completion_tokens": completion,
            "token_count": torch.tensor(real),
        }


def _per_sequence(values: Any, slots: Any, n_seq: int) -> Any:
    """Per-token values (rows x positions - 1, aligned with the shifted labels) summed per
    sequence: ``n_seq`` sums (the padding's slot dropped). One ``index_add`` for every
    sequence of the step, no host read; on CUDA its float additions are atomics, so the last
    bits may differ between runs unless torch's deterministic mode is on (TRL sums each padded
    row in order)."""
    idx = slots[:, 1:].reshape(-1)
    flat = values.reshape(idx.numel(), -1)
    return flat.new_zeros(n_seq + 1, flat.size(1)).index_add(0, idx, flat)[:n_seq]


class PackedDPOLoss:
    """``DPOTrainer`` mixin (before it in the bases): the sigmoid DPO loss on packed batches
    (:class:`PackedPairsCollator`), metrics read once per log; ``pairs_seen`` counts the
    pairs trained on (host side, no read)."""

    pairs_seen = 0
    _pref_sums: Any = None

    @staticmethod
    def packable(args: Any, model: Any) -> str | None:
        """Why DPO with these ``DPOConfig`` arguments and this model cannot train packed (None:
        it can): only the case :meth:`compute_loss` reproduces."""
        loss_types = list(args.loss_type) if isinstance(args.loss_type, (list, tuple)) else [args.loss_type]
        if loss_types != ["sigmoid"]:
            return f"loss_type {loss_types} (packed DPO computes the sigmoid loss only)"
        divergence = getattr(args, "f_divergence_type", "reverse_kl")
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        coef = getattr(args, "router_aux_loss_coef", None)
        coef = getattr(text_config, "router_aux_loss_coef", 0.0) if coef is None else coef
        checks = {
            "ld_alpha unset": getattr(args, "ld_alpha", None) is None,
            "f_divergence_type reverse_kl": str(getattr(divergence, "value", divergence)) == "reverse_kl",
            "use_weighting off": not getattr(args, "use_weighting", False),
            "precompute_ref_log_probs off": not getattr(args, "precompute_ref_log_probs", False),
            "no MoE auxiliary loss": not (hasattr(text_config, "output_router_logits") and coef != 0.0),
        }
        missing = [name for name, ok in checks.items() if not ok]
        return f"it needs {', '.join(missing)}" if missing else None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if "sequence_slot" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,  # type: ignore[misc]
                                        num_items_in_batch=num_items_in_batch)
        if return_outputs:
            raise ValueError("packed DPO batches give a loss only (no per-row outputs); evaluate without packing")
        import torch
        import torch.nn.functional as F

        slots, completion = inputs["sequence_slot"], inputs["completion_tokens"]
        n_seq = completion.numel()
        n = n_seq // 2
        kw = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"], "labels": inputs["labels"],
              "use_cache": False, "fused_lm_head": True}
        outputs = model(**kw)
        logps = _per_sequence(outputs.log_probs, slots, n_seq)[:, 0]
        with torch.no_grad(), self._reference() as ref_model:
            ref_logps = _per_sequence(ref_model(**kw).log_probs, slots, n_seq)[:, 0]
        chosen_ratio = logps[:n] - ref_logps[:n]
        rejected_ratio = logps[n:] - ref_logps[n:]
        loss = -F.logsigmoid(self.beta * (chosen_ratio - rejected_ratio)).mean() * self.loss_weights[0]  # type: ignore[attr-defined]
        mode = "train" if self.model.training else "eval"  # type: ignore[attr-defined]
        if mode == "train":
            self.pairs_seen += n
        with torch.no_grad():
            self._add_sums(mode, outputs, slots, completion, logps.detach(), chosen_ratio.detach(),
                           rejected_ratio.detach())
        return loss

    @contextlib.contextmanager
    def _reference(self) -> Any:
        """The reference model as TRL's DPO uses it: ``ref_model``, else the policy under its
        frozen ``ref`` adapter copy, else with adapters disabled (a fresh LoRA's base)."""
        if getattr(self, "ref_model", None) is not None:
            yield self.ref_model
            return
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        unwrapped = self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]
        name = "ref" if "ref" in getattr(unwrapped, "peft_config", {}) else None
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                use_adapter(unwrapped, adapter_name=name):  # type: ignore[attr-defined]
            yield self.model  # type: ignore[attr-defined]

    def _add_sums(self, mode: str, outputs: Any, slots: Any, completion: Any, logps: Any, chosen_ratio: Any,
                  rejected_ratio: Any) -> None:
        import torch

        n = completion.numel() // 2
        fields = [getattr(outputs, f, None) for f in ("entropy", "mean_logits", "is_top1")]
        fields = [f.float() if f is not None else torch.zeros_like(outputs.log_probs, dtype=torch.float32)
                  for f in fields]
        per_seq = _per_sequence(torch.stack(fields, -1), slots, 2 * n)  # (2n, 3): entropy, logits, top-1 sums
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio, self.beta * rejected_ratio  # type: ignore[attr-defined]
        tokens = completion.float()
        values = {
            "pairs": torch.full((), float(n), device=logps.device), "chosen_rewards": chosen_rewards.sum(),
            "rejected_rewards": rejected_rewards.sum(), "accuracies": (chosen_rewards > rejected_rewards).float().sum(),
            "margins": (chosen_rewards - rejected_rewards).sum(), "chosen_logps": logps[:n].sum(),
            "rejected_logps": logps[n:].sum(), "entropy": per_seq[:, 0].sum(), "completion_tokens": tokens.sum(),
            "chosen_logits": per_seq[:n, 1].sum(), "chosen_tokens": tokens[:n].sum(),
            "rejected_logits": per_seq[n:, 1].sum(), "rejected_tokens": tokens[n:].sum(),
            "chosen_top1": per_seq[:n, 2].sum(),
        }
        sums = torch.stack([values[k].float() for k in _SUMS])  # one tensor: one read at the log
        self._pref_sums = self._pref_sums or {}
        self._pref_sums[mode] = sums if mode not in self._pref_sums else self._pref_sums[mode] + sums

    def flush_preference_metrics(self, mode: str) -> None:
        """Turn the device sums of ``mode`` into TRL's logged DPO metrics (one read, all processes)."""
        pending = (self._pref_sums or {}).pop(mode, None)
        if pending is None:
            return
        s = dict(zip(_SUMS, self.accelerator.gather(pending.reshape(1, -1)).sum(0).tolist()))  # type: ignore[attr-defined]

        def ratio(a: str, b: str) -> float:
            return s[a] / s[b] if s[b] > 0 else 0.0

        metrics = self._metrics[mode]  # type: ignore[attr-defined]
        for name, value in {
            "entropy": ratio("entropy", "completion_tokens"),
            "num_tokens": float(self.state.num_input_tokens_seen),  # type: ignore[attr-defined]
            "logits/chosen": ratio("chosen_logits", "chosen_tokens"),
            "logits/rejected": ratio("rejected_logits", "rejected_tokens"),
            "mean_token_accuracy": ratio("chosen_top1", "chosen_tokens"),
            "rewards/chosen": ratio("chosen_rewards", "pairs"), "rewards/rejected": ratio("rejected_rewards", "pairs"),
            "rewards/accuracies": ratio("accuracies", "pairs"), "rewards/margins": ratio("margins", "pairs"),
            "logps/chosen": ratio("chosen_logps", "pairs"), "logps/rejected": ratio("rejected_logps", "pairs"),
        }.items():
            metrics[name] = [value]

    def _flush_for_log(self) -> None:
        super()._flush_for_log()  # type: ignore[misc]  # the token count first: num_tokens reports it
        self.flush_preference_metrics("train" if self.model.training else "eval")  # type: ignore[attr-defined]
