"""A tiny random Qwen2-architecture model with an offline tokenizer, for fast model-stage
tests and benchmark smoke runs.

Nothing is downloaded and no weights are shipped: a byte-level BPE is trained in about a
second with ``tokenizers`` on Python source from the standard library, given a ChatML chat
template, and a 2-layer Qwen2 (hidden 64, 4 heads / 2 KV heads) is initialised from a fixed
seed and saved with ``save_pretrained``. Needs torch, transformers, tokenizers and (for
adapters) peft, imported on first use.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "build_bpe_tokenizer", "build_tiny_model", "make_lora_adapter"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen's ChatML, without the default system turn (the prompt builder passes one).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _training_text() -> list[str]:
    import ast
    import collections
    import json
    import textwrap

    return [inspect.getsource(m) for m in (ast, collections, json, textwrap)]


def build_bpe_tokenizer(vocab_size: int = 1024) -> Any:
    """A byte-level BPE (GPT-2 / Qwen style) trained on stdlib source, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random 2-layer Qwen2 and its tokenizer into ``out_dir``; return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_lora_adapter(model_dir: str | Path, out_dir: str | Path, seed: int, r: int = 4, scale: float = 0.5) -> Path:
    """Save a LoRA adapter for the tiny model whose B matrices are random (not zero), so that
    applying it visibly changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(out_dir)
    return Path(out_dir)
