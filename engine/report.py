"""The replay report: one self-contained HTML file (inline SVG and CSS, no executable script, no network fetch).

Sections: header (instrument, period, config hash, disabled layers, the honest sentence), headline figures
(precision beside the base rate of the same directions on the same bars, with how its interval was made),
price with signals, equity and drawdown, the layer funnel and first vetoes, the reliability diagram of Layer-1
confidence, precision versus coverage of the Layer-1 rule, module pass rates over time, latency. The Layer-1
charts score the direction of the move over the configured ``horizon`` (``ReplayResult.horizon``), the question
the models were trained on, not always the next bar.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fxgate.engine.core.atomic import write_text
from fxgate.engine.core.records import candidate_directions
from fxgate.engine.replaying import ReplayResult
from fxgate.models._stats import strict_dumps

__all__ = ["write_report"]

W, H, PAD = 860, 220, 40


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _json_island(obj: Any) -> str:
    """Strict JSON to embed in a ``<script type="application/json">``: the element's text is not HTML-decoded, so
    the JSON is not HTML-escaped; ``<`` is written ``\\u003c`` so no ``</script>`` or ``<!--`` can occur in it."""
    return strict_dumps(obj).replace("<", "\\u003c")


def _scale(v: np.ndarray, lo: float, hi: float, a: float, b: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return a + (v - lo) / span * (b - a)


def _polyline(x: np.ndarray, y: np.ndarray, color: str, width: float = 1.2) -> str:
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b))
    return f'<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{pts}"/>'


def _frame(title: str, body: str, note: str = "", height: int = H) -> str:
    return (
        f'<section><h2>{_esc(title)}</h2><svg viewBox="0 0 {W} {height}" width="100%" role="img" '
        f'aria-label="{_esc(title)}"><rect x="0" y="0" width="{W}" height="{height}" fill="#fff" '
        f'stroke="#ddd"/>{body}</svg>{f"<p class=note>{_esc(note)}</p>" if note else ""}</section>'
    )


def _axis_labels(lo: float, hi: float, fmt: str = "{:.5g}") -> str:
    return (
        f'<text x="4" y="{PAD - 8}" class="ax">{fmt.format(hi)}</text>'
        f'<text x="4" y="{H - 8}" class="ax">{fmt.format(lo)}</text>'
    )


def _price_chart(res: ReplayResult) -> str:
    b = res.bars[res.start : res.start + len(res.decisions)]
    n = len(b)
    if n < 2:
        return _frame("Price and signals", "", "no replayed bars")
    step = max(1, n // 1500)
    idx = np.arange(0, n, step)
    xs = _scale(idx.astype(float), 0, n - 1, PAD, W - 10)
    lo, hi = float(b.low.min()), float(b.high.max())
    ys = _scale(b.close[idx], lo, hi, H - PAD, PAD)
    marks = []
    for k, d in enumerate(res.decisions):
        if d.action == "NONE":
            continue
        x = float(_scale(np.array([k], float), 0, n - 1, PAD, W - 10)[0])
        y = float(_scale(np.array([b.close[k]]), lo, hi, H - PAD, PAD)[0])
        color = "#1a7f37" if d.action == "BUY" else "#cf222e"
        marks.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    note = f"{len(marks)} signals (green BUY, red SELL)" if marks else "no signal was emitted on the replayed bars"
    return _frame("Price and signals", _polyline(xs, ys, "#555") + "".join(marks) + _axis_labels(lo, hi), note)


def _equity_chart(res: ReplayResult) -> str:
    pips = np.array([t["pnl_pips"] for t in res.trades])
    if len(pips) == 0:
        return _frame("Equity and drawdown (pips × size)", "", "no trades, so no equity curve")
    eq = np.r_[0.0, np.cumsum(pips)]
    dd = eq - np.maximum.accumulate(eq)
    lo, hi = float(min(eq.min(), dd.min())), float(max(eq.max(), 0.0))
    xs = _scale(np.arange(len(eq), dtype=float), 0, max(1, len(eq) - 1), PAD, W - 10)
    body = (
        _polyline(xs, _scale(eq, lo, hi, H - PAD, PAD), "#0969da")
        + _polyline(xs, _scale(dd, lo, hi, H - PAD, PAD), "#cf222e")
        + _axis_labels(lo, hi, "{:.1f}")
    )
    return _frame(
        "Equity and drawdown (pips × size)",
        body,
        f"{len(pips)} trades of Decision.size units each, net of the full entry spread; blue equity, red drawdown",
    )


def _l1_arrays(res: ReplayResult) -> tuple[np.ndarray, np.ndarray]:
    """Per replayed bar: the three Layer-1 P(up) (NaN if absent) and the realized direction of the move over the
    configured horizon, ``sign(close[i + h] - close[i])`` (NaN where ``i + h`` is past the data)."""
    probs = np.full((len(res.decisions), 3), np.nan)
    for k, d in enumerate(res.decisions):
        det = d.layers[0].details
        if len(det) == 3:
            probs[k] = [x.p_up for x in det]
    c = res.bars.close
    h = res.horizon
    i = res.start + np.arange(len(res.decisions))
    move = np.where(i + h < len(c), c[np.minimum(i + h, len(c) - 1)] - c[i], np.nan)
    return probs, np.sign(move)


def _reliability_chart(res: ReplayResult) -> str:
    probs, move = _l1_arrays(res)
    p = np.nanmean(probs, axis=1)
    ok = np.isfinite(p) & np.isfinite(move) & (move != 0)
    if ok.sum() < 20:
        return _frame("Reliability of Layer-1 confidence", "", "too few bars with Layer-1 probabilities")
    conf = np.maximum(p[ok], 1 - p[ok])
    hit = (p[ok] >= 0.5) == (move[ok] > 0)
    edges = np.linspace(0.5, 1.0, 11)
    body = [
        _polyline(
            _scale(np.array([0.5, 1.0]), 0.5, 1, PAD, W - 10),
            _scale(np.array([0.5, 1.0]), 0.5, 1, H - PAD, PAD),
            "#bbb",
            1,
        )
    ]
    rows = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (conf >= a) & (conf < b if b < 1 else conf <= b)
        if m.sum():
            x = float(_scale(np.array([conf[m].mean()]), 0.5, 1, PAD, W - 10)[0])
            y = float(_scale(np.array([hit[m].mean()]), 0.5, 1, H - PAD, PAD)[0])
            body.append(
                f'<circle cx="{x:.1f}" cy="{min(max(y, 0), H):.1f}" r="{2 + math.log1p(m.sum()):.1f}" fill="#0969da"/>'
            )
            rows.append(f"{a:.2f}–{b:.2f}: {m.sum()} bars, hit rate {hit[m].mean():.3f}")
    return _frame(
        "Reliability of Layer-1 confidence (mean of the three models)",
        "".join(body),
        f"direction of the move over {res.horizon} bar(s); diagonal = perfectly calibrated. " + "; ".join(rows),
    )


def _precision_coverage(res: ReplayResult) -> str:
    probs, move = _l1_arrays(res)
    ok = np.all(np.isfinite(probs), axis=1) & np.isfinite(move)
    if ok.sum() < 20:
        return _frame("Precision vs coverage of the Layer-1 rule", "", "too few bars with Layer-1 probabilities")
    p, mv = probs[ok], move[ok]
    up = p >= 0.5
    lean = candidate_directions(p)  # +1/-1 where all three lean the same way, else 0
    agree = lean != 0
    conf = np.where(up, p, 1 - p).min(axis=1)
    pts, notes = [], []
    for thr in np.linspace(0.5, 0.99, 50):
        fire = agree & (conf >= thr)
        if fire.sum() >= 5:
            prec = float((lean[fire] == mv[fire]).mean())
            pts.append((fire.mean(), prec))
    for thr in (0.55, 0.6, 0.7, 0.95):
        fire = agree & (conf >= thr)
        notes.append(f"≥{thr}: {int(fire.sum())} bars")
    if not pts:
        return _frame("Precision vs coverage of the Layer-1 rule", "", "; ".join(notes))
    cov, prec = np.array(pts).T
    body = _polyline(_scale(cov, 0, max(cov.max(), 1e-9), PAD, W - 10), _scale(prec, 0, 1, H - PAD, PAD), "#8250df")
    return _frame(
        "Precision vs coverage of the Layer-1 rule (before costs)",
        body + _axis_labels(0, 1, "{:.0%}"),
        f"x: share of bars on which the rule fires, y: precision of the direction over {res.horizon} "
        "bar(s); " + "; ".join(notes),
    )


def _module_rates(res: ReplayResult) -> str:
    per: dict[str, list[tuple[int, bool]]] = {}
    for k, d in enumerate(res.decisions):
        for x in d.layers[3].details:
            per.setdefault(x.name, []).append((k, bool(x.passed)))
    if not per:
        note = 'Layer 4 was never evaluated (the gate stops at the first veto; mode = "full" shows every module)'
        return _frame("Module pass rates over time", "", note)
    colors = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#d1242f", "#116329", "#6639ba"]
    body, legend = [], []
    n = max(1, len(res.decisions) - 1)
    for c, (name, vals) in zip(colors * 3, sorted(per.items()), strict=False):
        ks = np.array([v[0] for v in vals], float)
        ok = np.array([v[1] for v in vals], float)
        w = max(1, len(ok) // 20)
        rate = np.convolve(ok, np.ones(w) / w, mode="same")
        body.append(_polyline(_scale(ks, 0, n, PAD, W - 10), _scale(rate, 0, 1, H - PAD, PAD), c))
        legend.append(f'<span style="color:{c}">{_esc(name)} {ok.mean():.0%}</span>')
    return _frame("Module pass rates over time", "".join(body) + _axis_labels(0, 1, "{:.0%}"), "") + (
        "<p class=note>" + " · ".join(legend) + "</p>" + f"<p class=note>{_esc(POPULATION_NOTE)}</p>"
    )


#: Which bars the outcome-based modules learn from (the report and the README say the same).
POPULATION_NOTE = (
    "The outcome-based modules learn only once a prediction's horizon has elapsed. Adverse selection, robust "
    "Kelly, Bayesian sizing and the edge tests learn from every candidate — each bar on which all three Layer-1 "
    "models lean the same way, whether or not a signal was emitted; the information-coefficient, conformal, "
    "quantile, drift, factor and model-confidence-set modules score every out-of-sample bar's forecast against "
    "its realized move. Bars inside the Layer-1 bundle's training window make no candidate and no scored forecast."
)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def _module_table(res: ReplayResult) -> str:
    """Every Layer-4 module's pass rate over the bars it was evaluated on."""
    mf = res.metrics.get("module_funnel") or {}
    if not mf:
        return ""
    rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{v['evaluated']}</td><td>{v['passed']}</td><td>{_pct(v['pass_rate'])}</td></tr>"
        for k, v in mf.items()
    )
    return (
        "<section><h2>Layer-4 modules</h2><table><tr><th>module</th><th>evaluated</th><th>passed</th>"
        f"<th>pass rate</th></tr>{rows}</table><p class=note>In cheapest mode a module is evaluated only on bars "
        'where Layer 1 and every module before it passed; mode = "full" evaluates all of them on every bar.</p>'
        "</section>"
    )


