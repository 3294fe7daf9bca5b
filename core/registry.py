"""The plugin manager and the named registry of stage implementations.

Built-ins are ordinary plugins registered from ``DEFAULT_PLUGINS`` through the same
``pm.register`` path as third-party ones, which come in through the ``srscode``
entry-point group. The config picks each stage's implementation by name.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import os
import warnings
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Iterable, Mapping

import pluggy

from . import hookspecs
from .errors import ConfigError, RegistryError
from .types import ComponentSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "srscode"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "srscode.plugins.prompt.builders",
    "srscode.plugins.prompt.reflect",
    "srscode.plugins.data.kodcode",
    "srscode.plugins.data.starter",
    "srscode.plugins.data.humaneval",
    "srscode.plugins.generate.replay",
    "srscode.plugins.generate.hf",
    "srscode.plugins.generate.vllm",
    "srscode.plugins.evaluate.subprocess_per_candidate",
    "srscode.plugins.evaluate.worker_pool",
    "srscode.plugins.memory.sm2",
    "srscode.plugins.memory.null",
    "srscode.plugins.schedule.ratio",
    "srscode.plugins.schedule.uniform",
    "srscode.plugins.schedule.learnability",
    "srscode.plugins.train.null",
    "srscode.plugins.train.lora_sft",
    "srscode.plugins.train.dpo",
    "srscode.hardware.backends",
    "srscode.plugins.log.console",
    "srscode.plugins.log.jsonl",
    "srscode.plugins.log.trackers",
)

# stage key used in configs and messages -> registration hook name
STAGE_HOOKS: dict[str, str] = {
    "prompt": "srscode_prompt_builders",
    "generator": "srscode_generators",
    "evaluator": "srscode_evaluators",
    "memory": "srscode_memory_policies",
    "scheduler": "srscode_schedulers",
    "trainer": "srscode_trainers",
    "dataset": "srscode_datasets",
    "backend": "srscode_backends",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str  # module or entry-point name
    dist: str  # distribution that provides it
    version: str
    builtin: bool


@dataclass(frozen=True)
class Provided:
    spec: Any  # ComponentSpec, or a Backend record for the backend stage
    plugin: PluginInfo


def _own_version() -> str:
    try:
        return md.version("srs-code")
    except md.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class Registry:
    """Plugins, their load failures, and every named component per stage."""

    def __init__(self, pm: pluggy.PluginManager, plugins: list[PluginInfo], failed: dict[str, str]):
        self.pm = pm
        self.plugins = plugins
        self.failed = failed  # entry-point name -> error text
        self.components: dict[str, dict[str, Provided]] = {s: {} for s in STAGE_HOOKS}
        self._collect()

    # ------------------------------------------------------------------ collection
    def _collect(self) -> None:
        info_by_obj = {id(self.pm.get_plugin(p.name)): p for p in self.plugins}
        for stage, hook_name in STAGE_HOOKS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin = info_by_obj.get(id(impl.plugin)) or PluginInfo(
                    impl.plugin_name, "?", "?", False
                )
                for spec in impl.function() or ():
                    name = spec.name
                    if name in self.components[stage]:
                        other = self.components[stage][name].plugin
                        raise RegistryError(
                            f"{stage} name {name!r} is provided twice: by plugin {other.name!r} "
                            f"(distribution {other.dist} {other.version}) and by plugin "
                            f"{plugin.name!r} (distribution {plugin.dist} {plugin.version}). "
                            "Uninstall one of them, or ask its author to rename the component."
                        )
                    self.components[stage][name] = Provided(spec, plugin)

    # ------------------------------------------------------------------ lookup
    def names(self, stage: str) -> list[str]:
        return sorted(self.components[stage])

    def get(self, stage: str, name: str, key_path: str) -> Provided:
        found = self.components[stage].get(name)
        if found is not None:
            return found
        msg = (
            f"{key_path}: unknown {stage} {name!r}. Available: "
            f"{', '.join(self.names(stage)) or '(none)'}."
        )
        if self.failed:
            broken = "; ".join(f"{k}: {v}" for k, v in self.failed.items())
            msg += f" These plugins failed to import and may provide it: {broken}."
        raise RegistryError(msg)

    def validate(
        self, stage: str, name: str, params: Mapping[str, Any] | None, key_path: str, params_path: str | None = None
    ) -> Any:
        """The component's validated params (unknown name, key or type: an error naming the path).

        ``key_path`` is where the name is (``stages.trainer``); ``params_path`` where the params
        are, by default ``key_path + ".params"`` (``dpo`` keeps them beside its name:
        ``dpo.name`` / ``dpo.params``)."""
        spec: ComponentSpec = self.get(stage, name, key_path).spec
        return validate_params(spec.params, params or {}, params_path or f"{key_path}.params")

    def build(
        self, stage: str, name: str, params: Mapping[str, Any] | None, ctx: Any, key_path: str,
        params_path: str | None = None,
    ) -> Any:
        """Validate ``params`` against the component's schema and call its factory."""
        validated = self.validate(stage, name, params, key_path, params_path)
        return self.get(stage, name, key_path).spec.factory(validated, ctx)


