"""The replay report: one self-contained HTML file with Bokeh charts (BokehJS and every chart's data inline: no
network fetch of any kind, it works from ``file://``).

Sections: header (instrument, period, config hash, disabled layers, the honest sentence), headline figures
(precision beside the base rate of the same directions on the same bars, with how its interval was made), price
with signals and candidates (candlesticks with each bar's Decision on hover), equity and drawdown after costs
(zoom linked with the price), then every fast layer's behaviour even when the gate is silent, from the replay's
layer trace (:mod:`fxgate.engine.trace`, figures from :mod:`fxgate.engine.diagnostics`): the cheapest-first funnel
beside each layer's pass rate alone, a per-bar layer map, module pass rates over time, the pass-rate correlation
between layers with the joint-versus-product test, the layer-alone rules after costs and the strongest one (chosen
on the first half, scored on the second), the reliability of Layer-1 confidence and its precision-coverage curve
after costs; then the LLM layers (and the demo's LLM probe), refits and drift, the walk-forward certification, and
latency. The Layer-1 charts score the direction of the move over the configured ``horizon``
(``ReplayResult.horizon``), the question the models were trained on, not always the next bar.

Long replays are drawn in buckets of consecutive bars (at most :data:`MAX_POINTS` candles, markers, equity and
pass-rate points; :data:`MAX_MAP_BUCKETS` layer-map columns): a candle is the bucket's open of the first bar,
highest high, lowest low and close of the last bar. Numeric columns are float32 where that loses nothing visible.
"""

from __future__ import annotations

import dataclasses
import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    DataRange1d,
    FactorRange,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    Range1d,
    Span,
)
from bokeh.palettes import Category10_10, Category20_20, RdYlGn11
from bokeh.plotting import figure
from bokeh.resources import INLINE

from fxgate.engine import diagnostics as dg
from fxgate.engine.core.atomic import write_text
from fxgate.engine.core.bars import timeframe_seconds
from fxgate.engine.core.records import candidate_directions
from fxgate.engine.replaying import ReplayResult
from fxgate.engine.trace import LayerTrace
from fxgate.models._stats import strict_dumps

__all__ = ["write_report", "MAX_POINTS", "MAX_MAP_BUCKETS", "POPULATION_NOTE"]

#: the most candles, markers, equity points and pass-rate points a chart draws (above it: buckets of bars)
MAX_POINTS = 2000
#: the most columns of the per-bar layer map
MAX_MAP_BUCKETS = 1000
WIDTH = 880
TOOLS = "pan,xwheel_zoom,box_zoom,reset,save"  # no help tool (its button links to the web)
GREEN, RED, BLUE, GREY, PURPLE = "#1a7f37", "#cf222e", "#0969da", "#8c959f", "#8250df"

#: Which bars the outcome-based modules learn from (the report and the README say the same).
POPULATION_NOTE = (
    "The outcome-based modules learn only once a prediction's horizon has elapsed. Adverse selection, robust "
    "Kelly, Bayesian sizing and the edge tests learn from every candidate — each bar on which all three Layer-1 "
    "models lean the same way, whether or not a signal was emitted; the information-coefficient, conformal, "
    "quantile, drift, factor and model-confidence-set modules score every out-of-sample bar's forecast against "
    "its realized move. Bars inside the Layer-1 bundle's training window make no candidate and no scored forecast."
)

_PAGE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ style }}</style>
{{ bokeh_css }}{{ bokeh_js }}</head><body>
{% for text, root in parts %}{{ text }}{% if root %}<div class="bk-root-slot" id="{{ roots[root].elementid }}" \
data-root-id="{{ roots[root].id }}" style="display: contents;"></div>{% endif %}{% endfor %}
{{ plot_script }}
</body></html>
""",
    autoescape=False,
)

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#1f2328}
h1{font-size:22px} h2{font-size:16px;margin:26px 0 6px} h3{font-size:14px;margin:10px 0 4px}
table{border-collapse:collapse} th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .note{color:#57606a;font-size:12px}
.warn{background:#fff8c5;padding:8px;border:1px solid #d4a72c} .honest{font-size:15px;font-weight:600}
.pair{display:flex;gap:28px;flex-wrap:wrap} pre{white-space:pre-wrap;background:#f6f8fa;padding:8px;font-size:12px}
details{margin:8px 0} summary{cursor:pointer}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _json_island(obj: Any) -> str:
    """Strict JSON to embed in a ``<script type="application/json">``: the element's text is not HTML-decoded, so
    the JSON is not HTML-escaped; ``<`` is written ``\\u003c`` so no ``</script>`` or ``<!--`` can occur in it."""
    return strict_dumps(obj).replace("<", "\\u003c")


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}%}"


def _ci(ci: Any) -> str:
    lo, hi = (ci or [None, None])[:2]
    return "" if lo is None or hi is None else f" [{_pct(lo)}, {_pct(hi)}]"


def _utc(ns: int, unit: str = "m") -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit).replace("T", " ") + "Z"


def _note(text: str) -> str:
    return f"<p class=note>{_esc(text)}</p>"


def _section(title: str, body: str = "") -> str:
    return f"<section><h2>{_esc(title)}</h2>{body}"


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table; every cell escaped (numbers right-aligned)."""
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f"<td class=n>{_esc(c)}</td>" if isinstance(c, int | float) else f"<td>{_esc(c)}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table{f' class={cls}' if cls else ''}><tr>{th}</tr>{body}</table>"


def _fig(name: str, height: int, *, width: int = WIDTH, **kw: Any) -> Any:
    """A figure with the report's tools, no Bokeh logo (it links to the web) and the given root ``name``."""
    p = figure(name=name, width=width, height=height, tools=TOOLS, active_scroll="xwheel_zoom", **kw)
    p.toolbar.logo = None
    p.toolbar.autohide = True
    return p


def _hover(p: Any, renderers: list[Any], tooltips: list[tuple[str, str]], **kw: Any) -> None:
    p.add_tools(HoverTool(renderers=renderers, tooltips=tooltips, **kw))


def _tf_ms(res: ReplayResult) -> float:
    """The bar length in ms: the timeframe's, else the modal spacing of the bars."""
    try:
        return timeframe_seconds(res.bars.timeframe) * 1e3
    except (ValueError, AttributeError):
        d = np.diff(np.asarray(res.bars.ts, dtype=np.int64))
        d = d[d > 0]
        return float(np.median(d)) / 1e6 if len(d) else 60e3


