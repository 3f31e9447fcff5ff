"""The loader's options (format, zone, symbol, policy, encoding, decimal mark), shared by every command that
reads bar files, and the keyword arguments they become for :func:`fxgate.engine.loader.load_bars`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["load_options", "load_kwargs"]

F = TypeVar("F", bound=Callable[..., Any])

_LOAD_OPTIONS = [
    click.option(
        "--format",
        "fmt",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "generic", "mt4", "mt5", "histdata", "dukascopy", "parquet"]),
        help="File format; auto sniffs it.",
    ),
    click.option(
        "--tz",
        default=None,
        help="Zone of times without one (mt4/mt5/generic), e.g. Europe/Athens. Default UTC.",
    ),
    click.option("--symbol", default=None, help="Instrument name (default: from the file name)."),
    click.option(
        "--policy",
        default="strict",
        show_default=True,
        type=click.Choice(["strict", "repair"]),
        help="strict: fail on any bad row; repair: drop/sort and report every change.",
    ),
    click.option(
        "--encoding",
        default=None,
        help="Text encoding, e.g. latin-1 or cp1252 (Windows exports). Default: UTF-8, or UTF-16 with a BOM.",
    ),
    click.option(
        "--decimal",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", ".", ","]),
        help="Decimal mark of prices; auto reads 1,0716 (European Excel exports) when no price has a point.",
    ),
]


def load_options(f: F) -> F:
    """Add the loader's options to a command (its function takes ``fmt, tz, symbol, policy, encoding, decimal``)."""
    for opt in reversed(_LOAD_OPTIONS):
        f = opt(f)
    return f


def load_kwargs(
    fmt: str, tz: str | None, symbol: str | None, policy: str, encoding: str | None, decimal: str
) -> dict[str, Any]:
    """The loader options as ``load_bars`` keyword arguments."""
    return {"format": fmt, "tz": tz, "symbol": symbol, "policy": policy, "encoding": encoding, "decimal": decimal}
