"""`fxgate train data|formulas|eval` from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fxgate.engine import sample_bars
from fxgate.engine.cli import cli
from fxgate.engine.config import GateConfig, L4Config, dump_toml
from fxgate.training.datasets.spec import l4_hash


@pytest.mark.slow
def test_train_data_then_eval(tmp_path, nano):
    p = tmp_path / "EURUSD.csv"
    sample_bars().to_csv(p)
    j = tmp_path / "mine.jsonl"
    j.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": "a"}\n')
    out = tmp_path / "data"
    r = CliRunner().invoke(
        cli,
        [
            "train",
            "data",
            "--bars",
            str(p),
            "--jsonl",
            str(j),
            "--out",
            str(out),
            "--horizon",
            "2",
            "--spread",
            "0.00008",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "certainty targets" in r.output and "imported JSONL" in r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["horizon"] == 2 and m["imported"]["sources"][0]["exact_duplicates"] == 1
    r = CliRunner().invoke(
        cli,
        [
            "train",
            "eval",
            "--model",
            str(nano["q8"]),
            "--data",
            str(out),
            "--limit",
            "5",
            "--think-budget",
            "2",
            "--json",
            str(tmp_path / "e.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "majority" in r.output and json.loads((tmp_path / "e.json").read_text())["model_scores"]["n"] == 5


def test_train_formulas_list_and_samples(tmp_path):
    r = CliRunner().invoke(cli, ["train", "formulas", "--list", "--out", str(tmp_path / "f.jsonl")])
    assert r.exit_code == 0, r.output
    for cat in (
        "alpha158",
        "alpha101",
        "volatility",
        "microstructure",
        "risk",
        "execution",
        "certainty_modules",
        "techniques",
        "total",
    ):
        assert cat in r.output
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) > 200
    assert CliRunner().invoke(cli, ["train", "formulas"]).exit_code == 2
    r = CliRunner().invoke(cli, ["train", "formulas", "--list", "--category", "risk"])
    assert r.exit_code == 0 and "Kelly fraction" in r.output and "Kelly (1956)" in r.output
    assert "alpha158" not in r.output and "f* = p - (1 - p) / b" in r.output
    r = CliRunner().invoke(cli, ["train", "formulas", "--list", "--category", "rsk"])
    assert r.exit_code == 2 and "risk" in r.output and "Traceback" not in r.output


def test_train_data_refuses_a_dated_import_before_writing(tmp_path):
    """A JSONL line dated after the validation cut (here: the last bar's time) is rc 2 with the line named, and
    nothing is written."""
    p = tmp_path / "EURUSD.csv"
    b = sample_bars()[:1000]
    b.to_csv(p)
    last = str(b.times[-1])[:16].replace("T", " ")
    j = tmp_path / "mine.jsonl"
    j.write_text(json.dumps({"instruction": f"EURUSD at {last}: buy?", "output": "no"}) + "\n")
    out = tmp_path / "data"
    r = CliRunner().invoke(cli, ["train", "data", "--bars", str(p), "--jsonl", str(j), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "mine.jsonl:1: dated" in r.output and "validation cut" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_train_data_builds_for_the_served_config(tmp_path):
    """`--config gate.toml`: the prompts are built for its [l4] modules and its horizon, the manifest records its
    [l4] section, and an explicit --horizon the served gate does not have is refused with the key and the fix."""
    p = tmp_path / "EURUSD.csv"
    sample_bars()[:1000].to_csv(p)
    cfg = GateConfig(horizon=2, l4=L4Config(modules=("bocpd", "execution_cost"), params={"bocpd": {"threshold": 0.4}}))
    g = tmp_path / "gate.toml"
    g.write_text(dump_toml(cfg))
    out = tmp_path / "data"
    r = CliRunner().invoke(cli, ["train", "data", "--bars", str(p), "--out", str(out), "--config", str(g)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["horizon"] == 2 and m["serving"]["config"] == str(g)
    assert m["serving"]["l4"]["modules"] == ["bocpd", "execution_cost"] and m["serving"]["l4_hash"] == l4_hash(cfg.l4)
    row = json.loads((out / "test" / "scenarios.jsonl").read_text().splitlines()[0])
    checks = [x.split()[0] for x in row["prompt"][1]["content"].split("\n") if x.split()[1:2] in (["pass"], ["FAIL"])]
    assert checks == ["bocpd", "execution_cost"]
    r = CliRunner().invoke(
        cli, ["train", "data", "--bars", str(p), "--out", str(out), "--config", str(g), "--horizon", "3"]
    )
    assert r.exit_code != 0 and "horizon = 2" in r.output and "--horizon" in r.output
