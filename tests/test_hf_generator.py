"""The ``hf`` generator on the tiny random Qwen2: batching, seeding, stop strings, token
counts, code extraction, and adapter identity (the sha it reports is the adapter it loaded)."""
from __future__ import annotations

import shutil

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx, make_lora_adapter
from progress_fakes import recording_progress

from srscode.core.errors import ConfigError
from srscode.core.types import AdapterRef, Prompt

PROMPTS = [
    Prompt("t1", "def add(a, b):"),
    Prompt("t2", "import os\nclass Walker:\n    def walk(self, path):"),
    Prompt("t3", "x = 1"),
]


@pytest.fixture(scope="module")
def ctx(tiny_model_dir):
    return make_ctx(tiny_model_dir)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    a = make_lora_adapter(tiny_model_dir, root / "A", seed=1)
    b = make_lora_adapter(tiny_model_dir, root / "B", seed=2)
    return AdapterRef.from_dir(a), AdapterRef.from_dir(b)


def gen(ctx, **params):
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    base = dict(max_new_tokens=10, batch_size=2)
    base.update(params)
    return HFGenerator(HFGeneratorParams(**base), ctx)


def texts(cands):
    return [c.text for c in cands]


def test_candidates_per_prompt_in_order_with_token_counts(ctx):
    from srscode.plugins.lib import hf_model

    cands = gen(ctx).generate(PROMPTS, 3, None, seed=0)
    assert [(c.task_id, c.index) for c in cands] == [(p.task_id, k) for p in PROMPTS for k in range(3)]
    _, tok = hf_model.load_base(ctx)
    assert tok.padding_side == "left" and tok.pad_token is not None
    for c in cands:
        prompt = next(p for p in PROMPTS if p.task_id == c.task_id)
        assert c.prompt_tokens == len(tok(prompt.text)["input_ids"])
        assert 1 <= c.completion_tokens <= 10
        assert c.adapter is None
        assert c.code == c.text.strip() + "\n"  # ctx.prompt_builder extracted it


def test_seeded_sampling_is_reproducible(ctx):
    g = gen(ctx)
    first = texts(g.generate(PROMPTS, 2, None, seed=7))
    assert texts(g.generate(PROMPTS, 2, None, seed=7)) == first
    assert texts(g.generate(PROMPTS, 2, None, seed=8)) != first


def test_greedy_repeats_one_sequence(ctx):
    cands = gen(ctx, do_sample=False).generate(PROMPTS[:1], 3, None, seed=0)
    assert len(cands) == 3 and len(set(texts(cands))) == 1


def test_stop_strings_cut_the_text(ctx):
    g = gen(ctx, max_new_tokens=16)
    full = g.generate(PROMPTS[:1], 1, None, seed=3)[0]
    # a stop string from the middle of a seeded sample: the same seeded run with it must
    # end right before its first occurrence, having generated fewer tokens (letters and
    # spaces only: transformers' stop_strings match whole token strings, the post-hoc cut
    # handles the rest)
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    text = full.text
    at = next(i for i in range(4, len(text) - 1) if set(text[i : i + 2]) <= ok and text.find(text[i : i + 2]) == i)
    stop = full.text[at : at + 2]
    cut = g.generate([Prompt("t1", PROMPTS[0].text, stop=(stop,))], 1, None, seed=3)[0]
    assert cut.text == full.text[:at]
    assert cut.completion_tokens < full.completion_tokens


def test_completion_length_and_truncation_helpers():
    from srscode.plugins.generate.hf import completion_length, truncate_at_stop

    assert completion_length([5, 6, 2, 0, 0], eos_ids={2}, pad_id=0) == 3  # through the eos
    assert completion_length([5, 6, 0, 0], eos_ids={2}, pad_id=0) == 2  # stopped by a stop string
    assert completion_length([5, 6, 7], eos_ids={2}, pad_id=0) == 3
    assert truncate_at_stop("abc\n```\nrest", ["```", "\n\n"]) == "abc\n"
    assert truncate_at_stop("abc", []) == "abc"


def test_adapter_applied_and_reported_by_content_hash(ctx, adapters):
    a, b = adapters
    g = gen(ctx, do_sample=False)
    base = texts(g.generate(PROMPTS, 1, None, 0))
    with_a = g.generate(PROMPTS, 1, a, 0)
    assert all(c.adapter == a for c in with_a)
    assert texts(with_a) != base  # the adapter changes the model's output
    with_b = g.generate(PROMPTS, 1, b, 0)
    assert all(c.adapter == b for c in with_b) and texts(with_b) != texts(with_a)
    assert texts(g.generate(PROMPTS, 1, None, 0)) == base  # None disables adapters again
    assert texts(g.generate(PROMPTS, 1, a, 0)) == texts(with_a)  # switching back is exact


