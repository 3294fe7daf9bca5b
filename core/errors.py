"""Errors users see. Each carries a one-paragraph message naming the problem and where
it is; the CLI prints it without a traceback (``--debug`` shows the traceback)."""
from __future__ import annotations


class SrsError(Exception):
    """Base class of every error the CLI reports as a clean message."""

    exit_code = 2


class ConfigError(SrsError):
    """A config value is wrong: the message names the key path and the value."""


class RegistryError(SrsError):
    """A stage name is unknown, provided twice, or its plugin failed to import."""


class DataError(SrsError):
    """A dataset file or row cannot be used."""


class LedgerError(SrsError):
    """The run directory is damaged, locked, or belongs to another config."""


class StageError(SrsError):
    """A stage failed in a way the user can act on (e.g. the adapter-identity check)."""


class Interrupted(SrsError):
    """The run was stopped by a signal; the last committed round is intact."""

    exit_code = 130
