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

__all__ = [*_core.__all__, "check_modules", "config_from_dict", "load_config"]


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
    return cfg


def config_from_dict(data: dict[str, Any], where: str = "config") -> GateConfig:
    """A fully checked GateConfig from parsed TOML (``where`` names the source in errors)."""
    return check_modules(parse_config(data, where), where)


def load_config(path: str | Path | None) -> GateConfig:
    """Read a TOML gate config (None: all defaults), every key, value, module and parameter checked."""
    return check_modules(read_config(path), str(path) if path is not None else "config")
