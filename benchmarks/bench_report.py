"""The replay report's page weight and the time to write it, for replays of 5,000 (default) and 100,000 bars
(``--sizes 5000,100000``: the longer replay takes about 11 minutes here, so ``fxgate bench`` leaves it out).

    python benchmarks/bench_report.py [--json PATH] [--sizes 5000] [--warmup 2000] [--window 50000]
        [--estimators 30] [--modules default|NAME,NAME] [--out DIR] [--no-browser]

Each size N is a walk-forward replay of N bars after ``--warmup`` bars of warm-up (so N Decisions, N traced bars)
on synthetic H1 bars (a Gaussian random walk in log price, 0.1% a bar, lognormal tick volume, no spread column:
the config's 0.8-pip spread is charged), with the LLM layers off, Layer 1 refit every ``--window`` bars on every
bar before (``--estimators`` trees per booster, one fold: refits are few and cheap, the report is what is
measured), the L1 threshold at 0.5 so that there are signals and trades to draw, and the default 18 Layer-4
modules (``--modules`` to change). The bundled EURUSD H1 sample (5,000 bars, 3,000 replayed) is measured too: the
demo's report.

Per replay: bars, signals, trades, the report's size (bytes; the BokehJS inline share separately: the same for
every report), the time of ``write_report`` (median of 3 calls; the replay's own time alongside, for context), and,
unless ``--no-browser`` or without playwright/Debian's chromium, the time until headless Chromium has rendered every
Bokeh document (file://, every other request aborted and counted). A figure, not a test: nothing here asserts.

Target (issue #18): the page weight stays reasonable (a 5,000-bar replay's report a few MB at most).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

NS_H1 = 3_600 * 10**9
DEFAULT_SIZES = "5000"  # `--sizes 5000,100000` adds the 100,000-bar replay (11 minutes on 2 cores)


def synthetic(n: int, seed: int = 18) -> Any:
    from fxgate.engine.core.bars import Bars

    rng = np.random.default_rng(seed)
    ts = np.datetime64("2012-01-02T00:00", "ns").astype(np.int64) + np.arange(n, dtype=np.int64) * NS_H1
    close = 1.2 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[1.2, close[:-1]]
    wick = np.abs(rng.normal(0, 5e-4, (2, n))) * close
    high = np.maximum(open_, close) + wick[0]
    low = np.minimum(open_, close) - wick[1]
    volume = np.round(rng.lognormal(7, 0.5, n))
    return Bars(ts, open_, high, low, close, volume, symbol="SYNTH", timeframe="H1")


def config(args: argparse.Namespace, modules: str) -> Any:
    from fxgate.engine.config import GateConfig, L1Config, L2Config, L3Config, L4Config, ReplayConfig

    l4 = L4Config() if modules == "default" else L4Config(modules=tuple(modules.split("+")))
    return GateConfig(
        horizon=2,
        spread=8e-5,
        l1=L1Config(threshold=0.5),
        l2=L2Config(enabled=False),
        l3=L3Config(enabled=False),
        l4=l4,
        replay=ReplayConfig(train_bars=args.warmup, window_bars=args.window, n_estimators=args.estimators, folds=1),
    )


def render_seconds(path: Path) -> dict[str, Any] | None:
    """Seconds from navigation until every Bokeh document is idle in headless Chromium; None without a browser."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    blocked: list[str] = []
    errors: list[str] = []
    url = path.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def route(r: Any) -> None:
            if r.request.url == url or r.request.url.startswith(("data:", "blob:")):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        t0 = time.perf_counter()
        page.goto(url, wait_until="load")
        page.wait_for_function(
            "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents.every(d => d.is_idle)",
            timeout=300_000,
        )
        seconds = time.perf_counter() - t0
        heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
        browser.close()
    return {"render_s": seconds, "js_heap_bytes": heap, "blocked_requests": len(blocked), "errors": errors[:3]}


_SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.S)


def composition(text: str) -> dict[str, int]:
    """Bytes of the report by part: the inline BokehJS bundles (the same in every report), the Bokeh documents'
    JSON (the charts' data), the metrics island, and everything else (HTML, tables, CSS, the embed script)."""
    parts = {"bokehjs": 0, "documents_json": 0, "metrics_json": 0}
    for m in _SCRIPT.finditer(text):
        attrs, body = m.group(1), m.group(2)
        n = len(m.group(0).encode())
        if "/* BEGIN bokeh" in body[:200]:
            parts["bokehjs"] += n
        elif 'id="metrics"' in attrs:
            parts["metrics_json"] += n
        elif "application/json" in attrs:
            parts["documents_json"] += n
    parts["rest"] = len(text.encode()) - sum(parts.values())
    return parts


