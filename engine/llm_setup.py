"""Starting Layers 2 and 3: verify and load the GGUF model(s) when the gate starts, not on the first bar needing them.

One :class:`~fxgate.models.llm.LlmRuntime` per distinct model file (the judge and the three debate roles share one
unless the config names role models), one verdict cache for all. A model that cannot be loaded raises, or — with
``[llm] on_load_error = "veto"`` — becomes a standing failure both LLM layers report on every bar (fail closed).
A model from a ``fxgate train all`` run trained for another ``[l4]`` section than the gate's is refused the same way
(:func:`trained_for`, which compares the ``[l4]`` that shapes the prompts: a config ``fxgate calibrate`` wrote from
the one the data was built for passes — ``precision_monitor`` is in no prompt, and the certified thresholds, which
do show in the module lines, are accepted because the certificate is measured with them).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxgate.engine.config import serving_mismatch
from fxgate.engine.core.config import NANO_GGUF, GateConfig, L4Config, cache_dir, nano_dir
from fxgate.models.debate import Debate
from fxgate.models.llm import Judge, LlmError, LlmRuntime, LlmSettings, ModelFileError, VerdictCache

__all__ = ["LlmStack", "start_llm", "resolve_model", "trained_for"]


@dataclass
class LlmStack:
    judge: Judge | None = None
    debate: Debate | None = None
    error: str | None = None  # why neither layer can run (no model, a model that failed to load)
    runtimes: dict[str, LlmRuntime] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # "l2", "l3.bull", ... -> sha256 prefix of the model

    def close(self) -> None:
        """Release the runtimes (worker threads, llama.cpp contexts)."""
        for rt in self.runtimes.values():
            rt.close()
        self.runtimes.clear()


def resolve_model(path: str) -> str:
    """``"nano"`` is fxgate's nano model in the cache (``fxgate train nano``, or any CLI command whose config names
    it, builds it: building is training's job, not the gate's); anything else is a file path."""
    if path == "nano":
        d = nano_dir()
        if not ((d / "manifest.json").is_file() and (d / NANO_GGUF).is_file()):
            raise ModelFileError(
                f'[llm] model = "nano": the nano model is not built in {d}. Fix: run `fxgate demo` or '
                "`fxgate train nano` once (needs pip install torch==2.13.0 'fxgate[train]'), or call "
                "fxgate.training.nano.ensure_nano() before building the gate"
            )
        return str(d / NANO_GGUF)
    return str(Path(path).expanduser())


def trained_for(model: str, l4: L4Config) -> str | None:
    """Why the GGUF file ``model`` should not be served with ``l4``, or None. A model from a ``fxgate train all``
    run (a ``manifest.json`` beside it that lists the file) was trained on prompts built for one ``[l4]`` section,
    which its data manifest records; served with another, every prompt it sees differs from the ones it learnt
    (formula catalogue, module lines). A file outside such a run (the nano model, a downloaded GGUF) is not checked:
    nothing records what it was trained on."""
    f = Path(model)
    try:
        m = json.loads((f.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no run manifest beside it (an unreadable one is `fxgate train verify`'s to report)
    if not (isinstance(m, dict) and "fxgate_manifest" in m and isinstance(m.get("files"), dict)):
        return None
    dm = m.get("data_manifest")
    if f.name not in m["files"] or not isinstance(dm, dict):
        return None
    problem = serving_mismatch(dm.get("serving"), l4)
    return None if problem is None else f"{f}: {problem}"


def start_llm(c: GateConfig) -> LlmStack:
    lc = c.llm
    stack = LlmStack()
    if not (c.l2.enabled or c.l3.enabled):
        return stack
    if not lc.model:
        stack.error = (
            'no model: [llm] model is empty. Fix: set [llm] model to a GGUF file ("nano" is fxgate\'s test model), '
            "or turn the layer off explicitly with enabled = false in [l2] and [l3]"
        )
        return stack
    try:
        path = cache_dir() / "llm-verdicts.sqlite" if lc.cache == "auto" else lc.cache
        cache = VerdictCache(path) if path else None
        main = resolve_model(lc.model)
        # [l3] parallel with bull and bear on one model: their runtime's context holds two sequences
        pair = (
            c.l3.enabled
            and c.l3.parallel
            and resolve_model(c.l3.bull_model or lc.model) == resolve_model(c.l3.bear_model or lc.model)
        )
        pair_file = resolve_model(c.l3.bull_model or lc.model) if pair else None

        def runtime(model: str) -> Any:
            file = resolve_model(model or lc.model)
            if file not in stack.runtimes:
                skew = trained_for(file, c.l4)
                if skew is not None:  # the model trained is the model served, with the prompts it was trained on
                    raise ModelFileError(skew)
                s = LlmSettings(
                    model=file,
                    sha256=lc.sha256 if file == main else "",
                    n_ctx=lc.n_ctx,
                    n_threads=lc.n_threads,
                    n_gpu_layers=lc.n_gpu_layers,
                    n_batch=lc.n_batch,
                    seed=lc.seed,
                    temperature=lc.temperature,
                    timeout_s=lc.timeout_s,
                    chat_template=lc.chat_template,
                    cpu_extra_buffers=lc.cpu_extra_buffers,
                    n_seq=2 if file == pair_file else 1,
                )
                stack.runtimes[file] = LlmRuntime(s, cache=cache)
            return stack.runtimes[file]

        if c.l2.enabled:
            rt = runtime(lc.model)
            l2 = c.l2
            stack.judge = Judge(
                rt,
                template=l2.template,
                threshold=l2.threshold,
                think_budget=l2.think_budget,
                answer_budget=l2.answer_budget,
            )
            stack.hashes["l2"] = rt.sha256[:16]
        if c.l3.enabled:
            l3 = c.l3
            rts = {"bull": runtime(l3.bull_model), "bear": runtime(l3.bear_model), "risk": runtime(l3.risk_model)}
            stack.debate = Debate(
                rts,
                rounds=l3.rounds,
                threshold=l3.threshold,
                bear_max_strength=l3.bear_max_strength,
                think_budget=l3.think_budget,
                answer_budget=l3.answer_budget,
                timeout_s=lc.timeout_s,
                templates={"bull": l3.bull_template, "bear": l3.bear_template, "risk": l3.risk_template},
                parallel=l3.parallel,
            )
            for role, rt in rts.items():
                stack.hashes[f"l3.{role}"] = rt.sha256[:16]
    except (LlmError, ValueError, OSError, sqlite3.Error) as exc:
        stack.close()
        if lc.on_load_error == "raise":
            raise
        return LlmStack(error=f"model unavailable: {type(exc).__name__}: {exc}")
    return stack
