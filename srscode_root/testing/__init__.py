"""Fakes shared by the test suite and the benchmarks (``srscode.testing``).

They ship with the package so that a benchmark, a test run in a subprocess or a plugin's
own test suite can use them without putting ``tests/`` on ``sys.path``:

* :mod:`srscode.testing.fault_stages`: the ``fault-train`` / ``fault-dpo`` fake trainers
  (they write a real adapter folder) and :func:`~srscode.testing.fault_stages.fault_config`,
  a small multi-round run on the starter set;
* :mod:`srscode.testing.tiny_model`: a tiny random Qwen2 model with an offline byte-level BPE
  tokenizer, and LoRA adapters for it (needs the ``train`` extra: torch, transformers,
  tokenizers, peft).
"""
