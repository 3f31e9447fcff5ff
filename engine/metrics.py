"""The replay's trades and figures, from its Decisions — every one measured out of sample, with its interval and
base rate.

Trades (:func:`trades_from`): each emitted signal is entered at its bar's close and closed ``horizon`` bars later
at that bar's close. Spread convention (the project's, the same as :attr:`fxgate.modules._base.Outcome.pnl`):
prices are mids and a round trip pays the full spread of the entry bar, half on entry and half on exit, so per unit
``pnl = direction * (exit - entry) - spread_at_entry``; a trade's P&L is ``Decision.size`` times that.

Metrics (:func:`metrics_from`) are computed only on replayed (out-of-sample) bars and are strict JSON (undefined
figures are ``null``, never ``NaN``). Precision is shown beside the base rate: how often entering the same
direction on every replayed bar would have won after the spread. One configuration is replayed — no selection
among trials — so the Sharpe ratio's significance is the probabilistic Sharpe ratio (Bailey & López de Prado
2012), not a deflated one. With ``horizon > 1`` consecutive trades overlap; the precision interval then uses a
Hansen–Hodrick (HAC) effective trade count, and the Sharpe figures say that they assume independence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fxgate.engine.core.bars import Bars
from fxgate.engine.core.config import GateConfig
from fxgate.engine.core.decision import Decision
from fxgate.engine.core.sharpe import deflated_sharpe_from, probabilistic_sharpe_from, sharpe_moments
from fxgate.models._stats import hac_se, json_safe, wilson

__all__ = [
    "TRADE_COLUMNS",
    "trades_from",
    "metrics_from",
    "probabilistic_sharpe",
    "probabilistic_sharpe_from",
    "deflated_sharpe",
    "deflated_sharpe_from",
    "precision_interval",
    "base_rates",
]

SEED_CLAIM = 0.99999  # the original design's promised precision, quoted by the report
TRADE_COLUMNS = (
    "entry_ts",
    "exit_ts",
    "direction",
    "size",
    "entry",
    "exit",
    "spread",
    "pnl_price_per_unit",
    "pnl_pips_per_unit",
    "pnl_price",
    "pnl_pips",
)


def _spread(bars: Bars, i: int, cfg: GateConfig) -> float:
    return float(bars.spread[i]) if bars.spread is not None else cfg.spread


def trades_from(bars: Bars, start: int, decisions: list[Decision], cfg: GateConfig) -> list[dict[str, Any]]:
    """One trade per emitted signal, close to close over ``horizon`` bars (see the module docstring for the spread
    convention, the same as ``Outcome.pnl``). ``pnl_*_per_unit`` is one unit's P&L; ``pnl_price`` and ``pnl_pips``
    are that times ``Decision.size`` (pips × size). A signal whose exit bar is past the data cannot be scored and is
    left out."""
    out = []
    h = cfg.horizon
    for k, d in enumerate(decisions):
        if d.action == "NONE":
            continue
        i = start + k
        if i + h >= len(bars):
            continue
        direction = 1 if d.action == "BUY" else -1
        entry, exit_ = float(bars.close[i]), float(bars.close[i + h])
        spread = _spread(bars, i, cfg)
        unit = direction * (exit_ - entry) - spread
        size = float(d.size)
        out.append(
            {
                "entry_ts": int(bars.ts[i]),
                "exit_ts": int(bars.ts[i + h]),
                "direction": direction,
                "size": size,
                "entry": entry,
                "exit": exit_,
                "spread": spread,
                "pnl_price_per_unit": unit,
                "pnl_pips_per_unit": unit / cfg.pip,
                "pnl_price": size * unit,
                "pnl_pips": size * unit / cfg.pip,
            }
        )
    return out


# the pure formulas live in the foundation (the EdgeProof module uses them too); re-exported here by their names
_moments = sharpe_moments


def probabilistic_sharpe(returns: np.ndarray, sr_benchmark: float = 0.0) -> float | None:
    """:func:`probabilistic_sharpe_from` on a return series: per-period Sharpe with ``ddof = 1``, sample skewness
    and kurtosis (biased moments, as in the paper). None for fewer than 3 returns or zero variance."""
    m = _moments(returns)
    return None if m is None else probabilistic_sharpe_from(*m, sr_benchmark)


def deflated_sharpe(returns: np.ndarray, n_trials: int = 1, sr_variance: float | None = None) -> float:
    """:func:`deflated_sharpe_from` on a return series (NaN for fewer than 3 returns or zero variance)."""
    m = _moments(returns)
    return math.nan if m is None else deflated_sharpe_from(*m, n_trials, sr_variance)


def precision_interval(wins: np.ndarray, horizon: int, level: float = 0.95) -> tuple[list[float | None], str]:
    """A ``level`` interval for the share of winning trades, and how it was made.

    ``wins`` are the trades' outcomes (1 won, 0 did not) in entry order. With ``horizon == 1`` trades do not overlap
    and the Wilson interval treats them as independent. With ``horizon = h > 1`` a trade shares price moves with up
    to the ``h - 1`` trades entered after it (one decision per bar), so outcomes are autocorrelated: the interval is
    Wilson's on the effective number of trades ``n_eff = p (1 - p) / se^2`` (never more than ``n``), ``se`` the
    Hansen–Hodrick standard error of the win rate with ``h - 1`` lags — the estimator made for overlapping
    ``h``-period outcomes — or Newey–West's (Bartlett weights) where that one is not positive
    (:func:`fxgate.models._stats.hac_se`). In simulation (tests) it holds its level where the i.i.d. interval
    does not."""
    w = np.asarray(wins, dtype=float)
    n = len(w)
    if n == 0:
        return [None, None], "no trades"
    if horizon <= 1:
        return list(wilson(float(w.sum()), n, level)), (
            "Wilson interval; horizon 1: trades do not overlap and are treated as independent"
        )
    p = float(w.mean())
    kernel, se = "Hansen–Hodrick", hac_se(w, horizon - 1, "uniform")
    if not se > 0:
        kernel, se = "Newey–West", hac_se(w, horizon - 1, "bartlett")
    n_eff = float(n) if not se > 0 or p in (0.0, 1.0) else min(float(n), p * (1 - p) / se**2)
    return list(wilson(p * n_eff, n_eff, level)), (
        f"Wilson interval on the {kernel} effective number of trades ({n_eff:.1f} of {n}, {horizon - 1} lags): "
        f"trades {horizon} bars long overlap, so they are not independent"
    )


def base_rates(bars: Bars, start: int, n: int, cfg: GateConfig) -> dict[str, Any]:
    """How often a trade in each direction, entered on *every* scorable replayed bar ``start .. start + n - 1``
    (exit inside the data), would have won after the spread (the module docstring's convention): the precision a
    signal with no skill gets on the same bars."""
    h = cfg.horizon
    idx = np.arange(start, start + n)
    idx = idx[idx + h < len(bars)]
    if len(idx) == 0:
        return {"bars": 0, "BUY": None, "SELL": None}
    move = bars.close[idx + h] - bars.close[idx]
    cost = bars.spread[idx] if bars.spread is not None else np.full(len(idx), cfg.spread)
    return {"bars": int(len(idx)), "BUY": float(np.mean(move - cost > 0)), "SELL": float(np.mean(-move - cost > 0))}


def metrics_from(
    bars: Bars, start: int, decisions: list[Decision], trades: list[dict[str, Any]], cfg: GateConfig
) -> dict[str, Any]:
    """The replay's figures (see the module docstring), strict-JSON ready."""
    n = len(decisions)
    h = cfg.horizon
    signals = sum(d.action != "NONE" for d in decisions)
    won = np.array([t["pnl_price_per_unit"] > 0 for t in trades], dtype=bool)
    wins = int(won.sum())
    pips = np.array([t["pnl_pips"] for t in trades], dtype=float)
    funnel: dict[str, int] = {}
    per_module: dict[str, list[int]] = {}  # module -> [bars it was evaluated on, bars it passed]
    veto: dict[str, int] = {}
    lat: dict[str, list[float]] = {}
    disabled = set()
    for d in decisions:
        for v in d.layers:
            if not v.enabled:
                disabled.add(v.name)
                continue
            funnel[v.name] = funnel.get(v.name, 0) + int(v.passed)
            lat.setdefault(v.name, []).append(v.latency_us)
            if v.name == "L4":
                for r in v.details:
                    e = per_module.setdefault(r.name, [0, 0])
                    e[0] += 1
                    e[1] += bool(r.passed)
        if d.first_veto:
            veto[d.first_veto] = veto.get(d.first_veto, 0) + 1
    llm: dict[str, Any] = {}
    for name in ("L2", "L3"):
        ev = [
            v
            for d in decisions
            for v in d.layers
            if v.name == name and v.enabled and not v.reason.startswith("not evaluated")
        ]
        if any(v.name == name and v.enabled for d in decisions[:1] for v in d.layers):
            llm[name] = {
                "evaluated": len(ev),
                "passed": sum(v.passed for v in ev),
                "failed_closed": sum(v.score is None for v in ev),
            }
    equity = np.r_[0.0, np.cumsum(pips)]
    mdd = float(np.max(np.maximum.accumulate(equity) - equity))
    span_years = (int(bars.ts[start + n - 1]) - int(bars.ts[start])) / (365.25 * 86400e9) if n else 0.0
    sharpe_trade = float(np.mean(pips) / np.std(pips, ddof=1)) if len(pips) > 2 and np.std(pips) > 0 else None
    per_year = len(pips) / span_years if span_years > 0 else None
    precision = wins / len(trades) if trades else None
    ci, ci_method = precision_interval(won, h)
    base = base_rates(bars, start, n, cfg)
    by_dir: dict[str, Any] = {}
    for name, sign in (("BUY", 1), ("SELL", -1)):
        mine = np.array([t["direction"] == sign for t in trades], dtype=bool)
        k = int(mine.sum())
        by_dir[name] = {"trades": k, "precision": float(won[mine].mean()) if k else None, "base_rate": base[name]}
    mix = [(v["trades"], v["base_rate"]) for v in by_dir.values() if v["trades"] and v["base_rate"] is not None]
    base_mix = sum(k * b for k, b in mix) / sum(k for k, _ in mix) if mix else None
    m = {
        "bars": n,
        "signals": signals,
        "coverage": signals / n if n else None,
        "horizon": h,
        "trades_scored": len(trades),
        "precision": precision,
        "precision_ci95": ci,
        "precision_ci95_method": ci_method,
        # the precision a skill-less signal gets: the same direction mix entered on every scorable replayed bar
        "base_rate": base_mix,
        "base_rate_bars": base["bars"],
        "by_direction": by_dir,
        "funnel_passed": funnel,
        # per Layer-4 module: the bars it was evaluated on (cheapest mode stops at the first failing module, so a
        # later module is evaluated only where the earlier ones passed; mode = "full" evaluates all) and passed
        "module_funnel": {
            k: {"evaluated": e, "passed": p, "pass_rate": p / e if e else None} for k, (e, p) in per_module.items()
        },
        "first_veto": dict(sorted(veto.items(), key=lambda kv: -kv[1])),
        "disabled_layers": sorted(disabled),
        "llm_layers": llm,  # bars that reached L2/L3, passed them, or got no usable answer (failed closed)
        # P&L of Decision.size units per trade (pips x units), net of the full entry spread
        "pnl_pips": float(pips.sum()),
        "pnl_pips_per_unit": float(sum(t["pnl_pips_per_unit"] for t in trades)),
        "mean_pips_per_trade": float(pips.mean()) if len(pips) else None,
        "sharpe_per_trade": sharpe_trade,
        "sharpe_annualized": sharpe_trade * math.sqrt(per_year) if sharpe_trade is not None and per_year else None,
        # one configuration replayed, no selection among trials: the probabilistic (not deflated) Sharpe ratio
        "probabilistic_sharpe": probabilistic_sharpe(pips),
        "sharpe_assumes": (
            "independent trades"
            if h == 1
            else f"independent trades, but trades {h} bars long overlap: the Sharpe figures overstate the evidence"
        ),
        "max_drawdown_pips": mdd,
        "latency_us": {
            k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for k, v in lat.items()
        },
        "replayed_from_ts": int(bars.ts[start]) if n else None,
    }
    if trades:
        base_txt = (
            f"; entering the same directions on every replayed bar would have won {base_mix:.1%}"
            if base_mix is not None
            else ""
        )
        m["honesty"] = (
            f"Measured out of sample: {precision:.1%} of {len(trades)} signals won after the spread "
            f"(95% CI {ci[0]:.1%}–{ci[1]:.1%}){base_txt}; the original design claimed "
            f"{SEED_CLAIM:.3%}."
        )
    else:
        m["honesty"] = (
            "No signal was emitted out of sample, so no precision can be measured — not the "
            f"{SEED_CLAIM:.3%} the original design claimed."
        )
    return json_safe(m)
