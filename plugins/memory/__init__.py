"""Memory models (hook ``srscode_memory_policies``): SM-2 and a no-memory baseline."""
