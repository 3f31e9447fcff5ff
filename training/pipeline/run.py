"""The whole run, step by step, into one directory (see :mod:`fxgate.training.pipeline`)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.config import GateConfig
from fxgate.engine.loader import sample_path
from fxgate.training import _optional, datasets
from fxgate.training.dpo import train_dpo
from fxgate.training.evaluate import evaluate
from fxgate.training.export import export_gguf, load_tokenizer, parity_check
from fxgate.training.nano import build_nano
from fxgate.training.pipeline.artefacts import merge, write_modelfile
from fxgate.training.pipeline.manifest import MANIFEST, verify, write_manifest
from fxgate.training.presets import get_preset
from fxgate.training.sft import sft_examples, train_sft

__all__ = ["run_all"]


def run_all(
    preset_name: str,
    out: str | Path,
    *,
    bars: list[str] | None = None,
    base: str | None = None,
    log: Callable[[str], None] = print,
    eval_limit: int | None = None,
    config: GateConfig | None = None,
    config_source: str | None = None,
) -> dict[str, Any]:
    """The whole pipeline into ``out`` (see the module docstring); returns the manifest. ``config``: the gate config
    the model will be served with (None: the default config); the data's prompts are built for its ``[l4]``
    section, horizon and serving budget, and the gate refuses the model under another ``[l4]``."""
    p = get_preset(preset_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str) -> Callable[[], None]:
        log(f"[{time.perf_counter() - t0:6.0f} s] {name}")
        s = time.perf_counter()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - s, 1))

    done = step("data: fxgate train data (time split, manifest)")
    files = bars or [str(sample_path())]
    served = config if config is not None else GateConfig()
    dm = datasets.build(
        files,
        out / "data",
        datasets.SplitSpec(
            horizon=served.horizon,
            spread=0.00008,
            n_ctx=served.llm.n_ctx,
            think_budget=served.l2.think_budget,
            answer_budget=served.l2.answer_budget,
        ),
        load_kwargs={"symbol": "EURUSD"} if not bars else None,
        config=config,
        config_source=config_source,
    )
    done()
    if p.base == "nano" and base is None:
        done = step("base: the nano model (random 2-layer Qwen2 + its BPE tokenizer)")
        build_nano(out / "base", seed=p.seed)
        base_dir: str = str(out / "base" / "hf")
        done()
    else:
        base_dir = base or p.base
    done = step(f"SFT: LoRA r={p.lora_r} on all linear layers, {p.sft_epochs} epochs, lr {p.sft_lr}")
    sft = train_sft(base_dir, out / "data", out / "sft", p, resume=True)
    done()
    done = step("merge the SFT adapter")
    merge(base_dir, out / "sft" / "adapter", out / "sft-merged")
    done()
    done = step(f"DPO: beta {p.beta}, {p.dpo_epochs} epoch(s), from the SFT model")
    dpo = train_dpo(out / "sft-merged", out / "data", out / "dpo", p, resume=True)
    done()
    done = step("merge the DPO adapter")
    final = merge(out / "sft-merged", out / "dpo" / "adapter", out / "model")
    done()
    done = step("export GGUF F16 and Q8_0")
    f16 = export_gguf(final, out / "model-f16.gguf", "f16", name=f"fxgate-{p.name}")
    q8 = export_gguf(final, out / "model-q8_0.gguf", "q8_0", name=f"fxgate-{p.name}")
    done()
    done = step("parity check: llama.cpp vs the merged torch model (tokens, F16 logits, Q8_0 next token)")
    tok = load_tokenizer(final)
    # >= 200 distinct validation prompts (scenarios as served, and feature examples), spread over the split
    val = list(dict.fromkeys(e["prompt"] + e["completion"] for e in sft_examples(out / "data", tok, split="val")))
    prompts = [val[i] for i in sorted(set(np.linspace(0, len(val) - 1, min(len(val), 240)).astype(int)))]
    parity = parity_check(final, f16, q8, prompts, n_logit_prompts=32, min_prompts=200)  # raises ParityError
    (out / "parity.json").write_text(json.dumps(parity, indent=1))
    done()
    write_modelfile(q8, out / "Modelfile")
    done = step("evaluation on the test split (accuracy, precision with Wilson CI, coverage, ECE, baselines)")
    ev = evaluate(
        q8,
        out / "data",
        limit=eval_limit if eval_limit is not None else p.eval_examples,
        think_budget=384,
        n_gpu_layers=-1 if _optional.torch().cuda.is_available() else 0,
    )
    (out / "eval.json").write_text(json.dumps(ev, indent=1))
    done()
    # the intermediate model is not a deliverable; the manifest covers what a user downloads
    shutil.rmtree(out / "sft-merged", ignore_errors=True)
    m = write_manifest(
        out,
        preset=p.to_dict(),
        base=base_dir,
        data_manifest=dm,
        metrics={"sft": sft, "dpo": dpo},
        parity=parity,
        evaluation={k: ev[k] for k in ("model_scores", "baselines", "outcomes")},
        timings_s=timings,
        python=sys.version.split()[0],
    )
    problems = verify(out)
    if problems:
        raise RuntimeError("the run's own files do not match its manifest: " + "; ".join(problems))
    log(f"[{time.perf_counter() - t0:6.0f} s] done: {out / MANIFEST} ({len(m['files'])} files verified)")
    return m
