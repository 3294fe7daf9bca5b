"""The shared base model handed back as a trainer found it (``plugins/lib/model_patches.py``).

The attack is what liger does to a model while transformers' Trainer trains it (liger 0.8.5,
``apply_liger_kernel_to_qwen2(model=...)``): forwards bound into module instances, attributes
added, classes and functions swapped in the modeling module, and with its cross-entropy option
``torch.nn.functional.cross_entropy``. liger's kernels are Triton (a 286 MB wheel, GPU only), so
these tests patch the same places the same way; the real liger runs in the last test where it
is installed (the GPU host)."""
from __future__ import annotations

import types

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx

from srscode.core.types import DPOPair, SFTExample

PROMPT = "<|im_start|>user\nWrite {name}.<|im_end|>\n<|im_start|>assistant\n"


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 13, 17]])).logits


def liger_like_patch(model) -> None:
    """Patch ``model`` (a Qwen2ForCausalLM) where and how liger's apply function does, with
    forwards that change the output, so that a patch left in place cannot go unnoticed."""
    import torch
    from transformers.models.qwen2 import modeling_qwen2

    def norm_forward(self, x):
        return x * 2.0

    def mlp_forward(self, x):
        return torch.zeros_like(x)

    class FakeNorm(torch.nn.Module):
        pass

    modeling_qwen2.apply_rotary_pos_emb = lambda q, k, *a, **kw: (q, k)
    modeling_qwen2.Qwen2RMSNorm = FakeNorm
    modeling_qwen2.Qwen2MLP = FakeNorm
    modeling_qwen2.liger_added_name = True
    torch.nn.functional.cross_entropy = lambda *a, **kw: torch.tensor(0.0)  # its cross_entropy=True
    modeling_qwen2.Qwen2Model.liger_class_attr = True
    model.__dict__["forward"] = types.MethodType(lambda self, *a, **kw: None, model)
    for layer in model.model.layers:
        layer.mlp.__dict__["forward"] = mlp_forward.__get__(layer.mlp, type(layer.mlp))
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.__dict__["forward"] = norm_forward.__get__(norm, type(norm))
            norm.offset, norm.casting_mode, norm.variance_epsilon = 0.0, "llama", 0.5


def _state(model):
    """What the patch touches: each module's instance attributes, the modeling module's names."""
    import torch
    from transformers.models.qwen2 import modeling_qwen2

    return ([dict(vars(m)) for m in model.modules()], dict(vars(modeling_qwen2)),
            dict(vars(modeling_qwen2.Qwen2Model)), torch.nn.functional.cross_entropy)


def _same_state(a, b) -> bool:
    def same(x, y):
        return x.keys() == y.keys() and all(x[k] is y[k] for k in x)

    return (len(a[0]) == len(b[0]) and all(same(x, y) for x, y in zip(a[0], b[0]))
            and same(a[1], b[1]) and same(a[2], b[2]) and a[3] is b[3])


def test_liger_style_patches_are_undone_and_counted(tiny_model_dir):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.qwen2 import modeling_qwen2

    from srscode.plugins.lib.model_patches import model_patches_undone

    model = _load(tiny_model_dir)
    before, state = _logits(model), _state(model)
    with model_patches_undone(model) as report:
        inner = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()  # a second model, unpatched
        liger_like_patch(model)
        assert model.forward(torch.tensor([[1]])) is None and modeling_qwen2.Qwen2RMSNorm.__name__ == "FakeNorm"
        assert not torch.equal(_logits(inner.eval()), before)  # the module-wide swaps reach other models
    assert _same_state(_state(model), state)
    assert torch.equal(_logits(model), before)
    assert torch.nn.functional.cross_entropy(torch.zeros(1, 3), torch.tensor([1])).item() > 0
    # a model built after the stage gets transformers' classes again
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(tiny_model_dir)))
    assert type(fresh.model.norm) is modeling_qwen2.Qwen2RMSNorm and modeling_qwen2.Qwen2RMSNorm.__name__ == "Qwen2RMSNorm"
    # per layer: the MLP's forward, 2 norms x (forward, offset, casting_mode, variance_epsilon);
    # the LM's forward; 4 module names (3 swapped, 1 added); a class attribute; cross_entropy
    layers = len(model.model.layers)
    assert report["restored"] == layers * (1 + 2 * 4) + 1 + 4 + 1 + 1


def test_patches_are_undone_when_training_fails(tiny_model_dir):
    from srscode.plugins.lib.model_patches import model_patches_undone

    model = _load(tiny_model_dir)
    state = _state(model)
    with pytest.raises(RuntimeError, match="boom"), model_patches_undone(model):
        liger_like_patch(model)
        raise RuntimeError("boom")
    assert _same_state(_state(model), state)


def test_an_untouched_model_reports_nothing_restored(tiny_model_dir):
    from srscode.plugins.lib.model_patches import model_patches_undone

    model = _load(tiny_model_dir)
    with model_patches_undone(model) as report:
        _logits(model)
    assert report["restored"] == 0


