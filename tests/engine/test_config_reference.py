"""``fxgate config init`` shows every module's pass rule and defaults, and each table it shows loads as those
defaults."""

from __future__ import annotations

import re
import tomllib

import pytest

from fxgate.engine.config import DEFAULT_MODULES, config_from_dict, init_toml, load_config
from fxgate.modules import REGISTRY, create

OURS = sorted(n for n, c in REGISTRY.items() if c.__module__.startswith("fxgate.modules."))


def _table(text: str, name: str) -> dict:
    """The commented ``[l4.params.<name>]`` table, uncommented and parsed by tomllib (an independent reader)."""
    lines = text.splitlines()
    i = lines.index(f"# [l4.params.{name}]")
    body = []
    for line in lines[i + 1 :]:
        if line.strip() == "#" or not line.startswith("# "):
            break
        body.append(line[2:])
    return tomllib.loads("\n".join(body))


def _norm(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def test_every_module_has_a_title_formula_citation_and_rule():
    for n in OURS:
        cls = REGISTRY[n]
        assert cls.title and cls.formula and cls.citation and cls.rule, n


@pytest.mark.parametrize("name", OURS)
def test_each_shown_table_loads_as_the_module_defaults(name):
    text = init_toml()
    cls = REGISTRY[name]
    assert re.search(rf"^# .*\({re.escape(name)}\): pass when {re.escape(cls.rule)}$", text, re.M)
    params = _table(text, name)
    expect = {k: v for k, v in cls.defaults.items() if k not in cls.gate_settings and v is not None}
    assert _norm(params) == _norm(expect)
    # the precision monitor is refused without a certificate: give it one stated by hand
    cert = {"certify": {"target": 0.6, "method": "stated"}} if name == "precision_monitor" else {}
    cfg = config_from_dict({"l4": {"modules": [name], "params": {name: params}}, **cert})
    built = create(name, gate=cfg.module_settings, **cfg.l4.params[name])
    assert _norm(built.params) == _norm(create(name, gate=cfg.module_settings).params)


def test_init_file_loads_and_lists_the_default_modules(tmp_path):
    p = tmp_path / "gate.toml"
    p.write_text(init_toml())
    cfg = load_config(p)
    assert cfg.l4.modules == DEFAULT_MODULES
    for n in DEFAULT_MODULES:
        assert f"# [l4.params.{n}]" in p.read_text()
