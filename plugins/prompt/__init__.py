"""Prompt builders (hook ``srscode_prompt_builders``): per model family, the prompt text, the code extracted from a completion, and the training target."""
