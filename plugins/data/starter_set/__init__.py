"""srs-code starter task set (KodCode-V1 schema): tasks.jsonl, written by tools/author_starter_set.py."""
