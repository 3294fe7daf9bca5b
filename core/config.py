"""The run config: one YAML file, validated by pydantic; no device names in it.

Unknown keys and wrong types are errors naming the key path; ``--set a.b=value``
overrides parse ``value`` as YAML (so ``--set rounds=3`` is an int).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .registry import format_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    name_or_path: str = Field("", description="Hub id or local directory of the base model.")
    family: str = Field("chat", description="Prompt family: qwen, deepseek, codellama, base or chat.")
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path, if the checkpoint is GGUF.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = False


class DataConfig(_Strict):
    source: str = Field("kodcode", description="Dataset source name (see `srscode plugins`).")
    path: str | None = Field(None, description="Hub id or local .json/.jsonl/.parquet file(s).")
    train_ratio: float = Field(0.9, ge=0.0, le=1.0, description="Fraction of tasks for training; the rest is validation.")
    limit: int | None = Field(None, ge=1, description="Use at most this many tasks (after filtering).")
    params: dict[str, Any] = Field(default_factory=dict, description="Source-specific params.")


class StageRef(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class StagesConfig(_Strict):
    prompt: StageRef = StageRef(name="chat")
    generator: StageRef = StageRef(name="hf")
    evaluator: StageRef = StageRef(name="pytest-xdist")
    memory: StageRef = StageRef(name="sm2")
    scheduler: StageRef = StageRef(name="ratio")
    trainer: StageRef = StageRef(name="lora-sft")


class DPOConfig(_Strict):
    name: str = Field("dpo", description="Preference trainer name.")
    every: Literal["end", "never"] | int = Field("end", description="'end', 'never', or every k rounds.")
    beta: float = Field(0.1, gt=0.0)
    max_pairs_per_task: int = Field(4, ge=1)
    reference_as_chosen: bool = Field(False, description="Use the reference solution as chosen when no candidate passed.")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("every")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be 'end', 'never' or a positive number of rounds")
        return v


class SFTConfig(_Strict):
    """What each round's supervised fine-tuning trains on (one example per scheduled task at most)."""

    target: Literal["reference", "own_pass", "mixed"] = Field("reference", description=(
        "The completion each SFT example trains on, always with the prompt the task got this round "
        "(a reflection prompt trains a repair). `reference`: the task's reference solution (every "
        "scheduled task gives an example). `own_pass`: rejection-sampling SFT, the model's own passing "
        "code of this round (a task none of whose candidates passed gives no example; for datasets "
        "without references). `mixed`: the own passing code where a candidate passed, else the reference. "
        "Of several passing candidates the shortest code is taken (ties: the lowest candidate index); "
        "code that did not pass in another candidate of the task (flaky) is never taken."))


class ValidationSource(_Strict):
    """One further validation set: a dataset source's tasks, all of them validated (none trained on)."""

    name: str = Field(description="Dataset source name (see `srscode plugins`), e.g. humaneval or kodcode.")
    path: str | None = Field(None, description="What the source reads, like data.path (empty: its default).")
    params: dict[str, Any] = Field(default_factory=dict, description="Source-specific params, like data.params.")
    label: str | None = Field(None, description="Its key in the recorded metrics and in `srscode status` (default: name).")
    limit: int | None = Field(None, ge=1, description="Validate on at most this many of its tasks (the first by id).")

    @field_validator("label")
    @classmethod
    def _label_text(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "/" in v):
            raise ValueError("must be a non-empty name without '/'")
        return v

    @property
    def key(self) -> str:
        """The name its metrics are recorded under."""
        return self.label or self.name


