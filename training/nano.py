"""The nano model: a tiny Qwen2-architecture model with its own byte-level BPE tokenizer, built on CPU in seconds.

It exists so that every piece of the LLM path — tokenizer, chat template, GGUF export, llama.cpp loading, the
judge, the debate, the verdict cache — can be built and tested on a machine without a GPU or a hub download. It has
the architecture, the special tokens and the chat template of DeepSeek-R1-Distill-Qwen, and **random weights**: its
verdicts are noise and the gate treats them as such (its certainty is compared with the same 0.95 threshold as a
real model's). ``ensure_nano()`` does not train it; ``fxgate train all --preset nano``
(:mod:`fxgate.training.pipeline`) trains a copy of it with SFT and DPO on the trader's data, end to end on CPU.

``ensure_nano()`` builds it once into ``$FXGATE_CACHE/nano-v<N>/`` (default ``~/.cache/fxgate``), checks its GGUF
files against the torch model (:func:`fxgate.training.export.parity_check`), and returns the Q8_0 GGUF path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.config import NANO_GGUF, NANO_VERSION, nano_dir
from fxgate.engine.core.hashing import file_sha256
from fxgate.engine.core.records import ModelProbability, ModuleResult
from fxgate.models.prompt import KEY_FEATURES, R1_CHAT_TEMPLATE, formulas_of, load_template, prompt_values, render_chat
from fxgate.modules import REGISTRY
from fxgate.training import _optional
from fxgate.training.export import export_gguf, parity_check

__all__ = [
    "NANO_VERSION",
    "SPECIAL_TOKENS",
    "ADDED_TOKENS",
    "QWEN2_SPLIT",
    "build_tokenizer",
    "build_nano",
    "ensure_nano",
    "sample_prompts",
]

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
#: DeepSeek-R1-Distill-Qwen's special (control) tokens that its chat template uses
SPECIAL_TOKENS = (BOS, EOS, PAD, "<｜User｜>", "<｜Assistant｜>")
#: added, non-special tokens (atomic when tokenizing, printed when decoding), as in R1-Distill
ADDED_TOKENS = ("<think>", "</think>")
#: the Qwen2 pre-tokenizer split (tokenizer.json of Qwen/Qwen2-7B; llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
NANO_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` chat-rendered prompts of every role with random (but plausible) numbers, with answers: the corpus the
    nano tokenizer is trained on and the prompts the parity check compares."""
    rng = np.random.default_rng(seed)
    tpls = [load_template(f"{r}.v1") for r in ("judge", "bull", "bear", "risk")]
    out = []
    for i in range(n):
        px = float(rng.uniform(0.6, 160))
        d = ["BUY", "SELL"][i % 2]
        vals = prompt_values(
            symbol=["EURUSD", "USDJPY", "GBPUSD", "XAUUSD"][i % 4],
            timeframe="H1",
            ts_ns=int(1.5e18 + rng.integers(0, 10**17)),
            bar={
                "open": px,
                "high": px * 1.001,
                "low": px * 0.999,
                "close": px * (1 + rng.normal(0, 5e-4)),
                "volume": float(rng.integers(1, 5000)),
                "spread": 0.00008,
            },
            direction=d,
            horizon=int(rng.integers(1, 5)),
            probs=tuple(ModelProbability(m, float(rng.uniform(0, 1))) for m in ("xgboost", "lightgbm", "catboost")),
            features={k: float(rng.normal()) for k in KEY_FEATURES},
            modules=(
                ModuleResult(
                    name="vpin",
                    passed=bool(rng.integers(2)),
                    score=float(rng.uniform()),
                    threshold=0.5,
                    reason="toxicity below its 90th percentile",
                ),
            ),
            formulas=formulas_of([REGISTRY["vpin"]]),
            size=float(rng.uniform(0, 1)),
        )
        tpl = tpls[i % len(tpls)]
        text = "\n\n".join(s.text for s in tpl.sections)
        for k, v in vals.items():
            text = text.replace("{" + k + "}", v)
        answer = json.dumps(
            {
                "direction": d,
                "certainty": round(float(rng.uniform()), 4),
                "reasons": ["ROC20 and SUMP20 agree with the proposal"],
            }
        )
        think = f"<think>\nThe numbers: {vals['features'][:200]}\n</think>\n\n"
        msgs = [
            {"role": "system", "content": tpl.system},
            {"role": "user", "content": text},
            {"role": "assistant", "content": think + answer},
        ]
        gen = i % 3 == 0
        out.append(
            render_chat(
                R1_CHAT_TEMPLATE, msgs[:2] if gen else msgs, bos_token=BOS, eos_token=EOS, add_generation_prompt=gen
            )
        )
    return out


