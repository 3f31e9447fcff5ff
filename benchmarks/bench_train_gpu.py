"""SFT step throughput of the h100-7b recipe on a randomly initialized model of DeepSeek-R1-Distill-Qwen-7B's shape
(no weights are downloaded): tokens/s, step time, peak memory and MFU.

    python benchmarks/bench_train_gpu.py [--steps 10] [--tokens 8192] [--variant baseline|fast] [--json PATH]
    python benchmarks/bench_train_gpu.py --tiny     # the same code on CPU with a 2-layer model (slow, a smoke run)

LoRA r=64 (alpha 128) on every linear layer, bf16 on a GPU (fp32 on CPU), AdamW on the adapter, one sequence of
``--tokens`` tokens per step. ``baseline`` = gradient checkpointing on (the anchor the issue quotes: plain
transformers + peft, SDPA, checkpointing, 8k tokens/step: 6,260 tokens/s = 29% MFU on one H200); ``fast`` = no
checkpointing (memory allows it at 8k tokens on an 80-141 GB card) and the logits' cross-entropy computed in chunks
so the full [tokens x vocab] fp32 tensor is never materialized. MFU counts 6 N FLOPs per token (N = all parameters,
frozen ones included, attention FLOPs excluded) against 989 TFLOP/s dense bf16 (H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_json

from fxgate.training import _optional  # torch, peft, transformers: the train extra, with its hint

R1_QWEN_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
TINY = {
    **R1_QWEN_7B,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
}
PEAK_BF16 = 989e12


def chunked_ce(hidden, lm_head, labels, chunk: int = 2048):  # type: ignore[no-untyped-def]
    """Next-token cross-entropy over ``chunk`` positions at a time (the [T x V] logits never exist at once)."""
    torch = _optional.torch()
    h, y = hidden[:, :-1].reshape(-1, hidden.shape[-1]), labels[:, 1:].reshape(-1)
    total = torch.zeros((), device=hidden.device, dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        logits = lm_head(h[i : i + chunk]).float()
        total = total + torch.nn.functional.cross_entropy(logits, y[i : i + chunk], reduction="sum")
    return total / h.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--variant", choices=["baseline", "fast"], default="baseline")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    torch, peft, tf = _optional.torch(), _optional.peft(), _optional.transformers()
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    shape = TINY if a.tiny or not gpu else R1_QWEN_7B
    tokens = a.tokens if gpu else min(a.tokens, 512)
    torch.manual_seed(0)
    cfg = tf.Qwen2Config(**shape, attn_implementation="sdpa")
    with torch.device(dev):
        model = tf.Qwen2ForCausalLM(cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if a.variant == "baseline":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(r=64, lora_alpha=128, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    ids = torch.randint(0, shape["vocab_size"], (1, tokens), device=dev)
    base = model.get_base_model()

    def step() -> float:
        t0 = time.perf_counter()
        if a.variant == "fast":
            hidden = base.model(input_ids=ids).last_hidden_state
            loss = chunked_ce(hidden, base.lm_head, ids)
        else:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(a.warmup):
        step()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(a.steps)]
    t = sorted(times)[len(times) // 2]
    tps = tokens / t
    out = {
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "shape": "R1-Distill-Qwen-7B" if shape is R1_QWEN_7B else "tiny (2 layers)",
        "variant": a.variant,
        "tokens_per_step": tokens,
        "params": n_params,
        "step_s_p50": t,
        "step_s_max": max(times),
        "tokens_per_s": tps,
        "mfu": 6 * n_params * tps / PEAK_BF16 if gpu else None,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "anchor": {"tokens_per_s": 6260, "mfu": 0.29, "gpu": "H200", "variant": "baseline"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    ratio = tps / 6260 if gpu and shape is R1_QWEN_7B else None
    out["summary"] = (
        [
            {
                "figure": f"SFT step, R1-Distill-Qwen-7B shape, LoRA r=64 ({a.variant})",
                "ours": f"{tps:,.0f} tokens/s" + (f", MFU {out['mfu']:.0%}" if out["mfu"] else ""),
                "reference": "6,260 tokens/s (H200 anchor)",
                "ratio": f"{ratio:.2f}" if ratio else "-",
                "target": ">= 2x anchor",
                "met": (ratio >= 2) if ratio else None,
            }
        ]
        if gpu
        else []
    )
    print(
        f"{out['shape']} {a.variant}: {tokens} tokens/step, step p50 {t:.3f} s, {tps:,.0f} tokens/s"
        + (f", MFU {out['mfu']:.1%}, peak {out['peak_mem_gb']:.1f} GB" if gpu else " (CPU: no MFU, no GPU memory)")
    )
    write_json(a.json, out)


if __name__ == "__main__":
    main()
