"""The honest evaluation: a model scored on the test split — later bars than anything it was trained or tuned on —
against baselines, with confidence intervals.

For every test scenario (``test/scenarios.jsonl`` written by :mod:`fxgate.training.datasets`) the model is asked
the judge's question through the same runtime, chat template, grammar and budgets the live gate uses: the prompt
is built from the scenario's template values by :meth:`~fxgate.models.llm.LlmRuntime.build`, the live judge's own
call, so sections are dropped for ``n_ctx`` exactly as when served (``dropped_sections`` in the report counts
them). Scored against the realized outcome (BUY/SELL when the close moved by more than the spread that way, else NONE):

* **directional accuracy** — answer == outcome, over all scenarios (an unusable answer counts as wrong);
* **precision at certainty >= threshold** — among confident BUY/SELL answers, the share that was right, with a
  Wilson 95% interval; **coverage** — the share of scenarios with such an answer;
* **expected calibration error** — 10 equal-width certainty bins, |accuracy − mean certainty| weighted by count.

Baselines on the same scenarios: the **majority class** of the training split; **Layer 1 alone** (its proposal when
every calibrated probability clears the threshold, else NONE — only when the data was built with a bundle); and a
**random verdict with the model's coverage** (the same number of bars picked at random, a random side; 1,000 draws,
mean and 2.5–97.5% range of its precision). A precision without this protocol — which bars, which period, which
baseline, which interval — is not comparable to anything, which is why the original design's "89%" is not quoted
as a result anywhere in fxgate.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.models._stats import wilson
from fxgate.models.llm import LlmError, LlmRuntime, LlmSettings, grammar_for
from fxgate.models.prompt import ContextOverflow, load_template
from fxgate.training.datasets import DatasetError

__all__ = ["evaluate", "score", "ece"]


def ece(certainty: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error with ``bins`` equal-width bins on [0, 1] (Guo et al. 2017, eq. 3)."""
    c, y = np.asarray(certainty, float), np.asarray(correct, float)
    if len(c) == 0:
        return math.nan
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(c) * abs(y[m].mean() - c[m].mean())
    return float(total)


def score(answers: list[str | None], certainty: list[float | None], targets: list[str], threshold: float) -> dict:
    """The metrics of one set of verdicts (``None`` = no usable answer)."""
    n = len(targets)
    right = [a == t for a, t in zip(answers, targets, strict=True)]
    conf = [
        i
        for i, (a, c) in enumerate(zip(answers, certainty, strict=True))
        if a in ("BUY", "SELL") and c is not None and c >= threshold
    ]
    wins = sum(right[i] for i in conf)
    valid = [i for i, a in enumerate(answers) if a is not None and certainty[i] is not None]
    return {
        "n": n,
        "answered": len(valid),
        "accuracy": sum(right) / n if n else math.nan,
        "accuracy_ci95": list(wilson(sum(right), n)),
        "confident": len(conf),
        "coverage": len(conf) / n if n else math.nan,
        "precision": wins / len(conf) if conf else None,
        "precision_ci95": list(wilson(wins, len(conf))),
        "ece": ece(np.array([certainty[i] for i in valid]), np.array([right[i] for i in valid])),
    }


def _random_baseline(targets: list[str], k: int, rng: np.random.Generator, draws: int = 1000) -> dict[str, Any]:
    if k == 0:
        return {"confident": 0, "precision_mean": None, "precision_range95": None}
    t = np.array(targets)
    precs = []
    for _ in range(draws):
        pick = rng.choice(len(t), size=k, replace=False)
        side = np.where(rng.random(k) < 0.5, "BUY", "SELL")
        precs.append(float(np.mean(t[pick] == side)))
    return {
        "confident": k,
        "precision_mean": float(np.mean(precs)),
        "precision_range95": [float(np.quantile(precs, 0.025)), float(np.quantile(precs, 0.975))],
    }


