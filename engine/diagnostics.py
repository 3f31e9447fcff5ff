"""What each fast layer did on a replay, from its trace (engine/trace.py): the figures behind the report's layer
charts and the demo's summary.

Every figure is measured on the replayed (out-of-sample) bars. A *candidate* is a bar on which Layer 1's three
models lean the same way; its outcome is the candidate direction's P&L over ``horizon`` bars after the full entry
spread (the trades' convention, :mod:`fxgate.engine.metrics`): ``d * (close[i + h] - close[i]) - spread_i``, correct
when > 0. A *layer-alone rule* trades every candidate on which that one layer passes, whatever the others said; its
base rate is the precision of trading every candidate. Precision intervals are :func:`~fxgate.engine.metrics.
precision_interval` (Wilson; with ``horizon`` > 1 on a HAC effective count).

:func:`strongest_rule` picks the best layer-alone rule on the first half of the replayed bars (by the lower end of
its interval) and reports it on the second half only: the choice among ~20 rules is made on bars it is not scored
on, so the figure is out of sample for the selection too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _stats

from fxgate.engine.core.records import candidate_directions
from fxgate.engine.metrics import precision_interval
from fxgate.models._stats import wilson

__all__ = [
    "RuleStats",
    "outcomes",
    "funnel",
    "pass_alone",
    "pass_correlation",
    "joint_by_depth",
    "rule_stats",
    "layer_alone_rules",
    "strongest_rule",
    "reliability",
    "precision_coverage",
    "latencies",
    "rolling_pass_rates",
]


def _spreads(res: Any, idx: np.ndarray, spread: float) -> np.ndarray:
    b = res.bars
    return np.asarray(b.spread[idx], dtype=float) if b.spread is not None else np.full(len(idx), float(spread))


def outcomes(res: Any, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Per replayed bar: the candidate direction (+1/-1/0, from the trace's Layer-1 probabilities) and its unit
    P&L after the spread over ``res.horizon`` bars (NaN for no candidate or an exit past the data). ``spread`` is
    the config's, used when the bars have no spread column."""
    tr = res.trace
    d = candidate_directions(tr.l1_probs).astype(int)
    idx = res.start + np.arange(len(tr))
    c = res.bars.close
    h = res.horizon
    ok = (idx + h < len(c)) & (d != 0)
    pnl = np.full(len(tr), np.nan)
    j = idx[ok]
    pnl[ok] = d[ok] * (c[j + h] - c[j]) - _spreads(res, j, spread)
    return d, pnl


def funnel(res: Any) -> list[tuple[str, int]]:
    """Bars still alive after each fast layer in the gate's order (L1, the modules in configured order, an internal
    error in Layer 4 or sizing as "L4", sizing), then L2, L3 and the signals, from the Decisions: what the
    cheapest-first gate did. The last stage's count equals the signals."""
    decs = res.decisions
    n = len(decs)
    # "L4" alone is Layer 4 (or sizing) failing with an internal error, after the modules' own vetoes
    order = ["L1", *(f"L4:{m}" for m in res.trace.modules), "L4", "sizing", "L2", "L3"]
    veto = {}
    for d in decs:
        if d.first_veto:
            veto[d.first_veto] = veto.get(d.first_veto, 0) + 1
    out, alive = [("replayed", n)], n - veto.get("input", 0) - veto.get("internal", 0)
    out.append(("accepted", alive))
    for name in order:
        alive -= veto.get(name, 0)
        out.append((name, alive))
    out.append(("signals", sum(d.action != "NONE" for d in decs)))
    return out


def pass_alone(res: Any) -> dict[str, dict[str, Any]]:
    """Each fast layer's pass rate alone over the accepted bars it was evaluated on."""
    tr = res.trace
    out: dict[str, dict[str, Any]] = {}
    acc = tr.accepted
    for j, (name, ok) in enumerate(tr.passes().items()):
        ev = acc if name == "L1" else tr.evaluated[:, j - 1] & acc
        k, n = int((ok & ev).sum()), int(ev.sum())
        out[name] = {"evaluated": n, "passed": k, "rate": k / n if n else None}
    return out


def pass_correlation(res: Any) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """The phi (Pearson) correlation of the layers' pass flags over the accepted bars on which both were evaluated
    (NaN where a flag is constant or fewer than 20 bars are shared), and the joint test the product rule fails:
    among the layers with a pass rate strictly between 0 and 1, the share of bars every one of them passed beside
    the product of their pass rates — equal only if they were independent."""
    tr = res.trace
    names = list(tr.passes())
    flags = np.column_stack([tr.l1_passed, tr.passed]).astype(float)
    ev = np.column_stack([tr.accepted, tr.evaluated & tr.accepted[:, None]])
    m = len(names)
    phi = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(m):
            both = ev[:, a] & ev[:, b]
            x, y = flags[both, a], flags[both, b]
            if both.sum() >= 20 and x.std() > 0 and y.std() > 0:
                phi[a, b] = float(np.corrcoef(x, y)[0, 1])
    rates = np.array([flags[ev[:, j], j].mean() if ev[:, j].any() else np.nan for j in range(m)])
    full = [bool(np.all(ev[tr.accepted, j])) for j in range(m)]
    mixed = [j for j in range(m) if full[j] and 0 < rates[j] < 1]
    rows = np.all(ev[:, mixed], axis=1) if mixed else np.zeros(len(tr), bool)
    joint = {
        "layers": [names[j] for j in mixed],
        "bars": int(rows.sum()),
        "all_passed": float(np.all(flags[rows][:, mixed] > 0, axis=1).mean()) if rows.any() else None,
        "product_of_rates": float(np.prod(rates[mixed])) if mixed else None,
    }
    return names, phi, joint


