"""``fxgate replay --executor ray``: the same outputs as the local run, byte for byte except what is measured.

Two files (sample_bars slices, 20 trees, 300-bar windows) are replayed with the local executor and then on a local
Ray instance (``ray.init(num_cpus=2)``), and every output is compared:

* ``trades.csv`` and ``layers.parquet``: byte for byte;
* ``metrics.json``: equal as JSON once its ``latency_us`` key (measured microseconds) is removed; its ``refits``
  carry each fit's ``bundle_hash``, so a window fitted on other bars fails here;
* ``decisions.parquet``: every column equal but the ``*_latency_us`` columns, and ``decision_json`` equal once every
  ``latency_us`` field in it is removed;
* ``report.html`` and ``summary.html``: equal once the random element ids Bokeh draws (UUIDs, and its ``p1234``
  counters, which depend on how many charts the process drew before) are renumbered in order of appearance, and
  the latency parts are removed (the latency table, the latency histograms' data sources and ``latency_us`` in the
  embedded metrics);
* ``run.json``: its ``timings`` name every scheduled fit (where it ran, and its seconds); ids and times differ.

Latencies differ between ANY two runs, so nothing else could be compared for them. Skipped with the reason when ray
cannot be imported, except under ``CI=true`` (CI installs the ``cluster`` extra): there it fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from fxgate.engine import sample_bars
from fxgate.engine.cli import cli
from fxgate.engine.config import load_config
from fxgate.engine.replaying import fit_schedule

CONFIG = (
    "spread = 0.00008\n[l2]\nenabled = false\n[l3]\nenabled = false\n"
    "[replay]\ntrain_bars = 2000\nwindow_bars = 300\nn_estimators = 20\nfolds = 1\n"
)
SLICES = {"EURUSD": slice(0, 2600), "GBPUSD": slice(1000, 3600)}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PID = re.compile(r'"p\d{4,}"')


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ray cannot be imported under CI ({exc}): CI installs fxgate[cluster]")
        pytest.skip(f"ray cannot be imported ({exc}); pip install 'fxgate[cluster]'")
    return ray


@pytest.fixture(scope="module")
def local_ray():
    ray = _ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _renumber(text: str, pat: re.Pattern, tag: str) -> str:
    """Each distinct match of ``pat`` replaced by ``tag`` with its {n}, the order of its first appearance."""
    seen: dict[str, str] = {}
    return pat.sub(lambda m: seen.setdefault(m.group(0), tag.format(n=len(seen))), text)


def _no_latency(o: Any) -> Any:
    if isinstance(o, dict):
        if str((o.get("attributes") or {}).get("name", "")).startswith("latency_"):
            return "<latency data source>"
        return {k: _no_latency(v) for k, v in o.items() if k != "latency_us"}
    if isinstance(o, list):
        return [_no_latency(v) for v in o]
    return o


def _json_script(m: re.Match) -> str:
    data = json.loads(m.group(2))  # every JSON island of the page parses (a renumbering that broke one fails here)
    return m.group(1) + json.dumps(_no_latency(data), sort_keys=True) + "</script>"


def normalized_html(text: str) -> str:
    """A report or summary page with Bokeh's random ids renumbered and every latency part removed."""
    text = _renumber(text, _UUID, "uuid-{n}")
    text = _renumber(text, _PID, '"pid-{n}"')
    text = re.sub(r"(<h2>Latency per bar \(µs\)</h2>.*?)<table>.*?</table>", r"\1<table/>", text, flags=re.S)
    return re.sub(r'(<script type="application/json"[^>]*>)(.*?)</script>', _json_script, text, flags=re.S)


def _decisions(p: Path) -> tuple[pd.DataFrame, list[Any]]:
    d = pd.read_parquet(p)
    keep = [c for c in d.columns if not c.endswith("_latency_us") and c != "decision_json"]
    return d[keep], [_no_latency(json.loads(s)) for s in d["decision_json"]]


