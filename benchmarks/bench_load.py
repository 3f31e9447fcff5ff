"""Bar loading: fxgate.load_bars (parse + full validation + gap report) next to plain pandas on the same file.

    python benchmarks/bench_load.py [--rows 1000000] [--repeats 15] [--json PATH]

Writes 1,000,000 synthetic M1 bars (FX hours only, 5-digit prices) as generic CSV, MetaTrader 4 CSV and Parquet
into a temporary folder, then times, interleaved in one run:

* ``load_bars(path)`` against ``pandas.read_csv(path)`` (header=None for MT4) — plain pandas parses the numbers
  but not the times and checks nothing, so the ratio is the price of parsing times and validating every row;
* ``load_bars(path)`` against ``pandas.read_parquet(path)``.

p50 and p99 are over the repeats; peak memory is the extra high-water RSS of one load in a fresh process.
Target (issue #2): CSV within 1.5x of plain pandas, validation included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from _common import write_json

from fxgate.engine import Bars, load_bars

TARGET_CSV_RATIO = 1.5


def make_bars(rows: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    start = np.datetime64("2015-01-05T00:00", "ns").astype(np.int64)  # a Monday
    minute = 60 * 10**9
    # FX week (UTC, winter): Sunday 22:00 -> Friday 22:00 = 7200 minutes open, 2880 closed
    k = np.arange(int(rows * 1.5), dtype=np.int64)
    ts = start - 2 * 3600 * 10**9 + k * minute
    week_pos = k % 10080
    ts = ts[week_pos < 7200][:rows]
    n = len(ts)
    close = np.round(1.1 + np.cumsum(rng.normal(0, 1e-4, n)), 5)
    open_ = np.r_[close[0], close[:-1]]
    high = np.round(np.maximum(open_, close) + rng.uniform(0, 2e-4, n), 5)
    low = np.round(np.minimum(open_, close) - rng.uniform(0, 2e-4, n), 5)
    vol = rng.integers(1, 400, n).astype(float)
    return Bars(ts, open_, high, low, close, vol, symbol="EURUSD", timeframe="M1")


def write_mt4(bars, path: Path) -> None:
    t = pd.DatetimeIndex(bars.times)
    df = pd.DataFrame(
        {
            "d": t.strftime("%Y.%m.%d"),
            "t": t.strftime("%H:%M"),
            "o": bars.open,
            "h": bars.high,
            "l": bars.low,
            "c": bars.close,
            "v": bars.volume.astype(np.int64),
        }
    )
    df.to_csv(path, header=False, index=False, float_format="%.5f")


def _peak_child(kind: str, path: str) -> None:
    small = Path(tempfile.mkdtemp()) / "EURUSD.csv"
    small.write_text("time,open,high,low,close,volume\n2020-01-01 00:00,1,1,1,1,1\n2020-01-01 00:01,1,1,1,1,1\n")
    load_bars(small)  # compile/load cached kernels before the baseline
    fn = {
        "ours": load_bars,
        "pandas_csv": pd.read_csv,
        "pandas_csv_noheader": lambda p: pd.read_csv(p, header=None),
        "pandas_parquet": pd.read_parquet,
    }[kind]
    # Reset the high-water mark (Linux >= 4.0), so imports do not hide the load's own peak.
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    fn(path)
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - base) / 1024}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_mb(kind: str, path: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--_peak", kind, str(path)], capture_output=True, text=True, check=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def time_pair(ours, ref, repeats: int) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    ours()
    ref()  # warm both (page cache, kernels)
    for i in range(repeats):
        for fn, acc in ((ours, a), (ref, b)) if i % 2 == 0 else ((ref, b), (ours, a)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return a, b


def stats(xs: list[float]) -> dict[str, float]:
    return {"p50_s": float(np.percentile(xs, 50)), "p99_s": float(np.percentile(xs, 99)), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--_peak", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._peak:
        _peak_child(*args._peak)
        return

    tmp = Path(tempfile.mkdtemp(prefix="fxgate-bench-load-"))
    bars = make_bars(args.rows)
    files = {
        "csv_generic": tmp / "EURUSD_M1.csv",
        "csv_mt4": tmp / "EURUSD1.csv",
        "parquet": tmp / "EURUSD_M1.parquet",
    }
    bars.to_csv(files["csv_generic"])
    write_mt4(bars, files["csv_mt4"])
    bars.to_parquet(files["parquet"])
    refs = {
        "csv_generic": ("pandas.read_csv(path)", "pandas_csv", lambda p: pd.read_csv(p)),
        "csv_mt4": (
            "pandas.read_csv(path, header=None)",
            "pandas_csv_noheader",
            lambda p: pd.read_csv(p, header=None),
        ),
        "parquet": ("pandas.read_parquet(path)", "pandas_parquet", lambda p: pd.read_parquet(p)),
    }
    results: dict[str, dict] = {}
    for case, path in files.items():
        what, peak_kind, ref = refs[case]
        loaded = load_bars(path)
        assert len(loaded) == len(bars), (case, len(loaded))
        a, b = time_pair(lambda p=path: load_bars(p), lambda p=path, r=ref: r(p), args.repeats)
        sa, sb = stats(a), stats(b)
        ratio = sa["p50_s"] / sb["p50_s"]
        target = TARGET_CSV_RATIO if case.startswith("csv") else None
        results[case] = {
            "file_mb": path.stat().st_size / 2**20,
            "ours": {**sa, "peak_mb": peak_mb("ours", path), "what": "fxgate.engine.load_bars(path)"},
            "reference": {**sb, "peak_mb": peak_mb(peak_kind, path), "what": what},
            "ratio_p50": ratio,
            "ratio_p99": sa["p99_s"] / sb["p99_s"],
            "target_ratio": target,
            "met": None if target is None else ratio <= target,
        }
    summary = [
        {
            "figure": f"load {r_case} ({len(bars):,} M1 bars)",
            "ours": f"{r['ours']['p50_s']:.3f} s",
            "reference": f"{r['reference']['p50_s']:.3f} s ({r['reference']['what']})",
            "ratio": f"{r['ratio_p50']:.2f}x",
            "target": f"<= {r['target_ratio']}x" if r["target_ratio"] else "-",
            "met": r["met"],
        }
        for r_case, r in results.items()
    ]
    out = {
        "benchmark": "load",
        "summary": summary,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "rows": len(bars),
        "repeats": args.repeats,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "cases": results,
    }
    print(
        f"{'case':<12} {'ours p50':>9} {'ours p99':>9} {'ref p50':>9} {'ref p99':>9} {'ratio':>6} {'target':>6} "
        f"{'ours MB':>8} {'ref MB':>7}  reference"
    )
    for case, r in results.items():
        tgt = f"{r['target_ratio']:.1f}x" if r["target_ratio"] else "-"
        print(
            f"{case:<12} {r['ours']['p50_s']:9.3f} {r['ours']['p99_s']:9.3f} {r['reference']['p50_s']:9.3f} "
            f"{r['reference']['p99_s']:9.3f} {r['ratio_p50']:5.2f}x {tgt:>6} {r['ours']['peak_mb']:8.0f} "
            f"{r['reference']['peak_mb']:7.0f}  {r['reference']['what']}"
        )
    write_json(args.json, out)


if __name__ == "__main__":
    main()