def joint_by_depth(res: Any) -> list[dict[str, Any]]:
    """The product rule tested layer by layer: the layers evaluated on every accepted bar with a pass rate strictly
    between 0 and 1, taken in order of decreasing pass rate; for the first ``k`` of them (k = 2, 3, ...), the share
    of accepted bars on which all ``k`` passed beside the product of their ``k`` pass rates. Independent layers
    would make the two equal up to noise; layers that pass on the same bars make the first larger. ``p_independent``
    is the exact binomial test of the observed count against ``n`` × product (the rates treated as known, so it is
    approximate; a caller that picks one depth after looking at all should multiply it by their number)."""
    tr = res.trace
    names = list(tr.passes())
    flags = np.column_stack([tr.l1_passed, tr.passed])[tr.accepted]
    ev = np.column_stack([tr.accepted, tr.evaluated & tr.accepted[:, None]])[tr.accepted]
    if not len(flags):
        return []
    rates = flags.mean(axis=0)
    keep = [j for j in range(len(names)) if ev[:, j].all() and 0 < rates[j] < 1]
    keep.sort(key=lambda j: -rates[j])
    out = []
    for k in range(2, len(keep) + 1):
        cols = keep[:k]
        both = np.all(flags[:, cols], axis=1)
        prod = float(np.prod(rates[cols]))
        out.append(
            {
                "layers": [names[j] for j in cols],
                "bars": int(len(flags)),
                "all_passed": float(both.mean()),
                "all_passed_bars": int(both.sum()),
                "product_of_rates": prod,
                # two-sided exact binomial test of the count against n x product (rates taken as known)
                "p_independent": float(_stats.binomtest(int(both.sum()), len(flags), min(max(prod, 0.0), 1.0)).pvalue),
            }
        )
    return out


@dataclass(frozen=True)
class RuleStats:
    """A rule's signals on some bars: how many, the share correct after the spread, its interval, and the base
    rate (every candidate on the same bars)."""

    signals: int
    correct: int
    precision: float | None
    ci95: tuple[float | None, float | None]
    base_rate: float | None
    base_n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": self.signals,
            "correct": self.correct,
            "precision": self.precision,
            "ci95": list(self.ci95),
            "base_rate": self.base_rate,
            "base_n": self.base_n,
        }


def rule_stats(fire: np.ndarray, pnl: np.ndarray, horizon: int) -> RuleStats:
    """``fire``: the bars a rule trades (candidates only); ``pnl``: :func:`outcomes`' P&L (NaN: not scorable)."""
    scor = np.isfinite(pnl)
    f = fire & scor
    wins = pnl[f] > 0
    ci, _ = precision_interval(wins.astype(float), horizon)
    n = int(f.sum())
    bn = int(scor.sum())
    return RuleStats(
        n,
        int(wins.sum()),
        float(wins.mean()) if n else None,
        (ci[0], ci[1]),
        float((pnl[scor] > 0).mean()) if bn else None,
        bn,
    )


def layer_alone_rules(res: Any, spread: float, rows: slice = slice(None)) -> dict[str, RuleStats]:
    """Each fast layer's rule alone (trade every candidate it passes) on ``rows`` of the replayed bars."""
    tr = res.trace
    d, pnl = outcomes(res, spread)
    d, pnl = d[rows], pnl[rows]
    out = {}
    for j, (name, ok) in enumerate(tr.passes().items()):
        ev = tr.accepted[rows] if name == "L1" else (tr.evaluated[:, j - 1] & tr.accepted)[rows]
        # a module traced on a sample of bars (trace_every) is scored on those bars, against their base rate
        p = np.where(ev, pnl, np.nan)
        out[name] = rule_stats(ok[rows] & (d != 0), p, res.horizon)
    return out


