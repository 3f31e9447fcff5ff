"""Whether a trained model is served under the ``[l4]`` section its training data was built for
(engine/llm_setup.py ``trained_for``; the record is written by training/datasets ``serving_record``).

The hash is checked against its written definition (sha256 of the canonical JSON of ``[l4]``, sorted keys, first
16 hex digits) computed here by hand, not with ``l4_hash``; the run directory is laid out as ``fxgate train all``
lays it out (``manifest.json`` listing the GGUF, ``data_manifest.serving``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from fxgate.engine.config import DEFAULT_MODULES, GateConfig, L4Config
from fxgate.engine.llm_setup import trained_for
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
    assert msg is not None and str(f) in msg and "trained on" in msg and "--config" in msg
    other = dataclasses.replace(trained.l4, params={"vpin": {"quantile": 0.7}})
    assert "params or enabled differ" in (trained_for(str(f), other) or "")
    assert "params or enabled differ" in (trained_for(str(f), dataclasses.replace(trained.l4, enabled=False)) or "")


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
