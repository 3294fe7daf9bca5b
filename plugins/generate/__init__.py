"""Generators (hook ``srscode_generators``): hf (transformers), vllm (vLLM / vllm-ascend), replay (recorded candidates)."""
