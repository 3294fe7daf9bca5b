"""srs-code starter task set (KodCode-V1 schema); see tasks.jsonl and _author.py."""
