"""``attention`` of the LoRA trainers: the implementation switch is scoped to the stage, and
FlexAttention scores packed rows exactly as sdpa does, each document seeing only itself
(the forward: FlexAttention has no CPU backward, so training with it is measured on a GPU,
benchmarks/train.py --arms flex)."""
from __future__ import annotations

import pytest

from model_fixtures import *  # noqa: F401,F403


def _model():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.2)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


def _packed():
    """Two rows of three documents (20, 30, 14 tokens), labels -100 at each document's start
    (as PackedRowsCollator makes them)."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (2, 64), generator=g)
    pos = torch.cat([torch.arange(20), torch.arange(30), torch.arange(14)]).repeat(2, 1)
    labels = ids.clone()
    labels[pos == 0] = -100
    return ids, pos, labels


def test_flex_attention_scores_packed_rows_like_sdpa_and_like_separate_documents():
    import torch
    import torch.nn.functional as F

    pytest.importorskip("torch.nn.attention.flex_attention", reason="this torch has no FlexAttention")
    model = _model()
    ids, pos, labels = _packed()
    losses = {}
    for impl in ("sdpa", "flex_attention"):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            # use_cache=False as TRL's SFTTrainer passes it: transformers looks for packed
            # documents only where no cache is made
            losses[impl] = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss.item()
    # each document alone (no packing at all): the summed token loss over the same labels
    model.set_attn_implementation("sdpa")
    total, count = 0.0, 0
    for row in range(2):
        for start, n in ((0, 20), (20, 30), (50, 14)):
            doc = ids[row : row + 1, start : start + n]
            with torch.no_grad():
                logits = model(input_ids=doc).logits[0, :-1]
            total += F.cross_entropy(logits, doc[0, 1:], reduction="sum").item()
            count += n - 1
    alone = total / count
    assert losses["flex_attention"] == pytest.approx(losses["sdpa"], rel=1e-5)
    assert losses["flex_attention"] == pytest.approx(alone, rel=1e-5)
    # and the mask matters: the same row scored as one sequence differs
    with torch.no_grad():
        unpacked = model(input_ids=ids, labels=labels, use_cache=False).loss.item()
    assert abs(unpacked - alone) > 1e-3


def test_training_attention_switches_for_the_stage_and_restores(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from srscode.core.errors import StageError
    from srscode.plugins.train.lora_sft import LoRASFTParams, training_attention

    assert LoRASFTParams().attention == "auto"
    model = _model()
    model.set_attn_implementation("sdpa")
    pm = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    with training_attention(pm, "eager"):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"
    with training_attention(pm, "auto"):
        assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="boom"):  # restored when the stage fails, too
        with training_attention(pm, "eager"):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(StageError, match="params.attention 'flash_attention_9'"):
        with training_attention(pm, "flash_attention_9"):
            pass
    assert model.config._attn_implementation == "sdpa"


def test_unknown_attention_setting_is_a_config_error():
    import pydantic

    from srscode.plugins.train.lora_sft import LoRASFTParams

    with pytest.raises(pydantic.ValidationError, match="attention"):
        LoRASFTParams(attention="flash")
