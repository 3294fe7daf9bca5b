"""Decoder layers replayed as captured graphs while a LoRA trains (``plugins/lib/graphed_layers.py``).

The CPU has no graph capture, so :func:`emulated_make_graphed_callables` stands in for
``torch.cuda.make_graphed_callables`` with the semantics that matter to a caller: the
sample tensors become the static inputs each call is copied into, the callable runs at
capture (a failure surfaces there), and outputs and gradients come back as views of
buffers that the next call overwrites (so a gradient kept past the next backward changes
under its holder, as with real graphs). The real capture runs in the CUDA-only test."""
from __future__ import annotations

import logging
import types

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import cpu_backend, make_ctx

from srscode.core.errors import StageError
from srscode.core.types import SFTExample


def emulated_make_graphed_callables(callables, sample_args, num_warmup_iters=3, allow_unused_input=False):
    for fn, static_in in zip(callables, sample_args):
        fn(*static_in)  # the capture runs it: errors surface here, as they do on a device
    return tuple(_emulated(fn, static_in, allow_unused_input) for fn, static_in in zip(callables, sample_args))


def _emulated(fn, static_in, allow_unused):
    import torch
    from torch.utils import _pytree

    state: dict = {}

    class Emulated(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            for s, x in zip(static_in, inputs):
                if s.data_ptr() != x.data_ptr():
                    s.data.copy_(x)  # as a graph input copy: no autograd version bump
            with torch.enable_grad():
                outs, state["spec"] = _pytree.tree_flatten(fn(*static_in))
            if "out" not in state:
                state["out"] = [o.detach().clone() for o in outs]
            for buf, o in zip(state["out"], outs):
                buf.copy_(o.detach())
            state["outs"] = outs
            return tuple(b.detach() for b in state["out"])

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            outs = state["outs"]
            got = torch.autograd.grad([o for o in outs if o.requires_grad], [s for s in static_in if s.requires_grad],
                                      grad_outputs=[g for o, g in zip(outs, grads) if o.requires_grad],
                                      allow_unused=allow_unused)
            if "grad" not in state:
                state["grad"] = [None if g is None else torch.zeros_like(g) for g in got]
            for buf, g in zip(state["grad"], got):
                if buf is not None:
                    buf.copy_(g)
            it = iter(state["grad"])
            return tuple(_detached(next(it)) if s.requires_grad else None for s in static_in)

    def call(*args):
        return _pytree.tree_unflatten(list(Emulated.apply(*args)), state["spec"])

    return call


def _detached(t):
    return None if t is None else t.detach()


def _lora_model(model_dir, dropout: float = 0.0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for name, p in model.named_parameters():  # B = 0 at init: start from a LoRA that already acts
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(hash(name) % 2**31))
    model.train()
    return model


def _packed_batches(vocab: int, rows: int = 2, length: int = 24, n: int = 4):
    """Rows of two documents each (position_ids restart), as the packed trainer feeds them."""
    import torch

    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (rows, length), generator=g)
        cut = 10
        pos = torch.cat([torch.arange(cut), torch.arange(length - cut)]).repeat(rows, 1)
        labels = ids.clone()
        labels[pos == 0] = -100
        out.append({"input_ids": ids, "position_ids": pos, "labels": labels, "use_cache": False})
    return out


def _train(model, batches, make_graphed, accum: int = 2, steps: int = 2, device_type: str = "cpu"):
    """A few optimizer steps of ``accum`` micro-batches each; the losses, the trained LoRA
    weights and the graphed layers' report."""
    import torch

    from srscode.plugins.lib.graphed_layers import graphed_decoder_layers

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    with graphed_decoder_layers(model, make_graphed, device_type) as report:
        for step in range(steps):
            for k in range(accum):
                loss = model(**batches[(step * accum + k) % len(batches)]).loss
                (loss / accum).backward()
                losses.append(loss.item())
            opt.step()
            opt.zero_grad(set_to_none=True)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return losses, weights, dict(report)


