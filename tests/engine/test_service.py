"""The service behind ``fxgate serve``, in process: the audit log as write-ahead log (bars logged with their
Decisions, re-fed after the last snapshot on start) and the bar lines ``fxgate audit verify`` checks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import numpy as np
import pytest

from fxgate.engine.audit_verify import verify
from fxgate.engine.config import config_from_dict
from fxgate.engine.gate import Gate
from fxgate.engine.loader import sample_bars
from fxgate.engine.service import BarService
from fxgate.models.ensemble import EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

BARS = sample_bars()


@pytest.fixture(scope="module")
def ens():
    e = TreeEnsemble()
    e.fit(
        BARS[:800], LabelSpec("next", 1), EnsembleConfig(n_estimators=8, max_depth=3, quantiles=False), evaluate=False
    )
    return e


def cfg(**server):
    return config_from_dict({"l2": {"enabled": False}, "l3": {"enabled": False}, "server": server})


def row(i: int) -> dict:
    return {
        "ts": int(BARS.ts[i]),
        "open": float(BARS.open[i]),
        "high": float(BARS.high[i]),
        "low": float(BARS.low[i]),
        "close": float(BARS.close[i]),
        "volume": float(BARS.volume[i]),
        "spread": 0.00008 if i % 3 else None,
    }


def post(s: BarService, symbol: str, rows: list[dict]) -> tuple[int, dict]:
    return asyncio.run(s.post_bars({"symbol": symbol, "timeframe": "H1", "bars": rows}))


def state(s: BarService, symbol: str) -> str:
    g = s.pool.gate(symbol)
    return repr((g._snapshot(), g.rejected))


def no_latency(d):
    if isinstance(d, dict):
        return {k: no_latency(v) for k, v in d.items() if k != "latency_us"}
    if isinstance(d, list):
        return [no_latency(v) for v in d]
    return d


def test_every_accepted_bar_is_logged_with_its_bar_and_the_log_verifies(tmp_path, ens):
    s = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    status, body = post(s, "EURUSD", [row(i) for i in range(850, 870)])
    s.close()
    assert status == 200
    lines = [json.loads(x) for x in (tmp_path / "audit" / "audit-000001.jsonl").read_bytes().splitlines()]
    assert [x["bar"] for x in lines] == [row(i) for i in range(850, 870)]  # what was sent, field for field
    assert [x["decision"] for x in lines] == body["decisions"]
    rep = verify(tmp_path / "audit")
    assert rep.ok and rep.lines == 20, str(rep)
    # the newest line is the one the chain cannot protect: the bar check must see its damage on its own
    f = tmp_path / "audit" / "audit-000001.jsonl"
    raw = f.read_bytes().splitlines()
    for plant, words in (
        (lambda b: b.update(ts=b["ts"] + 1), "bar ts"),
        (lambda b: b.update(close="1.07"), "bar close = '1.07': must be a number"),
        (lambda b: b.pop("volume"), "bar: keys"),
    ):
        last = json.loads(raw[-1])
        plant(last["bar"])
        f.write_bytes(b"\n".join([*raw[:-1], json.dumps(last, separators=(",", ":")).encode()]) + b"\n")
        rep = verify(tmp_path / "audit")
        assert not rep.ok and words in rep.problem and rep.where.endswith(":20"), (words, str(rep))


@pytest.mark.parametrize("every", [1, 7])
def test_bars_after_the_last_snapshot_are_refed_from_the_log_on_start(tmp_path, ens, every):
    """A crash between two snapshots (the log closed, no snapshot written at exit): the next service restores the
    snapshot and re-feeds the logged bars after it, so it holds exactly the state of a service never stopped."""
    a = BarService(cfg(snapshot_every=every), timeframe="H1", state_dir=tmp_path / "a", ensemble=ens)
    for sym, lo in (("EURUSD", 850), ("GBPUSD", 860)):
        for k in range(lo, lo + 30, 5):
            assert post(a, sym, [row(i) for i in range(k, k + 5)])[0] == 200
    a.audit.close()  # the crash: the open log file is all that is left, snapshots as they were
    a.pool.close()
    b = BarService(cfg(snapshot_every=every), timeframe="H1", state_dir=tmp_path / "a", ensemble=ens)
    assert b.refed == ({} if every == 1 else {"EURUSD": 30 % every, "GBPUSD": 30 % every})
    assert b.refeed_mismatches == []
    ref = BarService(cfg(), timeframe="H1", state_dir=tmp_path / "ref", ensemble=ens)
    for sym, lo in (("EURUSD", 850), ("GBPUSD", 860)):
        post(ref, sym, [row(i) for i in range(lo, lo + 30)])
        assert state(b, sym) == state(ref, sym)
        got, want = (
            post(b, sym, [row(i) for i in range(lo + 30, lo + 60)]),
            post(ref, sym, [row(i) for i in range(lo + 30, lo + 60)]),
        )
        assert got[0] == want[0] == 200 and no_latency(got[1]) == no_latency(want[1])
    assert b.audit.seq == ref.audit.seq == 120
    b.close()
    ref.close()
    assert verify(tmp_path / "a" / "audit").ok


def test_a_refed_bar_that_decides_differently_from_its_log_is_reported(tmp_path, ens):
    s = BarService(cfg(snapshot_every=100), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    post(s, "EURUSD", [row(i) for i in range(850, 860)])
    s.audit.close()
    s.pool.close()
    f = tmp_path / "audit" / "audit-000001.jsonl"
    raw = f.read_bytes().splitlines()
    last = json.loads(raw[-1])
    last["decision"]["first_veto"] = "L2"  # not what this gate decides on this bar
    f.write_bytes(b"\n".join([*raw[:-1], json.dumps(last, separators=(",", ":")).encode()]) + b"\n")
    s = BarService(cfg(snapshot_every=100), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    assert s.refed == {"EURUSD": 10}
    assert len(s.refeed_mismatches) == 1 and "first veto L2" in s.refeed_mismatches[0]
    s.close()


def test_a_failed_audit_write_stops_the_service_closed(tmp_path, ens):
    s = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    assert post(s, "EURUSD", [row(850)])[0] == 200
    s.audit.close()  # what a broken disk leaves: the log cannot take the next line
    status, body = post(s, "EURUSD", [row(851), row(852)])
    assert status == 503 and body["error"]["kind"] == "unavailable" and "restart" in body["error"]["message"]
    assert post(s, "GBPUSD", [row(851)])[0] == 503  # every symbol: nothing more is accepted unlogged
    assert s.health()["status"] == "broken"
    s.pool.close()
    again = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    g = again.pool.gate("EURUSD")
    assert g.intake.last_ts == int(BARS.ts[850]) and g._bars == 1  # bar 851 was never acknowledged: gone
    assert post(again, "EURUSD", [row(851)])[0] == 200
    again.close()


def test_the_service_matches_a_plain_gate_bar_for_bar(tmp_path, ens):
    s = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    g = Gate(s.config, ens, timeframe="H1", symbol="EURUSD")
    _, body = post(s, "EURUSD", [row(i) for i in range(850, 900)])
    want = [g.on_bar(replace(BARS[i], symbol="EURUSD", spread=row(i)["spread"])).to_dict() for i in range(850, 900)]
    assert no_latency(body["decisions"]) == no_latency(want)
    assert np.isfinite([d["layers"][0]["score"] for d in want if d["layers"][0]["score"] is not None]).all()
    s.close()


def test_a_snapshot_half_written_by_a_killed_server_does_not_stop_the_restart(tmp_path, ens):
    s = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    post(s, "EURUSD", [row(i) for i in range(850, 855)])
    s.close()
    # what a kill -9 during an atomic snapshot write leaves: the temporary of a process that no longer runs
    dead = tmp_path / "snapshots" / ".fxgate-tmp-999999999-abcd1234-GBPUSD.fxgate-snapshot"
    dead.write_bytes(b"half a snapshot")
    again = BarService(cfg(), timeframe="H1", state_dir=tmp_path, ensemble=ens)
    assert again.pool.names() == ["EURUSD"] and again.pool.gate("EURUSD")._bars == 5
    assert not dead.exists()
    again.close()


def test_a_certified_gates_precision_monitor_is_on_metrics(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    c = config_from_dict(
        {
            "l2": {"enabled": False},
            "l3": {"enabled": False},
            "certify": {"target": 0.6, "method": "stated for the test"},
            "l4": {"modules": ["precision_monitor", "vpin"]},
        }
    )
    s = BarService(c, timeframe="H1", state_dir=tmp_path)
    post(s, "EURUSD", [row(i) for i in range(850, 853)])
    got = {
        (x.name, x.labels.get("symbol")): x.value
        for fam in text_string_to_metric_families(s.metrics.text().decode())
        for x in fam.samples
    }
    s.close()
    assert got[("fxgate_precision_monitor_e_value", "EURUSD")] == 1.0  # no signal yet: no evidence against
    assert got[("fxgate_precision_monitor_halted", "EURUSD")] == 0.0
