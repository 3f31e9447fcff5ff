"""``fxgate data``: check, convert and resample bar files."""

from __future__ import annotations

from pathlib import Path

import click

from fxgate.engine.cli._options import load_kwargs, load_options
from fxgate.engine.core.atomic import atomic_path
from fxgate.engine.loader import load_bars, sample_path
from fxgate.engine.resampling import resample

__all__ = ["data"]


@click.group()
def data() -> None:
    """Check, convert and resample bar files."""


@data.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@load_options
def data_check(
    files: tuple[Path, ...],
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Load FILES, validate every row and print what was read, repaired and found (gaps).

    With no FILES, checks the bundled EURUSD H1 sample. Exits 2 on the first file that fails.
    """
    for p in list(files) or [sample_path()]:
        bars = load_bars(p, **load_kwargs(fmt, tz, symbol, policy, encoding, decimal))
        click.echo(repr(bars))
        assert bars.report is not None
        click.echo(bars.report.summary())


@data.command("convert")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .csv (generic format) or .parquet.",
)
@click.option("--to", "to", default=None, help="Resample to this timeframe first (M5 M15 M30 H1 H4 D1).")
@load_options
def data_convert(
    file: Path,
    out: Path,
    to: str | None,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Load FILE (any supported format), optionally resample it, and write it as CSV or Parquet."""
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    bars = load_bars(file, **load_kwargs(fmt, tz, symbol, policy, encoding, decimal))
    if to:
        bars = resample(bars, to)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            bars.to_csv(tmp)
        else:
            bars.to_parquet(tmp)
    click.echo(f"wrote {out}: {bars!r}")