def test_reported_adapter_is_hashed_from_disk_not_copied(ctx, adapters, tmp_path):
    """The engine compares the reported sha with the trainer's; a generator that echoed its
    argument would hide a stale or swapped adapter. Here the folder's files are replaced by
    another adapter's after the reference was taken: the report must show the new content."""
    a, b = adapters
    bogus = AdapterRef(a.path, "0" * 64)
    assert {c.adapter.sha256 for c in gen(ctx).generate(PROMPTS[:1], 2, bogus, 0)} == {a.sha256}

    folder = tmp_path / "round-3-adapter"
    shutil.copytree(a.path, folder)
    recorded = AdapterRef.from_dir(folder)
    for f in folder.iterdir():
        shutil.copy(f"{b.path}/{f.name}", f)
    used = gen(ctx).generate(PROMPTS[:1], 1, recorded, 0)[0].adapter
    assert used.sha256 == b.sha256 != recorded.sha256


def test_missing_adapter_folder_is_a_stage_error(ctx, tmp_path):
    from srscode.core.errors import StageError

    with pytest.raises(StageError, match="adapter_config.json"):
        gen(ctx).generate(PROMPTS[:1], 1, AdapterRef(str(tmp_path), "x"), 0)


def test_extractor_falls_back_to_the_configured_prompt_builder(tiny_model_dir):
    from srscode.plugins.prompt.builders import QwenBuilder

    ctx = make_ctx(tiny_model_dir, stages={"prompt": {"name": "qwen"}})
    ctx.prompt_builder = None  # a generator used without the engine
    prompt = Prompt("t1", "def add(a, b):", stop=QwenBuilder.stop)
    cand = gen(ctx).generate([prompt], 1, None, 0)[0]
    assert cand.code == QwenBuilder().extract(cand.text, prompt)
    assert isinstance(ctx.prompt_builder, QwenBuilder)


def test_registered_with_strict_params_and_loads_the_tokenizer_for_prompts(tiny_model_dir, tmp_path):
    from srscode.core.registry import validate_params
    from srscode.core.types import Task
    from srscode.plugins.generate import hf as hf_generator
    from srscode.plugins.prompt.builders import ChatBuilder

    (spec,) = list(hf_generator.srscode_generators())
    assert spec.name == "hf"
    with pytest.raises(ConfigError, match="max_tokens"):
        validate_params(spec.params, {"max_tokens": 5}, "stages.generator.params")
    # built by the engine before any prompt: the chat builder then renders with the
    # model's own template, and the (heavy) model itself is not loaded yet
    ctx = make_ctx(tiny_model_dir)
    spec.factory(validate_params(spec.params, {}, "p"), ctx)
    assert ctx.models.tokenizer is not None and ctx.models.base_model is None
    prompt = ChatBuilder(tokenizer_provider=lambda: ctx.models.tokenizer).build(
        Task("t", "Write f.", "def f(): pass", "def test_f(): pass")
    )
    assert prompt.format == "chat" and prompt.text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        spec.factory(validate_params(spec.params, {}, "p"), make_ctx(tmp_path / "missing"))


@pytest.mark.parametrize("decode", ["fast", "generate"])
def test_the_generate_bar_shows_the_decode_step_within_a_batch(tiny_model_dir, decode):
    """A batch can take minutes on a CPU: the fast loop reports its step on the bar."""
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    bars: list = []
    ctx = make_ctx(tiny_model_dir)
    ctx.progress = recording_progress(bars)
    gen = HFGenerator(HFGeneratorParams(max_new_tokens=40, min_new_tokens=40, decode=decode), ctx)
    cands = gen.generate(PROMPTS, 2, None, seed=3)
    assert len(cands) == 2 * len(PROMPTS)
    if decode == "fast":
        assert [v["step"] for b in bars for v in b.sets] == ["16/40", "32/40"]
    else:
        assert [v for b in bars for v in b.sets] == []


@pytest.mark.parametrize("longest_first", [True, False])
def test_batches_go_longest_prompts_first(ctx, monkeypatch, longest_first):
    """Streamed parts come batch by batch, longest prompts first (the last batch, which the
    evaluator still runs after generation ends, holds the shortest prompts); LONGEST_FIRST
    = False is the order before. Either way ``generate`` returns prompt order."""
    from srscode.plugins.generate import hf

    monkeypatch.setattr(hf, "LONGEST_FIRST", longest_first)
    prompts = [Prompt("short", "x = 1"), Prompt("long", "import os\nclass Walker:\n    def walk(self, path):"),
               Prompt("mid", "def add(a, b):"), Prompt("longer", "import os\nimport sys\nclass Walker:\n    def walk(self, p):")]
    g = gen(ctx, batch_size=2, decode="fast")
    seen = [c.task_id for part in g.generate_iter(prompts, 1, None, seed=0) for c in part]
    by_length = [p.task_id for p in sorted(prompts, key=lambda p: len(p.text), reverse=longest_first)]
    assert set(seen[:2]) == set(by_length[:2]) and set(seen[2:]) == set(by_length[2:]), seen
    assert [c.task_id for c in g.generate(prompts, 1, None, seed=0)] == [p.task_id for p in prompts]