class ValidationConfig(_Strict):
    every: int = Field(0, ge=0, description="Validate every k rounds (0 = only before and after).")
    at_start: bool = True
    at_end: bool = True
    candidates: int = Field(1, ge=1, description="Samples per validation task (k of pass@k ≤ this).")
    k: list[int] = Field(default_factory=lambda: [1])
    limit: int | None = Field(None, ge=1, description="Validate on at most this many held-out tasks.")
    held_out: bool = Field(True, description=(
        "Validate on the held-out split of the training data (the tasks data.train_ratio leaves out); "
        "its metrics are the top-level ones. Set false to validate on `sources` only."))
    sources: list[ValidationSource] = Field(default_factory=list, description=(
        "Further validation sets, each read by its own dataset source (e.g. `[{name: humaneval}]`), "
        "validated with the same candidates and k and recorded separately under `sources.<label>`. "
        "An entry has `name` (a dataset source), `path` and `params` (as data.path and data.params), "
        "`label` (its key; default the name) and `limit` (at most this many of its tasks, the first by id)."))

    @field_validator("sources")
    @classmethod
    def _unique_labels(cls, v: list[ValidationSource]) -> list[ValidationSource]:
        seen: set[str] = set()
        for i, src in enumerate(v):
            if src.key in seen:
                raise ValueError(f"entry {i}: label {src.key!r} is used twice; give each source a distinct `label`")
            seen.add(src.key)
        return v


class RetentionConfig(_Strict):
    """The retention probe: re-test every training task that was ever solved with the
    current adapter and record the share still solved (off unless `at_end` or `every`)."""

    at_end: bool = Field(False, description="Probe once after the last round (and the final DPO stage).")
    every: int = Field(0, ge=0, description="Also probe every k rounds, after the round commits (0 = never).")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description=(
        "A task counts as solved when its mean test pass rate (over its samples) reaches this: "
        "at some review to be probed, in the probe to count as still solved."))
    candidates: int = Field(4, ge=1, description="Samples per probed task.")


class HardwareConfig(_Strict):
    backend: str = Field("auto", description="auto, or a backend name (cpu, cuda, ascend).")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    require_bf16: bool = False


class RunConfig(_Strict):
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rounds: int = Field(20, ge=1)
    batch_size: int = Field(512, ge=1)
    candidates: int = Field(8, ge=1)
    stages: StagesConfig = StagesConfig()
    dpo: DPOConfig = DPOConfig()
    sft: SFTConfig = SFTConfig()
    validation: ValidationConfig = ValidationConfig()
    retention: RetentionConfig = RetentionConfig()
    hardware: HardwareConfig = HardwareConfig()
    log_with: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="Experiment trackers for the round metrics (accelerate's): tensorboard, wandb.",
    )


def _set_path(data: dict[str, Any], key_path: str, value: Any, defaults: Mapping[str, Any]) -> None:
    """Set a dotted key; a missing parent is filled from the defaults first, so
    ``--set stages.scheduler.params.x=1`` keeps the default scheduler's name."""
    keys = key_path.split(".")
    node = data
    default: Any = defaults
    for i, key in enumerate(keys[:-1]):
        default = default.get(key) if isinstance(default, Mapping) else None
        child = node.get(key)
        if child is None:
            child = node[key] = copy.deepcopy(default) if isinstance(default, dict) else {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key_path}: {'.'.join(keys[: i + 1])} is {child!r}, not a mapping")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not k for k in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key in key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
    return key, value


def load_raw(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping, got {type(data).__name__}")
    return data


def validate(data: Mapping[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + format_validation_error(exc, "")) from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, dict[str, Any]]:
    """Load, override and validate; returns the model and the plain dict (stored with the run)."""
    data = load_raw(path) if path is not None else {}
    data = copy.deepcopy(data)
    defaults = RunConfig().model_dump(mode="json")
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value, defaults)
    cfg = validate(data, str(path) if path else "config")
    return cfg, cfg.model_dump(mode="json")


def diff_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "",
              defaults: Mapping[str, Any] | None = None) -> list[str]:
    """Key paths whose values differ between two config dicts. A key the old config lacks
    is unchanged when the new value is its default (``RunConfig``'s unless ``defaults``
    is given): a config stored before that key existed ran with the default."""
    if defaults is None and not prefix:
        defaults = RunConfig().model_dump(mode="json")
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, None), new.get(key, None)
        default = defaults.get(key) if isinstance(defaults, Mapping) else None
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_keys(a, b, path + ".", default if isinstance(default, Mapping) else {}))
        elif key not in old and isinstance(defaults, Mapping) and key in defaults and b == default:
            continue
        elif a != b:
            out.append(path)
    return out
