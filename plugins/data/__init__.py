"""Task sources (hook ``srscode_datasets``): KodCode-V1 and the bundled starter set."""