def _refit_section(res: ReplayResult) -> str:
    """When Layer 1 was refit and why, and the drift episodes a module flagged."""
    fits = res.metrics.get("refits") or []
    drift = (res.metrics.get("drift") or {}).get("episodes") or []
    if not fits and not drift:
        return ""

    def t(ns: int) -> str:
        return datetime.fromtimestamp(int(ns) / 1e9, UTC).strftime("%Y-%m-%d %H:%M")

    rows = "".join(
        f"<tr><td>{t(f['window_start_ts'])}</td><td>{t(f['trained_until_ts'])}</td><td>{_esc(f['reason'])}</td></tr>"
        for f in fits
    )
    eps = "; ".join(f"{t(e['ts'])} ({_esc(', '.join(e['modules']))})" for e in drift) or "none"
    on = (res.metrics.get("drift") or {}).get("refit_on_drift")
    return (
        "<section><h2>Layer-1 refits and drift</h2><table><tr><th>from bar</th><th>trained until</th><th>why</th></tr>"
        f"{rows}</table><p class=note>Drift flagged (first bar of each episode): {eps}. Refit on drift: "
        f"{'on' if on else 'off'} ([replay] refit_on_drift).</p></section>"
    )


def _llm_section(res: ReplayResult) -> str:
    """How far bars got into layers 2 and 3, and the first bars the judge answered (its answer and reasons)."""
    s = res.metrics.get("llm_layers") or {}
    if not s:
        return ""
    rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{v['evaluated']}</td><td>{v['passed']}</td><td>{v['failed_closed']}</td></tr>"
        for k, v in s.items()
    )
    seen = []
    for d in res.decisions:
        v = d.layer("L2")
        if v.enabled and v.details and len(seen) < 10:
            a = v.details[0].answer  # the judge's typed answer, None when it did not answer
            l3 = d.layer("L3")
            seen.append(
                f"<tr><td>{_esc(np.datetime_as_string(np.datetime64(d.ts, 'ns'), 'm'))}Z</td>"
                f"<td>{_esc(a.direction if a else '-')}</td><td>{_esc(a.certainty if a else '-')}</td>"
                f"<td>{_esc(('; '.join(a.reasons) if a else '') or v.reason)}</td>"
                f"<td>{_esc(l3.reason if l3.enabled else 'disabled')}</td></tr>"
            )
    answered = (
        (
            "<table><tr><th>bar</th><th>judge</th><th>certainty</th><th>reasons</th><th>debate</th></tr>"
            + "".join(seen)
            + "</table>"
        )
        if seen
        else ("<p>No bar reached the LLM layers: they run only on bars that every cheaper layer passed.</p>")
    )
    return (
        f"<section><h2>LLM layers</h2><table><tr><th>layer</th><th>evaluated</th><th>passed</th>"
        f"<th>no usable answer</th></tr>{rows}</table>{answered}<p class=note>Full reasoning and debate "
        f"transcripts: decision_json in decisions.parquet.</p></section>"
    )