def _buckets(n: int, cap: int) -> np.ndarray:
    """Start index of each bucket of consecutive bars: one bar each up to ``cap`` bars, else ``ceil(n / cap)``."""
    return np.arange(0, n, max(1, math.ceil(n / cap)) if n else 1, dtype=np.int64)


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# -- the data behind the layer charts ---------------------------------------------------------------------------
def _l1_only_trace(res: ReplayResult) -> LayerTrace:
    """For a replay run with ``trace=False``: Layer 1's columns from the Decisions (every accepted Decision carries
    the three probabilities), no modules. Only the Layer-1 charts are drawn from it."""
    n = len(res.decisions)
    probs = np.full((n, 3), np.nan)
    for k, d in enumerate(res.decisions):
        det = d.layer("L1").details
        if len(det) == 3:
            probs[k] = [x.p_up for x in det]
    empty = np.zeros((n, 0))
    return LayerTrace(
        probs,
        np.array([d.layer("L1").passed for d in res.decisions], dtype=bool),
        candidate_directions(probs),
        (),
        empty,
        empty,
        empty.astype(bool),
        empty.astype(bool),
        np.full(n, np.nan),
        np.array([d.first_veto not in ("input", "internal") for d in res.decisions], dtype=bool),
    )


def _spread(res: ReplayResult) -> float:
    """The config's spread (used where the bars have no spread column), as the replay recorded it."""
    return float((res.metrics.get("costs") or {}).get("config_spread") or 0.0)


def _disabled(res: ReplayResult) -> set[str]:
    return set(res.metrics.get("disabled_layers") or [])


# -- price and equity -------------------------------------------------------------------------------------------
def _short(s: str, n: int = 160) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _bar_story(res: ReplayResult, k: int, tr: LayerTrace | None) -> tuple[str, str, str]:
    """Bar ``k``'s Decision in three short lines: why (first veto and its reason, or the signal), Layer 1 (the
    three P(up) against its threshold) and the modules alone (how many pass, the failing ones by name)."""
    d = res.decisions[k]
    v1 = d.layer("L1")
    probs = [x.p_up for x in v1.details]
    if len(probs) == 3:
        thr = f" vs {v1.threshold:g}" if v1.threshold is not None else ""
        l1 = f"P(up) {' / '.join(f'{p:.3f}' for p in probs)}{thr}: {'passed' if v1.passed else 'failed'}"
    else:
        l1 = _short(v1.reason, 100)
    if tr is not None and tr.modules:
        ev, ok = tr.evaluated[k], tr.passed[k]
        if not ev.any():
            l4 = "no module traced on this bar"
        else:
            fails = [m for m, e, o in zip(tr.modules, ev, ok, strict=True) if e and not o]
            l4 = f"{int((ok & ev).sum())} of {int(ev.sum())} pass alone" + (
                f"; fail: {', '.join(fails)}" if fails else ""
            )
    else:
        det = d.layer("L4").details
        fails = [r.name for r in det if not r.passed]
        l4 = (
            f"{len(det) - len(fails)} of {len(det)} evaluated passed" + (f"; fail: {', '.join(fails)}" if fails else "")
            if det
            else "no module evaluated"
        )
    return _short(d.why), l1, _short(l4, 220)


def _price_chart(res: ReplayResult, tr: LayerTrace | None, xr: Any) -> list[tuple[str, Any]]:
    n = len(res.decisions)
    if n < 2:
        return [
            (_section("Price and signals", "<p>Fewer than two replayed bars: nothing to draw.</p></section>"), None)
        ]
    i0 = res.start
    b = res.bars
    ts = np.asarray(b.ts[i0 : i0 + n], dtype=np.int64)
    o, hi, lo, c = (np.asarray(a[i0 : i0 + n], dtype=float) for a in (b.open, b.high, b.low, b.close))
    starts = _buckets(n, MAX_POINTS)
    ends = np.r_[starts[1:], n]
    size = ends - starts
    tf = _tf_ms(res)
    x = ts[starts] / 1e6 + size * tf / 2
    bo, bh, bl, bc = o[starts], np.maximum.reduceat(hi, starts), np.minimum.reduceat(lo, starts), c[ends - 1]
    action = np.array([{"BUY": 1, "SELL": -1}.get(d.action, 0) for d in res.decisions], dtype=np.int8)
    cand = tr.direction if tr is not None else _l1_only_trace(res).direction
    counts = {
        key: np.add.reduceat(mask.astype(np.int64), starts)
        for key, mask in (("buy", action == 1), ("sell", action == -1), ("up", cand == 1), ("down", cand == -1))
    }
    whys, l1s, l4s, whens = [], [], [], []
    for a, e in zip(starts, ends, strict=True):
        sig = np.flatnonzero(action[a:e])
        k = int(a + sig[0]) if len(sig) else int(e - 1)  # the bucket's first signal, else its last bar
        why, l1, l4 = _bar_story(res, k, tr)
        if e - a > 1:
            nb, ns = int((action[a:e] == 1).sum()), int((action[a:e] == -1).sum())
            whens.append(f"{_utc(ts[a])} – {_utc(ts[e - 1])} ({e - a} bars: {nb} BUY, {ns} SELL)")
            why = f"[bar {_utc(ts[k])}] {why}"
        else:
            whens.append(_utc(ts[a]))
        whys.append(why)
        l1s.append(l1)
        l4s.append(l4)
    digits = 3 if float(np.nanmedian(c)) > 20 else 5
    fmt = "{0." + "0" * digits + "}"
    src = ColumnDataSource(
        {
            "x": x,
            "w": _f32(size * tf * 0.75),
            "wfull": _f32(size * tf),
            "o": np.asarray(bo, dtype=np.float64),  # float32 would round a large price
            "h": np.asarray(bh, dtype=np.float64),  # float32 would round a large price
            "l": np.asarray(bl, dtype=np.float64),  # float32 would round a large price
            "c": np.asarray(bc, dtype=np.float64),  # float32 would round a large price
            "col": np.where(bc >= bo, "#2da44e", "#d1242f").tolist(),
            "when": whens,
            "why": whys,
            "l1": l1s,
            "l4": l4s,
        },
        name="candles",
    )
    p = _fig("price", 330, x_axis_type="datetime", x_range=xr, title="Price (mid), signals and candidates")
    p.segment("x", "h", "x", "l", source=src, color="col")
    p.vbar("x", "w", "o", "c", source=src, fill_color="col", line_color="col")
    # the hover target: an invisible bar over each candle's whole time span and range, hit in vline mode, so any
    # mouse position over a candle's column answers (a body can be under a pixel wide, or flat for a doji)
    hit = p.vbar("x", "wfull", "h", "l", source=src, fill_alpha=0, line_alpha=0)
    pad = float(np.nanmax(hi) - np.nanmin(lo)) * 0.012 or 1e-4
    for key, label, marker, color, size_px, y, off in (
        ("up", "candidate, models lean up", "triangle", GREY, 5, bl, -1.0),
        ("down", "candidate, models lean down", "inverted_triangle", GREY, 5, bh, 1.0),
        ("buy", "BUY signal", "triangle", GREEN, 9, bl, -2.2),
        ("sell", "SELL signal", "inverted_triangle", RED, 9, bh, 2.2),
    ):
        m = counts[key] > 0
        if not m.any():
            continue
        ms = ColumnDataSource({"x": x[m], "y": _f32(y[m] + off * pad), "n": counts[key][m].astype(np.int32)})
        p.scatter("x", "y", source=ms, marker=marker, color=color, size=size_px, alpha=0.6, legend_label=label)
    _hover(
        p,
        [hit],
        [
            ("bar", "@when"),
            ("O H L C", f"@o{fmt} @h{fmt} @l{fmt} @c{fmt}"),
            ("decision", "@why"),
            ("L1", "@l1"),
            ("modules", "@l4"),
        ],
        mode="vline",
    )
    p.xaxis.axis_label = "time (UTC)"
    p.yaxis.axis_label = f"{b.symbol} mid price"
    if p.legend:
        p.legend.location = "top_left"
        p.legend.click_policy = "hide"
        p.legend.label_text_font_size = "10px"
    ns = int(sum(action != 0))
    nc = int(sum(cand != 0))
    step = int(size[0])
    note = (
        f"{ns} signals (green BUY, red SELL) and {nc} candidate bars (grey: all three Layer-1 models lean the same "
        f"way) on {n} replayed bars"
        + (
            f", drawn in {len(starts)} candles of {step} bars (open of the first, highest high, lowest low, close of "
            "the last; a marker means at least one in the candle, the tooltip shows its first signal or its last "
            "bar)"
            if step > 1
            else ""
        )
        + ". Hover a candle for its Decision; wheel or box zoom is linked with the equity, layer-map and "
        "pass-rate charts."
    )
    if not ns:
        note = "No signal was emitted on the replayed bars. " + note
    return [(_section("Price and signals"), p), (_note(note) + "</section>", None)]


