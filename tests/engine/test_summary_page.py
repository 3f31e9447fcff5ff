"""A multi-file ``fxgate replay`` writes summary.html across the files, and every replay prints where its bars
stopped, each layer alone and the report as a file:// URL. Figures are checked against each file's own outputs
(metrics.json, decisions.parquet, layers.parquet) read back here, not against the code that printed them."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from click.testing import CliRunner

from fxgate.engine import sample_path
from fxgate.engine.cli import cli

pytestmark = pytest.mark.slow  # two walk-forward replays through all 18 modules

TOML = """spread = 0.00008
[l2]
enabled = false
[l3]
enabled = false
[replay]
train_bars = 2000
window_bars = 400
n_estimators = 20
folds = 1
"""


class _Table(HTMLParser):
    """The first table's rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    df = pd.read_csv(sample_path())
    df.iloc[:2400].to_csv(d / "EURUSD.csv", index=False)
    df.iloc[2000:4400].to_csv(d / "LATER.csv", index=False)
    df.iloc[:100].to_csv(d / "TINY.csv", index=False)  # fewer bars than train_bars: this file fails
    (d / "gate.toml").write_text(TOML)
    out = d / "out"
    r = CliRunner().invoke(
        cli,
        ["replay", "--data", str(d / "EURUSD.csv"), "--data", str(d / "LATER.csv"), "--data", str(d / "TINY.csv"),
         "--config", str(d / "gate.toml"), "--symbol", "EURUSD", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code != 0 and "TINY.csv" in r.output, r.output  # the failed file fails the command
    return out, r.output


def test_summary_page_rows_match_each_files_metrics(run):
    out, _ = run
    page = (out / "summary.html").read_text()
    t = _Table()
    t.feed(page)
    head, *rows, tiny = t.rows[: 1 + 3]
    assert head[:4] == ["file", "symbol", "bars", "signals"]
    assert [r[0] for r in rows] == ["EURUSD", "LATER"]
    # the failed file has its row: its status and why, no figures
    assert tiny[0] == "TINY" and tiny[1].startswith("failed: ") and "train_bars" in tiny[1], tiny
    for r in rows:
        m = json.loads((out / r[0] / "metrics.json").read_text())
        assert int(r[2]) == m["bars"] and int(r[3]) == m["signals"]
        assert r[6] == f"{m['pnl_pips']:.1f}"
        top = next(iter(m["first_veto"]))
        assert r[7].startswith(f"{top} {m['first_veto'][top]}")
    # links go to each file's own report, relative to the page
    links = re.findall(r'<a href="([^"]+)">report</a>', page)
    assert links == ["EURUSD/report.html", "LATER/report.html"]
    assert all((out / x).is_file() for x in links)


def test_summary_heatmap_is_each_files_pass_rates_from_layers_parquet(run):
    out, _ = run
    page = (out / "summary.html").read_text()
    docs = json.loads(re.search(r"docs_json = '(.*?)';", page).group(1))
    data = None
    for doc in docs.values():
        for ref in _walk(doc):
            if isinstance(ref, dict) and ref.get("name") == "ColumnDataSource":
                data = ref["attributes"]["data"]
    assert data is not None
    cols = {e[0]: e[1] for e in data["entries"]}
    got = {(f, la): r for f, la, r in zip(cols["file"], cols["layer"], cols["rate"], strict=True)}
    for name in ("EURUSD", "LATER"):
        lp = pd.read_parquet(out / name / "layers.parquet")
        acc = lp["accepted"]
        assert got[(name, "L1")] == pytest.approx(lp.loc[acc, "L1_passed"].mean(), abs=1e-4)
        for mod in ("vpin", "regime", "shap"):
            ev = acc & lp[f"{mod}_evaluated"]
            assert got[(name, mod)] == pytest.approx(lp.loc[ev, f"{mod}_passed"].mean(), abs=1e-4)


def _walk(x):
    yield x
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)


def test_console_summary_says_where_bars_stopped(run):
    out, text = run
    for name in ("EURUSD", "LATER"):
        dp = pd.read_parquet(out / name / "decisions.parquet")
        counts = dp["first_veto"].value_counts()
        block = text.split(f"report: {(out / name / 'report.html').resolve().as_uri()}")[0].rsplit(
            " bars replayed out of sample", 1
        )[1]
        line = next(x for x in block.splitlines() if "where bars stopped" in x)
        for veto, k in counts.items():
            assert f"{veto} {k}" in line, (veto, k, line)
        assert line.endswith(f"{int((dp['action'] != 'NONE').sum())} signals")
        assert "each layer alone passes: L1 (>= 0.95) " in block
    urls = re.findall(r"(file://\S+)", text)
    assert urls and all(Path(urlparse(u).path).is_file() for u in urls)