def validate_params(schema: type | None, params: Mapping[str, Any], key_path: str) -> Any:
    """Validate a params mapping; unknown keys and wrong types name the key path."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{key_path}: expected a mapping, got {params!r}")
    if schema is None:
        if params:
            raise ConfigError(f"{key_path}: this component takes no params, got keys {sorted(params)}")
        return None
    import pydantic

    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        allowed = set(schema.model_fields)
        adapter = None
    elif is_dataclass(schema):
        allowed = {f.name for f in fields(schema)}
        adapter = pydantic.TypeAdapter(schema)
    else:
        raise TypeError(f"params schema {schema!r} must be a pydantic model or a dataclass")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"{key_path}.{unknown[0]}: unknown key (value {params[unknown[0]]!r}). "
            f"Allowed keys: {', '.join(sorted(allowed)) or '(none)'}."
        )
    try:
        if adapter is None:
            return schema.model_validate(dict(params))  # type: ignore[attr-defined]
        return adapter.validate_python(dict(params))
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, key_path)) from None


def format_validation_error(exc: Any, key_path: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        where = ".".join(x for x in (key_path, loc) if x) or "(top level)"
        parts.append(f"{where}: {err.get('msg')} (got {err.get('input')!r})")
    return "; ".join(parts)


def _iter_entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def make_plugin_manager(extra_plugins: Iterable[Any] = (), load_entry_points: bool = True) -> Registry:
    """Build the plugin manager: built-ins, then entry points, then ``extra_plugins``
    (objects or module names; tests register fakes this way, as a third party would)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins: list[PluginInfo] = []
    failed: dict[str, str] = {}
    version = _own_version()
    for modname in DEFAULT_PLUGINS:
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        plugins.append(PluginInfo(modname, "srs-code", version, True))
    if load_entry_points:
        for ep in _iter_entry_points():
            dist = ep.dist.name if ep.dist else "?"
            dver = ep.dist.version if ep.dist else "?"
            if pm.has_plugin(ep.name):
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the engine
                text = f"{type(exc).__name__}: {exc}"
                failed[ep.name] = f"{text} (distribution {dist} {dver})"
                warnings.warn(
                    f"srs-code plugin {ep.name!r} from {dist} {dver} failed to import: {text}. "
                    "Components it provides are unavailable.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            pm.register(obj, name=ep.name)
            plugins.append(PluginInfo(ep.name, dist, dver, False))
    # like PYTEST_PLUGINS: extra plugin modules by name, for tests and subprocess harnesses
    env_plugins = [m.strip() for m in os.environ.get("SRSCODE_PLUGINS", "").split(",") if m.strip()]
    for extra in [*env_plugins, *extra_plugins]:
        obj = importlib.import_module(extra) if isinstance(extra, str) else extra
        name = extra if isinstance(extra, str) else getattr(obj, "__name__", repr(obj))
        pm.register(obj, name=name)
        plugins.append(PluginInfo(name, "(registered in process)", "-", False))
    return Registry(pm, plugins, failed)
