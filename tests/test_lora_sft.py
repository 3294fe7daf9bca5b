"""The ``lora-sft`` trainer on the tiny random Qwen2: saves a real adapter, continues from
the previous one, weights tasks by sampling, leaves the shared base clean for the
generator, and trains data-parallel under ``accelerate launch``."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_fixtures import *  # noqa: F401,F403
from srscode.testing.ports import free_port
from model_fixtures import make_ctx, make_lora_adapter

from srscode.core.types import AdapterRef, Prompt, SFTExample

PROMPT = "<|im_start|>user\nWrite {name}.<|im_end|>\n<|im_start|>assistant\n"


def examples(n: int = 4, weight: float = 1.0) -> list[SFTExample]:
    return [
        SFTExample(f"t{i}", PROMPT.format(name=f"f{i}"), f"def f{i}(x):\n    return x + {i}\n", weight)
        for i in range(n)
    ]


def trainer(ctx, **params):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    base = dict(r=4, alpha=8, lr=1e-2, epochs=1, batch_size=2, max_length=64)
    base.update(params)
    return LoRASFTTrainer(LoRASFTParams(**base), ctx)


def lora_modules(model) -> list[str]:
    return [name for name, _ in model.named_modules() if "lora_" in name]


def adapter_tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


@pytest.fixture
def ctx(tiny_model_dir):
    return make_ctx(tiny_model_dir)


def expected_steps(built, n_examples: int, max_length: int) -> int:
    """The optimizer steps of one epoch over the rows the trainer was built with, checking
    first that those rows are the examples packed into rows of at most ``max_length``
    tokens. How many share a row depends on the token counts the trainer saw: here each
    example is 33 tokens, so 4 rows of one and 2 steps; the H200 run trained 1 step, so 2
    rows there. The count is read from the trainer, never assumed."""
    rows = built.train_dataset
    lengths = [list(r) for r in rows["seq_lengths"]]
    assert sorted(len(ids) for ids in rows["input_ids"]) == sorted(sum(r) for r in lengths)
    assert sum(len(r) for r in lengths) == n_examples  # each example in exactly one row
    assert all(len(ids) <= max_length for ids in rows["input_ids"])
    total = sum(sum(r) for r in lengths)
    assert -(-total // max_length) <= len(rows) <= n_examples
    args = built.args
    assert args.world_size == 1 and args.n_gpu <= 1  # one process, one device (one_device_per_process)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return math.ceil(len(rows) / per_step) * int(args.num_train_epochs)


def test_trains_saves_adapter_and_leaves_the_base_clean(ctx, tmp_path, monkeypatch):
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.train.lora_sft import LoRASFTTrainer

    g = HFGenerator(HFGeneratorParams(max_new_tokens=8, do_sample=False), ctx)
    prompts = [Prompt("t0", PROMPT.format(name="f0"))]
    before = [c.text for c in g.generate(prompts, 1, None, 0)]
    base = ctx.models.base_model

    built = []  # the TRL trainer train_sft trains with, to read its rows and batch size
    build = LoRASFTTrainer.build_trainer

    def keep(self, *args, **kwargs):
        built.append(build(self, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(LoRASFTTrainer, "build_trainer", keep)
    result = trainer(ctx).train_sft(examples(), None, tmp_path / "adapter")

    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert result.adapter == AdapterRef.from_dir(tmp_path / "adapter")
    m = result.metrics
    assert math.isfinite(m["train_loss"]) and m["train_loss"] > 0
    assert m["train_tokens"] > 0 and m["train_examples"] == 4 and m["train_packed"] == 1.0
    # batch_size=2 rows a step: the 4 examples' 2 to 4 packed rows make 1 or 2 steps
    assert len(built) == 1 and m["train_steps"] == expected_steps(built[0], n_examples=4, max_length=64) >= 1
    assert m["train_weighted"] == 0.0  # equal weights: plain shuffled epoch

    # the same base object, without LoRA layers, in eval mode: not reloaded, not modified
    assert ctx.models.base_model is base
    assert lora_modules(base) == [] and not base.training
    assert ctx.models.peft_model is None
    assert [c.text for c in g.generate(prompts, 1, None, 0)] == before
    # and the generator serves the new adapter next round, reporting its hash
    assert g.generate(prompts, 1, result.adapter, 0)[0].adapter == result.adapter
    assert ctx.models.base_model is base


def test_continues_from_the_previous_adapter(ctx, tiny_model_dir, tmp_path):
    init = AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / "init", seed=3, r=4))
    # r=8 asked for, but the adapter continues with its own shape; a tiny lr keeps its weights
    result = trainer(ctx, r=8, lr=1e-9).train_sft(examples(), init, tmp_path / "next")
    assert json.loads((tmp_path / "next" / "adapter_config.json").read_text())["r"] == 4
    start, end = adapter_tensors(init.path), adapter_tensors(result.adapter.path)
    assert start.keys() == end.keys()
    for k in start:
        assert (start[k] - end[k]).abs().max() < 1e-5, k
    # a fresh adapter would start from B = 0, so this really is init's weights
    assert any("lora_B" in k and start[k].abs().max() > 0.1 for k in start)
    assert result.adapter.sha256 != init.sha256  # a new folder and file, same weights


def test_a_fresh_adapter_starts_from_the_run_seed_whatever_ran_before(tiny_model_dir):
    """lora_A's random init comes from the config's seed, not from the global stream's state
    (which the generator that ran before may or may not have seeded), and leaves that
    stream as it was."""
    import torch

    from srscode.plugins.train.lora_sft import LoRAParams, peft_model_for, restore_base

    def init_of(seed: int, stream: int) -> tuple[dict, torch.Tensor]:
        ctx = make_ctx(tiny_model_dir, seed=seed)
        torch.manual_seed(stream)  # whatever ran before left the global stream here
        model = peft_model_for(ctx, None, LoRAParams(r=4))
        try:
            a = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}
        finally:
            restore_base(ctx, model)
        return a, torch.rand(4)  # the caller's next draw

    a1, next1 = init_of(seed=7, stream=1)
    a2, next2 = init_of(seed=7, stream=2)
    a3, _ = init_of(seed=8, stream=1)
    assert a1 and a1.keys() == a2.keys()
    assert all(torch.equal(a1[n], a2[n]) for n in a1)  # same run seed: same init
    assert not all(torch.equal(a1[n], a3[n]) for n in a1)  # another seed: another init
    torch.manual_seed(1)
    assert torch.equal(next1, torch.rand(4))  # the caller's stream untouched
    assert not torch.equal(next1, next2)


def _tokens(ctx, ex: SFTExample) -> int:
    from srscode.plugins.lib import hf_model

    _, tok = hf_model.load_base(ctx)
    return len(tok(ex.prompt + ex.completion + tok.eos_token)["input_ids"])


def test_weights_act_through_sampling(ctx, tmp_path):
    short = SFTExample("short", PROMPT.format(name="s"), "def s():\n    return 1\n")
    long = SFTExample("long", PROMPT.format(name="l"), "def l(a, b, c):\n" + "    a = a + b * c\n" * 8 + "    return a\n")
    t_short, t_long = _tokens(ctx, short), _tokens(ctx, long)
    assert t_long > t_short

    # one epoch draws 2 rows, with probability proportional to the weight
    m_short = trainer(ctx, batch_size=1, max_length=256).train_sft(
        [SFTExample(**{**short.__dict__, "weight": 1.0}), SFTExample(**{**long.__dict__, "weight": 1e-9})],
        None, tmp_path / "a",
    ).metrics
    m_long = trainer(ctx, batch_size=1, max_length=256).train_sft(
        [SFTExample(**{**short.__dict__, "weight": 1e-9}), SFTExample(**{**long.__dict__, "weight": 1.0})],
        None, tmp_path / "b",
    ).metrics
    assert m_short["train_weighted"] == m_long["train_weighted"] == 1.0
    assert m_short["train_tokens"] == 2 * t_short
    assert m_long["train_tokens"] == 2 * t_long


def test_zero_weight_examples_are_dropped(ctx, tmp_path):
    init = AdapterRef("/somewhere/adapter", "abc")
    result = trainer(ctx).train_sft(examples(weight=0.0), init, tmp_path / "out")
    assert result.adapter == init and result.metrics["train_examples"] == 0
    assert not (tmp_path / "out").exists()


def test_registered_with_strict_params():
    from srscode.core.errors import ConfigError
    from srscode.core.registry import validate_params
    from srscode.plugins.train import lora_sft

    (spec,) = list(lora_sft.srscode_trainers())
    assert spec.name == "lora-sft"
    p = validate_params(spec.params, {"r": 8, "target_modules": ["q_proj", "v_proj"]}, "stages.trainer.params")
    assert p.r == 8 and p.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="learning_rate"):
        validate_params(spec.params, {"learning_rate": 1e-4}, "stages.trainer.params")


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from model_fixtures import make_ctx
    from srscode.core.types import SFTExample
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer
    from accelerate import PartialState

    state = PartialState(cpu=True)
    ctx = make_ctx({model!r})
    ex = [SFTExample(f"t{{i}}", "<|im_start|>user\\nWrite f{{i}}<|im_end|>\\n<|im_start|>assistant\\n",
                     f"def f{{i}}():\\n    return {{i}}\\n") for i in range(8)]
    tr = LoRASFTTrainer(LoRASFTParams(r=4, alpha=8, lr=1e-2, batch_size=2, max_length=64), ctx)
    res = tr.train_sft(ex, None, Path({out!r}))
    # DPO on the same two processes, from the adapter just trained (TRL's DPOTrainer under DDP)
    from srscode.core.types import DPOPair
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    pairs = [DPOPair(e.task_id, e.prompt, e.completion, "def f():\\n    return None\\n") for e in ex[:4]]
    dpo = DPOTrainerStage(DPOParams(r=4, alpha=8, lr=1e-2, batch_size=1, max_length=64),
                          make_ctx({model!r}, dpo={{"beta": 0.1}}))
    d = dpo.train_pairs(pairs, res.adapter, Path({out!r} + "-dpo"))
    # and packed (lib/packed_preference.py): each rank its own planned steps, the metrics' sums
    # gathered at every log
    packed = DPOTrainerStage(DPOParams(r=4, alpha=8, lr=1e-2, batch_size=2, max_length=64, packing=True),
                             make_ctx({model!r}, dpo={{"beta": 0.1}}))
    dp = packed.train_pairs(pairs, res.adapter, Path({out!r} + "-dpo-packed"))
    import torch.distributed as dist
    print("RESULT", json.dumps({{"rank": state.process_index, "world": state.num_processes,
                                "backend": dist.get_backend(),
                                "sha": res.adapter.sha256, "steps": res.metrics["train_steps"],
                                "tokens": res.metrics["train_tokens"], "dpo_sha": d.adapter.sha256,
                                "dpo_steps": d.metrics["dpo_steps"], "dpo_tokens": d.metrics["dpo_tokens"],
                                "packed": dp.metrics["dpo_packed"], "packed_sha": dp.adapter.sha256,
                                "packed_steps": dp.metrics["dpo_steps"], "packed_tokens": dp.metrics["dpo_tokens"],
                                "packed_accuracy": dp.metrics["dpo_reward_accuracy"]}}))
    """
)


