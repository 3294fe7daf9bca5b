"""Built-in stage implementations, one module per implementation; each is an ordinary
pluggy plugin registered from ``srscode.core.registry.DEFAULT_PLUGINS``."""
