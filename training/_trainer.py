"""What SFT and DPO share: the data directory's records and the judge prompt rendered as served, the base model
with its tokenizer, the LoRA configuration, the device, and the command-line options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fxgate.models.prompt import load_template, prompt_budget, render_chat
from fxgate.training import _optional
from fxgate.training.datasets import data_budget, served_prompt
from fxgate.training.export import load_tokenizer
from fxgate.training.presets import Preset

__all__ = [
    "jsonl_records",
    "render_messages",
    "judge_renderer",
    "load_base",
    "setup",
    "lora_config",
    "has_gpu",
    "parser",
]


def jsonl_records(p: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (none when it does not exist: a kind of data the build did not write)."""
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def render_messages(tok: Any, messages: list[dict[str, str]]) -> str:
    """Chat ``messages`` rendered with the tokenizer's own template and special tokens."""
    return render_chat(tok.chat_template, messages, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")


def judge_renderer(data: str | Path, tok: Any) -> Callable[[dict[str, Any]], str]:
    """A function from a scenario/DPO record to its prompt text exactly as the live judge serves it: the record's
    template ``values`` through :func:`fxgate.training.datasets.served_prompt` with the model's chat template and
    tokenizer, under the serving budget recorded in the data manifest (sections dropped least important first, as
    :meth:`fxgate.models.llm.LlmRuntime.build` does)."""
    d = Path(data)
    man = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").is_file() else {}
    tid = (man.get("template") or {}).get("id", "judge.v1")
    tpl = load_template(tid)
    want = (man.get("template") or {}).get("sha256")
    if want and want != tpl.sha256:
        raise ValueError(
            f"{d / 'manifest.json'}: built with template {tid} sha256 {want[:12]}…, this fxgate's "
            f"{tid} is {tpl.sha256[:12]}…; training on it would not be what is served. Fix: rebuild the "
            f"data with `fxgate train data`"
        )
    budget = prompt_budget(**data_budget(d))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def render(r: dict[str, Any]) -> str:
        if "values" not in r:
            raise ValueError(
                f"{d}: a scenario without template values (built by an older fxgate), so the serving "
                f"budget cannot be applied. Fix: rebuild the data with `fxgate train data`"
            )
        return served_prompt(
            tpl,
            r["values"],
            chat_template=tok.chat_template,
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
            count_tokens=count,
            budget=budget,
        ).text

    return render


def load_base(path: str | Path, preset: Preset) -> tuple[Any, Any]:
    """The base model (bf16 when the preset asks, SDPA attention) and its tokenizer."""
    torch, tf = _optional.torch(), _optional.transformers()
    dtype = torch.bfloat16 if preset.bf16 else torch.float32
    model = tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
    return model, load_tokenizer(path)


def setup(base: str | Path, preset: Preset) -> tuple[Any, Any]:
    """Quiet progress bars, then the base model and its tokenizer (shared by SFT and DPO)."""
    _optional.transformers().utils.logging.disable_progress_bar()
    _optional.hf_datasets().disable_progress_bars()
    return load_base(base, preset)


def lora_config(preset: Preset) -> Any:
    """LoRA on every linear layer (and, for presets that ask, the output layer trained in full)."""
    return _optional.peft().LoraConfig(
        r=preset.lora_r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        modules_to_save=["lm_head"] if preset.train_lm_head else None,
    )


def has_gpu() -> bool:
    """Whether torch sees a CUDA device (else the trainers run on CPU)."""
    return bool(_optional.torch().cuda.is_available())


def parser(doc: str | None, *, base_required: bool, base_help: str) -> argparse.ArgumentParser:
    """The command-line options the SFT and DPO steps share."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="h100-7b")
    ap.add_argument("--base", required=base_required, default=None, help=base_help)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--max-steps", type=int, default=None)
    return ap
