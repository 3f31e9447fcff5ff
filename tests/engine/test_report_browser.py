"""The replay report in a real browser (Playwright on Debian's chromium, tests/engine/browser.py): loaded offline from
file:// with every other request aborted and recorded, no console error, every Bokeh document rendered (canvases in
its shadow roots, screenshots that are not blank), the candlestick hover showing each bar's Decision, and the page's
weight. Each check is first shown to fail on a small Bokeh page built here with the bug it guards against."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure
from bokeh.resources import CDN, INLINE

from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config, ReplayConfig, SizingConfig
from fxgate.engine.replaying import replay
from fxgate.engine.report import write_report

from .browser import (
    check_hover,
    check_no_console_errors,
    check_not_blank,
    check_offline,
    check_rendered,
    figures,
    launch,
    plot_canvas,
    source_data,
    visit,
)

# the replay of tests/engine/test_report.py: 800 walk-forward bars after 2,000 of warm-up, two Layer-1 windows
CFG = GateConfig(
    mode="full",
    horizon=2,
    spread=8e-5,
    l1=L1Config(threshold=0.5),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    l4=L4Config(modules=("vpin",), params={"vpin": {"rule": "absolute", "absolute": 1.01, "n_buckets": 10}}),
    sizing=SizingConfig(scale=0.6),
    replay=ReplayConfig(train_bars=2000, window_bars=400, n_estimators=30, folds=1),
)
MAX_BYTES = 5_000_000  # the 2,800-bar replay's report (BokehJS inline is ~1.3 MB of it): see benchmarks/RESULTS.md


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    res = replay(sample_bars()[:2800], CFG)
    return write_report(res, tmp_path_factory.mktemp("browser") / "report.html", CFG.hash), res


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


# -- the checks, shown to pass on a good page and to fail on a page with each bug -----------------------------------
def _built_page(
    path: Path,
    *,
    hover: bool = True,
    blank: bool = False,
    resources=INLINE,
    head: str = "",
    body: str = "",
) -> Path:
    """A small page shaped like the report: a figure ``price`` of 80 candlesticks from the source ``candles`` whose
    hover shows each bar's time and (made-up) Decision, and an equity line on the linked x range. ``hover=False``
    drops the HoverTool; ``blank`` hides every glyph, axis, grid and the outline (Bokeh still renders the canvases,
    which stay empty); ``head``/``body`` plant HTML."""
    rng = np.random.default_rng(18)
    n = 80
    t = np.datetime64("2026-01-05T00:00") + np.arange(n) * np.timedelta64(1, "h")
    c = 1.10 + np.cumsum(rng.normal(0, 8e-4, n))
    o = np.r_[1.10, c[:-1]]
    why = ["BUY 0.6: every enabled layer passed" if k % 11 == 0 else "L1: confidence below threshold" for k in range(n)]
    src = ColumnDataSource(
        {
            "x": t.astype("datetime64[ms]").astype(np.int64).astype(float),
            "o": o,
            "c": c,
            "h": np.maximum(o, c) + np.abs(rng.normal(0, 4e-4, n)),
            "l": np.minimum(o, c) - np.abs(rng.normal(0, 4e-4, n)),
            "col": np.where(c >= o, "#2da44e", "#d1242f"),
            "when": [str(x).replace("T", " ")[:16] + "Z" for x in t],
            "why": why,
        },
        name="candles",
    )
    price = figure(name="price", x_axis_type="datetime", width=900, height=320, title="Price", tools="pan,reset")
    wicks = price.segment("x", "h", "x", "l", source=src, color="col")
    bodies = price.vbar("x", 2_400_000, "o", "c", source=src, fill_color="col", line_color="col")
    # as the report does: the hover target is an invisible bar over each candle's whole column, hit in vline mode
    target = price.vbar("x", 3_600_000, "h", "l", source=src, fill_alpha=0, line_alpha=0)
    if hover:
        tips = [("bar", "@when"), ("decision", "@why")]
        price.add_tools(HoverTool(renderers=[target], tooltips=tips, mode="vline"))
    equity = figure(name="equity", x_axis_type="datetime", width=900, height=200, x_range=price.x_range)
    line = equity.line(t, np.cumsum(rng.normal(0, 1, n)), color="#1f77b4", line_width=2)
    if blank:
        for f in (price, equity):
            f.axis.visible = False
            f.grid.visible = False
            f.outline_line_color = None
            f.title.visible = False
            f.toolbar_location = None
        for r in (wicks, bodies, line):
            r.visible = False
    html = file_html(column(price, equity), resources, "fxgate replay (built)")
    html = html.replace("</head>", head + "</head>", 1).replace("</body>", body + "</body>", 1)
    path.write_text(html)
    return path


def _hover_candle(page, k: int) -> str:
    """The tooltip with the mouse on candle ``k``'s column at its high (the tip of the wick, not the body, which can
    be under a pixel wide or flat): it must name that bar's time, as the source the browser holds has it."""
    d = source_data(page, "candles")
    y = d["h"][k]
    return check_hover(page, "price", d["x"][k], y, rf"bar:\s*{re.escape(d['when'][k])}(\s|$)")