def measure(name: str, bars: Any, cfg: Any, out_dir: Path, browser: bool) -> dict[str, Any]:
    from fxgate.engine.replaying import replay
    from fxgate.engine.report import write_report

    print(f"--> {name}: replaying {len(bars) - cfg.replay.train_bars:,} of {len(bars):,} bars ...", flush=True)
    t0 = time.perf_counter()
    res = replay(bars, cfg)
    replay_s = time.perf_counter() - t0
    path = out_dir / f"report_{name}.html"
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        write_report(res, path, cfg.hash)
        times.append(time.perf_counter() - t0)
    row = {
        "name": name,
        "bars": len(bars),
        "replayed": len(res.decisions),
        "signals": int(res.metrics.get("signals", 0)),
        "trades": len(res.trades),
        "modules": len(res.trace.modules) if res.trace is not None else 0,
        "bytes": path.stat().st_size,
        "composition": composition(path.read_text()),
        "write_report_s": statistics.median(times),
        "write_report_s_all": times,
        "replay_s": replay_s,
        "path": str(path),
    }
    if browser:
        row["browser"] = render_seconds(path)
    b = row.get("browser") or {}
    print(
        f"    {row['bytes']:,} bytes, write_report {row['write_report_s']:.2f} s (replay {replay_s:.0f} s)"
        + (f", rendered in {b['render_s']:.1f} s" if b else ""),
        flush=True,
    )
    return row


def code_version() -> str:
    here = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "engine/report.py"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return rev.stdout.strip() + (" + uncommitted engine/report.py" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help="synthetic replays, comma-separated: N[:MODULES], N replayed bars, MODULES the Layer-4 modules "
        "joined by + (default: the 18 default modules)",
    )
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--window", type=int, default=50_000)
    ap.add_argument("--estimators", type=int, default=30)
    ap.add_argument("--no-sample", action="store_true", help="skip the bundled EURUSD sample's replay")
    ap.add_argument("--out", type=Path, default=None, help="keep the reports here (default: a temporary folder)")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    browse = not args.no_browser

    from fxgate.engine import sample_bars

    out: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": code_version(),
        "config": {k: getattr(args, k) for k in ("warmup", "window", "estimators", "sizes")},
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not args.no_sample:
            out["rows"].append(measure("eurusd_sample", sample_bars(), config(args, "default"), out_dir, browse))
        for item in args.sizes.split(","):
            n, _, modules = item.partition(":")
            bars = synthetic(args.warmup + int(n))
            name = f"synthetic_{n}" + (f"_{modules}" if modules else "")
            out["rows"].append(measure(name, bars, config(args, modules or "default"), out_dir, browse))
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    print(f"\ncode: {out['code']}")
    head = ("replay", "replayed", "modules", "bytes", "BokehJS", "doc JSON", "write s", "render s", "replay s")
    print(f"{head[0]:<22}" + "".join(f"{h:>10}" for h in head[1:]))
    for r in out["rows"]:
        b = r.get("browser") or {}
        render = f"{b['render_s']:.1f}" if b else "-"
        c = r["composition"]
        print(
            f"{r['name']:<22}{r['replayed']:>10,}{r['modules']:>10}{r['bytes']:>10,}{c['bokehjs']:>10,}"
            f"{c['documents_json']:>10,}{r['write_report_s']:>10.2f}{render:>10}{r['replay_s']:>10.0f}"
        )
    five = next((r for r in out["rows"] if r["name"] == "synthetic_5000"), None)
    out["summary"] = [
        {
            "figure": f"report size, {r['replayed']:,}-bar replay ({r['name']})",
            "ours": f"{r['bytes'] / 1e6:.2f} MB",
            "reference": "-",
            "ratio": "-",
            "target": "a few MB at most" if r is five else "-",
            "met": (r["bytes"] <= 5_000_000) if r is five else None,
        }
        for r in out["rows"]
    ]
    write_json(args.json, out)


if __name__ == "__main__":
    main()