def _examples():
    return [SFTExample(f"t{i}", PROMPT.format(name=f"f{i}"), f"def f{i}(x):\n    return x + {i}\n") for i in range(4)]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_trainers_hand_the_shared_base_back_unpatched(stage, tiny_model_dir, tmp_path, monkeypatch):
    """The stage trains through a Trainer that leaves liger's patches on the model (on the
    base under the PeftModel, as transformers' apply_liger_kernel does); afterwards the shared
    base the generator uses, and the modeling module, are as before. A plain training leaves
    a little behind too (TRL's model tags, accelerate's re-bound forward): also undone."""
    import torch

    from srscode.plugins.lib import hf_model
    from srscode.plugins.train import dpo as dpo_plugin
    from srscode.plugins.train import lora_sft

    params = dict(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=2, max_length=128)
    ctx = make_ctx(tiny_model_dir, dpo={"beta": 0.1})
    base, _ = hf_model.load_base(ctx)
    before, state = _logits(base), _state(base)
    real_train = lora_sft.train_with_progress
    patched: list[bool] = []

    def train_patching(trainer, ctx, what):
        out = real_train(trainer, ctx, what)
        if patched:  # the second run of the stage: what liger leaves on the model after training
            liger_like_patch(trainer.model.get_base_model())
        return out

    monkeypatch.setattr(lora_sft, "train_with_progress", train_patching)
    monkeypatch.setattr(dpo_plugin, "train_with_progress", train_patching)

    def run(out):
        if stage == "sft":
            r = lora_sft.LoRASFTTrainer(lora_sft.LoRASFTParams(**params), ctx).train_sft(_examples(), None, out)
            return r.metrics["train_patches_undone"]
        ex = _examples()
        pairs = [DPOPair(e.task_id, e.prompt, e.completion, ex[(i + 1) % 4].completion) for i, e in enumerate(ex)]
        r = dpo_plugin.DPOTrainerStage(dpo_plugin.DPOParams(**params), ctx).train_pairs(pairs, None, out)
        return r.metrics["dpo_patches_undone"]

    plain = run(tmp_path / "a")
    assert _same_state(_state(base), state)
    patched.append(True)
    # at least the patch's own attributes: per layer the MLP's forward and 2 norms x 4; 4 module
    # names, a class attribute, cross_entropy (the LM's forward a plain run may restore already)
    assert run(tmp_path / "b") >= plain + len(base.model.layers) * 9 + 6
    assert ctx.models.base_model is base
    assert _same_state(_state(base), state)
    assert torch.equal(_logits(base), before)


def test_real_liger_is_undone(tiny_model_dir):
    pytest.importorskip("liger_kernel", reason="liger-kernel (Triton, GPU) is not installed here; "
                        "the GPU host runs this test")
    from transformers.integrations.liger import apply_liger_kernel
    from transformers.models.qwen2 import modeling_qwen2

    from srscode.plugins.lib.model_patches import model_patches_undone

    model = _load(tiny_model_dir)
    state = _state(model)
    with model_patches_undone(model) as report:
        apply_liger_kernel(model, {})
        assert modeling_qwen2.Qwen2RMSNorm.__name__ == "LigerRMSNorm"  # liger did patch
    assert _same_state(_state(model), state)
    assert modeling_qwen2.Qwen2RMSNorm.__name__ == "Qwen2RMSNorm" and report["restored"] > 0


def test_rounds_after_a_patching_training_decode_without_compiling_again(tiny_model_dir, tmp_path, monkeypatch):
    """The symptom on the GPU: after a training that left liger's patches, the next round's
    compiled decoder traced the patched layers and compiled again. Here the engine's pattern on
    the CPU (compile forced on): generate on the base, train (patched), generate on the base
    again, then with the new adapter, train (patched again), generate with the next: the second
    base call compiles nothing, adapters add their graphs once, and the tokens and graph counts
    are those of rounds whose training patched nothing."""
    import torch

    from srscode.core.types import Prompt
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.lib import fast_decode
    from srscode.plugins.train import lora_sft

    class Counting:  # a torch.compile backend that counts the graphs dynamo hands it
        graphs = 0

        def __call__(self, gm, example_inputs):
            Counting.graphs += 1
            return gm.forward

    real_train = lora_sft.train_with_progress

    def run(patch: bool) -> tuple[list, list]:
        def train_patching(trainer, ctx, what):
            out = real_train(trainer, ctx, what)
            if patch:
                liger_like_patch(trainer.model.get_base_model())
            return out

        monkeypatch.setattr(lora_sft, "train_with_progress", train_patching)
        Counting.graphs = 0
        monkeypatch.setattr(fast_decode, "COMPILE_BACKEND", Counting())
        torch._dynamo.reset()
        ctx = make_ctx(tiny_model_dir)
        gen = HFGenerator(HFGeneratorParams(compile=True, temperature=0.0, max_new_tokens=8, pack_precision="model"), ctx)
        trainer = lora_sft.LoRASFTTrainer(lora_sft.LoRASFTParams(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=2,
                                                                 max_length=128), ctx)
        prompts = [Prompt(f"t{i}", PROMPT.format(name=f"f{i}")) for i in range(3)]
        texts, graphs, trained = [], [], None
        for step in ["base", "train", "base", "adapter", "train", "adapter"]:
            if step == "train":
                trained = trainer.train_sft(_examples(), trained, tmp_path / f"{patch}-{len(graphs)}").adapter
                continue
            texts.append([c.text for c in gen.generate(prompts, 1, trained if step == "adapter" else None, seed=1)])
            graphs.append(Counting.graphs)
        return texts, graphs

    plain_texts, plain_graphs = run(False)
    texts, graphs = run(True)
    assert graphs[1] == graphs[0] and graphs[3] == graphs[2], graphs  # compiled once for the base, once for adapters
    assert graphs == plain_graphs and texts == plain_texts