def test_a_built_report_like_page_passes_every_check(browser, tmp_path):
    with visit(browser, _built_page(tmp_path / "good.html")) as v:
        check_offline(v)
        check_no_console_errors(v)
        check_rendered(v)
        assert figures(v.page) == ["price", "equity"]
        for name in figures(v.page):
            check_not_blank(plot_canvas(v.page, name).screenshot(), what=name)
        for k in (0, 11, 40, 79):
            text = _hover_candle(v.page, k)
            assert f"2026-01-0{5 + k // 24} {k % 24:02d}:00Z" in text, text
            assert ("BUY 0.6: every enabled layer passed" if k % 11 == 0 else "L1: confidence below") in text, text


# Each plant breaks one thing; the check that guards it must fail on that page, and its message must name the plant
# (so no check here passes on anything, nor fails for another reason). The JS error is thrown after BokehJS loaded.
PLANTS = {
    "uncaught JS error": ({"body": "<script>window.fxgate.report.init()</script>"}, "console", "reading 'report'"),
    "console.error": ({"body": "<script>console.error('chart data missing')</script>"}, "console", "data missing"),
    "remote Bokeh (CDN resources)": ({"resources": CDN}, "offline", r"https://cdn\.bokeh\.org/bokeh/release/"),
    "remote script": ({"head": '<script src="https://cdn.example.com/a.js"></script>'}, "offline", r"example\.com/a"),
    "fetch()": ({"body": "<script>fetch('https://example.com/b').catch(() => 0)</script>"}, "offline", r"\.com/b'"),
    "remote image": ({"body": '<img src="https://example.com/logo.png">'}, "offline", r"logo\.png"),
    "protocol-relative CSS": ({"head": '<link rel="stylesheet" href="//example.com/c.css">'}, "offline", r"c\.css"),
    "BokehJS left out": ({"resources": None}, "rendered", "rendered=False"),
    "blank plots": ({"blank": True}, "blank", "is blank"),
    "no HoverTool": ({"hover": False}, "hover", "no tooltip matching"),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_each_check_fails_on_a_page_with_the_bug_it_guards_against(browser, tmp_path, plant):
    kwargs, check, message = PLANTS[plant]
    if kwargs.get("resources", INLINE) is None:  # the document and its embed script, no BokehJS at all
        page = _built_page(tmp_path / "p.html")
        text = re.sub(r"<script>\s*/\* BEGIN bokeh.*?</script>", "", page.read_text(), flags=re.S)
        assert "Bokeh.safely" in text and "BEGIN bokeh" not in text
        page.write_text(text)
    else:
        page = _built_page(tmp_path / "p.html", **kwargs)
    # a page that never renders is given 5 s (not the default minute) to show it
    with visit(browser, page, timeout_ms=5_000 if check in ("offline", "rendered") else 60_000) as v:
        checks = {
            "console": lambda: check_no_console_errors(v),
            "offline": lambda: check_offline(v),
            "rendered": lambda: check_rendered(v),
            "blank": lambda: check_not_blank(plot_canvas(v.page, "price").screenshot()),
            "hover": lambda: _hover_candle(v.page, 40),
        }
        with pytest.raises(AssertionError, match=message):
            checks[check]()


# -- the real report ----------------------------------------------------------------------------------------------
def _utc(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[m]")).replace("T", " ")


@pytest.mark.slow  # the walk-forward replay takes ~20 s
def test_the_report_renders_offline_without_errors_and_its_hover_shows_each_bars_decision(browser, report):
    path, res = report
    assert path.stat().st_size < MAX_BYTES, f"{path.stat().st_size:,} bytes for {len(res.decisions)} replayed bars"
    with visit(browser, path) as v:
        check_offline(v)
        check_no_console_errors(v)
        check_rendered(v)
        names = figures(v.page)
        assert {"price", "equity"} <= set(names), names
        for name in names:  # every chart drew something, in colour
            check_not_blank(plot_canvas(v.page, name).screenshot(), what=f"figure {name!r}")
        d = source_data(v.page, "candles")
        n = len(res.decisions)
        assert len(d["x"]) == n  # fewer bars than the report's bucket cap: one candle per bar, in order
        body = np.abs(np.asarray(d["c"]) - np.asarray(d["o"]))
        signals = [k for k in range(n) if res.decisions[k].action != "NONE"]
        vetoed = [k for k in range(n) if res.decisions[k].action == "NONE"]
        assert signals and vetoed
        # the flattest bodies (the hardest to point at) among the signals and among the vetoed bars, and the last bar
        picks = sorted(signals, key=lambda k: body[k])[:2] + sorted(vetoed, key=lambda k: body[k])[:2] + [n - 1]
        for k in picks:
            dec = res.decisions[k]
            text = _hover_candle(v.page, k)
            assert _utc(res.bars.ts[res.start + k]) in text and _utc(dec.ts) in text, (k, text)
            assert dec.why[:120] in text, (k, dec.why, text)
            p_up = " / ".join(f"{x.p_up:.3f}" for x in dec.layer("L1").details)
            assert f"P(up) {p_up}" in text, (k, p_up, text)