def _equity_chart(res: ReplayResult, xr: Any) -> list[tuple[str, Any]]:
    title = "Equity and drawdown (pips × size, after costs)"
    if not res.trades:
        why = "no signal was emitted" if not res.metrics.get("signals") else "no signal's exit bar is inside the data"
        return [(_section(title, f"<p>No trades ({why}), so no equity curve.</p></section>"), None)]
    tf = _tf_ms(res)
    pips = np.array([t["pnl_pips"] for t in res.trades], dtype=float)
    exit_ms = np.array([t["exit_ts"] for t in res.trades], dtype=np.int64) / 1e6 + tf  # the exit bar's close
    eq = np.r_[0.0, np.cumsum(pips)]
    dd = eq - np.maximum.accumulate(eq)
    xs = np.r_[res.bars.ts[res.start] / 1e6, exit_ms]
    count = np.arange(len(eq))
    if len(eq) > MAX_POINTS:
        starts = _buckets(len(eq), MAX_POINTS)
        last = np.r_[starts[1:], len(eq)] - 1
        xs, eq, count, dd = xs[last], eq[last], count[last], np.minimum.reduceat(dd, starts)
        xs, eq, count, dd = np.r_[xs[0], xs], np.r_[0.0, eq], np.r_[0, count], np.r_[0.0, dd]
    src = ColumnDataSource(
        {"x": xs, "eq": _f32(np.round(eq, 2)), "dd": _f32(np.round(dd, 2)), "n": count.astype(np.int32)},
        name="equity",
    )
    p = _fig("equity", 260, x_axis_type="datetime", x_range=xr, title=title)
    p.varea("x", y1=0.0, y2="dd", source=src, color=RED, alpha=0.25, legend_label="drawdown")
    r = p.line("x", "eq", source=src, color=BLUE, line_width=1.6, legend_label="equity")
    p.add_layout(Span(location=0, dimension="width", line_color=GREY, line_dash="dashed"))
    _hover(
        p,
        [r],
        [("time", "@x{%F %H:%M}Z"), ("equity", "@eq{0.0} pips"), ("drawdown", "@dd{0.0}"), ("trades", "@n")],
        formatters={"@x": "datetime"},
        mode="vline",
    )
    p.xaxis.axis_label = "time (UTC)"
    p.yaxis.axis_label = "pips × size"
    p.legend.location = "top_left"
    p.legend.click_policy = "hide"
    note = (
        f"{len(pips)} trades of Decision.size units each, net of the full entry spread, each added at its exit "
        f"bar's close; total {pips.sum():.1f} pips × size, max drawdown {-dd.min():.1f}"
        + (
            f"; drawn at {len(xs) - 1} points (the equity at each bucket's last trade, its deepest drawdown)"
            if len(pips) + 1 > MAX_POINTS
            else ""
        )
    )
    return [(_section(title), p), (_note(note) + "</section>", None)]


# -- every fast layer, even when the gate is silent --------------------------------------------------------------
Parts = list[tuple[str, Any]]
_NO_TRACE = (
    "This replay carries no layer trace (replay(trace=False)), so the layer map, the pass rates alone, their "
    "correlation and the layer-alone rules cannot be drawn; the Layer-1 charts below use the Decisions' own "
    "Layer-1 probabilities."
)


def _funnel_section(res: ReplayResult) -> Parts:
    """The cheapest-first funnel (bars still alive after each layer) beside each layer's pass rate alone."""
    m = res.metrics
    vetoes = _table(["first veto", "bars"], [[k, v] for k, v in list(m["first_veto"].items())[:15]] or [["none", 0]])
    if res.trace is None:
        body = _table(
            ["layer", "bars passed"], [[k, v] for k, v in m["funnel_passed"].items()] + [["signals", m["signals"]]]
        )
        return [
            (_section("Layer funnel", f"<p>{_esc(_NO_TRACE)}</p>{body}<h3>First veto</h3>{vetoes}</section>"), None)
        ]
    off = _disabled(res)
    fun = [
        (f"{k} (disabled)" if k in off else ("L4 (internal error)" if k == "L4" else k), v) for k, v in dg.funnel(res)
    ]
    alone = dg.pass_alone(res)
    left = _table(["after (cheapest first)", "bars alive"], [[k, v] for k, v in fun])
    right = _table(
        ["layer alone", "evaluated", "passed", "pass rate"],
        [[k, v["evaluated"], v["passed"], _pct(v["rate"])] for k, v in alone.items()],
    )
    n0 = max(1, fun[0][1])
    labels = [k for k, _ in fun]
    f1 = _fig(
        "funnel_chart",
        40 + 22 * len(fun),
        width=430,
        y_range=FactorRange(*reversed(labels)),
        title="Bars alive after each layer (the gate's order)",
    )
    s1 = ColumnDataSource(
        {"y": labels, "v": np.array([v for _, v in fun], dtype=np.int32), "share": _f32([v / n0 for _, v in fun])},
        name="funnel",
    )
    r1 = f1.hbar(y="y", right="v", height=0.7, source=s1, color=BLUE)
    _hover(f1, [r1], [("", "@y"), ("bars", "@v"), ("share of replayed", "@share{0.0%}")])
    f1.x_range.start = 0
    f1.xaxis.axis_label = "bars"
    names = list(alone)
    rates = np.array([np.nan if alone[k]["rate"] is None else alone[k]["rate"] for k in names], dtype=float)
    f2 = _fig(
        "pass_alone_chart",
        40 + 22 * len(fun),
        width=430,
        y_range=FactorRange(*reversed(names)),
        x_range=Range1d(0, 1),
        title="Each layer's pass rate alone",
    )
    s2 = ColumnDataSource(
        {
            "y": names,
            "rate": _f32(np.nan_to_num(rates)),
            "k": np.array([alone[k]["passed"] for k in names], dtype=np.int32),
            "n": np.array([alone[k]["evaluated"] for k in names], dtype=np.int32),
        },
        name="pass_alone",
    )
    r2 = f2.hbar(y="y", right="rate", height=0.7, source=s2, color=PURPLE)
    _hover(f2, [r2], [("layer", "@y"), ("pass rate alone", "@rate{0.0%}"), ("passed", "@k of @n")])
    f2.xaxis.axis_label = "pass rate"
    f2.xaxis[0].formatter.use_scientific = False
    head = (
        "<p>The gate is cheapest-first: after the first veto the later layers are not evaluated, so the funnel "
        "(left) says little about them. The trace evaluates every fast layer alone on every accepted bar (right; a "
        "module with trace_every = k > 1, such as shap, on every k-th bar): what each would have let through by "
        "itself.</p>"
        f"<div class=pair><div>{left}</div><div>{right}</div></div>"
    )
    return [
        (_section("Layer funnel", head), row(f1, f2, name="funnel_row")),
        (f"<h3>First veto</h3>{vetoes}</section>", None),
    ]


