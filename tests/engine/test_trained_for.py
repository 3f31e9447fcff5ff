"""Whether a trained model is served under the ``[l4]`` section its training data was built for
(engine/llm_setup.py ``trained_for``; the record is written by training/datasets ``serving_record``).

The hash is checked against its written definition (sha256 of the canonical JSON of ``[l4]``, sorted keys, first
16 hex digits) computed here by hand, not with ``l4_hash``; the run directory is laid out as ``fxgate train all``
lays it out (``manifest.json`` listing the GGUF, ``data_manifest.serving``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest

from fxgate.engine import sample_bars
from fxgate.engine.config import DEFAULT_MODULES, CertifyConfig, GateConfig, L2Config, L3Config, L4Config, LlmConfig
from fxgate.engine.gate import Gate
from fxgate.engine.llm_setup import trained_for
from fxgate.models.llm import ModelFileError
from fxgate.training.datasets.spec import check_served_by, serving_record

EIGHT = DEFAULT_MODULES[:8]  # the data builder's fixed list before it took the serving config


def _by_hand(enabled: bool, modules: tuple[str, ...], params: dict) -> str:
    blob = json.dumps({"enabled": enabled, "modules": list(modules), "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run(tmp_path, serving, listed=True, name="model-q8_0.gguf"):
    d = tmp_path / "run"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(b"GGUF")
    dm = {"fxgate_data_manifest": 1, **({"serving": serving} if serving is not None else {})}
    files = {name: {"bytes": 4, "sha256": "0" * 64}} if listed else {}
    (d / "manifest.json").write_text(json.dumps({"fxgate_manifest": 1, "data_manifest": dm, "files": files}))
    return d / name


def test_the_recorded_hash_is_the_canonical_json_of_l4():
    for l4 in (L4Config(), L4Config(modules=EIGHT), L4Config(modules=EIGHT, params={"vpin": {"quantile": 0.7}})):
        rec = serving_record(GateConfig(l4=l4), None)
        assert rec["l4_hash"] == _by_hand(l4.enabled, l4.modules, l4.params)
    assert _by_hand(True, EIGHT, {}) != _by_hand(True, EIGHT[::-1], {})  # the order is part of it


def test_a_model_is_served_only_with_the_l4_it_was_trained_for(tmp_path):
    trained = GateConfig(l4=L4Config(modules=EIGHT))
    f = _run(tmp_path, serving_record(trained, "gate.toml"))
    assert trained_for(str(f), trained.l4) is None
    check_served_by({"serving": serving_record(trained, None)}, trained)
    msg = trained_for(str(f), GateConfig().l4)
    assert msg is not None and str(f) in msg and "were trained on" in msg and "--config" in msg
    assert "would be served" in (trained_for(str(f), L4Config(modules=EIGHT[::-1])) or "")  # the order matters
    other = dataclasses.replace(trained.l4, params={"vpin": {"quantile": 0.7}})
    assert "[l4.params.vpin] quantile = 0.9 was trained on, 0.7 would be served" in (trained_for(str(f), other) or "")
    off = trained_for(str(f), dataclasses.replace(trained.l4, enabled=False)) or ""
    assert "enabled = true was trained on, false served" in off


def test_what_does_not_change_the_prompts_does_not_refuse(tmp_path):
    """A config ``fxgate calibrate`` writes from the training one (precision_monitor first, the certified threshold
    of a path module in its params: here written by hand), an integer written for a float, a default written out:
    the prompts are the same, so the model is served."""
    trained = GateConfig(l4=L4Config(modules=("vpin", "certainty_score", "bocpd", "shap")))
    f = _run(tmp_path, serving_record(trained, "gate.toml"))
    certified = L4Config(
        modules=("precision_monitor", "vpin", "certainty_score", "bocpd", "shap"),
        params={"precision_monitor": {"half_life": 50.0}, "certainty_score": {"threshold": 0.83}},
    )
    assert trained_for(str(f), certified) is None
    written_out = {  # the defaults, written out as a TOML file gives them (an int for a float, a list for a tuple)
        "vpin": {"quantile": 0.9},
        "bocpd": {"hazard_lambda": 250, "max_run": 100.0},
        "shap": {"blacklist": ["TOD_SIN", "TOD_COS", "DOW"]},
    }
    assert trained_for(str(f), L4Config(modules=trained.l4.modules, params=written_out)) is None
    # but a module the prompts show, added or dropped, or any other parameter, is refused
    assert trained_for(str(f), L4Config(modules=("precision_monitor", "vpin", "bocpd", "shap"))) is not None
    assert trained_for(str(f), L4Config(modules=trained.l4.modules, params={"vpin": {"history": 400}})) is not None


def test_the_prompts_do_not_show_the_precision_monitor():
    """The judge's prompt values of a gate with precision_monitor equal those of the same gate without it: the
    catalogue has no entry for it and the module lines no line (it is the gate's halt, not evidence)."""
    from fxgate.engine.core.records import ModuleResult
    from fxgate.engine.layers import PromptFacts
    from fxgate.modules import create

    def facts(names):  # type: ignore[no-untyped-def]
        mods = [create(n, gate={"horizon": 1, "certify_target": 0.6, "certify_alpha": 0.05}) for n in names]
        return PromptFacts("EURUSD", "H1", 1, mods, ["ret_1"])

    with_monitor, without = facts(["precision_monitor", "vpin"]), facts(["vpin"])
    assert "precision_monitor" not in "".join(with_monitor.formulas) and with_monitor.formulas == without.formulas
    results = [
        ModuleResult("precision_monitor", 1.0, True, 20.0, "e-value 1 < 20"),
        ModuleResult("vpin", 0.2, True, 0.9, "VPIN below its 0.9 quantile"),
    ]
    from fxgate.models.prompt import prompt_values, shown_results

    kw = dict(symbol="EURUSD", timeframe="H1", ts_ns=0, bar={}, direction="BUY", horizon=1, probs=None, features={})
    a = prompt_values(**kw, modules=shown_results(results, with_monitor.modules), formulas=with_monitor.formulas)
    b = prompt_values(**kw, modules=results[1:], formulas=without.formulas)
    assert a == b and "precision_monitor" not in "".join(a.values())


def test_data_without_a_serving_record_is_refused_and_files_outside_a_run_are_not_checked(tmp_path):
    f = _run(tmp_path, None)
    assert "records no serving [l4]" in (trained_for(str(f), GateConfig().l4) or "")
    g = _run(tmp_path, None, listed=False, name="other.gguf")  # not a file of the run: nothing says how it was trained
    assert trained_for(str(g), GateConfig().l4) is None
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "m.gguf").write_bytes(b"GGUF")
    assert trained_for(str(lone / "m.gguf"), GateConfig().l4) is None
    (lone / "manifest.json").write_text("{not json")
    assert trained_for(str(lone / "m.gguf"), GateConfig().l4) is None