def build_tokenizer(corpus: list[str], vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer with the Qwen2 split, R1-Distill's special tokens and its chat template, as a
    ``transformers.PreTrainedTokenizerFast``."""
    tk = _optional.tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [
            tk.pre_tokenizers.Split(tk.Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # special tokens are not part of the BPE training text
    clean = corpus
    for s in (*SPECIAL_TOKENS, *ADDED_TOKENS):
        clean = [c.replace(s, "\n") for c in clean]
    tok.train_from_iterator(clean, trainer)
    tok.add_special_tokens([tk.AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    tok.add_tokens([tk.AddedToken(s, special=False, normalized=False) for s in ADDED_TOKENS])
    fast = _optional.transformers().PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
    fast.chat_template = R1_CHAT_TEMPLATE
    return fast


def build_nano(out: str | Path, *, seed: int = 0, log: Any = None) -> dict[str, Any]:
    """Build the nano model into ``out``: ``hf/`` (torch weights + tokenizer), ``nano-f16.gguf``,
    ``nano-q8_0.gguf``, ``parity.json`` and ``manifest.json``. Returns the manifest."""
    torch, tf = _optional.torch(), _optional.transformers()
    say = log or (lambda msg: None)
    tf.utils.logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say("training the byte-level BPE tokenizer on rendered prompts")
    corpus = sample_prompts(400, seed=seed)
    tok = build_tokenizer(corpus)
    say(
        f"initialising a random {NANO_CONFIG['num_hidden_layers']}-layer Qwen2 (hidden {NANO_CONFIG['hidden_size']}, "
        f"vocab {len(tok)})"
    )
    torch.manual_seed(seed)
    cfg = tf.Qwen2Config(
        vocab_size=max(tok.get_vocab().values()) + 1,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **NANO_CONFIG,
    )
    model = tf.Qwen2ForCausalLM(cfg).eval()
    hf = out / "hf"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    say("exporting GGUF F16 and Q8_0")
    f16 = export_gguf(hf, out / "nano-f16.gguf", "f16", name="fxgate-nano")
    q8 = export_gguf(hf, out / "nano-q8_0.gguf", "q8_0", name="fxgate-nano")
    say("parity check: llama.cpp vs the torch model")
    parity = parity_check(hf, f16, q8, sample_prompts(200, seed=seed + 1))
    (out / "parity.json").write_text(json.dumps(parity, indent=2))
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            files[str(p.relative_to(out))] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
    manifest = {
        "nano_version": NANO_VERSION,
        "seed": seed,
        "config": NANO_CONFIG,
        "weights": "random (untrained)",
        "parity": parity,
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def ensure_nano(*, quiet: bool = False) -> Path:
    """The nano Q8_0 GGUF, built into the cache on first use (a few seconds; says so)."""
    d = nano_dir()
    q8 = d / NANO_GGUF
    if (d / "manifest.json").is_file() and q8.is_file():
        return q8
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)

    def say(msg: str) -> None:
        if not quiet:
            print(f"  nano model: {msg}", file=sys.stderr, flush=True)

    say(f"building the nano LLM (first use; random weights, for the plumbing only) into {d}")
    build_nano(tmp, log=say)
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    return q8
