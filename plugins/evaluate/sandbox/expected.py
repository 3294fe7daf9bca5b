"""The reference cache: expected test ids and reference runtimes per (test file, reference).

One JSON file (default ``$SRSCODE_CACHE_DIR`` or ``~/.cache/srscode``,
``reference-cache.json``) shared by the evaluators and ``srscode check-data``. Keys
include the harness version, the pytest and Python versions and the host name: ids can
change with pytest, runtimes with the machine. Writes merge with what is on disk and
replace the file atomically, so concurrent runs lose nothing but their own duplicates.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .harness import HARNESS_VERSION, sha256
from .verdicts import Expected

CACHE_NAME = "reference-cache.json"


def default_cache_path() -> Path:
    root = os.environ.get("SRSCODE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "srscode"
    )
    return Path(root) / CACHE_NAME


def expected_key(test_code: str, reference: str | None, variant: str = "") -> str:
    import pytest

    env = f"h{HARNESS_VERSION}{variant}|pytest{pytest.__version__}|py{sys.version_info[0]}.{sys.version_info[1]}|{platform.node()}"
    return sha256(env, test_code, reference or "")


class ReferenceCache:
    """Thread-safe in-memory map, optionally backed by a JSON file."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        if self.path is not None:
            self._data.update(self._read())

    def _read(self) -> dict[str, dict[str, Any]]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}

    def get(self, key: str) -> Expected | None:
        with self._lock:
            d = self._data.get(key)
        return Expected.from_dict(d) if d is not None else None

    def put(self, key: str, exp: Expected, **extra: Any) -> None:
        with self._lock:
            self._data[key] = {**exp.to_dict(), **extra}
            self._dirty.add(key)

    def entries(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._data)

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            mine = {k: self._data[k] for k in self._dirty}
            self._dirty.clear()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged = self._read()
        merged.update(mine)
        fd, tmp = tempfile.mkstemp(prefix=".reference-cache-", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "entries": merged}, fh)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
