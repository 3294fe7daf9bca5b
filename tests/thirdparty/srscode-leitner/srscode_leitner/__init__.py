"""A tiny third-party srs-code plugin used by the test suite."""
