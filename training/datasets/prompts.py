"""The judge's prompt as stored in the data: every section (SFT, DPO and the evaluation apply the serving budget
with the served model's tokenizer), or — when the build is given that tokenizer — exactly as the live judge sends
it under the budget (:func:`served_prompt`, the live judge's own :func:`fxgate.models.prompt.build_prompt`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fxgate.engine.core.hashing import file_sha256
from fxgate.models.llm import load_llama
from fxgate.models.prompt import PromptTemplate, RenderedPrompt, build_prompt, fill_section
from fxgate.training.errors import DatasetError
from fxgate.training.export import load_tokenizer

__all__ = ["ServedTokenizer", "served_prompt", "prompt_messages", "load_served_tokenizer"]


@dataclass(frozen=True)
class ServedTokenizer:
    """What the served model's tokenizer contributes to a prompt: its chat template and special tokens, a token
    counter, and the sha256 of the file it came from (recorded in the manifest)."""

    chat_template: str
    bos_token: str
    eos_token: str
    count_tokens: Callable[[str], int]
    sha256: str


def served_prompt(
    tpl: PromptTemplate,
    values: dict[str, str],
    *,
    chat_template: str,
    bos_token: str,
    eos_token: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> RenderedPrompt:
    """The judge's prompt for ``values`` exactly as the live judge builds it
    (:func:`fxgate.models.prompt.build_prompt` under the same budget): what SFT, DPO and the evaluation train and
    score on."""
    return build_prompt(
        tpl,
        values,
        chat_template=chat_template,
        bos_token=bos_token,
        eos_token=eos_token,
        count_tokens=count_tokens,
        budget=budget,
    )


def prompt_messages(tpl: PromptTemplate, values: dict[str, str]) -> list[dict[str, str]]:
    """The judge's system and user messages with every section (the budget is applied when a model renders it)."""
    text = "\n\n".join(fill_section(s, values, tpl.source) for s in tpl.sections)
    return [{"role": "system", "content": tpl.system}, {"role": "user", "content": text}]


def load_served_tokenizer(spec: str | Path) -> ServedTokenizer:
    """The tokenizer of a Hugging Face model directory or of a GGUF file (``--tokenizer``)."""
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        llm = load_llama(p, vocab_only=True)
        ct = llm.metadata.get("tokenizer.chat_template")
        if not ct:
            raise DatasetError(f"--tokenizer {p}: the GGUF has no tokenizer.chat_template")

        def piece(t: Any) -> str:
            return "" if t is None or t < 0 else llm.detokenize([t], special=True).decode("utf-8", "replace")

        return ServedTokenizer(
            ct,
            piece(llm.token_bos()),
            piece(llm.token_eos()),
            lambda text: len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)),
            file_sha256(p),
        )
    if (p / "tokenizer.json").is_file():
        tok = load_tokenizer(p)
        if not tok.chat_template:
            raise DatasetError(f"--tokenizer {p}: the tokenizer has no chat_template")
        return ServedTokenizer(
            tok.chat_template,
            tok.bos_token or "",
            tok.eos_token or "",
            lambda text: len(tok(text, add_special_tokens=False)["input_ids"]),
            file_sha256(p / "tokenizer.json"),
        )
    raise DatasetError(
        f"--tokenizer {p}: neither a .gguf file nor a directory with tokenizer.json. Fix: pass the "
        f"model that will be served (its GGUF) or its Hugging Face directory"
    )