def _layer_map(res: ReplayResult, xr: Any) -> Parts:
    """Rows = L1 and every module, columns = bars (buckets of bars on long replays), colour = pass share alone."""
    title = "What each layer did on every bar"
    tr = res.trace
    n = len(res.decisions)
    if tr is None or n < 2:
        why = _NO_TRACE if tr is None else "Fewer than two replayed bars."
        return [(_section(title, f"<p>{_esc(why)}</p></section>"), None)]
    starts = _buckets(n, MAX_MAP_BUCKETS)
    ends = np.r_[starts[1:], n]
    size = ends - starts
    tf = _tf_ms(res)
    ts = np.asarray(res.bars.ts[res.start : res.start + n], dtype=np.int64)
    data: dict[str, Any] = {
        "x": ts[starts] / 1e6 + size * tf / 2,
        "w": _f32(size * tf),
        "when": [
            _utc(ts[a]) if e - a == 1 else f"{_utc(ts[a])} – {_utc(ts[e - 1])}"
            for a, e in zip(starts, ends, strict=True)
        ],
    }
    flags = tr.passes()
    names = list(flags)
    for j, name in enumerate(names):
        ev = tr.accepted if j == 0 else tr.evaluated[:, j - 1] & tr.accepted
        k = np.add.reduceat((flags[name] & ev).astype(np.int64), starts)
        m = np.add.reduceat(ev.astype(np.int64), starts)
        data[f"r{j}"] = _f32(np.where(m > 0, k / np.maximum(m, 1), np.nan))
        data[f"k{j}"], data[f"n{j}"] = k.astype(np.int32), m.astype(np.int32)
    src = ColumnDataSource(data, name="layer_map")
    mapper = LinearColorMapper(palette=list(RdYlGn11[::-1]), low=0, high=1, nan_color="#d0d7de")
    p = _fig(
        "layer_map",
        110 + 18 * len(names),
        x_axis_type="datetime",
        x_range=xr,
        y_range=Range1d(len(names) - 0.5, -0.5),
        title="Each layer's verdict alone, per bar",
    )
    for j, name in enumerate(names):
        r = p.rect("x", j, "w", 0.92, source=src, fill_color={"field": f"r{j}", "transform": mapper}, line_color=None)
        p.add_tools(
            HoverTool(
                renderers=[r],
                visible=False,
                tooltips=[("layer", name), ("bars", "@when"), ("passed alone", f"@k{j} of @n{j} evaluated")],
            )
        )
    p.yaxis.ticker = FixedTicker(ticks=list(range(len(names))))
    p.yaxis.major_label_overrides = {j: name for j, name in enumerate(names)}
    p.ygrid.visible = False
    p.xaxis.axis_label = "time (UTC)"
    p.add_layout(ColorBar(color_mapper=mapper, width=8), "right")
    step = int(size[0])
    note = (
        "Green: the layer passed the bar evaluated alone; red: it failed; grey: not evaluated (a refused bar, or a "
        "module traced only on every k-th bar)"
        + (f". Each column is {step} bars: its colour is the share of them the layer passed" if step > 1 else "")
        + ". Hover a cell for its counts."
    )
    return [(_section(title), p), (_note(note) + "</section>", None)]