def evaluate(
    model: str | Path,
    data: str | Path,
    *,
    threshold: float = 0.95,
    limit: int | None = None,
    think_budget: int = 384,
    answer_budget: int = 512,
    n_ctx: int = 4096,
    n_threads: int = 0,
    n_gpu_layers: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score ``model`` (a GGUF file) on ``data``'s test split and the baselines; return the report."""
    data = Path(data)
    mp = Path(model)
    if mp.is_dir():
        raise DatasetError(
            f"{mp}: a Hugging Face directory; the evaluation runs the model the gate serves. Fix: "
            f"export it with fxgate.training.export.export_gguf and pass the .gguf"
        )
    path = data / "test" / "scenarios.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: not found. Fix: `fxgate train data --bars ... --out {data}` first")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DatasetError(f"{path}: no test scenarios")
    train = [
        json.loads(x)["meta"]["target"]
        for x in (data / "train" / "scenarios.jsonl").read_text().splitlines()
        if x.strip()
    ]
    if any("values" not in r for r in rows):
        raise DatasetError(
            f"{path}: scenarios without template values (built by an older fxgate): the live judge's "
            f"prompt budget cannot be applied to them. Fix: rebuild with `fxgate train data`"
        )
    man = json.loads((data / "manifest.json").read_text()) if (data / "manifest.json").is_file() else {}
    tinfo = man.get("template") or {}
    tpl = load_template(tinfo.get("id", "judge.v1"))
    if tinfo.get("sha256") and tinfo["sha256"] != tpl.sha256:
        raise DatasetError(
            f"{data / 'manifest.json'}: built with template {tpl.id} sha256 {tinfo['sha256'][:12]}…, "
            f"this fxgate's is {tpl.sha256[:12]}…. Fix: rebuild the data with `fxgate train data`"
        )
    rt = LlmRuntime(
        LlmSettings(
            model=str(mp), n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, seed=seed, timeout_s=600
        )
    )
    grammar = grammar_for("judge")
    answers: list[str | None] = []
    certs: list[float | None] = []
    errors = Counter()
    dropped: Counter[str] = Counter()
    for k, r in enumerate(rows):
        try:
            # the live judge's own path: template values -> LlmRuntime.build under the serving budget
            prompt = rt.build(tpl, r["values"], think_budget=think_budget, answer_budget=answer_budget)
            dropped.update(prompt.dropped)
            g = rt.generate(
                prompt,
                kind="judge",
                think_budget=think_budget,
                answer_budget=answer_budget,
                grammar=grammar,
                use_cache=False,
            )
        except (LlmError, ContextOverflow) as exc:
            errors[str(exc).split(":")[0][:60]] += 1
            answers.append(None)
            certs.append(None)
            continue
        if g.parsed is None:
            errors["malformed answer"] += 1
        answers.append(g.parsed.direction if g.parsed else None)
        certs.append(g.parsed.certainty if g.parsed else None)
        if progress:
            progress(k + 1, len(rows))
    rt.close()
    targets = [r["meta"]["target"] for r in rows]
    report: dict[str, Any] = {
        "model": str(mp),
        "model_sha256": rt.sha256,
        "data": str(data),
        "split": "test",
        "threshold": threshold,
        "think_budget": think_budget,
        "answer_budget": answer_budget,
        "n_ctx": n_ctx,
        "dropped_sections": dict(dropped),
        "errors": dict(errors),
        "model_scores": score(answers, certs, targets, threshold),
    }
    major, freq = Counter(train).most_common(1)[0]
    freq /= len(train)
    base = {"majority": {"class": major, **score([major] * len(rows), [freq] * len(rows), targets, threshold)}}
    if all(r["meta"].get("probs") for r in rows):
        l1a, l1c = [], []
        for r in rows:
            ps = list(r["meta"]["probs"].values())
            c = min(ps) if r["meta"]["proposal"] == "BUY" else min(1 - p for p in ps)
            l1a.append(r["meta"]["proposal"] if c >= threshold else "NONE")
            l1c.append(c)
        base["layer1"] = score(l1a, l1c, targets, threshold)
    else:
        base["layer1"] = {"note": "not available: the data was built without a Layer-1 bundle (--bundle)"}
    k = report["model_scores"]["confident"]
    base["random_same_coverage"] = _random_baseline(targets, k, np.random.default_rng(seed))
    report["baselines"] = base
    report["outcomes"] = dict(Counter(targets))
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a short text table."""

    def pct(x: Any) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"

    def num(x: Any) -> str:  # NaN in a fresh report, None once it went through a strict-JSON manifest
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    def ci(c: Any) -> str:
        bad = not c or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in c)
        return "" if bad else f" [{c[0]:.1%}, {c[1]:.1%}]"

    lines = [f"{'verdicts':<28}{'accuracy':>22}{'coverage':>10}{'precision @ thr':>30}{'ECE':>8}"]
    rows = [("model", report["model_scores"])] + [
        (k, v) for k, v in report["baselines"].items() if k != "random_same_coverage"
    ]
    for name, s in rows:
        if "note" in s:
            lines.append(f"{name:<28}{s['note']}")
            continue
        lines.append(
            f"{name:<28}{pct(s['accuracy']) + ci(s['accuracy_ci95']):>22}{pct(s['coverage']):>10}"
            f"{pct(s['precision']) + ci(s['precision_ci95']):>30}{num(s['ece']):>8}"
        )
    r = report["baselines"]["random_same_coverage"]
    if r["precision_mean"] is not None:
        lines.append(
            f"{'random, same coverage':<28}{'':>22}{pct(report['model_scores']['coverage']):>10}"
            f"{pct(r['precision_mean']) + ci(r['precision_range95']):>30}"
        )
    return "\n".join(lines)
