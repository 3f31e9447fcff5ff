"""Training presets: the seed's recipe for rented H100s, and the nano preset that runs the whole pipeline on CPU.

``h100-7b`` is the original design's recipe — DeepSeek-R1-Distill-Qwen-7B, LoRA on every linear layer, SFT 3
epochs at 2e-5, then DPO (beta 0.1) 2 epochs, bf16 — with sequence packing and completion-only loss. ``nano``
trains fxgate's nano model (:mod:`fxgate.training.nano`) on a slice of the data in a few minutes on 2 cores; it
checks the machinery (data → SFT → DPO → merge → GGUF → parity → manifest), not a trading edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    base: str  # a local directory or a hub id; "nano": built by fxgate.training.nano
    bf16: bool
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    sft_epochs: float
    sft_lr: float
    dpo_epochs: float
    dpo_lr: float
    beta: float
    batch_size: int
    grad_accum: int
    max_length: int
    packing: bool
    gradient_checkpointing: bool
    save_steps: int
    max_train_examples: int | None = None  # per kind of data (scenarios, features, formulas, imports)
    max_dpo_pairs: int | None = None
    eval_examples: int | None = None
    #: also train the output layer in full (PEFT modules_to_save): the nano model starts near-uniform, and LoRA on
    #: its linear layers alone leaves next-token margins so small that Q8_0 rounding flips them
    train_lm_head: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS = {
    "h100-7b": Preset(
        name="h100-7b",
        base="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        bf16=True,
        lora_r=64,
        lora_alpha=128,
        lora_dropout=0.05,
        sft_epochs=3,
        sft_lr=2e-5,
        dpo_epochs=2,
        dpo_lr=5e-6,
        beta=0.1,
        batch_size=4,
        grad_accum=4,
        max_length=4096,
        packing=True,
        gradient_checkpointing=True,
        save_steps=200,
    ),
    "nano": Preset(
        name="nano",
        base="nano",
        bf16=False,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        sft_epochs=2,
        sft_lr=1e-2,
        dpo_epochs=1,
        dpo_lr=1e-3,
        beta=0.1,
        batch_size=8,
        grad_accum=1,
        max_length=4096,  # the serving n_ctx: a shorter one cuts the answers off the longest prompts
        packing=False,
        gradient_checkpointing=False,
        save_steps=10,
        max_train_examples=192,
        max_dpo_pairs=96,
        eval_examples=40,
        train_lm_head=True,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