def _rolling_section(res: ReplayResult, xr: Any) -> Parts:
    title = "Module pass rates over time"
    tr = res.trace
    n = len(res.decisions)
    if tr is None or n < 2:
        why = _NO_TRACE if tr is None else "Fewer than two replayed bars."
        return [(_section(title, f"<p>{_esc(why)}</p>{_note(POPULATION_NOTE)}</section>"), None)]
    window = int(min(500, max(20, n // 25)))
    rates = dg.rolling_pass_rates(res, window)
    starts = _buckets(n, MAX_POINTS)
    idx = np.minimum(np.r_[starts[1:], n] - 1, n - 1)
    ts = np.asarray(res.bars.ts[res.start : res.start + n], dtype=np.int64)
    data = {"x": ts[idx] / 1e6 + _tf_ms(res) / 2}
    names = list(rates)
    for j, name in enumerate(names):
        data[f"r{j}"] = _f32(np.round(rates[name][idx], 4))
    src = ColumnDataSource(data, name="rolling")
    p = _fig(
        "rolling",
        max(320, 90 + 21 * len(names)),
        x_axis_type="datetime",
        x_range=xr,
        y_range=Range1d(-0.02, 1.02),
        title=f"Pass rate alone over the last {window} bars (click a legend entry to hide its line)",
    )
    colors = Category20_20 if len(names) > 10 else Category10_10
    for j, name in enumerate(names):
        r = p.line("x", f"r{j}", source=src, color=colors[j % len(colors)], line_width=1.4, legend_label=name)
        p.add_tools(
            HoverTool(
                renderers=[r],
                visible=False,
                tooltips=[("layer", name), ("to", "@x{%F %H:%M}Z"), ("pass rate", f"@r{j}{{0.0%}}")],
                formatters={"@x": "datetime"},
            )
        )
    p.legend.click_policy = "hide"
    p.legend.label_text_font_size = "9px"
    p.legend.spacing = 0
    p.add_layout(p.legend[0], "right")
    p.yaxis.axis_label = "pass rate alone"
    p.xaxis.axis_label = "time (UTC)"
    return [(_section(title), p), (_note(POPULATION_NOTE) + "</section>", None)]


def _module_table(res: ReplayResult) -> str:
    """Every Layer-4 module's pass rate over the bars the gate evaluated it on (cheapest first)."""
    mf = res.metrics.get("module_funnel") or {}
    if not mf:
        return ""
    rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{v['evaluated']}</td><td>{v['passed']}</td><td>{_pct(v['pass_rate'])}</td></tr>"
        for k, v in mf.items()
    )
    return (
        "<section><h2>Layer-4 modules</h2><table><tr><th>module</th><th>evaluated</th><th>passed</th>"
        f"<th>pass rate</th></tr>{rows}</table><p class=note>As the gate ran: in cheapest mode a module is evaluated "
        'only on bars where Layer 1 and every module before it passed; mode = "full" evaluates all of them on every '
        "bar. The trace's pass rates alone are in the layer funnel above.</p></section>"
    )


def _share(x: float | None) -> str:
    """A share as a percentage with three significant digits (a product of many rates can be tiny)."""
    return "-" if x is None or not math.isfinite(x) else ("0%" if x == 0 else f"{x * 100:.3g}%")


def _joint_sentence(joint: dict[str, Any]) -> str:
    layers = joint["layers"]
    if len(layers) < 2:
        return (
            f"Fewer than two layers ({', '.join(layers) or 'none'}) were evaluated on every accepted bar with a pass "
            "rate strictly between 0 and 1, so there is no joint test of the product rule here."
        )
    return (
        f"All {len(layers)} layers ({', '.join(layers)}) passed together on {_share(joint['all_passed'])} of "
        f"{joint['bars']} bars; the product of their pass rates, which assumes independence, is "
        f'{_share(joint["product_of_rates"])}. Multiplying per-layer rates (the "99.999%" arithmetic) is only '
        "right when these two agree."
    )


def _correlation_section(res: ReplayResult) -> Parts:
    title = "Pass-rate correlation between layers"
    if res.trace is None:
        return [(_section(title, f"<p>{_esc(_NO_TRACE)}</p></section>"), None)]
    names, phi, joint = dg.pass_correlation(res)
    sentence = f"<p class=honest>{_esc(_joint_sentence(joint))}</p>"
    if len(names) < 2:
        return [(_section(title, sentence + "</section>"), None)]
    xs = [a for _ in names for a in names]
    ys = [b for b in names for _ in names]
    vals = phi.reshape(-1)
    src = ColumnDataSource(
        {
            "x": xs,
            "y": ys,
            "phi": _f32(vals),
            "label": ["" if not math.isfinite(v) else f"{v:.2f}" for v in vals],
            "ink": ["white" if math.isfinite(v) and abs(v) > 0.55 else "#1f2328" for v in vals],
            "what": ["phi" if math.isfinite(v) else "undefined: a constant flag or < 20 shared bars" for v in vals],
        },
        name="phi",
    )
    mapper = LinearColorMapper(palette="RdBu11", low=-1, high=1, nan_color="#eaeef2")
    side = 60 + 26 * len(names)
    p = _fig(
        "phi",
        min(side + 80, 640),
        width=min(side + 200, WIDTH),
        x_range=FactorRange(*names),
        y_range=FactorRange(*reversed(names)),
        title="phi correlation of the pass flags (alone)",
    )
    r = p.rect("x", "y", 0.96, 0.96, source=src, fill_color={"field": "phi", "transform": mapper}, line_color=None)
    p.text(
        "x",
        "y",
        text="label",
        text_color="ink",
        source=src,
        text_font_size="8px",
        text_align="center",
        text_baseline="middle",
    )
    _hover(p, [r], [("layers", "@y × @x"), ("phi", "@phi{0.000}"), ("", "@what")])
    p.xaxis.major_label_orientation = 1.0
    p.add_layout(ColorBar(color_mapper=mapper, width=8), "right")
    note = (
        "phi: the Pearson correlation of two layers' pass flags over the accepted bars both were evaluated on "
        "(grey: undefined). Layers that pass on the same bars add less than their rates suggest."
    )
    parts: Parts = [(_section(title, sentence), p), (_note(note), None)]
    depth = dg.joint_by_depth(res)
    if depth:
        k = np.arange(2, len(depth) + 2)
        obs = np.array([d["all_passed"] for d in depth])
        prod = np.array([d["product_of_rates"] for d in depth])
        floor = 0.5 / max(1, depth[0]["bars"])  # a share of 0 drawn at half a bar (log axis)
        dsrc = ColumnDataSource(
            {
                "k": k.astype(np.int32),
                "observed": _f32(np.maximum(obs, floor)),
                "product": _f32(np.maximum(prod, floor)),
                "obs_txt": [_share(x) for x in obs],
                "prod_txt": [_share(x) for x in prod],
                "added": [d["layers"][-1] for d in depth],
            },
            name="joint_depth",
        )
        q = _fig("joint_depth", 260, y_axis_type="log", title="All of the k most-passing layers passed together")
        r1 = q.line("k", "observed", source=dsrc, color="#0969da", line_width=2, legend_label="observed share")
        q.scatter("k", "observed", source=dsrc, color="#0969da", size=5)
        q.line("k", "product", source=dsrc, color="#cf222e", line_dash="dashed", legend_label="product of pass rates")
        _hover(q, [r1], [("k", "@k (adds @added)"), ("observed", "@obs_txt"), ("product", "@prod_txt")])
        q.xaxis.axis_label = "k: layers, in order of decreasing pass rate alone"
        q.yaxis.axis_label = "share of accepted bars"
        q.legend.location = "bottom_left"
        depth_note = (
            "The product rule, layer by layer: for the k layers that pass most often (each evaluated on every "
            "accepted bar), the share of bars on which all k passed (blue) and the product of their k pass rates "
            "(red), which is what multiplying per-layer rates assumes. A share of 0 is drawn at half a bar."
        )
        parts += [("", q), (_note(depth_note), None)]
    parts.append(("</section>", None))
    return parts


def _rules_section(res: ReplayResult) -> Parts:
    title = "Each layer alone as a trading rule (after costs)"
    if res.trace is None:
        return [(_section(title, f"<p>{_esc(_NO_TRACE)}</p></section>"), None)]
    spread = _spread(res)
    rules = dg.layer_alone_rules(res, spread)
    rows = [
        [
            k,
            v.signals,
            v.correct,
            "-" if v.precision is None else f"{_pct(v.precision)}{_ci(v.ci95)}",
            f"{_pct(v.base_rate)} of {v.base_n}",
        ]
        for k, v in rules.items()
    ]
    table = _table(
        ["rule: layer alone", "signals", "correct", "precision [95%]", "base rate (every candidate)"], rows, cls="rules"
    )
    s = dg.strongest_rule(res, spread)
    a, b = s["chosen_on_bars"]
    c, d = s["scored_on_bars"]
    if s["rule"] is None:
        strong = f"Strongest layer alone: none ({s['reason']}; chosen on the first half, bars {a}–{b - 1})."
    else:
        sel, oos = s["selection"], s["out_of_sample"]
        strong = (
            f"Strongest layer alone: {s['rule']}, chosen on the first half (bars {a}–{b - 1}: the largest lower "
            f"interval bound above the base rate among {s['candidates']} rules with at least {s['min_signals']} "
            f"signals that leave out at least {1 - s['max_share']:.0%} of the candidates; there "
            f"{_pct(sel['precision'])}{_ci(sel['ci95'])} of {sel['signals']}) and scored on the second half only "
            f"(bars {c}–{d - 1}): precision {_pct(oos['precision'])}{_ci(oos['ci95'])} of {oos['signals']} signals, "
            f"beside the base rate {_pct(oos['base_rate'])} of {oos['base_n']} candidates."
        )
    note = (
        "A layer-alone rule trades every candidate (all three Layer-1 models lean the same way) that this one layer "
        f"passes, whatever the others said, over {res.horizon} bar(s), after the full entry spread; correct when its "
        "P&L is positive. Base rate: trading every candidate on the same bars. Intervals: Wilson"
        + (" on a HAC effective count (overlapping trades)." if res.horizon > 1 else ".")
        + " The table is measured on every replayed bar: picking the best row from it is a choice made on the bars "
        "it is scored on, and with ~20 rows at 95% one of them misleads by chance. The sentence above is the "
        "out-of-sample version of that choice."
    )
    return [
        (_section(title, table + f"<p class=honest id=strongest>{_esc(strong)}</p>" + _note(note) + "</section>"), None)
    ]


def _reliability_section(res: ReplayResult) -> Parts:
    title = "Reliability of Layer-1 confidence (mean of the three models)"
    bins = dg.reliability(res)
    used = [x for x in bins if x["bars"]]
    note = f"direction of the move over {res.horizon} bar(s), before costs; diagonal = perfectly calibrated."
    if sum(x["bars"] for x in used) < 20:
        return [
            (
                _section(
                    title, "<p>Too few bars with Layer-1 probabilities and a move.</p>" + _note(note) + "</section>"
                ),
                None,
            )
        ]
    rows = [
        [
            f"{x['lo']:.2f}–{x['hi']:.2f}",
            x["bars"],
            f"{x['confidence']:.3f}",
            f"{x['hit_rate']:.3f}",
            f"[{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]",
        ]
        for x in used
    ]
    src = ColumnDataSource(
        {
            "conf": _f32([x["confidence"] for x in used]),
            "hit": _f32([x["hit_rate"] for x in used]),
            "lo": _f32([x["ci95"][0] for x in used]),
            "hi": _f32([x["ci95"][1] for x in used]),
            "bars": np.array([x["bars"] for x in used], dtype=np.int32),
            "size": _f32([5 + 2.2 * math.log1p(x["bars"]) for x in used]),
            "bin": [r[0] for r in rows],
        },
        name="reliability",
    )
    p = _fig("reliability", 320, width=520, x_range=Range1d(0.5, 1.0), y_range=Range1d(0, 1), title=title)
    p.line([0.5, 1.0], [0.5, 1.0], color=GREY, line_dash="dashed", legend_label="perfectly calibrated")
    p.segment("conf", "lo", "conf", "hi", source=src, color=BLUE, line_width=1.5)
    r = p.scatter("conf", "hit", size="size", source=src, color=BLUE, legend_label="bin (Wilson 95%)")
    _hover(
        p,
        [r],
        [
            ("confidence", "@bin"),
            ("bars", "@bars"),
            ("mean confidence", "@conf{0.000}"),
            ("hit rate", "@hit{0.000} [@lo{0.000}, @hi{0.000}]"),
        ],
    )
    p.xaxis.axis_label = "confidence max(p, 1 − p) of the mean P(up)"
    p.yaxis.axis_label = f"share of moves over {res.horizon} bar(s) in that direction"
    p.legend.location = "top_left"
    table = _table(["confidence", "bars", "mean confidence", "hit rate", "Wilson 95%"], rows, cls="reliability")
    return [(_section(title), p), (_note(note) + table + "</section>", None)]


def _l1_threshold(res: ReplayResult) -> float | None:
    for d in res.decisions:
        t = d.layer("L1").threshold
        if t is not None:
            return float(t)
    return None


def _precision_coverage_section(res: ReplayResult) -> Parts:
    title = "Precision vs coverage of the Layer-1 rule (after costs)"
    spread = _spread(res)
    pc = dg.precision_coverage(res, spread)
    pts = [x for x in pc["points"] if x["signals"]]
    thr = _l1_threshold(res)
    marks = sorted({0.55, 0.6, 0.7, 0.95} | ({thr} if thr is not None else set()))
    at = dg.precision_coverage(res, spread, np.array(marks))["points"]
    counts = "; ".join(
        f"≥ {x['threshold']:g}{' (configured)' if thr is not None and abs(x['threshold'] - thr) < 1e-12 else ''}: "
        f"{x['signals']} signals" + (f", precision {_pct(x['precision'])}{_ci(x['ci95'])}" if x["signals"] else "")
        for x in at
    )
    note = (
        "The rule: all three Layer-1 models lean the same way, each with confidence ≥ the threshold. x: share of "
        f"scorable replayed bars it fires on; y: share of its {res.horizon}-bar trades that won after the full "
        f"entry spread, with the Wilson 95% band"
        + (" (on a HAC effective count: the trades overlap)" if res.horizon > 1 else "")
        + f"; dashed: the base rate (every candidate, {_pct(pc['base_rate'])} of {pc['base_n']}). {counts}. The "
        "bands are pointwise and the curve is measured on the bars it is drawn for: a threshold chosen from it is "
        "not out of sample (`fxgate calibrate` chooses one with a finite-sample guarantee)."
    )
    if not pts:
        return [
            (
                _section(
                    title,
                    "<p>Layer 1's three models never leaned the same way on a scorable bar: no curve."
                    "</p>" + _note(note) + "</section>",
                ),
                None,
            )
        ]
    src = ColumnDataSource(
        {
            "t": _f32([x["threshold"] for x in pts]),
            "cov": np.array([x["coverage"] for x in pts], dtype=float),
            "prec": np.array([x["precision"] for x in pts], dtype=float),
            "lo": _f32([x["ci95"][0] for x in pts]),
            "hi": _f32([x["ci95"][1] for x in pts]),
            "n": np.array([x["signals"] for x in pts], dtype=np.int32),
        },
        name="precision_coverage",
    )
    p = _fig("precision_coverage", 320, width=620, y_range=Range1d(0, 1), title=title)
    p.varea("cov", y1="lo", y2="hi", source=src, color=PURPLE, alpha=0.15, legend_label="Wilson 95%")
    r = p.line("cov", "prec", source=src, color=PURPLE, line_width=1.8, legend_label="precision")
    p.scatter("cov", "prec", source=src, color=PURPLE, size=4)
    if pc["base_rate"] is not None:
        p.add_layout(Span(location=pc["base_rate"], dimension="width", line_color=RED, line_dash="dashed"))
    _hover(
        p,
        [r],
        [
            ("threshold", "@t{0.00}"),
            ("coverage", "@cov{0.0%}"),
            ("signals", "@n"),
            ("precision", "@prec{0.0%} [@lo{0.0%}, @hi{0.0%}]"),
        ],
        mode="vline",
    )
    p.xaxis.axis_label = "coverage (share of scorable bars)"
    p.yaxis.axis_label = "precision after costs"
    p.xaxis.formatter.use_scientific = False
    p.legend.location = "bottom_right"
    return [(_section(title), p), (_note(note) + "</section>", None)]


def _latency_section(res: ReplayResult) -> Parts:
    title = "Latency per bar (µs)"
    lat = res.metrics["latency_us"]
    table = _table(["layer", "p50", "p99"], [[k, f"{v['p50']:.1f}", f"{v['p99']:.1f}"] for k, v in lat.items()])
    per = {k: v[v > 0] for k, v in dg.latencies(res).items()}
    per = {k: v for k, v in per.items() if len(v)}
    if not per:
        return [(_section(title, table + "</section>"), None)]
    allv = np.concatenate(list(per.values()))
    lo, hi = float(allv.min()), float(allv.max())
    edges = np.geomspace(lo, hi * 1.0001, 31) if hi > lo else np.array([lo * 0.9, lo * 1.1])
    p = _fig("latency", 260, x_axis_type="log", title="Latency of each layer per bar")
    for j, (name, v) in enumerate(per.items()):
        cnt, _ = np.histogram(v, edges)
        src = ColumnDataSource({"l": edges[:-1], "r": edges[1:], "n": cnt.astype(np.int32)}, name=f"latency_{name}")
        q = p.quad(
            left="l",
            right="r",
            top="n",
            bottom=0,
            source=src,
            color=Category10_10[j % 10],
            alpha=0.45,
            legend_label=name,
        )
        p.add_tools(
            HoverTool(
                renderers=[q], visible=False, tooltips=[("layer", name), ("µs", "@l{0.0} – @r{0.0}"), ("bars", "@n")]
            )
        )
    p.xaxis.axis_label = "µs per bar (log scale)"
    p.yaxis.axis_label = "bars"
    p.legend.click_policy = "hide"
    note = (
        "Histogram and table: every bar on which the layer spent time — evaluated, or (Layer 4) only its modules' "
        "state update after an earlier veto, which runs on every accepted bar. The trace's extra verdicts are not "
        "timed: they are not part of the live path."
    )
    return [(_section(title), p), (_note(note) + table + "</section>", None)]


# -- LLM layers, refits, certification --------------------------------------------------------------------------
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


def _probe_block(probe: dict[str, Any]) -> str:
    """The demo's LLM probe (a full Decision dict, llm_probe.json) in a collapsible block, every text escaped: each
    layer's verdict, then for L2 and L3 every detail's answer, the model's ``<think>`` reasoning and raw answer."""
    layers = probe.get("layers") or []
    head = "; ".join(
        f"{v.get('name')}: {'passed' if v.get('passed') else 'failed'} — {v.get('reason', '')}"
        for v in layers
        if v.get("name") in ("L1", "L2", "L3")
    )
    ts = probe.get("ts")
    when = _utc(ts) if isinstance(ts, int) else str(ts or "")
    parts = []
    for v in layers:
        if v.get("name") not in ("L2", "L3"):
            continue
        parts.append(f"<h3>{_esc(v['name'])}: {_esc(v.get('reason', ''))}</h3>")
        for det in v.get("details") or []:
            who = " ".join(str(det[k]) for k in ("role", "round", "model") if det.get(k) is not None)
            facts = ", ".join(
                f"{k} {det[k]}"
                for k in (
                    "direction",
                    "certainty",
                    "bull_confidence",
                    "bear_strength",
                    "approve",
                    "size_fraction",
                    "think_truncated",
                    "error",
                )
                if det.get(k) is not None
            )
            parts.append(f"<p><b>{_esc(who or 'detail')}</b>{': ' + _esc(facts) if facts else ''}</p>")
            if det.get("think"):
                parts.append(f"<p class=note>reasoning (&lt;think&gt;)</p><pre>{_esc(det['think'])}</pre>")
            ans = det.get("raw_answer") or (strict_dumps(det["answer"]) if det.get("answer") else "")
            if ans:
                parts.append(f"<p class=note>answer</p><pre>{_esc(ans)}</pre>")
    return (
        "<details id=llm-probe><summary>LLM probe (a diagnostic: one candidate bar run through a gate in mode = "
        f'"full", not a trade), bar {_esc(when)}: {_esc(head)}</summary>{"".join(parts)}</details>'
    )


def _llm_section(res: ReplayResult, probe: dict[str, Any] | None) -> str:
    """How far bars got into layers 2 and 3, the first bars the judge answered, and the demo's LLM probe."""
    s = res.metrics.get("llm_layers") or {}
    if not s and not probe:
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
                f"<tr><td>{_esc(_utc(d.ts))}</td>"
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
        else "<p>No bar reached the LLM layers: they run only on bars that every cheaper layer passed.</p>"
    )
    counts = (
        f"<table><tr><th>layer</th><th>bars that reached it</th><th>passed</th><th>no usable answer</th></tr>{rows}"
        "</table>"
        if s
        else "<p>Both LLM layers were disabled in this replay.</p>"
    )
    return (
        f"<section><h2>LLM layers</h2>{counts}{answered if s else ''}{_probe_block(probe) if probe else ''}"
        "<p class=note>Full reasoning and debate transcripts: decision_json in decisions.parquet.</p></section>"
    )


def _certification_section(res: ReplayResult) -> Parts:
    """Each walk-forward window's certified threshold (or the refusal), its realized precision with Wilson 95% and
    base rate, whether the guarantee held; and the last window's precision-coverage curve on its calibration block
    (Wilson band, the target, the certified point)."""
    cert = res.metrics.get("certification")
    if not cert:
        return []
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
        "the windows by chance, so read it with the interval.</p>"
    )
    last = cert["windows"][-1] if cert["windows"] else None
    pts = [c for c in (last["curve"] if last else []) if c["signals"]]
    if not pts:
        return [(table + "</section>", None)]
    src = ColumnDataSource(
        {
            "v": _f32([c["value"] for c in pts]),
            "cov": np.array([c["coverage"] or 0.0 for c in pts], dtype=float),
            "prec": np.array([c["precision"] for c in pts], dtype=float),
            "lo": _f32([c["ci95"][0] for c in pts]),
            "hi": _f32([c["ci95"][1] for c in pts]),
            "n": np.array([c["signals"] for c in pts], dtype=np.int32),
        },
        name="certification_curve",
    )
    p = _fig(
        "certification_curve",
        300,
        width=620,
        y_range=Range1d(0, 1),
        title="Precision vs coverage on the last calibration block (after costs)",
    )
    p.varea("cov", y1="lo", y2="hi", source=src, color=GREY, alpha=0.25, legend_label="Wilson 95%")
    r = p.line("cov", "prec", source=src, color=PURPLE, line_width=1.8, legend_label="precision")
    p.add_layout(Span(location=s["target"], dimension="width", line_color=RED, line_dash="dashed"))
    cx = [
        c["coverage"] or 0.0
        for c in pts
        if c["certified"] and last["threshold"] is not None and abs(c["value"] - last["threshold"]) < 1e-12
    ]
    cy = [
        c["precision"]
        for c in pts
        if c["certified"] and last["threshold"] is not None and abs(c["value"] - last["threshold"]) < 1e-12
    ]
    if cx:
        p.scatter(cx, cy, size=10, color=GREEN, legend_label="certified point")
    _hover(
        p,
        [r],
        [
            ("threshold", "@v{0.000}"),
            ("coverage", "@cov{0.0%}"),
            ("signals", "@n"),
            ("precision", "@prec{0.0%} [@lo{0.0%}, @hi{0.0%}]"),
        ],
        mode="vline",
    )
    p.xaxis.axis_label = "share of candidate bars that are signals"
    p.yaxis.axis_label = "precision after costs"
    p.legend.location = "bottom_right"
    note = f"Red dashed: the target {s['target']:g}; green: the certified point" + (
        "" if last["threshold"] is not None else f" (none: {last['reason']})"
    )
    return [(table, p), (_note(note) + "</section>", None)]


