"""GGUF export of a Qwen2-architecture Hugging Face model, written with the ``gguf`` package, and its parity check.

The writer follows llama.cpp's GGUF conventions for ``qwen2`` (the architecture of DeepSeek-R1-Distill-Qwen):
hyper-parameters under ``qwen2.*``, tensors renamed with ``gguf.get_tensor_name_map`` (token_embd, blk.N.attn_q,
...), the byte-level BPE tokenizer as ``tokenizer.ggml.model = "gpt2"`` with the ``qwen2`` pre-tokenizer, its merges,
token types (control for special tokens, user-defined for added ones such as ``<think>``), BOS/EOS/PAD ids, and the
chat template. F16 keeps 2-D weights in float16; Q8_0 quantizes them with ``gguf.quants`` (blocks of 32 with one
fp16 scale); 1-D tensors (norms, biases) stay float32, as llama.cpp's own converter does.

:func:`parity_check` is the contract between what was trained and what is served: llama.cpp must tokenize the
sample prompts exactly as the Hugging Face tokenizer does, the F16 file's logits must match the torch model's, and
the Q8_0 file's next-token argmax must agree with the torch model's on the validation prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.models.llm import load_llama
from fxgate.training import _optional

__all__ = ["export_gguf", "parity_check", "ParityError", "FTYPES", "load_tokenizer"]

FTYPES = ("f16", "q8_0", "f32")


class ParityError(RuntimeError):
    """The exported GGUF does not behave like the model it was exported from."""


def load_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer exactly as ``tokenizer.json`` defines it. (``AutoTokenizer`` would pick the class named by the
    model type — for ``qwen2`` it adds an ``<|endoftext|>`` unknown token that the file does not have.)"""
    return _optional.transformers().PreTrainedTokenizerFast.from_pretrained(model_dir)