def test_accelerate_launch_trains_data_parallel_on_two_cpu_processes(tiny_model_dir, tmp_path):
    """lora-sft, then dpo from its adapter, on two CPU processes (gloo): one adapter each, and
    the counts summed over both (the trainers' collectives at every log must not hang).
    ~20 s: in the default run since the trainers gained collectives."""
    script = tmp_path / "train.py"
    out = tmp_path / "adapter"
    tests = str(Path(__file__).parent)
    script.write_text(DDP_SCRIPT.format(tests=tests, model=str(tiny_model_dir), out=str(out)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=tests)
    # accelerate's multi-process launcher (torch elastic) is named --multi_gpu; its `--cpu`
    # flag means one process. The processes run on the CPU because the trainer passes the
    # backend's use_cpu=True, so accelerate joins them with gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(free_port()),  # other xdist workers launch too
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line.split("RESULT ", 1)[1]) for line in proc.stdout.splitlines() if "RESULT " in line]
    assert sorted(r["rank"] for r in rows) == [0, 1] and {r["world"] for r in rows} == {2}
    assert {r["backend"] for r in rows} == {"gloo"}
    # one adapter, saved once, seen identically by both ranks; the 8 examples (~30 tokens)
    # pack two to a 64-token row: 4 rows / (2 ranks x 2) = 1 step on each rank
    assert len({r["sha"] for r in rows}) == 1 and rows[0]["sha"] == AdapterRef.from_dir(out).sha256
    assert {r["steps"] for r in rows} == {1.0}
    # the non-padding tokens are counted on each rank's device and summed over both at the log
    # (DeviceTokenCount): every rank reports the whole run's count, as one process training
    # the same rows does
    from model_fixtures import make_ctx
    from srscode.core.types import SFTExample
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    ex = [SFTExample(f"t{i}", "<|im_start|>user\nWrite f{i}<|im_end|>\n<|im_start|>assistant\n",  # as the script's:
                     f"def f{i}():\n    return {i}\n") for i in range(8)]                       # a literal {i}
    one = LoRASFTTrainer(LoRASFTParams(r=4, alpha=8, lr=1e-2, batch_size=4, max_length=64), make_ctx(tiny_model_dir))
    first = one.train_sft(ex, None, tmp_path / "alone")
    alone = first.metrics["train_tokens"]
    assert alone > 0 and {r["tokens"] for r in rows} == {alone}
    # DPO: 4 pairs, one a step on each of the two ranks = 2 steps; the same tokens as one
    # process taking two pairs a step (from its own SFT adapter: the count does not depend on it)
    from srscode.core.types import DPOPair
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage

    assert len({r["dpo_sha"] for r in rows}) == 1 and {r["dpo_steps"] for r in rows} == {2.0}
    pairs = [DPOPair(e.task_id, e.prompt, e.completion, "def f():\n    return None\n") for e in ex[:4]]
    dpo_alone = DPOTrainerStage(DPOParams(r=4, alpha=8, lr=1e-2, batch_size=2, max_length=64),
                                make_ctx(tiny_model_dir, dpo={"beta": 0.1})).train_pairs(pairs, first.adapter, tmp_path / "d")
    assert dpo_alone.metrics["dpo_tokens"] > 0
    assert {r["dpo_tokens"] for r in rows} == {dpo_alone.metrics["dpo_tokens"]}
    # packed DPO under DDP: the planned steps split over the ranks (an even number here, so the
    # sampler repeats none), one adapter, and every real token counted once over both ranks
    from srscode.plugins.train.lora_sft import peft_model_for, restore_base

    ctx = make_ctx(tiny_model_dir, dpo={"beta": 0.1})
    p = DPOParams(r=4, alpha=8, lr=1e-2, batch_size=2, max_length=64, packing=True)
    plan = DPOTrainerStage(p, ctx).build_trainer(pairs, peft_model_for(ctx, first.adapter, p), str(tmp_path / "plan"))
    restore_base(ctx, plan.model)
    planned = len(plan.train_dataset)
    assert planned % 2 == 0, planned
    assert {r["packed"] for r in rows} == {1.0} and len({r["packed_sha"] for r in rows}) == 1
    assert {r["packed_steps"] for r in rows} == {planned / 2}
    assert {r["packed_tokens"] for r in rows} == {dpo_alone.metrics["dpo_tokens"]}
    assert len({r["packed_accuracy"] for r in rows}) == 1  # gathered: both ranks log the same


def test_one_process_trains_on_one_device_even_with_several_visible():
    """Without a launcher, Trainer would use nn.DataParallel over every visible GPU (TRL
    refuses it); under a launcher each process already has one device."""
    from srscode.plugins.train.lora_sft import one_device_per_process

    class Args:
        def __init__(self, visible: int, world: int):
            self._n_gpu, self.world_size = visible, world

        @property
        def n_gpu(self) -> int:
            return self._n_gpu

    assert one_device_per_process(Args(2, 1)).n_gpu == 1
    assert one_device_per_process(Args(1, 1)).n_gpu == 1
    assert one_device_per_process(Args(0, 1)).n_gpu == 0  # CPU
    assert one_device_per_process(Args(2, 2)).n_gpu == 2  # a launcher's business: left alone
