"""Loading a gate config with everything checked, module names and parameters included.

The config *types* are foundation (:mod:`fxgate.engine.core.config`); which modules exist is known only to
:mod:`fxgate.modules`, one level up. This module joins the two: :func:`load_config` and :func:`config_from_dict` are
the core readers plus :func:`check_modules`, and the gate runs the same check on a config built in Python.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from fxgate.engine.core import config as _core
from fxgate.engine.core.config import *  # noqa: F403 - this module is the checked face of the config types
from fxgate.engine.core.config import ConfigError, GateConfig, parse_config, read_config
from fxgate.modules import REGISTRY, create

__all__ = [
    *_core.__all__,
    "check_modules",
    "config_from_dict",
    "load_config",
    "init_toml",
    "module_reference",
    "dump_toml",
    "prompt_l4",
    "serving_mismatch",
]


def _unknown(what: str, name: str) -> str:
    near = difflib.get_close_matches(name, REGISTRY, n=1)
    return what + (f"; did you mean {near[0]!r}?" if near else f". Known: {', '.join(sorted(REGISTRY))}")


def check_modules(cfg: GateConfig, where: str = "config") -> GateConfig:
    """Every ``[l4] modules`` name is registered, and every ``[l4.params.<m>]`` table builds module ``m``."""
    l4 = cfg.l4
    for m in l4.modules:
        if m not in REGISTRY:
            raise ConfigError(f"{where}: " + _unknown(f"[l4] modules: unknown module {m!r}", m))
    for m, params in l4.params.items():
        if m not in REGISTRY:
            raise ConfigError(f"{where}: " + _unknown(f"[l4.params.{m}]: no such module", m))
        if m not in l4.modules:
            raise ConfigError(
                f"{where}: [l4.params.{m}]: module {m!r} is not in [l4] modules, so these parameters would "
                f"be ignored. Fix: add {m!r} to [l4] modules or delete [l4.params.{m}]"
            )
        try:
            create(m, gate=cfg.module_settings, **params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: [l4.params.{m}]: {exc}") from exc
    for p in cfg.certify.path:
        if p in ("l1", "l2"):
            continue
        certifiable = sorted(n for n in l4.modules if n in REGISTRY and REGISTRY[n].certify_param)
        if p not in REGISTRY or not REGISTRY[p].certify_param or p not in l4.modules:
            raise ConfigError(
                f'{where}: [certify] path: {p!r} has no certifiable threshold in this config. Allowed: "l1", '
                f'"l2"' + "".join(f", {n!r}" for n in certifiable) + " (a listed module with a certified threshold)"
            )
    if "precision_monitor" in l4.modules and not cfg.certify.certified:
        raise ConfigError(
            f"{where}: [l4] modules lists precision_monitor but [certify] holds no certificate (target = "
            f"{cfg.certify.target}, method = {cfg.certify.method!r}): it monitors a certified precision. Fix: run "
            "`fxgate calibrate`, which writes both, or remove it from [l4] modules"
        )
    return cfg


def _setting(v: Any) -> Any:
    """A parameter value as JSON and TOML give it back: a tuple is a list (``1 == 1.0`` already)."""
    if isinstance(v, list | tuple):
        return [_setting(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _setting(x) for k, x in v.items()}
    return v


def prompt_l4(enabled: Any, modules: Any, params: Any) -> dict[str, Any]:
    """What of an ``[l4]`` section shapes the LLM prompts: ``enabled``, the modules the prompts show
    (``in_prompt``: not precision_monitor), in order, and each one's parameters with its defaults filled in (a
    tuple as a list), without the threshold ``fxgate calibrate`` certifies (``certify_param``: it shows on the
    module's line, and can flip its pass/FAIL, but it is accepted: the certificate is measured with it) and
    without those the gate sets (``gate_settings``: the horizon). Two sections with the same value serve a judge
    the same prompts, bar for bar, except where those thresholds differ."""
    mods = [str(m) for m in modules or () if m not in REGISTRY or REGISTRY[m].in_prompt]
    params = params if isinstance(params, dict) else {}
    shaped: dict[str, Any] = {}
    for m in mods:
        cls = REGISTRY.get(m)
        p: dict[str, Any] = dict(cls.defaults) if cls is not None else {}
        p.update(params.get(m) or {})
        if cls is not None:
            for k in (cls.certify_param, *cls.gate_settings):
                p.pop(k, None)
        shaped[m] = {str(k): _setting(v) for k, v in p.items()}
    return {"enabled": bool(enabled), "modules": mods, "params": shaped}


def serving_mismatch(record: Any, l4: _core.L4Config) -> str | None:
    """Why a model trained on data whose manifest's ``serving`` is ``record`` should not be served with ``l4``, or
    None when both give the same :func:`prompt_l4` (the prompts it was trained on are the ones this ``[l4]``
    serves: a config ``fxgate calibrate`` wrote from the training one passes)."""
    rec = record.get("l4") if isinstance(record, dict) else None
    if not (isinstance(rec, dict) and isinstance(rec.get("modules"), list)):
        return (
            "its training data records no serving [l4] section (built before fxgate recorded it, for the builder's "
            "own eight modules), so the prompts it was trained on are not the ones this gate serves. Fix: rebuild "
            "the data with `fxgate train data --config <the served gate.toml>` and train again"
        )
    built = prompt_l4(rec.get("enabled", True), rec["modules"], rec.get("params"))
    served = prompt_l4(l4.enabled, l4.modules, l4.params)
    if built == served:
        return None
    if built["modules"] != served["modules"]:
        what = f"modules {built['modules']} were trained on, [l4] modules = {served['modules']} would be served"
    elif built["enabled"] != served["enabled"]:
        what = f"[l4] enabled = {str(built['enabled']).lower()} was trained on, {str(served['enabled']).lower()} served"
    else:
        m = next(m for m in built["modules"] if built["params"][m] != served["params"][m])
        b, s = built["params"][m], served["params"][m]
        k = next(k for k in sorted(set(b) | set(s)) if b.get(k) != s.get(k))
        what = f"[l4.params.{m}] {k} = {b.get(k)!r} was trained on, {s.get(k)!r} would be served"
    return (
        f"[l4] does not match its training data's: {what}; the served prompts would differ from every training "
        f"prompt. Fix: rebuild the data with `fxgate train data --config <this gate.toml>` and train again, or serve "
        f"the [l4] section the data was built for"
    )


def config_from_dict(data: dict[str, Any], where: str = "config") -> GateConfig:
    """A fully checked GateConfig from parsed TOML (``where`` names the source in errors)."""
    return check_modules(parse_config(data, where), where)


def load_config(path: str | Path | None) -> GateConfig:
    """Read a TOML gate config (None: all defaults), every key, value, module and parameter checked."""
    return check_modules(read_config(path), str(path) if path is not None else "config")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


def dump_toml(cfg: GateConfig, header: str = "") -> str:
    """``cfg`` as a TOML file that :func:`load_config` reads back to an equal config (every key written, defaults
    included, so the file says everything that decides; ``header`` is written first as comment lines)."""
    d = cfg.to_dict()
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    sections = [k for k, v in d.items() if isinstance(v, dict)]
    for k, v in d.items():
        if k not in sections:
            out.append(f"{k} = {_toml_value(v)}")
    for sec in sections:
        out.append(f"\n[{sec}]")
        params = d[sec].pop("params", None) if sec == "l4" else None
        for k, v in d[sec].items():
            out.append(f"{k} = {_toml_value(v)}")
        for m, p in (params or {}).items():
            out.append(f"\n[l4.params.{m}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in p.items())
    return "\n".join(out) + "\n"


def module_reference(names: tuple[str, ...] | list[str] | None = None) -> str:
    """Commented TOML: for each module (default: every registered one, in ``DEFAULT_MODULES`` order first), its
    title, formula, citation, default pass rule and a ``[l4.params.<name>]`` table of its defaults. Uncommenting a
    table reproduces the defaults exactly (tested)."""
    order = list(names) if names is not None else [*_core.DEFAULT_MODULES]
    if names is None:
        order += sorted(n for n in REGISTRY if n not in order and REGISTRY[n].__module__.startswith("fxgate.modules."))
    out = ["# -- Layer-4 modules: pass rule, formula and default parameters of each (uncomment a table to change it)"]
    for n in order:
        cls = REGISTRY[n]
        out.append("#")
        out.append(f"# {cls.title or n} ({n}): pass when {cls.rule}")
        if cls.formula or cls.citation:
            out.append(f"#   {cls.formula}; {cls.citation}")
        out.append(f"# [l4.params.{n}]")
        for k, v in cls.defaults.items():
            if k in cls.gate_settings or v is None:
                continue
            out.append(f"# {k} = {_toml_value(v)}")
    return "\n".join(out) + "\n"


def init_toml() -> str:
    """What ``fxgate config init`` writes: the commented defaults plus every module's pass rule and parameters."""
    return _core.DEFAULT_TOML + "\n" + module_reference()
