"""Layer 3 per decision: plain llama-cpp-python vs fxgate's sequential and parallel debates, same prompts and budgets.

    python benchmarks/bench_debate.py [--model GGUF] [--n 20] [--repeats 3] [--threads N] [--gpu-layers N]
                                      [--think 256] [--answer 512] [--profile] [--json PATH]

Every decision is a new bar (the live case: only static prefixes can be reused) and runs bull, bear and risk with
the [l3] budgets (default 256 reasoning tokens, 512 answer tokens, greedy). Variants, each timed as the wall clock of
one decision:

* **plain** — ``Llama.create_chat_completion`` (the role's messages, ``max_tokens`` = the thinking budget, stop at
  ``</think>``), then ``Llama.create_completion`` of the rendered prompt + reasoning + ``</think>`` under the role's
  GBNF grammar: what a user of llama-cpp-python writes. No prefix cache (llama-cpp-python only reuses the tokens its
  context happens to share with the previous call: between one role's two calls, never across roles or bars).
  The prompts are the parallel protocol's (bull and bear see the previous rounds only), as in "parallel".
* **sequential** — fxgate's Debate(parallel=False) on a one-sequence runtime (the protocol before issue #19.6).
* **parallel, one after the other** — Debate(parallel=True) on a one-sequence runtime: the parallel protocol's
  prompts, bull then bear (prefix cache, no batching).
* **parallel** — Debate(parallel=True) on a two-sequence runtime: bull and bear decode together.

Each variant runs in its own phase (its context alone in the process, its llama.cpp calls on a thread that ends
with the phase; the order rotates between repeats): see :func:`run_once` for why interleaving them misleads.

Equal outputs: the reasoning and answer of every role in "plain" and "parallel, one after the other" are compared
with "parallel" (greedy decoding: they must be equal token for token; "plain" only returns text, compared with
fxgate's text less the U+FFFD that fxgate writes where llama-cpp-python drops an incomplete UTF-8 character — its
answer prompt is then its own reasoning text re-tokenized, as a plain user would send it). TTFT: the first token of
the bull/bear pair with empty context and no saved prefix state ("cold") vs a new bar on the warm runtime ("cached
prefix").
Target: plain / parallel >= 2x at p50.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import write_json
from llm_common import values

from fxgate.models.debate import Debate, _turn_text
from fxgate.models.llm import LlmRuntime, LlmSettings, parse_answer
from fxgate.models.llm._llama import compile_grammar, load_llama
from fxgate.training.nano import ensure_nano

ROLES = ("bull", "bear", "risk")


def pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(xs)}


class Plain:
    """The debate on a plain ``Llama``: the same prompts (fxgate renders them; the runtime only tokenizes) and
    budgets, no prefix state, no batching."""

    def __init__(self, model: Path, n_ctx: int, threads: int, gpu_layers: int, debate: Debate) -> None:
        kw: dict[str, Any] = {"n_ctx": n_ctx, "n_gpu_layers": gpu_layers, "seed": 0, "n_batch": 256}
        if threads > 0:
            kw["n_threads"] = threads
        self.llm = load_llama(model, **kw)
        self.d = debate  # for its templates, grammars, budgets and prompt builder (the tokenizer of the runtime)
        self.grammars = {r: compile_grammar(debate.grammars[r]) for r in ROLES}

    def role(self, role: str, vals: dict[str, str]) -> tuple[str, str]:
        d = self.d
        p = d._prompt(role, vals)
        sample = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
        think, natural = "", False
        if d.think_budget > 0:
            r = self.llm.create_chat_completion(
                messages=list(p.messages), max_tokens=d.think_budget, stop=["</think>"], **sample
            )
            think = r["choices"][0]["message"]["content"] or ""
            natural = r["choices"][0]["finish_reason"] == "stop"
        close = "</think>\n\n" if natural and think.endswith("\n") else "\n</think>\n\n"
        r = self.llm.create_completion(
            p.text + think + close, max_tokens=d.answer_budget, grammar=self.grammars[role], **sample
        )
        return think, r["choices"][0]["text"]

    def debate(self, vals: dict[str, str]) -> list[tuple[str, str]]:
        """bull and bear on the previous rounds' transcript, then risk on all of it (the parallel protocol)."""
        texts: list[str] = []
        out = []
        for rnd in range(1, self.d.rounds + 1):
            v = dict(vals, transcript="\n\n".join(texts) or "(no turns yet)")
            step = []
            for role in ("bull", "bear"):
                think, ans = self.role(role, v)
                out.append((think, ans))
                step.append(_turn_text(role, rnd, parse_answer(role, ans)))
            texts += step
        out.append(self.role("risk", dict(vals, transcript="\n\n".join(texts))))
        return out


