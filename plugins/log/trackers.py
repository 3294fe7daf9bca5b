"""Lifecycle plugin: round metrics to TensorBoard and/or Weights & Biases through
accelerate's trackers, chosen by the config's ``log_with: [tensorboard, wandb]``.

TensorBoard event files go to ``RUN_DIR/tensorboard/<run name>/``; a wandb run gets a
stable id from the run dir, so a resumed run continues the same wandb run. Each round
is logged at step = round: every numeric metric, nested ones as ``seconds/generate``;
validations as ``validation/pass@1`` at their round (0 = before training, rounds + 1 =
final). accelerate (and torch) are imported only when ``log_with`` is not empty.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from srscode.core.errors import ConfigError
from srscode.core.hookspecs import hookimpl
from srscode.core.retention import flatten

log = logging.getLogger(__name__)

# tracker name -> (python modules of which one must be importable, what to install)
REQUIREMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
}

# run dir -> {"trackers": [...], "last_round": int}; "current": the latest run start
_runs: dict[str, dict[str, Any]] = {}
_current: dict[str, str | None] = {"run_dir": None}


def check_trackers(names: list[str]) -> None:
    """Raise ConfigError naming the package when a tracker's library is not installed."""
    for name in names:
        if name not in REQUIREMENTS:
            raise ConfigError(f"log_with: unknown tracker {name!r}; choose from {', '.join(REQUIREMENTS)}.")
        modules, package = REQUIREMENTS[name]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise ConfigError(
                f"log_with: {name} needs the {package!r} package, which is not installed. "
                f"Install it with `pip install {package}`, or remove {name!r} from log_with."
            )


def _hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as flat scalars (what TensorBoard's hparams and wandb's config take)."""
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(v, key + ".")
            elif v is None or isinstance(v, (bool, int, float, str)):
                out[key] = "" if v is None else v
            else:
                out[key] = str(v)

    walk(config, "")
    return out


def make_trackers(names: list[str], run_dir: Path, config: Mapping[str, Any], resumed: bool) -> list[Any]:
    check_trackers(names)
    from accelerate import PartialState
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    PartialState()  # accelerate's trackers log through its logger, which needs the state

    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard":
            tracker = TensorBoardTracker(run_dir.name or "run", run_dir / "tensorboard")
        else:
            run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            tracker = WandBTracker(
                os.environ.get("WANDB_PROJECT", "srs-code"),
                name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir), config=_hparams(config),
            )
        tracker.start()
        if name == "tensorboard" and not resumed:
            tracker.store_init_configuration(_hparams(config))
        trackers.append(tracker)
    return trackers


def _log(values: Mapping[str, float], step: int) -> None:
    run = _runs.get(_current["run_dir"] or "")
    if not run or not values:
        return
    for tracker in run["trackers"]:
        try:
            tracker.log(dict(values), step=step)
        except Exception as exc:  # a tracker outage (network, disk) must not stop training
            log.warning("tracker %s failed to log step %d: %s", getattr(tracker, "name", tracker), step, exc)


def _finish() -> None:
    run = _runs.pop(_current["run_dir"] or "", None)
    for tracker in (run or {}).get("trackers", []):
        try:
            tracker.finish()
        except Exception as exc:  # a tracker failing to close must not hide the run's result
            log.warning("closing tracker %s failed: %s", getattr(tracker, "name", tracker), exc)


@hookimpl(trylast=True)  # after the other loggers: a tracker failure must not skip them
def srscode_run_start(run_dir: str, config: Mapping[str, Any], resumed_from: int) -> None:
    _finish()  # a previous run in this process that stopped on an error
    _current["run_dir"] = run_dir
    names = list(config.get("log_with") or [])
    if not names:
        return
    trackers = make_trackers(names, Path(run_dir), config, resumed=bool(resumed_from))
    _runs[run_dir] = {"trackers": trackers, "last_round": resumed_from}


@hookimpl(trylast=True)
def srscode_round_end(round: int, metrics: Mapping[str, Any]) -> None:
    run = _runs.get(_current["run_dir"] or "")
    if not run:
        return
    run["last_round"] = round
    _log({k: v for k, v in flatten(metrics) if k != "round" and not k.startswith("validation/")}, round)


@hookimpl(trylast=True)
def srscode_stage_finish(round: int, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
    run = _runs.get(_current["run_dir"] or "")
    if not run:
        return
    if stage == "validate":
        _log({f"validation/{k}": v for k, v in flatten(info)}, round)
    elif stage == "dpo" and round <= run["last_round"]:  # the final DPO stage, after the last round
        _log({f"final_dpo/{k}": v for k, v in flatten(info)}, round)


@hookimpl(trylast=True)
def srscode_stage_error(round: int, stage: str, error: BaseException) -> None:
    _finish()  # the run stops: flush and close


@hookimpl(trylast=True)
def srscode_run_finish(run_dir: str, summary: Mapping[str, Any]) -> None:
    _finish()
