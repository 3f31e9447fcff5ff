"""DPO with LoRA (TRL ``DPOTrainer``, beta 0.1) from the SFT model, on the pairs of :mod:`fxgate.training.datasets`.

The SFT adapter is merged into the base first (:func:`fxgate.training.pipeline.merge`); DPO trains a new adapter on
that model, and the reference policy is the same model with the adapter disabled (no second copy in memory).
Prompts are rendered with the model's chat template and the serving budget exactly as in SFT and at serving time
(:func:`fxgate.training._trainer.judge_renderer`).

    python -m fxgate.training.dpo --preset h100-7b --base run/sft-merged --data data/ --out run/dpo [--resume]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fxgate.training import _optional
from fxgate.training._trainer import has_gpu, jsonl_records, judge_renderer, lora_config, parser, render_messages, setup
from fxgate.training.presets import Preset, get_preset

__all__ = ["dpo_examples", "train_dpo", "main"]


def dpo_examples(data: str | Path, tok: Any, limit: int | None = None) -> list[dict[str, str]]:
    d = Path(data) / "train"
    pairs = jsonl_records(d / "dpo.jsonl")[:limit]
    render = judge_renderer(data, tok) if pairs else None
    out = [{"prompt": render(r), "chosen": r["chosen"], "rejected": r["rejected"]} for r in pairs]  # type: ignore[misc]
    for r in jsonl_records(d / "imported_dpo.jsonl")[:limit]:
        p = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        c = r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][-1]["content"]
        j = r["rejected"] if isinstance(r["rejected"], str) else r["rejected"][-1]["content"]
        out.append({"prompt": render_messages(tok, p), "chosen": c, "rejected": j})
    if not out:
        raise ValueError(f"{d}: no DPO pairs. Fix: `fxgate train data --out {Path(data)}` first")
    return out


def train_dpo(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    preset: Preset,
    *,
    resume: bool = False,
    max_steps: int | None = None,
) -> dict[str, Any]:
    trl = _optional.trl()
    out = Path(out)
    model, tok = setup(base, preset)
    ds = _optional.hf_datasets().Dataset.from_list(dpo_examples(data, tok, preset.max_dpo_pairs))
    cfg = trl.DPOConfig(
        output_dir=str(out),
        num_train_epochs=preset.dpo_epochs,
        learning_rate=preset.dpo_lr,
        beta=preset.beta,
        per_device_train_batch_size=max(1, preset.batch_size // 2),
        gradient_accumulation_steps=preset.grad_accum,
        max_length=preset.max_length,
        bf16=preset.bf16,
        gradient_checkpointing=preset.gradient_checkpointing,
        save_steps=preset.save_steps,
        save_total_limit=3,
        logging_steps=5,
        seed=preset.seed,
        report_to="none",
        max_steps=max_steps or -1,
        disable_tqdm=True,
        use_cpu=not has_gpu(),
    )
    trainer = trl.DPOTrainer(
        model=model, ref_model=None, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora_config(preset)
    )
    has_ckpt = any(out.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if (resume and has_ckpt) else None)
    trainer.save_model(str(out / "adapter"))
    tok.save_pretrained(str(out / "adapter"))
    hist = trainer.state.log_history
    acc = [h["rewards/accuracies"] for h in hist if "rewards/accuracies" in h]
    metrics = {
        "pairs": len(ds),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "reward_accuracy_last": acc[-1] if acc else None,
        "resumed": bool(resume and has_ckpt),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def main(argv: list[str] | None = None) -> None:
    a = parser(__doc__, base_required=True, base_help="The merged SFT model directory.").parse_args(argv)
    print(json.dumps(train_dpo(a.base, a.data, a.out, get_preset(a.preset), resume=a.resume, max_steps=a.max_steps)))


if __name__ == "__main__":
    main()
