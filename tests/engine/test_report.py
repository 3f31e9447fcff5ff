"""The HTML report (Bokeh, inline): self-contained and offline (checked by an HTML parser, the Bokeh document and the
inline library, the check shown to fire), every section, figures that match an independent recomputation (naive
loops over the bars, the Decisions and the trace, not engine/diagnostics.py), charts that score the configured
horizon, long replays drawn in buckets, and the edge cases (no trace, no signal, no trade, tiny, interrupted)."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import html
import json
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import bokeh
import numpy as np
import pandas as pd
import pytest
from bokeh.embed import file_html
from bokeh.models import AjaxDataSource, HelpTool, OpenURL, TapTool
from bokeh.plotting import figure
from bokeh.resources import INLINE

import fxgate.engine.report as report_mod
from fxgate.engine import sample_bars
from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config, ReplayConfig, SizingConfig
from fxgate.engine.metrics import metrics_from, precision_interval, trades_from
from fxgate.engine.replaying import ReplayResult, replay, write_outputs
from fxgate.engine.report import write_report
from fxgate.engine.trace import LayerTrace

from .test_replay import _decision

CFG = GateConfig(
    mode="cheapest",  # later modules are "not evaluated" after a veto: the trace still has them
    horizon=2,
    spread=8e-5,
    l1=L1Config(threshold=0.5),
    l2=L2Config(enabled=False),
    l3=L3Config(enabled=False),
    l4=L4Config(
        modules=("vpin", "regime", "uncertainty"),
        params={"vpin": {"rule": "absolute", "absolute": 1.01, "n_buckets": 10}},
    ),
    sizing=SizingConfig(scale=0.6),
    replay=ReplayConfig(train_bars=2000, window_bars=400, n_estimators=30, folds=1),
)
PAGE_LIMIT = 5_000_000  # bytes: BokehJS inline is ~1.3 MB; the data are bucketed and compact


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    res = replay(sample_bars()[:2800], CFG)
    files = write_outputs(res, d)
    return write_report(res, d / "report.html", CFG.hash), res, files


# -- self-contained and offline ----------------------------------------------------------------------------------
_URL_ATTRS = {
    "src",
    "href",
    "xlink:href",
    "action",
    "formaction",
    "poster",
    "data",
    "srcset",
    "background",
    "cite",
    "longdesc",
    "manifest",
    "ping",
}
_CSS_FETCH = re.compile(r"url\(\s*(?!['\"]?(data:|#))|@import", re.IGNORECASE)
#: what our own inline scripts (Bokeh's embed call) may not contain: any way for JS to load or send something
_JS_FETCH = re.compile(
    r"fetch\(|XMLHttpRequest|import\(|importScripts|WebSocket|EventSource|sendBeacon|https?://|"
    r"createElement\(\s*['\"](script|link|img|iframe)|\.src\s*=|location\s*=|window\.open",
    re.IGNORECASE,
)
#: Bokeh models whose views load something over the network (data, images, tiles, maps, icon fonts, MathJax) or
#: navigate (the help tool, OpenURL), or run arbitrary code (CustomJS): none may be in a report's document
_FETCHING_MODELS = {
    "AjaxDataSource",
    "ServerSentDataSource",
    "WebDataSource",
    "ImageURL",
    "ImageURLTexture",
    "TileRenderer",
    "WMTSTileSource",
    "TMSTileSource",
    "QUADKEYTileSource",
    "BBoxTileSource",
    "GMapPlot",
    "GMap",
    "TablerIcon",
    "SVGIcon",
    "HelpTool",
    "OpenURL",
    "CustomJS",
    "CustomJSHover",
    "CustomJSTickFormatter",
    "TeX",
    "MathML",
    "Ascii",
}
_URL_STRING = re.compile(r"^\s*(https?:|//|ftp:|wss?:)|https?://", re.IGNORECASE)
_BOKEH_JS = Path(bokeh.__file__).parent / "server" / "static" / "js"


def _library(name: str) -> str:
    return (_BOKEH_JS / name).read_text(encoding="utf-8")


def _walk(o, path=""):
    """Every (path, dict) and (path, str) in a JSON value."""
    if isinstance(o, dict):
        yield path, o
        for k, v in o.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _walk(v, f"{path}/{i}")
    else:
        yield path, o


def _doc_problems(doc_json: str) -> list[str]:
    """A Bokeh document (its JSON island) that could make the browser fetch: a fetching model, a URL string, a
    toolbar whose logo (a link to bokeh.org) was not turned off."""
    found = []
    for where, o in _walk(json.loads(html.unescape(doc_json))):
        if isinstance(o, dict) and o.get("type") == "object":
            name = o.get("name")
            if name in _FETCHING_MODELS:
                found.append(f"Bokeh model {name} at {where}")
            if name == "Toolbar" and (o.get("attributes") or {}).get("logo", "normal") is not None:
                found.append(f"Bokeh toolbar logo (a link to the web) at {where}")
        elif isinstance(o, str) and _URL_STRING.search(o):
            found.append(f"URL {o[:80]!r} in the Bokeh document at {where}")
    return found


class _Fetches(HTMLParser):
    """Everything in an HTML document that would make a browser fetch something.

    Bokeh needs inline scripts, so executable script is allowed, under two rules that keep the page offline:

    * a script that is BokehJS itself (``/* BEGIN bokeh*.min.js */`` ... ``/* END ... */``, as Bokeh inlines it) must
      be byte for byte the file the installed bokeh ships. Its code has network paths (MathJax from a CDN, Google
      Maps, an icon font, AJAX and server data sources, the help tool's link) but each runs only for a model that
      uses it; so the document must use none of those models (:data:`_FETCHING_MODELS`), hold no URL string, and
      turn the toolbar logo (a link) off. Scanning the library's text instead would be dishonest either way: it
      always contains ``fetch(`` and URLs, and banning them would ban Bokeh, while allowing them would allow
      anything.
    * every other script (Bokeh's embed call) may contain no way to load or send anything (:data:`_JS_FETCH`).

    ``<script type="application/json">`` is data: a Bokeh document is checked as above, the metrics island is not
    code. No ``src``/``href``-like attribute may point anywhere but ``#`` or ``data:``; no ``<link>``, frame, object
    or ``<base>``; no ``@import`` or ``url(`` to anything but ``data:`` in CSS; no meta refresh; no event handler
    attribute.
    """

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.json: dict[str, str] = {}
        self._in: tuple[str, dict] | None = None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            v = (value or "").strip()
            if name in _URL_ATTRS and v and not (v.startswith("#") or v.lower().startswith("data:")):
                self.found.append(f"<{tag} {name}={v!r}>")
            if name == "style" and _CSS_FETCH.search(v):
                self.found.append(f"<{tag} style={v!r}>")
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...> (an event handler)")
            if tag == "meta" and name == "http-equiv" and v.lower() == "refresh":
                self.found.append("<meta http-equiv=refresh>")
        if tag in ("link", "iframe", "frame", "object", "embed", "base", "portal"):
            self.found.append(f"<{tag}>")
        self._in = (tag, dict(attrs)) if tag in ("script", "style") else None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self._in = None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in is None:
            return
        tag, attrs = self._in
        if tag == "style":
            if _CSS_FETCH.search(data):
                self.found.append(f"<style> {data.strip()[:60]!r}")
            return
        if attrs.get("type") == "application/json":
            self.json[attrs.get("id", "")] = data
            if attrs.get("id") != "metrics":
                self.found += _doc_problems(data)
            return
        lib = re.fullmatch(r"\s*/\* BEGIN (bokeh[\w.-]*\.min\.js) \*/\n(.*)\n/\* END \1 \*/\s*", data, re.S)
        if lib:
            if lib.group(2).strip("\n") != _library(lib.group(1)).strip("\n"):
                self.found.append(f"<script> {lib.group(1)} differs from the installed bokeh's")
        elif m := _JS_FETCH.search(data):
            self.found.append(f"<script> {data[max(0, m.start() - 30) : m.end() + 30]!r}")


def _parse(text: str) -> _Fetches:
    p = _Fetches()
    p.feed(text)
    p.close()
    return p


def fetches(text: str) -> list[str]:
    return _parse(text).found


def _page(**plant) -> str:
    """A small Bokeh page made as the report makes its pages (inline BokehJS, no logo, no help tool), with one
    planted thing: ``help``, ``ajax``, ``image_url``, ``open_url`` or ``logo``."""
    p = figure(tools="pan,box_zoom,reset,save", name="p")
    p.toolbar.logo = "grey" if plant.get("logo") else None
    p.line([1, 2, 3], [3, 1, 2])
    if plant.get("help"):
        p.add_tools(HelpTool())
    if plant.get("ajax"):
        p.scatter("x", "y", source=AjaxDataSource(data_url="data.json"))
    if plant.get("image_url"):
        p.image_url(url=["pixel.png"], x=0, y=0, w=1, h=1)
    if plant.get("open_url"):
        p.add_tools(TapTool(callback=OpenURL(url="@u")))
    return file_html(p, INLINE, "t")


_HTML_PLANTS = [
    '<img src="https://example.com/x.png">',
    "<img src='//cdn.example.com/x.png'>",
    '<img src = "pixel.gif">',
    '<link rel="stylesheet" href="https://cdn.example.com/a.css">',
    '<a href="http://example.com">x</a>',
    '<div style="background:url(https://example.com/bg.png)">x</div>',
    "<style>@import 'a.css';</style>",
    '<svg><image xlink:href="https://example.com/i.svg"/></svg>',
    '<script src="app.js"></script>',
    "<script>fetch('data.json')</script>",
    '<script>import("https://cdn.example.com/m.js")</script>',
    "<script>const s = document.createElement('script'); s.src = 'x.js'</script>",
    '<body onload="x()">',
    '<iframe srcdoc="x"></iframe>',
    '<script type="application/json" id="d">{"a": {"type": "object", "name": "AjaxDataSource"}}</script>',
]


@pytest.mark.parametrize("plant", _HTML_PLANTS)
def test_the_offline_check_fires_on_each_kind_of_fetch_in_the_html(plant):
    """The check itself can fail: a clean Bokeh page passes, the same page with one planted fetch does not."""
    clean = _page()
    assert fetches(clean) == []
    assert fetches(clean.replace("</body>", plant + "</body>")) != [], plant


@pytest.mark.parametrize("plant", ["help", "ajax", "image_url", "open_url", "logo"])
def test_the_offline_check_fires_on_bokeh_models_that_fetch(plant):
    assert fetches(_page(**{plant: True})) != [], plant


def test_the_offline_check_fires_on_a_modified_bokeh_library():
    clean = _page()
    bad = clean.replace("/* END bokeh.min.js */", "fetch('https://example.com/x');\n/* END bokeh.min.js */")
    assert fetches(clean) == [] and any("differs" in f for f in fetches(bad))


@pytest.mark.slow  # the module's walk-forward replay
def test_report_is_offline_has_every_section_and_a_reasonable_weight(report):
    path, res, files = report
    text = path.read_text()
    assert fetches(text) == []
    for section in (
        "Headline (out of sample)",
        "Price and signals",
        "Equity and drawdown",
        "Layer funnel",
        "What each layer did on every bar",
        "Module pass rates over time",
        "Layer-4 modules",
        "Pass-rate correlation between layers",
        "Each layer alone as a trading rule (after costs)",
        "Reliability of Layer-1 confidence",
        "Precision vs coverage of the Layer-1 rule (after costs)",
        "Layer-1 refits and drift",
        "Latency per bar",
    ):
        assert f"<h2>{html.escape(section)}" in text, section
    assert "Disabled in every decision: L2, L3" in text and "99.999%" in text
    assert html.escape(report_mod.POPULATION_NOTE) in text
    for old in ("_scale", "_polyline", "_frame", "_axis_labels"):
        assert not hasattr(report_mod, old), old
    src = _sources(text)
    assert {"candles", "equity", "funnel", "pass_alone", "layer_map", "rolling", "phi", "reliability"} <= set(src)
    assert {"precision_coverage", "latency_L1", "latency_L4"} <= set(src)
    size = path.stat().st_size
    print(f"report for {res.metrics['bars']} replayed bars: {size / 1e6:.2f} MB")
    assert size < PAGE_LIMIT
    dec = pd.read_parquet(files["decisions.parquet"])
    assert len(dec) == res.metrics["bars"] and set(dec["action"]) <= {"BUY", "SELL", "NONE"}


# -- reading the numbers back: the Bokeh document's data sources and the HTML tables ---------------------------
def _column(v):
    if isinstance(v, dict) and v.get("type") == "ndarray":
        arr = v["array"]
        if isinstance(arr, dict) and arr.get("type") == "bytes":
            raw = base64.b64decode(arr["data"])
            raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            return np.frombuffer(raw, dtype=np.dtype(v["dtype"]).newbyteorder("<")).reshape(v["shape"])
        return np.asarray(arr, dtype=v["dtype"])
    return v


def _sources(text: str) -> dict[str, dict[str, object]]:
    """Every named ColumnDataSource of the page's Bokeh document: name -> column -> values."""
    docs = [v for k, v in _parse(text).json.items() if k != "metrics"]
    assert len(docs) == 1, "one Bokeh document (shared ranges need one)"
    out = {}
    for _, o in _walk(json.loads(html.unescape(docs[0]))):
        if isinstance(o, dict) and o.get("name") == "ColumnDataSource" and "attributes" in o:
            a = o["attributes"]
            if a.get("name"):
                out[a["name"]] = {k: _column(v) for k, v in a["data"]["entries"]}
    return out


def _table(text: str, first_header: str) -> list[list[str]]:
    """The body rows (cell texts) of the first table whose first header cell is ``first_header``."""
    i = re.search(rf"<table[^>]*><tr><th>{re.escape(html.escape(first_header))}</th>", text).start()
    body = text[i : text.index("</table>", i)]
    rows = re.findall(r"<tr>(.*?)</tr>", body)[1:]
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r)] for r in rows]


# -- naive recomputations (the test's own loops, not engine/diagnostics.py) --------------------------------------
def _lean(d) -> int:
    p = [x.p_up for x in d.layer("L1").details]
    if len(p) != 3:
        return 0
    return 1 if all(q >= 0.5 for q in p) else (-1 if all(q < 0.5 for q in p) else 0)


def _won(res, k, direction, h=CFG.horizon, spread=CFG.spread):
    """None when the exit bar is past the data, else whether the trade won after the spread."""
    i = res.start + k
    c = res.bars.close
    return None if i + h >= len(c) else bool(direction * (c[i + h] - c[i]) - spread > 0)


def _accepted(d) -> bool:
    return d.first_veto not in ("input", "internal")


@pytest.mark.slow
def test_funnel_and_pass_rates_alone_match_a_count_over_the_decisions_and_trace(report):
    """The funnel: bars still alive after each layer in the gate's order, counted from each Decision's own
    verdicts (L1 passed, then each Layer-4 module in turn among those it evaluated); the pass rates alone: the
    trace's flags counted bar by bar."""
    path, res, _ = report
    text = path.read_text()
    mods = res.trace.modules
    alive = {"replayed": len(res.decisions), "accepted": sum(_accepted(d) for d in res.decisions)}
    alive["L1"] = sum(d.layer("L1").passed for d in res.decisions)
    for j, m in enumerate(mods):
        alive[f"L4:{m}"] = sum(
            d.layer("L1").passed
            and len(d.layer("L4").details) > j
            and all(r.passed for r in d.layer("L4").details[: j + 1])
            for d in res.decisions
        )
    last = alive[f"L4:{mods[-1]}"] - sum(d.first_veto == "L4" for d in res.decisions)
    alive["L4 (internal error)"] = last
    for name in ("sizing", "L2", "L3"):
        last -= sum(d.first_veto == name for d in res.decisions)
        alive[f"{name} (disabled)" if name in ("L2", "L3") else name] = last
    alive["signals"] = sum(d.action != "NONE" for d in res.decisions)
    assert alive[f"L4:{mods[-1]}"] < alive["L1"] < alive["accepted"]  # the modules do veto: a real funnel
    assert {r[0]: int(r[1]) for r in _table(text, "after (cheapest first)")} == alive
    src = _sources(text)
    assert list(src["funnel"]["y"]) == list(alive) and src["funnel"]["v"].tolist() == list(alive.values())

    want = {}
    for j, name in enumerate(["L1", *mods]):
        k = n = 0
        for b, d in enumerate(res.decisions):
            ev = _accepted(d) and (j == 0 or bool(res.trace.evaluated[b, j - 1]))
            ok = d.layer("L1").passed if j == 0 else bool(res.trace.passed[b, j - 1])
            n += ev
            k += ev and ok
        want[name] = [str(n), str(k), f"{k / n:.1%}"]
    assert {r[0]: r[1:] for r in _table(text, "layer alone")} == want
    # the trace evaluates every module on every accepted bar; the gate (cheapest first) does not
    assert int(want["uncertainty"][0]) > res.metrics["module_funnel"]["uncertainty"]["evaluated"]
    assert np.allclose(src["pass_alone"]["rate"], [int(v[1]) / int(v[0]) for v in want.values()], atol=1e-6)


@pytest.mark.slow
def test_joint_pass_sentence_matches_a_count_over_the_trace(report):
    """ "All N layers passed together on X% of bars; the product of their pass rates ... is Y": the layers with a
    pass rate strictly between 0 and 1 on every accepted bar, counted here."""
    path, res, _ = report
    text = path.read_text()
    tr = res.trace
    flags = {"L1": [d.layer("L1").passed for d in res.decisions]}
    flags |= {m: list(tr.passed[:, j]) for j, m in enumerate(tr.modules)}
    acc = [_accepted(d) for d in res.decisions]
    mixed = [k for k, f in flags.items() if 0 < np.mean([x for x, a in zip(f, acc, strict=True) if a]) < 1]
    together = np.mean([all(flags[k][b] for k in mixed) for b in range(len(acc)) if acc[b]])
    product = np.prod([np.mean([x for x, a in zip(flags[k], acc, strict=True) if a]) for k in mixed])
    assert len(mixed) >= 2
    want = (
        f"All {len(mixed)} layers ({', '.join(mixed)}) passed together on {together * 100:.3g}% of {sum(acc)} bars; "
        f"the product of their pass rates, which assumes independence, is {product * 100:.3g}%."
    )
    assert html.escape(want) in text


def _naive_rules(res, rows):
    """Each fast layer's rule alone on ``rows``: (signals, correct, precision interval, base rate)."""
    out = {}
    for j, name in enumerate(["L1", *res.trace.modules]):
        wins, base = [], []
        for k in rows:
            d = res.decisions[k]
            direction = _lean(d)
            evaluated = _accepted(d) and (j == 0 or bool(res.trace.evaluated[k, j - 1]))
            won = _won(res, k, direction)
            if not direction or not evaluated or won is None:
                continue
            base.append(won)
            if d.layer("L1").passed if j == 0 else res.trace.passed[k, j - 1]:
                wins.append(won)
        ci, _ = precision_interval(np.array(wins, dtype=float), CFG.horizon)
        out[name] = (len(wins), sum(wins), ci, float(np.mean(base)))
    return out


@pytest.mark.slow
def test_layer_alone_rules_and_the_strongest_rule_match_a_naive_recomputation(report):
    """The rules table (signals, correct, base rate) on every bar, and the strongest rule: chosen on the first half
    by the lower end of its interval (at least 30 signals), reported on the second half only."""
    path, res, _ = report
    text = path.read_text()
    n = len(res.decisions)
    full = _naive_rules(res, range(n))
    table = {r[0]: r[1:] for r in _table(text, "rule: layer alone")}
    assert {k: (int(v[0]), int(v[1])) for k, v in table.items()} == {k: v[:2] for k, v in full.items()}
    assert all(v[3] == f"{full[k][3]:.1%} of " + v[3].split(" of ")[1] for k, v in table.items())
    first = _naive_rules(res, range(n // 2))
    # at least 30 signals, and leaving out >= 5% of the candidates (a rule passing nearly all is the base rate)
    n_cand = {k: sum(_lean(res.decisions[i]) != 0 and _won(res, i, _lean(res.decisions[i])) is not None
                     and (k == "L1" or bool(res.trace.evaluated[i, res.trace.modules.index(k)]))
                     for i in range(n // 2)) for k in first}  # fmt: skip
    ok = {k: v for k, v in first.items() if v[0] >= 30 and v[0] < 0.95 * n_cand[k]}
    best = max(ok, key=lambda k: (ok[k][2][0] - ok[k][3], ok[k][0]))  # lower bound above the base rate
    h = CFG.horizon
    s, c, ci, base = _naive_rules(res, range(n // 2 + h, n))[best]  # scored from h bars after the first half
    strong = html.unescape(text.split("<p class=honest id=strongest>", 1)[1].split("</p>", 1)[0])
    assert strong.startswith(f"Strongest layer alone: {best}, chosen on the first half (bars 0–{n // 2 - 1}")
    assert f"scored on the second half only (bars {n // 2 + h}–{n - 1})" in strong
    assert f"precision {c / s:.1%} [{ci[0]:.1%}, {ci[1]:.1%}] of {s} signals, beside the base rate {base:.1%}" in strong


@pytest.mark.slow
def test_precision_coverage_points_match_a_naive_loop(report):
    """Each plotted point of the Layer-1 rule's curve: signals, precision after the full spread over the configured
    horizon, and coverage (signals over the bars that have Layer-1 probabilities and an exit inside the data)."""
    path, res, _ = report
    pc = _sources(path.read_text())["precision_coverage"]
    assert len(pc["t"]) > 10
    confs = []
    for d in res.decisions:
        p = [x.p_up for x in d.layer("L1").details]
        confs.append(min(q if q >= 0.5 else 1 - q for q in p) if len(p) == 3 else None)
    scorable = sum(c is not None and _won(res, k, 1) is not None for k, c in enumerate(confs))
    for t, cov, prec, n in zip(pc["t"], pc["cov"], pc["prec"], pc["n"], strict=True):
        won = [
            w
            for k, d in enumerate(res.decisions)
            if _lean(d) and confs[k] >= float(t) and (w := _won(res, k, _lean(d))) is not None
        ]
        assert (n, prec) == (len(won), pytest.approx(np.mean(won), abs=1e-12)), t
        assert cov == pytest.approx(len(won) / scorable, abs=1e-12), t


@pytest.mark.slow
def test_candles_are_bucketed_ohlc_and_equity_is_the_trades_after_costs(report, monkeypatch, tmp_path):
    """A long replay is drawn in buckets (here forced: at most 300 candles for 800 bars): open of the first bar,
    highest high, lowest low, close of the last; the equity curve is the running sum of each trade's pips after the
    spread at its exit bar's close, counted here from the bars and the Decisions."""
    _, res, _ = report
    monkeypatch.setattr(report_mod, "MAX_POINTS", 300)
    src = _sources(write_report(res, tmp_path / "r.html").read_text())
    n = len(res.decisions)
    step = -(-n // 300)
    b = res.bars
    want = []
    for a in range(0, n, step):
        i, j = res.start + a, res.start + min(a + step, n)
        want.append((b.open[i], max(b.high[i:j]), min(b.low[i:j]), b.close[j - 1]))
    got = list(zip(src["candles"]["o"], src["candles"]["h"], src["candles"]["l"], src["candles"]["c"], strict=True))
    assert len(got) == len(want) <= 300
    assert np.allclose(np.array(got, dtype=float), np.array(want), rtol=0, atol=1e-5)
    assert sum(len(w) for w in src["candles"]["when"]) > 0 and all("bars:" in w for w in src["candles"]["when"])

    eq, x = [0.0], [int(b.ts[res.start]) / 1e6]
    for k, d in enumerate(res.decisions):
        i = res.start + k
        if d.action == "NONE" or i + CFG.horizon >= len(b):
            continue
        direction = 1 if d.action == "BUY" else -1
        unit = direction * (b.close[i + CFG.horizon] - b.close[i]) - CFG.spread
        eq.append(eq[-1] + d.size * unit / CFG.pip)
        x.append(int(b.ts[i + CFG.horizon]) / 1e6 + 3600e3)  # the exit bar's close (H1 bars)
    monkeypatch.setattr(report_mod, "MAX_POINTS", 10_000)
    full = _sources(write_report(res, tmp_path / "full.html").read_text())["equity"]
    assert len(eq) > 100 and np.allclose(full["eq"], eq, atol=0.01) and np.allclose(full["x"], x, rtol=0, atol=1)


@pytest.mark.slow
def test_module_pass_rates_match_a_count_over_the_decisions(report):
    """Every module's evaluated/passed counts in metrics.json and the report, counted here from the decisions."""
    path, res, _ = report
    count: dict[str, list[int]] = {}
    for d in res.decisions:
        for r in d.layer("L4").to_dict()["details"]:
            c = count.setdefault(r["module"], [0, 0])
            c[0] += 1
            c[1] += r["passed"] is True
    assert count and {k: [v["evaluated"], v["passed"]] for k, v in res.metrics["module_funnel"].items()} == count
    table = path.read_text().split("<h2>Layer-4 modules</h2>", 1)[1].split("</table>", 1)[0]
    for k, (e, p) in count.items():
        assert f"<tr><th>{k}</th><td>{e}</td><td>{p}</td><td>{p / e:.1%}</td></tr>" in table


def _headline(text: str) -> dict[str, str]:
    table = text.split("<h2>Headline (out of sample)</h2>", 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table))


@pytest.mark.slow
def test_headline_figures_match_an_independent_recomputation(report):
    """Precision, base rate and P&L in the report, recomputed from the bars and the decisions in a naive loop
    (mid prices, the full entry spread, Decision.size), not from the replay's own trades."""
    path, res, _ = report
    text = path.read_text()
    b, h, s = res.bars, CFG.horizon, CFG.spread
    wins = n = 0
    pnl = 0.0
    base_won = {1: 0, -1: 0}
    scorable = 0
    mix = {1: 0, -1: 0}
    for k, d in enumerate(res.decisions):
        i = res.start + k
        if i + h >= len(b):
            continue
        move = b.close[i + h] - b.close[i]
        scorable += 1
        for direction in (1, -1):
            base_won[direction] += direction * move - s > 0
        if d.action != "NONE":
            direction = 1 if d.action == "BUY" else -1
            unit = direction * move - s
            wins, n, pnl = wins + (unit > 0), n + 1, pnl + d.size * unit / CFG.pip
            mix[direction] += 1
    base = (mix[1] * base_won[1] + mix[-1] * base_won[-1]) / scorable / n
    assert {d.size for d in res.decisions if d.action != "NONE"} == {0.6}  # a size other than 1 is what is scored
    head = _headline(text)
    assert head["precision after spread (2-bar trades)"].startswith(f"{wins / n:.1%} [")
    assert head["base rate, same directions on every replayed bar"].startswith(f"{base:.1%}")
    assert head["P&amp;L (pips × size, after spread)"] == f"{pnl:.1f}"
    psr = [v for k, v in head.items() if k.startswith("probabilistic Sharpe")]
    assert psr == [f"{res.metrics['probabilistic_sharpe']:.3f}"] and "deflated" not in text.lower()
    assert "Precision interval: Wilson interval on the Hansen–Hodrick effective number of trades" in text
    assert "Sharpe figures assume independent trades, but trades 2 bars long overlap" in text


@pytest.mark.slow
def test_embedded_metrics_are_strict_json_equal_to_metrics_json(report):
    path, _, files = report

    def refuse(name):
        raise ValueError(name)

    island = _parse(path.read_text()).json["metrics"]
    on_disk = json.loads(open(files["metrics.json"]).read(), parse_constant=refuse)
    assert json.loads(island, parse_constant=refuse) == on_disk


def test_layer1_charts_score_the_configured_horizon(rng, tmp_path):
    """Regression (#12.6): the reliability chart always scored the next bar's move. Reference: a naive loop over
    the move across ``horizon`` bars, binned as the table says. The replay here has no trace (trace=False): the
    Layer-1 charts come from the Decisions, the layer charts say why they are missing."""
    bars = sample_bars()[:900]
    start, h = 300, 4
    p_up = rng.uniform(0.02, 0.98, len(bars) - start)
    decs = [_decision(int(bars.ts[start + k]), "NONE", p_up=float(p)) for k, p in enumerate(p_up)]
    cfg = replace(CFG, horizon=h)
    res = ReplayResult(
        bars, start, decs, [], metrics_from(bars, start, decs, trades_from(bars, start, decs, cfg), cfg), horizon=h
    )
    text = write_report(res, tmp_path / "r.html").read_text()
    assert fetches(text) == []
    edges = [0.5 + 0.05 * j for j in range(11)]
    want = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        hits = []
        for k, p in enumerate(p_up):
            i = start + k
            if i + h >= len(bars) or bars.close[i + h] == bars.close[i]:
                continue
            conf = max(p, 1 - p)
            if a <= conf < b or (b >= 1 and conf == b):
                hits.append((p >= 0.5) == (bars.close[i + h] > bars.close[i]))
        if hits:
            want.append([f"{a:.2f}–{b:.2f}", str(len(hits)), f"{np.mean(hits):.3f}"])
    assert [[r[0], r[1], r[3]] for r in _table(text, "confidence")] == want
    assert f"direction of the move over {h} bar(s), before costs" in text
    assert f"share of its {h}-bar trades that won after the full entry spread" in text
    assert "carries no layer trace" in text and "reliability" in _sources(text)


# -- edge cases --------------------------------------------------------------------------------------------------
def _cut(res: ReplayResult, k: int, *, silent: bool = False, interrupted: bool = False) -> ReplayResult:
    """The first ``k`` replayed bars of ``res`` (metrics recomputed), optionally with every signal turned into a
    veto, as a replay stopped there would have made them."""
    decs = res.decisions[:k]
    if silent:
        decs = [replace(d, action="NONE", size=0.0, first_veto=d.first_veto or "L1") for d in decs]
    tr = res.trace
    cut = LayerTrace(
        *(getattr(tr, f.name)[:k] if f.name != "modules" else tr.modules for f in dataclasses.fields(LayerTrace))
    )
    trades = trades_from(res.bars, res.start, decs, CFG)
    m = metrics_from(res.bars, res.start, decs, trades, CFG) | {"interrupted": interrupted}
    m["costs"] = res.metrics["costs"]
    return replace(res, decisions=decs, trades=trades, metrics=m, trace=cut, interrupted=interrupted)


@pytest.mark.slow
@pytest.mark.parametrize(
    "k,silent,interrupted",
    [(0, False, True), (1, False, False), (3, False, False), (40, True, False), (120, False, True)],
)
def test_tiny_silent_and_interrupted_replays_say_so_in_text(report, tmp_path, k, silent, interrupted):
    _, res, _ = report
    r = _cut(res, k, silent=silent, interrupted=interrupted)
    text = write_report(r, tmp_path / "r.html").read_text()
    assert fetches(text) == [] and "<h2>Headline (out of sample)</h2>" in text
    if not r.trades:
        assert "No trades (" in text and "so no equity curve" in text
        assert "equity" not in _sources(text)
    if silent:
        assert "No signal was emitted on the replayed bars." in text
    if k < 2:
        assert "Fewer than two replayed bars" in text
    if interrupted:
        assert "The replay was interrupted" in text
    assert json.loads(_parse(text).json["metrics"])["bars"] == k


def test_llm_probe_is_shown_escaped_in_a_collapsible_block(report, tmp_path):
    _, res, _ = report
    probe = {
        "ts": int(res.bars.ts[-3]),
        "layers": [
            {"name": "L1", "passed": False, "reason": "lightgbm 0.52 < 0.95", "details": []},
            {
                "name": "L2",
                "passed": True,
                "reason": "judge says BUY, certainty 0.97",
                "details": [
                    {
                        "role": "judge",
                        "direction": "BUY",
                        "certainty": 0.97,
                        "think": "the trend <script>alert(1)</script> & momentum agree",
                        "raw_answer": '{"direction": "BUY"}',
                    }
                ],
            },
            {
                "name": "L3",
                "passed": False,
                "reason": "bear strength 0.8 > 0.5",
                "details": [
                    {"role": "summary", "bull_confidence": 0.7, "bear_strength": 0.8},
                    {"role": "bear", "round": 1, "think": "spread widens", "raw_answer": "{}"},
                ],
            },
        ],
    }
    text = write_report(res, tmp_path / "r.html", probe=probe).read_text()
    block = text.split("<details id=llm-probe>", 1)[1].split("</details>", 1)[0]
    assert "the trend &lt;script&gt;alert(1)&lt;/script&gt; &amp; momentum agree" in block
    assert "<script>alert" not in text and "spread widens" in block and "bear strength 0.8 &gt; 0.5" in block
    assert fetches(text) == []
