"""srs-code: fine-tune code LLMs with execution feedback and a spaced-repetition curriculum."""
__all__ = ["__version__"]
__version__ = "0.1.0"
