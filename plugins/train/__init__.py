"""Trainers (hook ``srscode_trainers``; the DPO stage is a trainer too): LoRA SFT, DPO and a no-op trainer."""
