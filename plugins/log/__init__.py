"""Loggers (lifecycle hooks ``srscode_run_start`` … ``srscode_run_finish``): console, JSONL and experiment trackers."""