def outputs(v: Any) -> list[tuple[str, str]]:
    return [(t.generation.think, t.generation.answer) for t in v.transcript if t.generation is not None]


#: the variants, each timed in its own phase (see :func:`run_once`)
VARIANTS = ("plain", "sequential", "parallel_one_after_other", "parallel")


def _phase(name: str, args: argparse.Namespace, model: Path, kw: dict[str, Any], warm: Any, bars: list[Any]) -> Any:
    """One variant alone: its llama.cpp context loaded, warmed up on ``warm``, timed on ``bars``, closed. Its
    llama.cpp calls run on a thread that ends with the phase (the runtime's worker; plain's own executor), so no
    other variant's OpenMP threads are alive while it is timed (see :func:`run_once`)."""

    def runtime(n_seq: int) -> LlmRuntime:
        return LlmRuntime(
            LlmSettings(model=str(model), n_ctx=4096, n_threads=args.threads, n_gpu_layers=args.gpu_layers, n_seq=n_seq)
        )

    rt = runtime(2 if name in ("parallel", "plain") else 1)  # plain: only for its prompts (never decodes)
    try:
        d = Debate(dict.fromkeys(ROLES, rt), parallel=name != "sequential", **kw)
        if name == "plain":
            ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plain-llama")
            try:
                return ex.submit(_time_plain, model, args, d, warm, bars).result()
            finally:
                ex.shutdown(wait=True)  # the thread ends, and its OpenMP threads with it
        d.debate(warm, "BUY")  # load pages, compile graphs, save the static prefixes
        times, outs, failed = [], [], 0
        for vals in bars:
            t = time.perf_counter()
            v = d.debate(vals, "BUY")
            times.append(time.perf_counter() - t)
            failed += any(e.error is not None for e in v.transcript)
            outs.append(outputs(v))
        return times, outs, failed
    finally:
        rt.close()


def _time_plain(model: Path, args: argparse.Namespace, d: Debate, warm: Any, bars: list[Any]) -> Any:
    plain = Plain(model, 4096, args.threads, args.gpu_layers, d)
    try:
        plain.debate(warm)
        times, outs = [], []
        for vals in bars:
            t = time.perf_counter()
            outs.append(plain.debate(vals))
            times.append(time.perf_counter() - t)
        return times, outs, 0
    finally:
        plain.llm.close()


