"""The fxgate command line: data check/convert, clean errors without tracebacks."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fxgate.engine import load_bars, resample, sample_bars
from fxgate.engine.cli import cli


def test_data_check_defaults_to_the_sample():
    r = CliRunner().invoke(cli, ["data", "check"])
    assert r.exit_code == 0, r.output
    assert "EURUSD H1, 5000 bars" in r.output and "format generic" in r.output


def test_data_check_bad_file_prints_line_and_fix_without_traceback(tmp_path):
    p = tmp_path / "EURUSD60.csv"
    p.write_text(
        "2017.04.19,12:00,1.07160,1.07220,1.07083,1.07219,1413\n2017.04.19,13:00,1.07214,abc,1.07214,1.07260,1241\n"
    )
    r = CliRunner().invoke(cli, ["data", "check", str(p)])
    assert r.exit_code == 2
    assert f"{p}:2: column 'high': unparsable number 'abc'" in r.output and "Fix:" in r.output
    assert "Traceback" not in r.output


def test_data_check_repair_lists_changes(tmp_path):
    p = tmp_path / "EURUSD60.csv"
    p.write_text(
        "2017.04.19,12:00,1.07160,1.07220,1.07083,1.07219,1413\n2017.04.19,13:00,1.07214,1.07296,1.07214,"
        "1.07260,-1\n2017.04.19,14:00,1.07256,1.07299,1.07170,1.07192,1025\n"
    )
    r = CliRunner().invoke(cli, ["data", "check", "--policy", "repair", str(p)])
    assert r.exit_code == 0, r.output
    assert "line 2: dropped (negative volume -1.0)" in r.output


def test_data_convert_resamples_and_writes_parquet(tmp_path):
    out = tmp_path / "EURUSD_D1.parquet"
    from fxgate.engine import sample_path

    r = CliRunner().invoke(cli, ["data", "convert", str(sample_path()), "--to", "D1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_bars(out) == resample(sample_bars(), "D1")


def test_bad_option_value_is_a_clean_error(tmp_path):
    r = CliRunner().invoke(cli, ["data", "convert", "x.csv", "--out", str(tmp_path / "a.txt")])
    assert r.exit_code == 2 and "use a .csv or .parquet" in r.output


def test_installed_console_script_runs(tmp_path):
    exe = shutil.which("fxgate") or str(Path(sys.executable).parent / "fxgate")
    p = tmp_path / "x.csv"
    p.write_text("nonsense\n")
    done = subprocess.run([exe, "data", "check", str(p)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown bar file format" in done.stderr and "Traceback" not in done.stderr
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("fxgate, version ")


def test_fit_writes_a_bundle_that_loads(tmp_path):
    from fxgate.models.ensemble import TreeEnsemble

    out = tmp_path / "bundle"
    r = CliRunner().invoke(cli, ["fit", "--out", str(out), "--folds", "2", "--estimators", "20", "--spread", "0.00008"])
    assert r.exit_code == 0, r.output
    assert "Layer 1, out of sample" in r.output and "rule (all agree, each >= 0.95)" in r.output
    assert "assumed spread of 8e-05" in r.output
    ens = TreeEnsemble.load(out)
    assert ens.manifest["label_spec"]["default_spread"] == 8e-05 and len(ens.manifest["metrics"]["folds"]) == 2


def test_config_init_writes_a_loadable_default_and_refuses_to_overwrite(tmp_path):
    from fxgate.engine.config import GateConfig, load_config

    p = tmp_path / "gate.toml"
    r = CliRunner().invoke(cli, ["config", "init", str(p)])
    assert r.exit_code == 0 and load_config(p) == GateConfig()
    r = CliRunner().invoke(cli, ["config", "init", str(p)])
    assert r.exit_code == 2 and "--force" in r.output


def test_replay_writes_every_output_and_refuses_an_overlapping_bundle(tmp_path):
    import json

    import pandas as pd

    data = tmp_path / "EURUSD.csv"
    sample_bars()[:2500].to_csv(data)
    cfg = tmp_path / "gate.toml"
    cfg.write_text(
        "spread = 0.00008\n[l2]\nenabled = false\n[l3]\nenabled = false\n"
        "[replay]\ntrain_bars = 2000\nwindow_bars = 300\nn_estimators = 20\nfolds = 1\n"
    )
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["replay", "--data", str(data), "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("decisions.parquet", "layers.parquet", "trades.csv", "metrics.json", "report.html"):
        assert (out / f).exists(), f
    run = json.loads((out / "run.json").read_text())  # written last, naming every file with its size and sha256
    assert run["status"] == "complete" and sorted(run["files"]) == sorted(
        ["decisions.parquet", "layers.parquet", "trades.csv", "metrics.json", "report.html"]
    )
    for f, want in run["files"].items():
        assert want == {"size": (out / f).stat().st_size, "sha256": hashlib.sha256((out / f).read_bytes()).hexdigest()}
    assert run["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == sorted([*run["files"], "run.json"])  # no temporaries left
    m = json.loads((out / "metrics.json").read_text())
    assert m["bars"] == 500 and len(m["refits"]) == 2 and m["disabled_layers"] == ["L2", "L3"]
    assert len(pd.read_parquet(out / "decisions.parquet")) == 500
    assert "bars replayed out of sample" in r.output
    bundle = tmp_path / "bundle"
    assert (
        CliRunner()
        .invoke(cli, ["fit", "--data", str(data), "--out", str(bundle), "--folds", "1", "--estimators", "10"])
        .exit_code
        == 0
    )
    r = CliRunner().invoke(cli, ["replay", "--data", str(data), "--bundle", str(bundle), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "nothing out of sample is left to replay" in r.output
    # a bundle fitted on the first 2000 bars overlaps a file of 2500: refused with the flag that allows it, which works
    early = tmp_path / "early"
    (tmp_path / "first").mkdir()
    sample_bars()[:2000].to_csv(tmp_path / "first" / "EURUSD.csv")
    assert (
        CliRunner()
        .invoke(
            cli,
            [
                "fit",
                "--data",
                str(tmp_path / "first" / "EURUSD.csv"),
                "--out",
                str(early),
                "--folds",
                "1",
                "--estimators",
                "10",
            ],
        )
        .exit_code
        == 0
    )
    args = ["replay", "--data", str(data), "--config", str(cfg), "--bundle", str(early), "--out", str(tmp_path / "c")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "--skip-trained-bars" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, [*args, "--skip-trained-bars"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["bundle"]["skipped_trained_bars"] > 1990 and m["bars"] == 2500 - m["bundle"]["skipped_trained_bars"]


@pytest.mark.slow
def test_demo_runs_on_the_bundled_sample(tmp_path, nano, monkeypatch):
    import json

    monkeypatch.setenv("FXGATE_CACHE", str(nano["dir"].parent))  # the session's nano model, a fresh verdict cache
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.html").exists() and "bars replayed out of sample" in r.output
    assert "99.999%" in r.output
    assert "L2: evaluated on" in r.output and "L3: evaluated on" in r.output and "LLM diagnostic" in r.output
    probe = json.loads((out / "llm_probe.json").read_text())
    l2, l3 = probe["layers"][1], probe["layers"][2]
    assert l2["enabled"] and l2["details"][0]["role"] == "judge" and l2["details"][0]["answer"] is not None
    assert [e["role"] for e in l3["details"]] == ["summary", "bull", "bear", "risk"]
    assert (nano["dir"].parent / "llm-verdicts.sqlite").exists()


def test_replay_jobs_runs_pairs_in_parallel_processes(tmp_path):
    import json

    cfg = tmp_path / "gate.toml"
    cfg.write_text("[replay]\ntrain_bars = 2000\nwindow_bars = 500\nn_estimators = 10\nfolds = 1\n")
    files = []
    for sym, sl in (("EURUSD", slice(0, 2300)), ("GBPUSD", slice(1000, 3300))):
        p = tmp_path / f"{sym}.csv"
        sample_bars()[sl].to_csv(p)
        files += ["--data", str(p)]
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["replay", *files, "--config", str(cfg), "--out", str(out), "--jobs", "2"])
    assert r.exit_code == 0, r.output
    for sym in ("EURUSD", "GBPUSD"):
        assert json.loads((out / sym / "metrics.json").read_text())["bars"] == 300
        assert f"{sym}: 300 bars replayed" in r.output


def test_config_check_loads_the_file_and_names_what_it_enables(tmp_path):
    from fxgate.engine.config import load_config

    p = tmp_path / "gate.toml"
    p.write_text('horizon = 3\n[l2]\nenabled = false\n[l3]\nenabled = false\n[l4]\nmodules = ["vpin", "bocpd"]\n')
    r = CliRunner().invoke(cli, ["config", "check", str(p)])
    assert r.exit_code == 0, r.output
    assert f"config hash {load_config(p).hash}" in r.output
    assert "L1 on, L4 on (2 modules), L2 off, L3 off" in r.output and "horizon 3 bar(s)" in r.output
    r = CliRunner().invoke(cli, ["config", "check", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "missing.toml: cannot read" in r.output


def test_config_init_into_a_directory_is_a_clean_error(tmp_path):
    r = CliRunner().invoke(cli, ["config", "init", str(tmp_path), "--force"])
    assert r.exit_code == 2 and "is a directory" in r.output and isinstance(r.exception, SystemExit)


def test_an_output_in_a_missing_directory_is_a_clean_error(tmp_path):
    from fxgate.engine import sample_path

    out = tmp_path / "no" / "such" / "x.csv"
    r = CliRunner().invoke(cli, ["data", "convert", str(sample_path()), "--out", str(out)])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert f"no such directory (create it first): {out.parent}" in r.output
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("llm", [True, False])
def test_demo_config_sets_spread_and_the_llm_layers_whatever_the_defaults_say(llm):
    import tomllib

    from fxgate.engine.cli.demo import _demo_config

    text, cfg = _demo_config(llm=llm, where="gate.toml")
    raw = tomllib.loads(text)  # read back with the TOML parser, not with fxgate's config code
    assert raw["spread"] == 0.00008
    assert raw["l2"]["enabled"] is llm and raw["l3"]["enabled"] is llm
    assert raw["llm"]["model"] == ("nano" if llm else "")
    assert cfg.l2.enabled is llm and cfg.l3.enabled is llm
    assert text.count("# path to a .gguf file") == 1  # comments kept


def test_encoding_and_decimal_options_reach_the_loader(data_dir):
    latin = data_dir / "latin1_note_EURUSD.csv"
    r = CliRunner().invoke(cli, ["data", "check", str(latin)])
    assert r.exit_code == 2 and "latin-1" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["data", "check", "--encoding", "latin-1", str(latin)])
    assert r.exit_code == 0, r.output
    comma = data_dir / "generic_excel_decimal_comma_EURUSD.csv"
    r = CliRunner().invoke(cli, ["data", "check", "--decimal", ".", str(comma)])
    assert r.exit_code == 2 and "decimal" in r.output.lower()
    r = CliRunner().invoke(cli, ["data", "check", "--decimal", ",", str(comma)])
    assert r.exit_code == 0, r.output


def test_replay_says_what_loading_repaired(tmp_path):
    import pandas as pd

    df = sample_bars()[:2300].to_pandas().reset_index()
    rows = df.to_dict("records")
    rows.insert(11, dict(rows[10]))  # a duplicated row: dropped under repair
    data = tmp_path / "EURUSD.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    cfg = tmp_path / "gate.toml"
    cfg.write_text(
        "[l2]\nenabled = false\n[l3]\nenabled = false\n"
        "[replay]\ntrain_bars = 2000\nwindow_bars = 300\nn_estimators = 10\nfolds = 1\n"
    )
    r = CliRunner().invoke(
        cli, ["replay", "--data", str(data), "--config", str(cfg), "--out", str(tmp_path / "o"), "--policy", "repair"]
    )
    assert r.exit_code == 0, r.output
    assert "repaired: 1 row(s): 1 dropped (lines 13)" in r.output and "duplicate time" in r.output


def test_replay_warns_when_nothing_is_charged(tmp_path):
    import json

    data = tmp_path / "EURUSD.csv"
    sample_bars()[:2100].to_csv(data)  # no spread column
    cfgs = {"free": "", "paid": "spread = 0.00008\n"}
    for name, top in cfgs.items():
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(
            top + "[l2]\nenabled = false\n[l3]\nenabled = false\n"
            "[replay]\ntrain_bars = 2000\nwindow_bars = 300\nn_estimators = 10\nfolds = 1\n"
        )
        out = tmp_path / name
        r = CliRunner().invoke(cli, ["replay", "--data", str(data), "--config", str(cfg), "--out", str(out)])
        assert r.exit_code == 0, r.output
        m = json.loads((out / "metrics.json").read_text())
        warned = "assumed zero cost" in r.output
        assert warned == (name == "free") and ("warning" in m["costs"]) == warned
        assert ("assumed zero cost" in (out / "report.html").read_text()) == warned


def test_the_command_list_is_each_commands_own_help_and_imports_no_command_module():
    """``fxgate --help`` lists the subcommands from the help lines declared beside their import paths, so that it
    imports none of them: each declared line must be the loaded command's own first sentence, and the listing must
    leave every command module (and training, and torch) unimported."""
    import click

    from fxgate.engine.cli import COMMANDS

    ctx = click.Context(cli)
    assert sorted(COMMANDS) == cli.list_commands(ctx)
    for name, (_target, declared) in COMMANDS.items():
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.name == name
        assert declared == cmd.get_short_help_str(limit=10_000), name
    heavy = sorted({t.split(":")[0] for t, _ in COMMANDS.values()} | {"fxgate.training", "torch", "fxgate.engine.gate"})
    code = (
        "import sys; from click.testing import CliRunner; from fxgate.engine.cli import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; print(r.output); "
        f"print(sorted(set({heavy!r}) & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert re.search(r"demo +Replay the bundled EURUSD H1 sample", out) and re.search(r"train +Training data", out)
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("command", "toml"),
    [
        ("replay", '[llm]\nmodel = "nano"\n[l2]\nenabled = false\n[l3]\nenabled = true\n'),  # L3 alone needs it too
        ("replay", '[llm]\nmodel = "nano"\n[l3]\nenabled = false\n'),
        # a debate role on the nano model while [llm] model is another file
        ("replay", '[llm]\nmodel = "/nowhere/x.gguf"\n[l2]\nenabled = false\n[l3]\nbear_model = "nano"\n'),
        ("demo", None),
    ],
)
def test_commands_build_the_nano_model_before_any_gate_reads_it(command, toml, tmp_path, monkeypatch):
    """The gate reads the nano model from the cache only; building it is the CLI's job (training's code), done
    before any gate is built. A stand-in builder that refuses shows it is called first, and its error surfaces
    cleanly."""
    import importlib

    from fxgate.engine.core.errors import FxgateError

    calls = []

    def refuse(**kwargs: object) -> None:
        calls.append(kwargs)
        raise FxgateError("stand-in: the nano model was asked for")

    monkeypatch.setattr(importlib.import_module("fxgate.engine.cli._runs"), "ensure_nano", refuse)
    out = tmp_path / "out"
    if command == "demo":
        argv = ["demo", "--out", str(out)]
    else:
        data, cfg = tmp_path / "EURUSD.csv", tmp_path / "gate.toml"
        sample_bars()[:600].to_csv(data)
        cfg.write_text(toml)
        argv = ["replay", "--data", str(data), "--config", str(cfg), "--out", str(out)]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 2 and "stand-in: the nano model was asked for" in r.output, r.output
    assert len(calls) == 1 and not (out / "run.json").exists()  # before any run directory is claimed
    if command == "demo":  # without the LLM layers it is not asked for: the run goes on to claim its directory
        calls.clear()

        def claimed(*args: object, **kwargs: object) -> None:
            raise FxgateError("stand-in: the run directory was claimed")

        monkeypatch.setattr(importlib.import_module("fxgate.engine.cli._runs"), "start_run", claimed)
        r = CliRunner().invoke(cli, ["demo", "--no-llm", "--out", str(out)])
        assert r.exit_code == 2 and "stand-in: the run directory was claimed" in r.output, r.output
        assert calls == []
