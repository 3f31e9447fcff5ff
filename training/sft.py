"""SFT with LoRA (TRL ``SFTTrainer`` + PEFT) on the data of :mod:`fxgate.training.datasets`.

The training text is rendered with the **model's own chat template** through
:func:`fxgate.models.prompt.build_prompt` — the function the live judge renders with, under the same token budget
(:func:`fxgate.training._trainer.judge_renderer`: sections dropped least important first when over it) — so the
prompt a model is trained on is, token for token, the prompt it is served (tested, with the R1-Distill and ChatML
templates). Examples are prompt/completion pairs: the prompt ends with the template's generation prompt
(``<｜Assistant｜><think>\\n`` for R1-Distill), the completion is the reasoning, ``</think>``, and the answer; the
loss is on the completion only.

Run on one GPU or many::

    python -m fxgate.training.sft --preset h100-7b --data data/ --out run/sft
    accelerate launch --config_file training/accelerate/ddp.yaml -m fxgate.training.sft --preset h100-7b \\
        --data data/ --out run/sft            # 8 GPUs, DDP
    ... --resume                              # continue from the last checkpoint after a preemption

Checkpoints every ``save_steps`` optimizer steps (model, optimizer, scheduler, RNG states). For tests only, the
environment variable ``FXGATE_FAULT_EXIT_AT_STEP=N`` ends the process abruptly after step N (a simulated kill).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from fxgate.training import _optional
from fxgate.training._trainer import has_gpu, jsonl_records, judge_renderer, lora_config, parser, render_messages, setup
from fxgate.training.errors import DatasetWarning
from fxgate.training.presets import Preset, get_preset

__all__ = ["sft_examples", "train_sft", "main"]


def sft_examples(data: str | Path, tok: Any, limit: int | None = None, split: str = "train") -> list[dict[str, str]]:
    """prompt/completion text pairs from a data directory: trade scenarios (rendered by :func:`judge_renderer`, as
    served), feature examples, formula knowledge and imported conversations (``limit`` per kind)."""
    d = Path(data) / split
    out = []
    scen = jsonl_records(d / "scenarios.jsonl")[:limit]
    if scen:
        render = judge_renderer(data, tok)
        for r in scen:
            out.append({"prompt": render(r), "completion": r["completion"]})
    for name in ("features", "formulas", "imported_sft"):
        for r in jsonl_records(d / f"{name}.jsonl")[:limit]:
            msgs = r["messages"]
            out.append({"prompt": render_messages(tok, msgs[:-1]), "completion": "</think>\n\n" + msgs[-1]["content"]})
    if not out:
        raise ValueError(f"{d}: no training examples. Fix: `fxgate train data --out {Path(data)}` first")
    return out


def _warn_truncated(examples: list[dict[str, str]], tok: Any, max_length: int, data: str | Path) -> int:
    """Warn (:class:`DatasetWarning`) when examples are longer than the preset's ``max_length``: the trainer cuts
    them from the right, so such an example loses its answer (all or part of the completion, the only tokens
    with a loss) and the judge never learns to answer prompts that long. Returns how many are."""
    # counted as TRL's SFTTrainer builds each sequence (trl 1.x, non-conversational prompt-completion): the EOS
    # token appended to the completion, then prompt + completion tokenized with the tokenizer's special tokens
    eos = getattr(tok, "eos_token", None) or ""

    def text(e: dict[str, str]) -> str:
        c = e["completion"]
        return e["prompt"] + (c if c.endswith(eos) else c + eos)

    n = [len(tok(text(e))["input_ids"]) for e in examples]
    over = sum(x > max_length for x in n)
    if over:
        warnings.warn(
            f"{data}: {over} of {len(n)} training examples are longer than max_length = {max_length} tokens "
            f"(longest {max(n)}); their completions are cut off (the whole example is dropped when its prompt "
            f"alone fills max_length). Fix: a preset whose max_length covers the "
            f"serving [llm] n_ctx, or a smaller serving budget",
            DatasetWarning,
            stacklevel=3,
        )
    return over


def _fault_exit(step: int) -> Any:
    """Test hook: a callback that ends the process without cleanup right after the checkpoint of ``step`` (a
    simulated kill -9)."""

    class FaultExit(_optional.transformers().TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= step:
                os._exit(17)

    return FaultExit()


def train_sft(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    preset: Preset,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``base`` (``full=True``: every weight, for FSDP) and save it with the tokenizer to
    ``out/adapter`` (the full model, with ``full``); return the training metrics."""
    trl = _optional.trl()
    out = Path(out)
    model, tok = setup(base, preset)
    examples = sft_examples(data, tok, preset.max_train_examples)
    _warn_truncated(examples, tok, preset.max_length, data)
    ds = _optional.hf_datasets().Dataset.from_list(examples)
    cfg = trl.SFTConfig(
        output_dir=str(out),
        num_train_epochs=preset.sft_epochs,
        learning_rate=preset.sft_lr,
        per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.grad_accum,
        max_length=preset.max_length,
        packing=preset.packing,
        completion_only_loss=True,
        bf16=preset.bf16,
        gradient_checkpointing=preset.gradient_checkpointing,
        save_steps=preset.save_steps,
        save_total_limit=3,
        logging_steps=5,
        seed=preset.seed,
        data_seed=preset.seed,
        report_to="none",
        max_steps=max_steps or -1,
        lr_scheduler_type="cosine",
        disable_tqdm=True,
        use_cpu=not has_gpu(),
    )
    callbacks = []
    if os.environ.get("FXGATE_FAULT_EXIT_AT_STEP"):
        callbacks.append(_fault_exit(int(os.environ["FXGATE_FAULT_EXIT_AT_STEP"])))
    trainer = trl.SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        peft_config=None if full else lora_config(preset),
        callbacks=callbacks,
    )
    has_ckpt = any(out.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if (resume and has_ckpt) else None)
    trainer.save_model(str(out / "adapter"))
    tok.save_pretrained(str(out / "adapter"))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "examples": len(ds),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "resumed": bool(resume and has_ckpt),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, base_required=False, base_help="Model directory or hub id (default: the preset's).")
    ap.add_argument("--save-steps", type=int, default=None, help="Default: the preset's.")
    ap.add_argument("--max-examples", type=int, default=None, help="Per kind of data. Default: the preset's.")
    ap.add_argument("--full", action="store_true", help="Full fine-tune (no LoRA), e.g. with accelerate/fsdp.yaml.")
    a = ap.parse_args(argv)
    p = get_preset(a.preset)
    if a.save_steps:
        p = replace(p, save_steps=a.save_steps)
    if a.max_examples:
        p = replace(p, max_train_examples=a.max_examples)
    print(
        json.dumps(train_sft(a.base or p.base, a.data, a.out, p, resume=a.resume, max_steps=a.max_steps, full=a.full))
    )


if __name__ == "__main__":
    main()
