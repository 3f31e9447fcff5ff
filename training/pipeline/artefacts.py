"""The model artefacts a run produces besides the GGUF files: a LoRA adapter merged into its base, and an Ollama
Modelfile for the exported model."""

from __future__ import annotations

from pathlib import Path

from fxgate.training import _optional
from fxgate.training.export import load_tokenizer
from fxgate.training.nano import EOS

__all__ = ["merge", "write_modelfile"]


def merge(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Merge a LoRA adapter into its base model (fp32 on CPU, saved in the base's dtype)."""
    torch, tf = _optional.torch(), _optional.transformers()
    tf.utils.logging.disable_progress_bar()
    model = tf.AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = _optional.peft().PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(str(out))
    load_tokenizer(base).save_pretrained(str(out))
    return out


def write_modelfile(gguf: str | Path, out: str | Path, *, system: str = "") -> Path:
    """An Ollama Modelfile for an R1-Distill-style GGUF: its chat template as a Go template, the end-of-sentence
    token as the stop, greedy decoding."""
    tpl = (
        "{{- if .System }}{{ .System }}{{ end }}"
        '{{- range .Messages }}{{- if eq .Role "user" }}<｜User｜>{{ .Content }}'
        '{{- else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}' + EOS + "{{- end }}{{- end }}"
        "<｜Assistant｜><think>\n"
    )
    text = (
        f"# Ollama Modelfile written by fxgate. `ollama create fxgate-judge -f {Path(out).name}`\n"
        f"FROM ./{Path(gguf).name}\n"
        f'TEMPLATE """{tpl}"""\n'
        + (f'SYSTEM """{system}"""\n' if system else "")
        + f'PARAMETER stop "{EOS}"\nPARAMETER stop "<｜User｜>"\n'
        + "PARAMETER temperature 0\nPARAMETER seed 0\n"
    )
    p = Path(out)
    p.write_text(text)
    return p
