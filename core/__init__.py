"""srs-code core: hookspecs, plugin manager, registry, types, config, engine, ledger, CLI."""