def strongest_rule(res: Any, spread: float, min_signals: int = 30, max_share: float = 0.95) -> dict[str, Any]:
    """The layer-alone rule whose precision beats the base rate by the most at the lower end of its interval on the
    first half of the replayed bars (at least ``min_signals`` signals there, and firing on fewer than ``max_share``
    of the candidates: a rule that passes nearly every candidate is the base rate itself), scored on the second
    half only. With ``horizon`` = h the second half starts h bars after the first ends, so no price the choice saw
    is in an outcome it is scored on."""
    n = len(res.trace)
    half = n // 2
    h = int(res.horizon)
    first = layer_alone_rules(res, spread, slice(0, half))
    out: dict[str, Any] = {
        "chosen_on_bars": [0, half],
        "scored_on_bars": [min(n, half + h), n],
        "min_signals": min_signals,
        "max_share": max_share,
    }
    ok = {
        k: v
        for k, v in first.items()
        if v.signals >= min_signals
        and v.ci95[0] is not None
        and v.base_rate is not None
        and v.signals < max_share * v.base_n
    }
    if not ok:
        out.update(
            rule=None,
            reason=f"no layer alone gave {min_signals} signals on the first half while leaving out at least "
            f"{1 - max_share:.0%} of the candidates",
        )
        return out
    name = max(ok, key=lambda k: (ok[k].ci95[0] - ok[k].base_rate, ok[k].signals))
    second = layer_alone_rules(res, spread, slice(half + h, n))[name]
    out.update(rule=name, selection=ok[name].to_dict(), out_of_sample=second.to_dict(), candidates=len(ok))
    return out


def reliability(res: Any, bins: int = 10) -> list[dict[str, Any]]:
    """Layer 1's confidence (the mean P(up) of the three models, folded to ``max(p, 1 - p)``) in ``bins`` equal
    bins over [0.5, 1] against how often its direction was the move's over ``horizon`` bars (before costs: the
    question the models were trained on), with Wilson 95% intervals. Bars with no move or no exit are left out."""
    tr = res.trace
    p = tr.l1_probs.mean(axis=1)
    idx = res.start + np.arange(len(tr))
    c, h = res.bars.close, res.horizon
    move = np.full(len(tr), np.nan)
    inside = idx + h < len(c)
    move[inside] = np.sign(c[idx[inside] + h] - c[idx[inside]])
    ok = np.isfinite(p) & np.isfinite(move) & (move != 0)
    conf = np.maximum(p[ok], 1 - p[ok])
    hit = (p[ok] >= 0.5) == (move[ok] > 0)
    edges = np.linspace(0.5, 1.0, bins + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= a) & ((conf < b) if b < 1 else (conf <= b))
        k = int(m.sum())
        lo, hi = wilson(float(hit[m].sum()), k) if k else (math.nan, math.nan)
        out.append(
            {
                "lo": float(a),
                "hi": float(b),
                "bars": k,
                "confidence": float(conf[m].mean()) if k else None,
                "hit_rate": float(hit[m].mean()) if k else None,
                "ci95": [lo if k else None, hi if k else None],
            }
        )
    return out


def precision_coverage(res: Any, spread: float, thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """The Layer-1 rule at each threshold ``t`` (all three models lean the same way with confidence >= ``t``):
    coverage (share of scorable replayed bars it fires on), precision after the spread with its interval, and
    the base rate (every candidate)."""
    tr = res.trace
    d, pnl = outcomes(res, spread)
    p = tr.l1_probs
    conf = np.where(p >= 0.5, p, 1 - p).min(axis=1)
    idx = res.start + np.arange(len(tr))
    scor = (idx + res.horizon < len(res.bars.close)) & np.isfinite(conf)  # bars with L1 scores and an exit
    ts = np.round(np.linspace(0.5, 0.99, 50), 4) if thresholds is None else np.asarray(thresholds, float)
    pts = []
    for t in ts:
        fire = (d != 0) & (conf >= t)
        s = rule_stats(fire, pnl, res.horizon)
        pts.append({"threshold": float(t), "coverage": s.signals / max(1, int(scor.sum())), **s.to_dict()})
    base = rule_stats(d != 0, pnl, res.horizon)
    return {"points": pts, "base_rate": base.precision, "base_n": base.signals}


def latencies(res: Any) -> dict[str, np.ndarray]:
    """Per layer, the latency (µs) of every Decision on which the layer spent time: evaluated, or skipped after an
    earlier veto but with its state update timed (Layer 4's modules update on every accepted bar)."""
    out: dict[str, list[float]] = {}
    for dec in res.decisions:
        for v in dec.layers:
            if v.enabled and (not v.reason.startswith("not evaluated") or v.latency_us > 0):
                out.setdefault(v.name, []).append(v.latency_us)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def rolling_pass_rates(res: Any, window: int) -> dict[str, np.ndarray]:
    """Per fast layer, its pass rate alone over the bars it was evaluated on among the last ``window`` replayed
    bars (NaN until the layer was evaluated on one of them)."""
    tr = res.trace
    out = {}
    for j, (name, ok) in enumerate(tr.passes().items()):
        ev = tr.accepted if name == "L1" else tr.evaluated[:, j - 1] & tr.accepted
        num = np.cumsum(np.where(ev, ok, False).astype(float))
        den = np.cumsum(ev.astype(float))
        num_w = num - np.r_[np.zeros(window), num[:-window]] if len(num) > window else num
        den_w = den - np.r_[np.zeros(window), den[:-window]] if len(den) > window else den
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(den_w > 0, num_w / den_w, np.nan)
    return out