def test_the_gate_fails_closed_or_raises_on_a_model_trained_for_other_modules(tmp_path, nano):
    run = tmp_path / "run"
    run.mkdir()
    model = run / "model-q8_0.gguf"
    shutil.copyfile(nano["q8"], model)
    trained = GateConfig(l4=L4Config(modules=EIGHT))
    dm = {"fxgate_data_manifest": 1, "serving": serving_record(trained, None)}
    files = {
        model.name: {"bytes": model.stat().st_size, "sha256": nano["manifest"]["files"]["nano-q8_0.gguf"]["sha256"]}
    }
    (run / "manifest.json").write_text(json.dumps({"fxgate_manifest": 1, "data_manifest": dm, "files": files}))
    llm = LlmConfig(model=str(model), cache="", on_load_error="raise")
    served = GateConfig(llm=llm, l2=L2Config(), l3=L3Config())  # the default 18 modules
    with pytest.raises(ModelFileError, match=r"\[l4\] does not match its training data"):
        Gate(served, None, timeframe="H1")
    veto = Gate(dataclasses.replace(served, llm=dataclasses.replace(llm, on_load_error="veto")), None, timeframe="H1")
    gates = [veto]
    try:
        assert veto.llm.error is not None and "were trained on" in veto.llm.error
        d = veto.on_bar(sample_bars()[0])
        assert d.action == "NONE"
        # the [l4] it was trained for, and that section as fxgate calibrate certifies it (monitor first)
        certified = L4Config(modules=("precision_monitor", *EIGHT))
        cert = CertifyConfig(target=0.6, method="ltt", n_signals=120, n_correct=80, value=0.9)
        for l4, cf in ((trained.l4, CertifyConfig()), (certified, cert)):
            ok = Gate(dataclasses.replace(served, l4=l4, certify=cf), None, timeframe="H1")
            gates.append(ok)
            assert ok.llm.error is None and ok.llm.judge is not None
    finally:
        for g in gates:
            g.close()