# -- the page ---------------------------------------------------------------------------------------------------
def _fmt(x: Any, f: str = "{:.3f}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f.format(x)


def _header(res: ReplayResult, config_hash: str) -> str:
    m = res.metrics
    b = res.bars
    period = f"{_utc(b.ts[res.start])} – {_utc(b.ts[-1])}" if len(res.decisions) else "-"
    disabled = m.get("disabled_layers", [])
    warn = (
        f'<p class="warn">Disabled in every decision: {", ".join(disabled)}. Every decision below, signal or '
        f"not, was made without {'these layers' if len(disabled) > 1 else 'this layer'}.</p>"
        if disabled
        else ""
    )
    ci = m.get("precision_ci95") or [None, None]
    by = m.get("by_direction", {})
    per_dir = "; ".join(
        f"{k} {_fmt(v['precision'], '{:.1%}')} of {v['trades']} vs base {_fmt(v['base_rate'], '{:.1%}')}"
        for k, v in by.items()
        if v["trades"]
    )
    head = [
        ("bars replayed", m["bars"]),
        ("signals", m["signals"]),
        ("coverage", _fmt(m["coverage"], "{:.2%}")),
        (
            f"precision after spread ({m.get('horizon', 1)}-bar trades)",
            _fmt(m["precision"], "{:.1%}")
            + (f" [{_fmt(ci[0], '{:.1%}')}, {_fmt(ci[1], '{:.1%}')}]" if m["precision"] is not None else ""),
        ),
        (
            "base rate, same directions on every replayed bar",
            _fmt(m.get("base_rate"), "{:.1%}") + (f" ({per_dir})" if per_dir else ""),
        ),
        ("P&L (pips × size, after spread)", _fmt(m["pnl_pips"], "{:.1f}")),
        ("Sharpe per trade", _fmt(m["sharpe_per_trade"])),
        ("Sharpe annualized", _fmt(m["sharpe_annualized"])),
        (
            "probabilistic Sharpe, P(true Sharpe > 0); one configuration, no trials to deflate by",
            _fmt(m.get("probabilistic_sharpe")),
        ),
        ("max drawdown (pips × size)", _fmt(m["max_drawdown_pips"], "{:.1f}")),
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
    interrupted = (
        '<p class="warn">The replay was interrupted: every figure below is on the bars replayed before it stopped.</p>'
        if m.get("interrupted")
        else ""
    )
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in head)
    return (
        f"<h1>fxgate replay — {_esc(b.symbol)} {_esc(b.timeframe)}</h1>\n"
        f"<p>Out-of-sample bars {_esc(period)} · config {_esc(config_hash)} · the live <code>Gate.on_bar</code> loop "
        f"run over history{' · interrupted, partial results' if m.get('interrupted') else ''}</p>\n"
        f"{warn}{skipped}{repaired}{cost_warn}{interrupted}\n"
        f'<p class="honest">{_esc(m["honesty"])}</p>\n'
        f"<section><h2>Headline (out of sample)</h2><table>{table}</table>\n"
        f"<p class=note>{_esc(' '.join(x for x in notes if x))}</p></section>\n"
    )


def write_report(
    res: ReplayResult, path: str | Path, config_hash: str = "", *, probe: dict[str, Any] | None = None
) -> Path:
    """Write the report of ``res`` to ``path`` (whole or not at all) and return the path. ``probe``: the demo's LLM
    probe, the full Decision dict of llm_probe.json, shown in a collapsible block with the LLM layers."""
    tr = res.trace
    l1res = res if tr is not None else dataclasses.replace(res, trace=_l1_only_trace(res))
    xr = DataRange1d()  # one time axis: zoom the price and the equity, layer map and pass rates follow
    parts: Parts = [(_header(res, config_hash), None)]
    parts += _price_chart(res, tr, xr)
    parts += _equity_chart(res, xr)
    parts += _funnel_section(res)
    parts += _layer_map(res, xr)
    parts += _rolling_section(res, xr)
    parts.append((_module_table(res), None))
    parts += _correlation_section(res)
    parts += _rules_section(res)
    parts.append((_llm_section(res, probe), None))
    parts += _reliability_section(l1res)
    parts += _precision_coverage_section(l1res)
    parts.append((_refit_section(res), None))
    parts += _certification_section(res)
    parts += _latency_section(res)
    parts.append((f'<script type="application/json" id="metrics">{_json_island(res.metrics)}</script>', None))
    roots = [p for _, p in parts if p is not None]
    title = f"fxgate replay — {res.bars.symbol} {res.bars.timeframe}"
    named = [(text, None if p is None else p.name) for text, p in parts]
    if roots:
        doc = file_html(
            roots, INLINE, _esc(title), template=_PAGE, template_variables={"parts": named, "style": _STYLE}
        )
    else:  # nothing to draw (e.g. an interrupted warm-up): the text alone, no BokehJS
        doc = _PAGE.render(
            title=_esc(title), style=_STYLE, parts=named, roots={}, bokeh_js="", bokeh_css="", plot_script=""
        )
    return write_text(Path(path), doc)
