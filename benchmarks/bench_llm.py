"""LLM layers: time to first token cold vs with the cached static prefix, prompt and generation tokens/s, and the
per-decision latency of the judge and of the full debate (wall clock, bull and bear as two sequences), measured in one
run. benchmarks/bench_debate.py compares the debate with plain llama-cpp-python and with the sequential protocol.

    python benchmarks/bench_llm.py [--model GGUF] [--n 20] [--threads N] [--gpu-layers N] [--json PATH]

Without --model it uses fxgate's nano model (built into the cache on first use). The prompt is the judge's
~1,000-token prompt (system + instructions + glossary: the static prefix; then the bar, the proposal, the modules
and the features: per bar). "Cold" empties the context and the saved prefix states before each call; "cached
prefix" sends a *different* bar each time, so only the static prefix is reused (the realistic live case). Target:
cached-prefix TTFT <= 25% of cold.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import write_json
from llm_common import values

from fxgate.engine.config import L2Config
from fxgate.models.debate import Debate
from fxgate.models.llm import Judge, LlmRuntime, LlmSettings, grammar_for
from fxgate.models.prompt import load_template
from fxgate.training.nano import ensure_nano


def pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = args.model
    if model is None:
        model = ensure_nano()
    # two sequences, as the gate sets it up with [l3] parallel = true (the judge uses sequence 0 only)
    rt = LlmRuntime(
        LlmSettings(model=str(model), n_ctx=4096, n_threads=args.threads, n_gpu_layers=args.gpu_layers, n_seq=2)
    )
    rng = np.random.default_rng(0)
    tpl = load_template(L2Config().template)  # the default judge template
    grammar = grammar_for("judge")

    def call(think: int, vals: dict[str, str]):  # type: ignore[no-untyped-def]
        p = rt.build(tpl, vals, think_budget=think, answer_budget=512)
        return rt.generate(p, kind="judge", think_budget=think, answer_budget=512, grammar=grammar, use_cache=False)

    call(0, values(rng))  # load pages, compile graphs
    cold, warm, n_prompt, pre_tok_s, gen_tok_s = [], [], [], [], []
    for _ in range(args.n):
        rt.forget_prefixes()
        g = call(0, values(rng))
        assert g.prefix == "cold"
        cold.append(g.ttft_s)
        n_prompt.append(g.n_prompt)
        pre_tok_s.append(g.n_prompt_evaluated / g.prompt_s)
    for _ in range(args.n):
        g = call(0, values(rng))
        assert g.prefix in ("kv", "state"), g.prefix
        warm.append(g.ttft_s)
    for _ in range(max(3, args.n // 4)):
        g = call(128, values(rng))
        gen = g.n_think + g.n_answer
        gen_tok_s.append(gen / max(1e-9, g.total_s - g.ttft_s))
    judge = Judge(rt)  # the default budgets of [l2]
    debate = Debate({"bull": rt, "bear": rt, "risk": rt})  # the defaults of [l3]: budgets, parallel bull/bear
    t_judge, t_debate = [], []
    for _ in range(max(3, args.n // 4)):
        v = judge.judge(values(rng), "BUY", timeout_s=600)
        assert v.generation is not None, v.reason
        t_judge.append(v.generation.total_s)
        t0 = time.perf_counter()
        d = debate.debate(values(rng), "BUY")
        t_debate.append(time.perf_counter() - t0)  # wall clock: bull and bear overlap
        assert all(e.error is None and e.generation is not None for e in d.transcript), d.reason
    rt.close()

    c, w = pct(cold), pct(warm)
    ratio = w["p50_ms"] / c["p50_ms"]
    out = {
        "model": str(model),
        "model_sha256": rt.sha256[:16],
        "prompt_tokens": int(np.median(n_prompt)),
        "ttft_cold": c,
        "ttft_cached_prefix": w,
        "ttft_ratio_p50": ratio,
        "prompt_tokens_per_s_p50": float(np.median(pre_tok_s)),
        "gen_tokens_per_s_p50": float(np.median(gen_tok_s)),
        "judge_decision": pct(t_judge),
        "debate_decision": pct(t_debate),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "targets": {"ttft_cached_over_cold": 0.25},
        "met": {"ttft_cached_over_cold": ratio <= 0.25},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    name = "nano" if args.model is None else Path(model).name
    out["summary"] = [
        {
            "figure": f"LLM TTFT, {out['prompt_tokens']}-token judge prompt ({name})",
            "ours": f"{w['p50_ms']:.1f} ms cached prefix (p99 {w['p99_ms']:.1f})",
            "reference": f"{c['p50_ms']:.1f} ms cold (p99 {c['p99_ms']:.1f})",
            "ratio": f"{ratio:.2f}",
            "target": "<= 0.25 of cold",
            "met": out["met"]["ttft_cached_over_cold"],
        },
        {
            "figure": f"LLM judge / debate per decision ({name})",
            "ours": f"{out['judge_decision']['p50_ms']:.0f} / {out['debate_decision']['p50_ms']:.0f} ms p50",
            "reference": "-",
            "ratio": "-",
            "target": "-",
            "met": None,
        },
    ]
    print(f"model {name}: prompt {out['prompt_tokens']} tokens")
    print(
        f"TTFT cold p50 {c['p50_ms']:.2f} ms (p99 {c['p99_ms']:.2f}); cached prefix p50 {w['p50_ms']:.2f} ms "
        f"(p99 {w['p99_ms']:.2f}); ratio {ratio:.2f} (target <= 0.25)"
    )
    print(f"prompt {out['prompt_tokens_per_s_p50']:,.0f} tok/s, generation {out['gen_tokens_per_s_p50']:,.0f} tok/s")
    print(
        f"judge p50 {out['judge_decision']['p50_ms']:.0f} ms (p99 {out['judge_decision']['p99_ms']:.0f}); debate "
        f"p50 {out['debate_decision']['p50_ms']:.0f} ms (p99 {out['debate_decision']['p99_ms']:.0f}); peak RSS "
        f"{out['peak_rss_mb']:.0f} MB"
    )
    write_json(args.json, out)


if __name__ == "__main__":
    main()
