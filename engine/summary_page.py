"""``summary.html``: one page across the files of a multi-file ``fxgate replay`` — per file its headline figures
(signals, precision after the spread with its interval beside the base rate, P&L, the first vetoes, the strongest
layer-alone rule scored out of sample) and a link to its own report; and a Bokeh heatmap of every layer's pass rate
alone per file (hover for the counts). Self-contained like the reports: Bokeh's core JavaScript inline (1.3 MB; the
widget, table, WebGL and MathJax bundles are not needed), no fetch."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from bokeh.embed import components
from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.plotting import figure
from bokeh.resources import Resources

from fxgate.engine.core.atomic import write_text

__all__ = ["write_summary"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _row(name: str, r: dict[str, Any], base: Path) -> str:
    status = r.get("status", "complete")
    if "bars" not in r:  # failed, or not run: no figures
        why = html.escape(str(r.get("error") or status))
        return f"<tr><th>{html.escape(name)}</th><td colspan=9 class=warn>{html.escape(status)}: {why}</td></tr>"
    ci = r.get("precision_ci95") or [None, None]
    prec = f"{_pct(r['precision'])} [{_pct(ci[0])}, {_pct(ci[1])}]" if r.get("precision") is not None else "-"
    veto = ", ".join(f"{k} {v}" for k, v in list((r.get("first_veto") or {}).items())[:3]) or "-"
    st = (r.get("layers") or {}).get("strongest") or {}
    if st.get("rule"):
        o = st["out_of_sample"]
        lo, hi = o["ci95"]
        rule = (
            f"{html.escape(st['rule'])}: {_pct(o['precision'])} [{_pct(lo)}, {_pct(hi)}] of {o['signals']}; "
            f"base {_pct(o['base_rate'])}"
        )
    else:
        rule = html.escape(st.get("reason", "-"))
    try:
        link = Path(r["report"]).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        link = Path(r["report"]).resolve().as_uri()
    mark = "" if status == "complete" else f" <span class=warn>({html.escape(status)}: partial results)</span>"
    return (
        f"<tr><th>{html.escape(name)}{mark}</th><td>{html.escape(str(r['symbol']))}</td><td>{r['bars']}</td>"
        f"<td>{r['signals']}</td><td>{prec}</td><td>{_pct(r.get('base_rate'))}</td>"
        f"<td>{r['pnl_pips']:.1f}</td><td>{html.escape(veto)}</td><td>{rule}</td>"
        f'<td><a href="{html.escape(link)}">report</a></td></tr>'
    )


def _heatmap(results: dict[str, dict[str, Any]]) -> tuple[str, str]:
    files = list(results)
    layers: list[str] = []
    for r in results.values():
        for k in (r.get("layers") or {}).get("alone") or {}:
            if k not in layers:
                layers.append(k)
    xs, ys, rate, txt = [], [], [], []
    for f in files:
        alone = (results[f].get("layers") or {}).get("alone") or {}
        for k in layers:
            v = alone.get(k)
            if v is None or v["rate"] is None:
                continue
            xs.append(k)
            ys.append(f)
            rate.append(round(float(v["rate"]), 4))
            txt.append(f"{v['passed']} of {v['evaluated']} bars")
    src = ColumnDataSource({"layer": xs, "file": ys, "rate": rate, "counts": txt})
    p = figure(
        x_range=layers,
        y_range=list(reversed(files)),
        height=120 + 28 * len(files),
        sizing_mode="stretch_width",
        title="Each layer's pass rate alone, per file (every accepted bar, whatever vetoed first; shap on 1 in 10)",
        toolbar_location="right",
        tools="save,reset",
    )
    cmap = LinearColorMapper(palette="Viridis256", low=0.0, high=1.0)
    p.rect("layer", "file", 1, 1, source=src, fill_color={"field": "rate", "transform": cmap}, line_color="white")
    tips = [("file", "@file"), ("layer", "@layer"), ("pass rate", "@rate{0.0%}"), ("", "@counts")]
    p.add_tools(HoverTool(tooltips=tips))
    p.xaxis.major_label_orientation = 0.9
    return components(p)


def write_summary(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """``results``: by output directory name, each file's :func:`~fxgate.engine.cli._replay_file.replay_one`
    summary with its run status (``status``: complete, interrupted, failed, not run; ``error`` when there is one);
    a file without figures (failed, not run) gets a row saying so. Written atomically."""
    path = Path(path)
    rows = "".join(_row(k, r, path.parent) for k, r in results.items())
    script, div = _heatmap({k: r for k, r in results.items() if "bars" in r})
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fxgate replay — {len(results)} files</title>
{Resources(mode="inline", components=["bokeh"]).render_js()}
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1f2328}}
table{{border-collapse:collapse}} th,td{{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}}
.note{{color:#57606a;font-size:12px}} .warn{{background:#fff8c5}}
</style></head><body>
<h1>fxgate replay — {len(results)} files</h1>
<p>Every figure is out of sample (walk-forward, or bars after the bundle's training window), after the spread.</p>
<table><tr><th>file</th><th>symbol</th><th>bars</th><th>signals</th><th>precision [95% CI]</th><th>base rate</th>
<th>P&amp;L (pips × size)</th><th>first vetoes</th><th>strongest layer-alone rule, second half [95% CI]</th>
<th></th></tr>{rows}</table>
<p class=note>Base rate: entering the same directions on every replayed bar. The strongest layer-alone rule trades
every candidate (all three Layer-1 models lean one way) that one layer passes; it is chosen on the first half of each
file's replayed bars and scored on the second half. With several files, some rule will look good somewhere by
chance: read the intervals.</p>
{div}
{script}
</body></html>
"""
    return write_text(path, doc)
