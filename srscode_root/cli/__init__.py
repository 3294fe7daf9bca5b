"""The ``srscode`` command line: subcommands over the engine, the registry and a run directory."""