def assert_same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in ("trades.csv", "layers.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ma.pop("latency_us"), mb.pop("latency_us")
    assert ma["refits"] == mb["refits"]  # each window's bundle_hash: the same models
    assert json.dumps(ma, sort_keys=True) == json.dumps(mb, sort_keys=True)
    (fa, ja), (fb, jb) = _decisions(a / "decisions.parquet"), _decisions(b / "decisions.parquet")
    pd.testing.assert_frame_equal(fa, fb, check_exact=True)
    assert ja == jb
    ra, rb = (normalized_html((d / "report.html").read_text()) for d in (a, b))
    assert ra == rb, _first_difference(ra, rb)


def _first_difference(x: str, y: str) -> str:
    i = next((k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    return f"first difference at {i}: {x[max(0, i - 200) : i + 200]!r} vs {y[max(0, i - 200) : i + 200]!r}"


@pytest.mark.slow
def test_ray_replay_writes_the_local_outputs(tmp_path, local_ray):
    cfg = tmp_path / "gate.toml"
    cfg.write_text(CONFIG)
    files = []
    for sym, sl in SLICES.items():
        p = tmp_path / f"{sym}.csv"
        sample_bars()[sl].to_csv(p)
        files += ["--data", str(p)]
    base = ["replay", *files, "--config", str(cfg)]
    # the local run in a fresh process, as a user runs it: the Ray tasks are fresh processes too, while this pytest
    # process carries whatever earlier tests left (thread pools, compiled kernels), which shifted a fit's last bits
    # in a full-suite run
    local = subprocess.run(
        [sys.executable, "-c", "from fxgate.engine.cli import main; main()", *base, "--out", str(tmp_path / "local")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert local.returncode == 0, local.stdout + local.stderr
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "ray"), "--executor", "ray"])
    assert r.exit_code == 0, r.output
    assert "timings (every fit in run.json): 2 Layer-1 fits" in r.output
    schedule = fit_schedule(2600, load_config(cfg))
    assert schedule == [2000, 2300]
    for sym in SLICES:
        a, b = tmp_path / "local" / sym, tmp_path / "ray" / sym
        assert_same_outputs(a, b)
        ta, tb = (json.loads((d / "run.json").read_text())["timings"] for d in (a, b))
        assert [f["bars"] for f in ta["refits"]] == [f["bars"] for f in tb["refits"]] == schedule
        assert all(f["where"].startswith("this process") for f in ta["refits"])
        assert all(f["where"].startswith("ray task on ") and f["seconds"] > 0 for f in tb["refits"])
        assert tb["replayed_bars"] == 600 and tb["bars_per_second"] > 0
    sa, sb = (normalized_html((tmp_path / d / "summary.html").read_text()) for d in ("local", "ray"))
    assert sa == sb, _first_difference(sa, sb)


def test_the_normalizer_keeps_what_is_not_latency():
    """The comparison is not vacuous: renumbering keeps distinct ids distinct, and only latency parts go."""
    a = '<p id="00000000-0000-0000-0000-000000000001">x</p><b>"p1001" "p1002" "p1001"</b>'
    b = '<p id="00000000-0000-0000-0000-000000000009">x</p><b>"p2001" "p2002" "p2001"</b>'
    assert normalized_html(a) == normalized_html(b)
    c = '<p id="00000000-0000-0000-0000-000000000009">x</p><b>"p2001" "p2001" "p2001"</b>'
    assert normalized_html(a) != normalized_html(c)
    src = {"type": "object", "attributes": {"name": "latency_L1", "data": [1]}}
    other = {"type": "object", "attributes": {"name": "ohlc", "data": [1]}}
    page = '<script type="application/json" id="x">{}</script>'
    assert normalized_html(page.format(json.dumps([src]))) == normalized_html(
        page.format(json.dumps([{**src, "attributes": {"name": "latency_L1", "data": [2]}}]))
    )
    changed = {**other, "attributes": {"name": "ohlc", "data": [2]}}
    assert normalized_html(page.format(json.dumps([other]))) != normalized_html(page.format(json.dumps([changed])))


def test_options_that_need_the_ray_executor_are_refused(tmp_path):
    p = tmp_path / "EURUSD.csv"
    p.write_text("x")
    r = CliRunner().invoke(cli, ["replay", "--data", str(p), "--out", str(tmp_path / "o"), "--address", "auto"])
    assert r.exit_code == 2 and "--address auto" in r.output and "--executor ray" in r.output
    args = ["replay", "--data", str(p), "--out", str(tmp_path / "o"), "--executor", "ray", "--jobs", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "--jobs 2" in r.output and "Fix" in r.output