def test_replayed_layers_train_as_the_layers_themselves(tiny_model_dir):
    """The same steps, eager and through the (emulated) graphs: the same losses and weights,
    every layer call replayed, one capture. Two micro-batches a step: the second backward
    overwrites the graphs' gradient buffers, which the weights' gradients must not alias."""
    import torch

    eager = _lora_model(tiny_model_dir)
    batches = _packed_batches(eager.config.vocab_size)
    losses0, w0, rep0 = _train(eager, batches, None)
    graphed = _lora_model(tiny_model_dir)
    losses1, w1, rep1 = _train(graphed, batches, emulated_make_graphed_callables)
    layers = graphed.config.num_hidden_layers
    assert rep0["graphed"] is False and rep1["graphed"] is True
    assert rep1["captures"] == 1 and rep1["capture_error"] == ""
    assert rep1["replays"] == layers * 4 and rep1["own_calls"] == 0
    assert losses1 == pytest.approx(losses0, rel=1e-5, abs=1e-6)
    assert losses0[0] != pytest.approx(losses0[-1])  # the steps trained: the check can tell runs apart
    for name in w0:
        torch.testing.assert_close(w1[name], w0[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_are_copied_out_of_the_graphs_buffers(tiny_model_dir, monkeypatch):
    """Without the clone before accumulation, a weight's ``.grad`` would alias the buffer the
    next micro-batch's backward writes: the accumulated gradient differs from eager's."""
    import torch

    from srscode.plugins.lib import graphed_layers

    batches = _packed_batches(32)
    _, w0, _ = _train(_lora_model(tiny_model_dir), batches, None)
    monkeypatch.setattr(graphed_layers, "_clone_grad", lambda g: g)
    _, w1, rep = _train(_lora_model(tiny_model_dir), batches, emulated_make_graphed_callables)
    assert rep["replays"] > 0
    assert any(not torch.allclose(w1[n], w0[n], rtol=1e-5, atol=1e-6) for n in w0)


def test_calls_unlike_the_capture_run_the_layers_own_forward(tiny_model_dir):
    """No gradients, eval mode, another batch shape, adapters disabled (DPO's reference pass):
    each runs eagerly and gives the eager model's output."""
    import torch

    from srscode.plugins.lib.graphed_layers import graphed_decoder_layers

    model = _lora_model(tiny_model_dir)
    batches = _packed_batches(model.config.vocab_size)
    other = _packed_batches(model.config.vocab_size, rows=3, length=20)[0]
    with torch.no_grad():
        want = {"same": model(**batches[0]).logits, "other": model(**other).logits}
        with model.disable_adapter():
            want["base"] = model(**batches[0]).logits
    layers = model.config.num_hidden_layers
    with graphed_decoder_layers(model, emulated_make_graphed_callables, "cpu") as report:
        model(**batches[0]).loss.backward()  # captures
        assert report["captures"] == 1 and report["replays"] == layers
        with torch.no_grad():
            torch.testing.assert_close(model(**batches[0]).logits, want["same"])
        model.eval()
        torch.testing.assert_close(model(**batches[0]).logits.detach(), want["same"])
        model.train()
        torch.testing.assert_close(model(**other).logits.detach(), want["other"])
        with model.disable_adapter():
            torch.testing.assert_close(model(**batches[0]).logits.detach(), want["base"])
        assert report["replays"] == layers and report["own_calls"] == 4 * layers
        model(**batches[1]).loss.backward()
        assert report["replays"] == 2 * layers and report["captures"] == 1


def test_layers_get_their_own_forward_back_and_hooked_layers_are_left_alone(tiny_model_dir):
    from srscode.plugins.lib.graphed_layers import decoder_layers, graphed_decoder_layers

    model = _lora_model(tiny_model_dir)
    layers = decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    patched = layers[1].forward = types.MethodType(type(layers[1]).forward, layers[1])  # a patch already there
    with graphed_decoder_layers(model, emulated_make_graphed_callables, "cpu") as report:
        assert report["graphed"] and all("forward" in layer.__dict__ for layer in layers)
    assert "forward" not in layers[0].__dict__ and layers[1].__dict__["forward"] is patched
    handle = layers[0].register_forward_hook(lambda *a: None)
    with graphed_decoder_layers(model, emulated_make_graphed_callables, "cpu") as report:
        assert report["graphed"] is False and "forward" not in layers[0].__dict__
    handle.remove()
    with graphed_decoder_layers(model, None, "cpu") as report:
        assert report["graphed"] is False


def test_a_failed_capture_leaves_the_eager_layers_and_says_so(tiny_model_dir, caplog):
    import torch

    def broken(callables, samples, **kw):
        raise RuntimeError("operation not permitted when stream is capturing")

    model = _lora_model(tiny_model_dir)
    batches = _packed_batches(model.config.vocab_size)
    with caplog.at_level(logging.WARNING):
        losses, _, report = _train(model, batches, broken)
    assert report["captures"] == 0 and report["replays"] == 0 and "stream is capturing" in report["capture_error"]
    assert report["own_calls"] == model.config.num_hidden_layers * 4 and all(x == x for x in losses)
    assert any("capturing the decoder layers" in r.message for r in caplog.records)

    def out_of_memory(callables, samples, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        _train(_lora_model(tiny_model_dir), batches, out_of_memory)


# -- the lora-sft stage ---------------------------------------------------------------------

def _examples(n: int = 6) -> list[SFTExample]:
    prompt = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"
    return [SFTExample(f"t{i}", prompt.format(i=i), f"def f{i}(x):\n" + "    x = x + 1\n" * (1 + i) + "    return x\n")
            for i in range(n)]


def _ctx_with_graphs(model_dir, make_graphed):
    ctx = make_ctx(model_dir)
    runner = types.SimpleNamespace(make_graphed_callables=make_graphed)
    ctx._backend = types.SimpleNamespace(**{**vars(cpu_backend()), "graph_runner": lambda: runner})
    return ctx


def test_the_stage_trains_through_graphed_layers_with_the_same_loss(tiny_model_dir, tmp_path):
    """lora-sft with a backend that captures graphs (emulated): rows padded to max_length,
    the layers replayed for every full batch, the same training as without graphs."""
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    params = dict(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=2, max_length=64, epochs=2.0)
    runs = {}
    for graphs in (False, "auto"):
        ctx = _ctx_with_graphs(tiny_model_dir, emulated_make_graphed_callables)
        stage = LoRASFTTrainer(LoRASFTParams(**params, graphs=graphs), ctx)
        runs[graphs] = stage.train_sft(_examples(), None, tmp_path / str(graphs)).metrics
    on, off = runs["auto"], runs[False]
    assert off["train_graph_captures"] == 0 and off["train_graph_replayed"] == 0
    assert on["train_graph_captures"] == 1 and 0 < on["train_graph_replayed"] <= 1
    assert on["train_loss"] == pytest.approx(off["train_loss"], rel=1e-4)


def test_graphs_true_without_a_capturing_backend_is_a_clear_error(tiny_model_dir, tmp_path):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    stage = LoRASFTTrainer(LoRASFTParams(r=4, batch_size=2, max_length=64, graphs=True), make_ctx(tiny_model_dir))
    with pytest.raises(StageError, match="params.graphs is true"):
        stage.train_sft(_examples(), None, tmp_path / "a")
    auto = LoRASFTTrainer(LoRASFTParams(r=4, batch_size=2, max_length=64), make_ctx(tiny_model_dir))
    assert auto.train_sft(_examples(), None, tmp_path / "b").metrics["train_graph_captures"] == 0


def test_graphs_stay_off_where_shapes_vary_or_layers_recompute(tiny_model_dir):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    ctx = _ctx_with_graphs(tiny_model_dir, emulated_make_graphed_callables)
    one = types.SimpleNamespace(world_size=1)
    make = LoRASFTTrainer(LoRASFTParams(), ctx).graph_maker(one)
    assert make is emulated_make_graphed_callables
    for params, args in [(dict(packing=False), one), (dict(gradient_checkpointing=True), one),
                         ({}, types.SimpleNamespace(world_size=2))]:
        assert LoRASFTTrainer(LoRASFTParams(**params), ctx).graph_maker(args) is None, params
    with pytest.raises(StageError, match="several processes"):
        LoRASFTTrainer(LoRASFTParams(graphs=True), ctx).graph_maker(types.SimpleNamespace(world_size=2))


def test_packed_rows_pad_to_one_length_for_graphs():
    from srscode.plugins.train.lora_sft import PackedRowsCollator

    rows = [{"input_ids": [5, 6, 7], "seq_lengths": [2, 1]}, {"input_ids": [8, 9], "seq_lengths": [2]}]
    batch = PackedRowsCollator(0, pad_to=6)(rows)
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"][1].tolist() == [8, 9, 0, 0, 0, 0]
    assert batch["position_ids"][0].tolist() == [0, 1, 0, 0, 1, 2]
    assert batch["labels"][1].tolist() == [-100, 9, -100, -100, -100, -100]
    assert PackedRowsCollator(0)(rows)["input_ids"].shape == (2, 3)
    with pytest.raises(ValueError, match="longer than pad_to=2"):
        PackedRowsCollator(0, pad_to=2)(rows)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device: real graph capture")
def test_real_cuda_graphed_layers_train_as_the_eager_ones(tiny_model_dir):
    """torch.cuda.make_graphed_callables itself, bf16 autocast as the trainer runs it."""
    import torch

    def run(make):
        model = _lora_model(tiny_model_dir).cuda()
        batches = [{k: v.cuda() if hasattr(v, "cuda") else v for k, v in b.items()}
                   for b in _packed_batches(model.config.vocab_size)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return _train(model, batches, make, steps=3, device_type="cuda")

    losses0, _, _ = run(None)
    losses1, _, report = run(torch.cuda.make_graphed_callables)
    assert report["captures"] == 1 and report["replays"] > 0, report
    assert losses1 == pytest.approx(losses0, rel=2e-2)


def test_the_graphs_buffers_go_when_the_context_closes(tiny_model_dir):
    """torch's graphed callables (autograd Function classes, each in a reference cycle, as the
    emulation's are) hold the static buffers; with the cyclic collector off they must still be
    gone when the context closes, not at some later GC pass."""
    import gc
    import weakref

    from srscode.plugins.lib.graphed_layers import graphed_decoder_layers

    static_inputs = []

    def recording(callables, samples, **kw):
        static_inputs.extend(weakref.ref(s[0]) for s in samples)
        return emulated_make_graphed_callables(callables, samples, **kw)

    model = _lora_model(tiny_model_dir)
    batch = _packed_batches(model.config.vocab_size)[0]
    gc.disable()
    try:
        with graphed_decoder_layers(model, recording, "cpu") as report:
            model(**batch).loss.backward()
        assert report["replays"] > 0 and static_inputs
        assert all(ref() is None for ref in static_inputs)
    finally:
        gc.enable()


def test_only_a_backend_that_vouches_for_training_graphs_offers_them(monkeypatch):
    """The CUDA backend's runner offers make_graphed_callables (verified on an H100); Ascend's
    decodes with graphs but trains eagerly (never run on an NPU)."""
    import torch

    from srscode.hardware import backends
    from srscode.hardware.graphs import GraphRunner

    fake = types.SimpleNamespace(CUDAGraph=object, NPUGraph=object, graph=object,
                                 make_graphed_callables=emulated_make_graphed_callables)
    monkeypatch.setattr(torch, "cuda", fake, raising=False)
    monkeypatch.setattr(torch, "npu", fake, raising=False)
    cuda = next(b for b in vars(backends).values() if getattr(b, "name", None) == "cuda")
    ascend = next(b for b in vars(backends).values() if getattr(b, "name", None) == "ascend")
    assert cuda.graph_runner().make_graphed_callables is emulated_make_graphed_callables
    assert isinstance(ascend.graph_runner(), GraphRunner) and ascend.graph_runner().make_graphed_callables is None


def test_the_graphs_take_each_batchs_position_ids(tiny_model_dir):
    """Position ids are a graph input like the mask: a layer that reads them sees each batch's,
    not the capture's (sdpa does not read them; other layers may)."""
    import torch

    from srscode.plugins.lib.graphed_layers import decoder_layers, graphed_decoder_layers

    model = _lora_model(tiny_model_dir)
    layer = decoder_layers(model)[1]
    seen = []
    own = layer.forward

    def reading(hidden_states, *args, **kwargs):
        seen.append(kwargs.get("position_ids").clone())
        return own(hidden_states, *args, **kwargs)

    layer.forward = reading
    first, second = _packed_batches(model.config.vocab_size)[:2]
    rows, length = second["input_ids"].shape  # packed at another cut: the same shapes, other positions
    second["position_ids"] = torch.cat([torch.arange(14), torch.arange(length - 14)]).repeat(rows, 1)
    second["labels"] = second["input_ids"].masked_fill(second["position_ids"] == 0, -100)
    with graphed_decoder_layers(model, emulated_make_graphed_callables, "cpu") as report:
        model(**first).loss.backward()
        model(**second).loss.backward()
    assert report["replays"] == 2 * model.config.num_hidden_layers
    assert torch.equal(seen[-1], second["position_ids"]) and not torch.equal(seen[-1], first["position_ids"])
