"""``compact_lm_head``: on a backend whose shapes may vary, TRL's fused LM head projects only the
positions that carry a label (prompt and padding skipped), with the same log-probs and
gradients as when it projects every position; elsewhere, and after the block, TRL's own choice."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("trl", reason="the LoRA trainers' extra (trl) is not installed")
trl_utils = pytest.importorskip("trl.trainer.utils")
if not hasattr(trl_utils, "add_fused_lm_head"):
    pytest.skip("this TRL has no fused LM head (compact_lm_head then changes nothing)", allow_module_level=True)

from srscode.plugins.lib.compact_lm_head import compact_lm_head  # noqa: E402

VARYING = SimpleNamespace(varying_shapes=True)
FIXED = SimpleNamespace(varying_shapes=False)


def _model():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    trl_utils.add_fused_lm_head(model)
    return model


def _batch():
    """Two padded rows: a 12-token prompt (label -100), a completion, right padding (-100)."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (2, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :12] = -100
    return ids, mask, labels


def _run(model, rows_seen: list[int]):
    """Per-token log-probs, loss and one weight's gradient of a forward + backward, recording
    how many positions TRL's chunked head projected."""
    ids, mask, labels = _batch()
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *rest):
        rows_seen.append(hidden.shape[0])
        return apply(hidden, *rest)

    model.zero_grad()
    patched = pytest.MonkeyPatch()
    patched.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    try:
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
    finally:
        patched.undo()
    return out.log_probs.detach(), out.loss.detach(), model.model.layers[0].mlp.up_proj.weight.grad.clone()


def test_varying_shapes_backend_scores_only_labelled_positions_with_the_same_numbers():
    import torch

    model = _model()
    ids, mask, labels = _batch()
    labelled = int((labels[:, 1:] != -100).sum())
    everywhere: list[int] = []
    ref = _run(model, everywhere)
    compact: list[int] = []
    with compact_lm_head(VARYING) as switched:
        got = _run(model, compact)
    assert switched is True
    assert compact == [labelled], "the head projected positions that carry no label"
    assert labelled < ids.shape[0] * (ids.shape[1] - 1)  # the batch has prompt and padding to skip
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6)


def test_the_switch_ends_with_the_block_even_when_training_fails():
    original = trl_utils._use_triton
    with pytest.raises(RuntimeError, match="boom"):
        with compact_lm_head(VARYING):
            assert trl_utils._use_triton is not original
            raise RuntimeError("boom")
    assert trl_utils._use_triton is original


def test_a_backend_with_fixed_shapes_keeps_trls_choice():
    original = trl_utils._use_triton
    with compact_lm_head(FIXED) as switched:
        assert trl_utils._use_triton is original
    assert switched is False
    with compact_lm_head(SimpleNamespace()) as switched:  # a third-party backend without the field
        assert trl_utils._use_triton is original
    assert switched is False


def test_a_trl_without_the_switch_changes_nothing(monkeypatch):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with compact_lm_head(VARYING) as switched:
        assert not hasattr(trl_utils, "_use_triton")
    assert switched is False


def test_builtin_backends_say_where_shapes_may_vary():
    from srscode.hardware.backends import ASCEND, CPU, CUDA

    assert CPU.varying_shapes and CUDA.varying_shapes
    assert not ASCEND.varying_shapes  # not measured on an NPU: TRL's own choice stays there