def _certification_section(res: ReplayResult) -> str:
    """Each walk-forward window's certified threshold (or the refusal), its realized precision with Wilson 95% and
    base rate, whether the guarantee held; and the last window's precision-coverage curve on its calibration block
    (Wilson band, the certified point)."""
    cert = res.metrics.get("certification")
    if not cert:
        return ""
    s = cert["summary"]
    rows = []
    for w in cert["windows"]:
        lo, hi = w["ci95"]
        prec = f"{_pct(w['precision'])} [{_pct(lo)}, {_pct(hi)}]" if w["signals"] else "-"
        held = {True: "yes", False: "NO", None: "-"}[w["held"]]
        thr = f"{w['threshold']:.3f}" if w["threshold"] is not None else "refused: " + w["reason"]
        rows.append(
            f"<tr><td>{_esc(w['window'][0][:10])} .. {_esc(w['window'][1][:10])}</td><td>{_esc(thr)}</td>"
            f"<td>{w['calibration_signals']}</td><td>{w['signals']}</td><td>{_esc(prec)}</td>"
            f"<td>{_pct(w['base_rate'])} of {w['base_n']}</td><td>{held}</td></tr>"
        )
    table = (
        f"<section><h2>Certified precision ≥ {s['target']:g} with probability ≥ {1 - s['delta']:g} (walk-forward)"
        "</h2><table><tr><th>window</th><th>certified threshold</th><th>calibration signals</th><th>signals</th>"
        "<th>precision [Wilson 95%]</th><th>base rate (every candidate)</th><th>held</th></tr>"
        + "".join(rows)
        + f"</table><p class=honest>{_esc(s['verdict'])}</p><p class=note>{_esc(cert['method'])}; thresholds "
        f"{_esc(', '.join(cert['path']))} moved together, certified on the {cert['calibration_bars']} bars before "
        "each window by models fitted before those bars. A signal is correct when its P&amp;L after the spread is "
        "positive. The guarantee is for data like the calibration block (FX bars are not exchangeable). Held = the "
        "window's realized precision reached the target; a true precision exactly at the target fails about half "
        "the windows by chance, so read it with the interval.</p></section>"
    )
    last = cert["windows"][-1] if cert["windows"] else None
    pts = [c for c in (last["curve"] if last else []) if c["signals"]]
    if not pts:
        return table
    cov = np.array([c["coverage"] or 0.0 for c in pts])
    prec = np.array([c["precision"] for c in pts])
    lo = np.array([c["ci95"][0] for c in pts])
    hi = np.array([c["ci95"][1] for c in pts])
    x = _scale(cov, 0, max(float(cov.max()), 1e-9), PAD, W - 10)
    y = lambda v: _scale(v, 0, 1, H - PAD, PAD)  # noqa: E731
    body = _polyline(x, y(lo), "#bbb") + _polyline(x, y(hi), "#bbb") + _polyline(x, y(prec), "#8250df", 1.6)
    ty = float(y(np.array([s["target"]]))[0])
    body += f'<line x1="{PAD}" x2="{W - 10}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#cf222e" stroke-dasharray="4 3"/>'
    for c, xi, yi in zip(pts, x, y(prec), strict=True):
        if c["certified"] and last["threshold"] is not None and abs(c["value"] - last["threshold"]) < 1e-12:
            body += f'<circle cx="{xi:.1f}" cy="{yi:.1f}" r="5" fill="#1a7f37"/>'
    chart = _frame(
        "Precision vs coverage on the last calibration block (after costs)",
        body + _axis_labels(0, 1, "{:.0%}"),
        f"x: share of candidate bars that are signals, y: precision with its Wilson 95% band (grey); red: the target "
        f"{s['target']:g}; green: the certified point"
        + ("" if last["threshold"] is not None else f" (none: {last['reason']})"),
    )
    return table + chart


