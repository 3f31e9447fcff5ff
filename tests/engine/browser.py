"""A small headless-Chromium harness for the report's browser test: Playwright driving Debian's chromium.

Never a downloaded browser (no ``playwright install``): :func:`launch` starts the ``chromium`` on PATH (``.ci/run``
installs Debian's package when it is missing). Without playwright or chromium the caller's test is skipped with
the reason, and fails under ``CI`` (the rule of tests/engine/test_report.py).

:func:`visit` opens one file in a fresh page and records what a reader's browser would do with it: every request
that is not the file itself or a ``data:``/``blob:`` URL is aborted and recorded (so an offline report is one that
*attempted* none), console errors and uncaught exceptions, whether every Bokeh document finished rendering and how
many canvases Bokeh drew (Bokeh 3 renders into shadow roots, which the JS below walks). The ``check_*`` functions
turn each of those into an assertion with the evidence in its message, so a test can also show each one failing on a
page built to break it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT = {"width": 1280, "height": 900}
RENDER_TIMEOUT_MS = 60_000

# True once every Bokeh document has rendered all its roots (Document.is_idle: each root view reported idle), false if
# that has not happened within ``ms`` milliseconds.
_RENDERED = """async (ms) => {
  const done = () => !!window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents.every(d => d.is_idle);
  const t0 = performance.now();
  while (!done() && performance.now() - t0 < ms) await new Promise(r => setTimeout(r, 50));
  return done();
}"""

# What Bokeh put on the page, shadow roots included: documents, roots, <canvas> elements (drawn, i.e. with a size).
_INVENTORY = """() => {
  let canvases = 0;
  const walk = (root) => {
    for (const e of root.querySelectorAll('*')) {
      if (e.tagName === 'CANVAS' && e.width > 0 && e.height > 0) canvases += 1;
      if (e.shadowRoot) walk(e.shadowRoot);
    }
  };
  walk(document);
  const docs = window.Bokeh ? Bokeh.documents : [];
  return {documents: docs.length, roots: docs.reduce((n, d) => n + d.roots().length, 0), canvases};
}"""

# A JS function prefix: every Bokeh view (roots and, recursively, their children) and find(name), the figure view of
# that name; its body goes on with ``arg``, the argument.
_VIEWS = """(arg) => {
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const v of Bokeh.index) walk(v);
  const find = (name) => views.find(v => v.frame && v.model.name === name);