def _tokenizer_tables(tok: Any) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Tokens in id order, their GGUF token types, the BPE merges, and the special-token ids."""
    gguf = _optional.gguf()

    tj = json.loads(tok.backend_tokenizer.to_str())
    if tj["model"]["type"] != "BPE":
        raise ValueError(f"only byte-level BPE tokenizers are supported, got {tj['model']['type']}")
    vocab: dict[str, int] = tj["model"]["vocab"]
    added = {a["content"]: a for a in tj.get("added_tokens", [])}
    size = max([*vocab.values(), *(a["id"] for a in added.values())]) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(gguf.TokenType.UNUSED)] * size
    for t, i in vocab.items():
        tokens[i], types[i] = t, int(gguf.TokenType.NORMAL)
    for t, a in added.items():
        tokens[a["id"]] = t
        types[a["id"]] = int(gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    ids = {}
    for name in ("bos", "eos", "pad"):
        t = getattr(tok, f"{name}_token", None)
        if t is not None:
            ids[name] = tok.convert_tokens_to_ids(t)
    return tokens, types, merges, ids


def export_gguf(model_dir: str | Path, out: str | Path, ftype: str = "f16", *, name: str = "") -> Path:
    """Write the Qwen2 model saved in ``model_dir`` (config.json, weights, tokenizer) as a GGUF file."""
    gguf, torch, tf = _optional.gguf(), _optional.torch(), _optional.transformers()
    tf.utils.logging.disable_progress_bar()
    if ftype not in FTYPES:
        raise ValueError(f"ftype {ftype!r}: use one of {', '.join(FTYPES)}")
    model_dir, out = Path(model_dir), Path(out)
    cfg = tf.AutoConfig.from_pretrained(model_dir)
    if cfg.model_type != "qwen2":
        raise ValueError(f"{model_dir}: model_type {cfg.model_type!r}; this exporter writes Qwen2 models only")
    tok = load_tokenizer(model_dir)
    model = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    n_layers = cfg.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, n_layers)
    file_type = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "f32": gguf.LlamaFileType.ALL_F32,
    }[ftype]

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "qwen2")
    w.add_name(name or model_dir.name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types, merges, ids = _tokenizer_tables(tok)
    if len(tokens) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokens)} tokens, the model's vocab_size is {cfg.vocab_size}")
    while len(tokens) < cfg.vocab_size:  # embedding rows past the tokenizer (padding): unused
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(int(gguf.TokenType.UNUSED))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if "bos" in ids:
        w.add_bos_token_id(ids["bos"])
    if "eos" in ids:
        w.add_eos_token_id(ids["eos"])
    if "pad" in ids:
        w.add_pad_token_id(ids["pad"])
    w.add_add_bos_token(False)  # the chat template writes the BOS token itself
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)

    for hf_name, data in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"{model_dir}: no GGUF name for tensor {hf_name!r}")
        if data.ndim == 1 or ftype == "f32":
            w.add_tensor(new, data.astype(np.float32))
        elif ftype == "f16":
            w.add_tensor(new, data.astype(np.float16))
        else:
            if data.shape[-1] % 32:
                raise ValueError(f"{hf_name}: rows of {data.shape[-1]} values cannot be Q8_0 (blocks of 32)")
            q = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(new, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def parity_check(
    model_dir: str | Path,
    gguf_f16: str | Path,
    gguf_q8: str | Path | None,
    prompts: list[str],
    *,
    logit_rtol: float = 1e-2,
    top1_min: float = 0.98,
    n_logit_prompts: int = 32,
    min_prompts: int = 200,
    n_ctx: int = 4096,
) -> dict[str, Any]:
    """Compare the exported GGUF files with the torch model they came from; raise :class:`ParityError` on failure.

    * the prompts: at least ``min_prompts`` *distinct* texts (repeats are dropped, not counted);
    * tokenization: llama.cpp token ids == Hugging Face token ids on every prompt (special tokens parsed);
    * F16 logits at every position of ``n_logit_prompts`` prompts (spread over the set): max |difference| <=
      ``logit_rtol`` times the largest |logit| of the torch model (fp16 weights and llama.cpp's fp16 KV cache round
      at that scale);
    * Q8_0: next-token argmax at the last position of every prompt agrees with torch on >= ``top1_min``.
    """
    torch, tf = _optional.torch(), _optional.transformers()
    prompts = list(dict.fromkeys(prompts))  # distinct, first occurrence order
    if len(prompts) < min_prompts:
        raise ParityError(
            f"only {len(prompts)} distinct prompts for the parity check, it needs >= {min_prompts} "
            f"(repeats prove nothing). Fix: pass more distinct prompts (a larger validation split)"
        )
    if len(prompts) < n_logit_prompts:
        raise ParityError(f"{len(prompts)} prompts, fewer than the {n_logit_prompts} the F16 logit check compares")
    tok = load_tokenizer(model_dir)
    model = tf.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    f16 = load_llama(gguf_f16, n_ctx=n_ctx, logits_all=True, seed=0)
    report: dict[str, Any] = {"prompts": len(prompts)}
    mism = []
    hf_ids = []
    for i, p in enumerate(prompts):
        a = tok(p, add_special_tokens=False)["input_ids"]
        b = f16.tokenize(p.encode("utf-8"), add_bos=False, special=True)
        hf_ids.append(a)
        if a != b:
            mism.append(i)
    report["tokenizer_mismatches"] = len(mism)
    if mism:
        raise ParityError(
            f"llama.cpp tokenizes {len(mism)} of {len(prompts)} prompts differently from the HF "
            f"tokenizer (first: prompt #{mism[0]}: {prompts[mism[0]][:80]!r})"
        )

    def torch_logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float().numpy()

    def gguf_logits(llm: Any, ids: list[int]) -> np.ndarray:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)

    worst, scale = 0.0, 0.0
    pick = np.unique(np.linspace(0, len(hf_ids) - 1, n_logit_prompts).astype(int))
    report["f16_logit_prompts"] = len(pick)
    for ids in (hf_ids[i] for i in pick):
        ref = torch_logits(ids)
        worst = max(worst, float(np.max(np.abs(gguf_logits(f16, ids) - ref))))
        scale = max(scale, float(np.max(np.abs(ref))))
    report["f16_max_abs_logit_diff"] = worst
    report["max_abs_logit"] = scale
    report["f16_logit_rtol"] = logit_rtol
    if worst > logit_rtol * scale:
        raise ParityError(
            f"F16 GGUF logits differ from the torch model by up to {worst:.3g}, over {logit_rtol:g} "
            f"x the largest |logit| ({scale:.3g})"
        )
    if gguf_q8 is not None:
        q8 = load_llama(gguf_q8, n_ctx=n_ctx, logits_all=True, seed=0)
        agree = 0
        for ids in hf_ids:
            agree += int(np.argmax(gguf_logits(q8, ids)[-1]) == np.argmax(torch_logits(ids)[-1]))
        report["q8_top1_agreement"] = agree / max(1, len(hf_ids))
        report["q8_top1_min"] = top1_min
        if report["q8_top1_agreement"] < top1_min:
            raise ParityError(
                f"Q8_0 GGUF agrees with the torch model's next token on "
                f"{report['q8_top1_agreement']:.1%} of prompts (< {top1_min:.0%})"
            )
        q8.close()
    f16.close()
    return report