def write_report(res: ReplayResult, path: str | Path, config_hash: str = "") -> Path:
    m = res.metrics
    b = res.bars
    period = (
        f"{np.datetime_as_string(b.times[res.start], 'm')}Z – {np.datetime_as_string(b.times[-1], 'm')}Z"
        if len(res.decisions)
        else "-"
    )
    disabled = m.get("disabled_layers", [])
    warn = (
        f'<p class="warn">Disabled in every decision: {", ".join(disabled)}. Every decision below, signal or '
        f"not, was made without {'these layers' if len(disabled) > 1 else 'this layer'}.</p>"
        if disabled
        else ""
    )
    ci = m.get("precision_ci95") or [None, None]

    def fmt(x: Any, f: str = "{:.3f}") -> str:
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f.format(x)

    by = m.get("by_direction", {})
    per_dir = "; ".join(
        f"{k} {fmt(v['precision'], '{:.1%}')} of {v['trades']} vs base {fmt(v['base_rate'], '{:.1%}')}"
        for k, v in by.items()
        if v["trades"]
    )
    head = [
        ("bars replayed", m["bars"]),
        ("signals", m["signals"]),
        ("coverage", fmt(m["coverage"], "{:.2%}")),
        (
            f"precision after spread ({m.get('horizon', 1)}-bar trades)",
            fmt(m["precision"], "{:.1%}")
            + (f" [{fmt(ci[0], '{:.1%}')}, {fmt(ci[1], '{:.1%}')}]" if m["precision"] is not None else ""),
        ),
        (
            "base rate, same directions on every replayed bar",
            fmt(m.get("base_rate"), "{:.1%}") + (f" ({per_dir})" if per_dir else ""),
        ),
        ("P&L (pips × size, after spread)", fmt(m["pnl_pips"], "{:.1f}")),
        ("Sharpe per trade", fmt(m["sharpe_per_trade"])),
        ("Sharpe annualized", fmt(m["sharpe_annualized"])),
        (
            "probabilistic Sharpe, P(true Sharpe > 0); one configuration, no trials to deflate by",
            fmt(m.get("probabilistic_sharpe")),
        ),
        ("max drawdown (pips × size)", fmt(m["max_drawdown_pips"], "{:.1f}")),
    ]
    notes = [
        f"Precision interval: {m['precision_ci95_method']}." if m.get("precision_ci95_method") else "",
        f"Sharpe figures assume {m['sharpe_assumes']}." if m.get("sharpe_assumes") else "",
    ]
    bundle = m.get("bundle") or {}
    skipped = (
        f'<p class="warn">The first {bundle["skipped_trained_bars"]} bars of the file are inside the bundle\'s '
        "training window: they only warmed the gate's state (skip_trained_bars) and are not scored.</p>"
        if bundle.get("skipped_trained_bars")
        else ""
    )
    cw = (m.get("costs") or {}).get("warning")
    cost_warn = f'<p class="warn">Costs: {_esc(cw)}.</p>' if cw else ""
    data = m.get("data") or {}
    rep = {a: v for a, v in (data.get("repairs") or {}).items() if v.get("count")}
    repaired = ""
    if rep or len(data.get("timeframe_segments") or []) > 1:
        parts = [
            f"{v['count']} row(s) {a} (lines "
            + ", ".join(f"{x}" if x == y else f"{x}-{y}" for x, y in v["lines"][:12])
            + (", …" if len(v["lines"]) > 12 else "")
            + ")"
            for a, v in rep.items()
        ]
        segs = [
            f"lines {g['first_line']}-{g['last_line']}: {g['timeframe']} ({g['bars']} bars"
            f"{', kept' if g['kept'] else ', dropped'})"
            for g in data.get("timeframe_segments") or []
        ]
        repaired = (
            f'<p class="warn">The data file was repaired on loading (policy {_esc(data.get("policy"))}): '
            f"{_esc('; '.join(parts + segs))}. The replay ran on the repaired bars.</p>"
        )
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in head)
    funnel = "".join(f"<tr><th>{_esc(k)} passed</th><td>{v}</td></tr>" for k, v in m["funnel_passed"].items())
    vetoes = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in list(m["first_veto"].items())[:15])
    lat = "".join(
        f"<tr><th>{_esc(k)}</th><td>{v['p50']:.1f}</td><td>{v['p99']:.1f}</td></tr>" for k, v in m["latency_us"].items()
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fxgate replay — {_esc(b.symbol)} {_esc(b.timeframe)}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#1f2328}}
h1{{font-size:22px}} h2{{font-size:16px;margin:22px 0 6px}} table{{border-collapse:collapse}}
th,td{{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}} .note{{color:#57606a;font-size:12px}}
.warn{{background:#fff8c5;padding:8px;border:1px solid #d4a72c}} .honest{{font-size:15px;font-weight:600}}
.ax{{font-size:10px;fill:#57606a}}
</style></head><body>
<h1>fxgate replay — {_esc(b.symbol)} {_esc(b.timeframe)}</h1>
<p>Out-of-sample bars {_esc(period)} · config {_esc(config_hash)} · the live <code>Gate.on_bar</code> loop run over
history{" · interrupted, partial results" if m.get("interrupted") else ""}</p>
{warn}{skipped}{repaired}{cost_warn}
<p class="honest">{_esc(m["honesty"])}</p>
<section><h2>Headline (out of sample)</h2><table>{table}</table>
<p class=note>{_esc(" ".join(x for x in notes if x))}</p></section>
{_price_chart(res)}
{_equity_chart(res)}
<section><h2>Layer funnel</h2><table>{funnel}<tr><th>signals</th><td>{m["signals"]}</td></tr></table>
<h2>First veto</h2><table>{vetoes or "<tr><td>none</td></tr>"}</table></section>
{_llm_section(res)}
{_reliability_chart(res)}
{_precision_coverage(res)}
{_module_rates(res)}
{_module_table(res)}
{_refit_section(res)}
{_certification_section(res)}
<section><h2>Latency per bar (µs)</h2><table><tr><th>layer</th><th>p50</th><th>p99</th></tr>{lat}</table></section>
<script type="application/json" id="metrics">{_json_island(m)}</script>
</body></html>
"""
    return write_text(Path(path), doc)
