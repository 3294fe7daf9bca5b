"""Dataset source ``starter``: the project's own small task set (KodCode-V1 schema).

The rows ship inside the package (``srscode.plugins.data.starter_set/tasks.jsonl``), so they are
found through ``importlib.resources`` in editable and regular installs alike. They go
through the same row mapping as ``kodcode``. ``data.path``, when given, overrides the
packaged file (any path ``kodcode`` accepts locally).
"""
from __future__ import annotations

import importlib.resources
import logging

from srscode.core.errors import DataError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, LoadReport

from .kodcode import iter_json_lines, iter_local, local_files, map_rows

log = logging.getLogger(__name__)

PACKAGE = "srscode.plugins.data.starter_set"
FILENAME = "tasks.jsonl"


class StarterSource:
    """The ``starter`` dataset source (no params)."""

    def load(self, path: str | None = None) -> LoadReport:
        if path:
            files = local_files(path)
            if files is None:
                raise DataError(
                    f"starter source: data.path {path!r} is not an existing local file, directory "
                    "or glob; leave data.path empty to use the packaged starter set."
                )
            report = map_rows(iter_local(files), source="starter")
        else:
            resource = importlib.resources.files(PACKAGE) / FILENAME
            try:
                data = resource.read_bytes()
            except (FileNotFoundError, OSError) as exc:
                raise DataError(
                    f"the packaged starter set {PACKAGE}/{FILENAME} cannot be read ({exc}); "
                    "the installation is incomplete — reinstall srs-code."
                ) from None
            report = map_rows(iter_json_lines(data, f"{PACKAGE}/{FILENAME}"), source="starter")
        log.info("starter: %d tasks (skipped: %s)", len(report.tasks), report.skipped or "none")
        return report


@hookimpl
def srscode_datasets():
    yield ComponentSpec(
        "starter",
        factory=lambda params, ctx: StarterSource(),
        params=None,
        summary="the packaged starter set: 40+ tasks with recorded candidates",
    )