"""

# The text of every Bokeh tooltip shown now, after an animation frame (Bokeh draws the tooltip on the next one).
_TOOLTIPS = """async () => {
  await new Promise(r => requestAnimationFrame(r));
  const out = [];
  const walk = (root) => {
    for (const e of root.querySelectorAll('*')) {
      if (e.classList && e.classList.contains('bk-Tooltip') && e.checkVisibility()) {
        const c = e.shadowRoot && e.shadowRoot.querySelector('.bk-tooltip-content');
        const text = c ? c.innerText.trim() : '';
        if (text) out.push(text);
      }
      if (e.shadowRoot) walk(e.shadowRoot);
    }
  };
  walk(document);
  return out;
}"""


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI, where .ci/run provides both, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: .ci/run installs Debian's chromium, the dev extra playwright)")
    pytest.skip(reason)


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Playwright Browser on Debian's chromium, closed afterwards."""
    if CHROMIUM is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium to run this)")
    try:
        from playwright.sync_api import sync_playwright  # optional: the test is skipped without it
    except ImportError as e:
        unavailable(f"playwright cannot be imported ({e}); pip install -e '.[dev]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visit:
    """What loading one file did (see the module docstring); ``page`` stays open inside :func:`visit`."""

    page: Any
    url: str
    size: int
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    rendered: bool = False
    documents: int = 0
    roots: int = 0
    canvases: int = 0


@contextmanager
def visit(browser: Any, path: Path, *, timeout_ms: int = RENDER_TIMEOUT_MS) -> Iterator[Visit]:
    """Load ``path`` over file:// in a fresh context with every other request aborted and recorded."""
    url = Path(path).resolve().as_uri()
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    page = context.new_page()
    v = Visit(page, url, Path(path).stat().st_size)

    def route(r: Any) -> None:
        u = r.request.url
        if u == url or u.startswith(("data:", "blob:")):
            r.continue_()
        else:
            v.blocked.append(u)
            r.abort()

    page.route("**/*", route)
    page.on("websocket", lambda ws: v.blocked.append(ws.url))
    page.on("console", lambda m: m.type == "error" and v.console_errors.append(f"{m.text} @ {m.location}"))
    page.on("pageerror", lambda e: v.page_errors.append(str(e)))
    try:
        page.goto(url, wait_until="load")
        v.rendered = bool(page.evaluate(_RENDERED, timeout_ms))
        inv = page.evaluate(_INVENTORY)
        v.documents, v.roots, v.canvases = inv["documents"], inv["roots"], inv["canvases"]
        yield v
    finally:
        context.close()


# -- the checks ---------------------------------------------------------------------------------------------------
def check_offline(v: Visit) -> None:
    assert v.blocked == [], f"{v.url} tried to fetch {len(v.blocked)} URL(s): {v.blocked[:5]}"


def check_no_console_errors(v: Visit) -> None:
    assert v.console_errors == [] and v.page_errors == [], (
        f"console: {v.console_errors[:5]}; uncaught: {v.page_errors[:5]}"
    )


def check_rendered(v: Visit) -> None:
    assert v.rendered and v.documents > 0 and v.roots > 0 and v.canvases > 0, (
        f"Bokeh did not render: rendered={v.rendered}, documents={v.documents}, roots={v.roots}, canvases={v.canvases}"
    )


def figures(page: Any) -> list[str]:
    """The names of every Bokeh figure on the page (root or inside a layout), in document order."""
    return page.evaluate(_VIEWS + "return views.filter(v => v.frame).map(v => v.model.name); }")


def plot_canvas(page: Any, name: str) -> Any:
    """The element a figure named ``name`` draws into (its ``.bk-Canvas``), scrolled into view."""
    el = page.evaluate_handle(_VIEWS + "const v = find(arg); return v ? v.canvas_view.el : null; }", name).as_element()
    assert el is not None, f"no figure named {name!r} on the page (figures: {figures(page)})"
    el.scroll_into_view_if_needed()
    return el


def source_data(page: Any, name: str) -> dict[str, list[Any]]:
    """The columns of the ColumnDataSource named ``name``, as the browser holds them."""
    data = page.evaluate(
        """(name) => {
          for (const d of Bokeh.documents) {
            const s = d.get_model_by_name(name);
            if (s) return Object.fromEntries([...Object.entries(s.data)].map(([k, v]) => [k, Array.from(v)]));
          }
          return null;
        }""",
        name,
    )
    assert data is not None, f"no data source named {name!r}"
    return data


def image_stats(png: bytes) -> dict[str, float]:
    """Of a screenshot: grey-level std, distinct colours, the share of ink (pixels far from the most common colour,
    the background) and of coloured pixels (chroma, max - min channel, above 60: data glyphs, not grey axes/text)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    flat = rgb.reshape(-1, 3)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    bg = values[np.argmax(counts)]
    bg_rgb = np.array([bg >> 16, (bg >> 8) & 255, bg & 255])
    return {
        "std": float(flat.mean(axis=1).std()),
        "colours": float(len(values)),
        "ink": float((np.abs(flat - bg_rgb).max(axis=1) > 40).mean()),
        "chroma": float(((flat.max(axis=1) - flat.min(axis=1)) > 60).mean()),
    }


def check_not_blank(png: bytes, *, what: str = "screenshot") -> dict[str, float]:
    """Something was drawn (std, colours and ink over thresholds a white or single-colour image cannot reach) and
    some of it in colour (data glyphs, not only grey axes). Returns the stats."""
    s = image_stats(png)
    assert s["std"] > 5 and s["colours"] >= 16 and s["ink"] > 0.005 and s["chroma"] > 0.002, f"{what} is blank: {s}"
    return s


def hover_at(page: Any, plot: str, x: float, y: float) -> list[str]:
    """Move the mouse onto data point (``x``, ``y``) of the figure ``plot`` (Bokeh's own scales map it to the
    screen) and return the text of every tooltip shown."""
    plot_canvas(page, plot)
    pos = page.evaluate(
        _VIEWS
        + """const v = find(arg[0]); const r = v.canvas_view.el.getBoundingClientRect();
        return {x: r.left + v.frame.x_scale.compute(arg[1]), y: r.top + v.frame.y_scale.compute(arg[2])}; }""",
        [plot, x, y],
    )
    page.mouse.move(pos["x"] - 30, pos["y"])  # enter from the side, as a hand would
    page.mouse.move(pos["x"], pos["y"], steps=3)
    return page.evaluate(_TOOLTIPS)


def check_hover(page: Any, plot: str, x: float, y: float, want: str) -> str:
    """A tooltip matching ``want`` (a regex) shows with the mouse on (``x``, ``y``) of ``plot``; returns its text."""
    seen = hover_at(page, plot, x, y)
    hits = [t for t in seen if re.search(want, t)]
    assert hits, f"no tooltip matching {want!r} at ({x}, {y}) of {plot!r}; tooltips shown: {seen}"
    return hits[0]
