"""``fxgate config``: write the commented default gate.toml, and check one as ``fxgate replay --config`` reads it."""

from __future__ import annotations

from pathlib import Path

import click

from fxgate.engine.config import init_toml, load_config
from fxgate.engine.core.atomic import write_text
from fxgate.engine.core.errors import FxgateError

__all__ = ["config_group"]


@click.group("config")
def config_group() -> None:
    """Gate configuration files."""


@config_group.command("init")
@click.argument("path", type=click.Path(path_type=Path), default=Path("gate.toml"))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: Path, force: bool) -> None:
    """Write a commented default gate configuration to PATH (default gate.toml), with every Layer-4 module's pass
    rule and parameters."""
    if path.is_dir():
        raise FxgateError(f"{path} is a directory. Fix: give a file name, e.g. {path / 'gate.toml'}")
    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to overwrite it")
    write_text(path, init_toml())
    load_config(path)  # what we write must load
    click.echo(f"wrote {path}")


@config_group.command("check")
@click.argument("path", type=click.Path(path_type=Path), default=Path("gate.toml"))
def config_check(path: Path) -> None:
    """Load the gate configuration at PATH, as `fxgate replay --config` would, and say what it enables."""
    cfg = load_config(path)
    on = {"L1": cfg.l1.enabled, "L4": cfg.l4.enabled, "L2": cfg.l2.enabled, "L3": cfg.l3.enabled}
    layers = ", ".join(
        f"{k} {'on' if v else 'off'}" + (f" ({len(cfg.l4.modules)} modules)" if k == "L4" and v else "")
        for k, v in on.items()
    )
    click.echo(f"OK: {path}: config hash {cfg.hash}; {layers}; horizon {cfg.horizon} bar(s), spread {cfg.spread}")
