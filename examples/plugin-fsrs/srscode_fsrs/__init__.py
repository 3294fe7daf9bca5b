"""srscode-fsrs: an FSRS-style memory policy for srs-code (the example of docs/plugins.md)."""

__version__ = "0.1.0"
