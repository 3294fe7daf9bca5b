"""``srscode env``: what this machine resolves to, the versions a run records, and
whether the evaluator can isolate untrusted code here."""
from __future__ import annotations

import argparse
import json
from typing import Any

from srscode.core.errors import SrsError


def _isolation() -> dict[str, Any] | str:
    try:
        from srscode.plugins.evaluate.sandbox import isolation_status
    except ImportError:
        return "unavailable"
    try:
        return dict(isolation_status())
    except Exception as exc:  # noqa: BLE001 - a diagnostic command reports, it does not crash
        return f"error: {type(exc).__name__}: {exc}"


def _tensor_parallel(cfg: Any) -> int:
    params = cfg.stages.generator.params or {}
    try:
        return int(params.get("tensor_parallel_size", 1))
    except (TypeError, ValueError):
        return 1


def collect(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Everything ``srscode env`` shows, and whether it found a problem."""
    from srscode.hardware.versions import package_versions

    from srscode.core.config import load_config

    cfg, _ = load_config(args.config, args.set or ())
    out: dict[str, Any] = {"config": args.config or "(defaults)"}
    problem = False
    try:
        from srscode.hardware.resolve import resolve_backend

        backend = resolve_backend(cfg.hardware)
    except SrsError as exc:
        out["backend_error"] = str(exc)
        out["versions"] = package_versions()
        problem = True
    else:
        meta = backend.metadata()
        meta["probe"] = backend.probe.reason
        var = backend.visible_devices_var
        if var:
            import os

            meta["visible_devices"] = {var: os.environ.get(var)}
        out.update(meta)
        try:
            out["compat_warnings"] = backend.check_compat(tp=_tensor_parallel(cfg), lora=True)
        except SrsError as exc:
            out["compat_error"] = str(exc)
            problem = True
    out["evaluator_isolation"] = _isolation()
    return out, problem


def _print_text(info: dict[str, Any]) -> None:
    def row(key: str, value: Any) -> None:
        print(f"{key:<20}{value}")

    row("config", info["config"])
    if "backend_error" in info:
        row("backend", f"ERROR: {info['backend_error']}")
    else:
        row("backend", f"{info['backend']} (from {info['source']}: {info['probe']})")
        row("device", f"{info['device_name'] or '?'} x {info['device_count']} ({info['device_type']})")
        for var, val in (info.get("visible_devices") or {}).items():
            row("visible devices", f"{var}={val if val is not None else '(unset: all)'}")
        row("collective", info["collective"])
        row("dtype", f"{info['dtype']} (mixed precision: {info['mixed_precision']})")
        row("generator", f"{info['preferred_generator']} preferred")
    print("versions")
    for name, ver in info["versions"].items():
        print(f"  {name:<18}{ver if ver is not None else '-'}")
    if "compat_error" in info:
        row("compat", f"ERROR: {info['compat_error']}")
    elif "compat_warnings" in info:
        row("compat", "ok" if not info["compat_warnings"] else "warnings")
        for w in info["compat_warnings"]:
            print(f"  - {w}")
    iso = info["evaluator_isolation"]
    if isinstance(iso, dict):
        print("evaluator isolation")
        for k, v in iso.items():
            if isinstance(v, list):  # filesystem_binds, refused: one entry a line
                print(f"  {k:<18}{v[0] if v else '-'}")
                for item in v[1:]:
                    print(f"  {'':<18}{item}")
            else:
                print(f"  {k:<18}{v}")
    else:
        row("evaluator isolation", iso)


def _cmd_env(args: argparse.Namespace) -> int:
    info, problem = collect(args)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        _print_text(info)
    return 2 if problem else 0


def add_env_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "env", help="show the resolved hardware backend, versions and evaluator isolation"
    )
    p.add_argument("config", nargs="?", help="YAML config file (its hardware section is used; default: auto)")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_env)
    return p