def run_once(args: argparse.Namespace, model: Path, rep: int) -> dict[str, Any]:
    """Every variant on the same ``args.n`` new bars, one phase each, in an order rotated by ``rep``.

    Phases, not interleaved decisions: llama.cpp's CPU backend runs each graph in an OpenMP team of the calling
    thread, and libgomp stops spinning at its barriers once the process has more OpenMP threads than cores (two
    contexts driven from two threads, on 2 cores). Measured on this VM: the parallel debate took 172-181 ms per
    decision alone and 780-926 ms once plain llama-cpp-python had run on another thread of the same process (its
    OpenMP threads stay until that thread ends), so an interleaved run measured libgomp, not the debate. The gate
    has one runtime (one worker thread) per model file."""
    kw = {"think_budget": args.think, "answer_budget": args.answer, "timeout_s": 600.0}
    rng = np.random.default_rng(1000 * rep)
    warm = values(rng)
    bars = [values(rng) for _ in range(args.n)]
    order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
    times: dict[str, list[float]] = {}
    got: dict[str, list[Any]] = {}
    failed = 0
    for name in order:
        times[name], got[name], f = _phase(name, args, model, kw, warm, bars)
        failed += f
    equal = {"plain_reasoning": 0, "plain_answer": 0, "parallel_one_after_other": 0}  # roles, decisions
    for i in range(args.n):
        # llama-cpp-python drops the bytes of an incomplete UTF-8 character from its text; fxgate shows U+FFFD
        for (pt, pa), (ft, fa) in zip(got["plain"][i], got["parallel"][i], strict=True):
            equal["plain_reasoning"] += pt == ft.replace("\ufffd", "")
            equal["plain_answer"] += pa == fa
        equal["parallel_one_after_other"] += got["parallel_one_after_other"][i] == got["parallel"][i]
    # TTFT of the bull/bear pair: cold (empty context, no saved state) vs cached prefix (a new bar, warm runtime)
    two = LlmRuntime(
        LlmSettings(model=str(model), n_ctx=4096, n_threads=args.threads, n_gpu_layers=args.gpu_layers, n_seq=2)
    )
    pair = Debate(dict.fromkeys(ROLES, two), parallel=True, **kw)
    pair.debate(warm, "BUY")
    cold, cached = [], []
    for _ in range(args.n):
        two.forget_prefixes()
        v = pair.debate(values(rng), "BUY")
        cold.append(min(t.generation.ttft_s for t in v.transcript[:2] if t.generation is not None))
        v = pair.debate(values(rng), "BUY")
        cached.append(min(t.generation.ttft_s for t in v.transcript[:2] if t.generation is not None))
    prof = None
    if args.profile:  # on the runtime's worker thread, where the llama.cpp calls run
        pr = cProfile.Profile()
        two._pool.submit(pr.enable).result()
        for _ in range(max(3, args.n // 4)):
            pair.debate(values(rng), "BUY")
        two._pool.submit(pr.disable).result()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
        prof = s.getvalue()
    two.close()
    res = {k: pct(times[k]) for k in VARIANTS}
    return {
        "decision": res,
        "ratio_plain_over_parallel_p50": res["plain"]["p50_ms"] / res["parallel"]["p50_ms"],
        "ratio_sequential_over_parallel_p50": res["sequential"]["p50_ms"] / res["parallel"]["p50_ms"],
        "equal_outputs": {
            "plain_reasoning": f"{equal['plain_reasoning']}/{3 * args.n} roles",
            "plain_answer": f"{equal['plain_answer']}/{3 * args.n} roles",
            "parallel_one_after_other": f"{equal['parallel_one_after_other']}/{args.n} debates",
        },
        "failed_debates": failed,
        "phase_order": list(order),
        "pair_ttft_cold": pct(cold),
        "pair_ttft_cached_prefix": pct(cached),
        "profile": prof,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu-layers", type=int, default=0)
    ap.add_argument("--think", type=int, default=256)
    ap.add_argument("--answer", type=int, default=512)
    ap.add_argument("--profile", action="store_true", help="cProfile of the parallel debate (last repeat)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model = args.model or ensure_nano()
    name = "nano" if args.model is None else Path(model).name
    runs = []
    for rep in range(args.repeats):
        load = os.getloadavg()[0]
        args_rep = argparse.Namespace(**{**vars(args), "profile": args.profile and rep == args.repeats - 1})
        r = run_once(args_rep, Path(model), rep)
        r["load_before"] = load
        runs.append(r)
        d = r["decision"]
        print(
            f"run {rep + 1} (load {load:.2f}): per decision p50 (p99) ms: "
            + ", ".join(f"{k} {v['p50_ms']:.0f} ({v['p99_ms']:.0f})" for k, v in d.items())
            + f"; plain/parallel {r['ratio_plain_over_parallel_p50']:.2f}x, sequential/parallel "
            f"{r['ratio_sequential_over_parallel_p50']:.2f}x; equal outputs {r['equal_outputs']}; "
            f"pair TTFT cold {r['pair_ttft_cold']['p50_ms']:.1f} ms, cached prefix "
            f"{r['pair_ttft_cached_prefix']['p50_ms']:.1f} ms"
        )
        if r["profile"]:
            print(r["profile"])
    ratios = [r["ratio_plain_over_parallel_p50"] for r in runs]
    med = float(np.median(ratios))
    out = {
        "model": str(model),
        "think_budget": args.think,
        "answer_budget": args.answer,
        "runs": runs,
        "ratio_plain_over_parallel_p50": {"median": med, "min": min(ratios), "max": max(ratios)},
        "targets": {"plain_over_parallel": 2.0},
        "met": {"plain_over_parallel": med >= 2.0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    last = runs[int(np.argsort(ratios)[len(ratios) // 2])]["decision"]
    out["summary"] = [
        {
            "figure": f"LLM debate per decision, parallel bull/bear ({name})",
            "ours": f"{last['parallel']['p50_ms']:.0f} ms p50 (p99 {last['parallel']['p99_ms']:.0f})",
            "reference": f"{last['plain']['p50_ms']:.0f} ms (plain create_chat_completion, same prompts)",
            "ratio": f"{med:.2f}x",
            "target": ">= 2x",
            "met": med >= 2.0,
        }
    ]
    print(f"plain/parallel p50 over {len(runs)} runs: median {med:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
