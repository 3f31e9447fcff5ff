"""The ``fxgate`` command line. Subcommands are added as capabilities land; user errors print without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from fxgate.engine._version import __version__
from fxgate.engine.errors import FxgateError

__all__ = ["main", "cli"]


class _Group(click.Group):
    """Turns user errors (bad files, bad arguments) into one clean message and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (FxgateError, ValueError) as exc:
            click.secho("error: " + str(exc).replace("\n", "\n       "), fg="red", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fxgate")
def cli() -> None:
    """fxgate: live signal-gating inference engine for forex."""


@cli.group(cls=_Group)
def data() -> None:
    """Check, convert and resample bar files."""


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
]


def _load_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_LOAD_OPTIONS):
        f = opt(f)
    return f


@data.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_load_options
def data_check(files: tuple[Path, ...], fmt: str, tz: str | None, symbol: str | None, policy: str) -> None:
    """Load FILES, validate every row and print what was read, repaired and found (gaps).

    With no FILES, checks the bundled EURUSD H1 sample. Exits 2 on the first file that fails.
    """
    from fxgate.engine.loader import load_bars, sample_path

    paths = list(files) or [sample_path()]
    for p in paths:
        bars = load_bars(p, format=fmt, symbol=symbol, tz=tz, policy=policy)  # type: ignore[arg-type]
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
@_load_options
def data_convert(
    file: Path, out: Path, to: str | None, fmt: str, tz: str | None, symbol: str | None, policy: str
) -> None:
    """Load FILE (any supported format), optionally resample it, and write it as CSV or Parquet."""
    from fxgate.engine.loader import load_bars
    from fxgate.engine.resample import resample

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"--out {out}: use a .csv or .parquet file name")
    bars = load_bars(file, format=fmt, symbol=symbol, tz=tz, policy=policy)  # type: ignore[arg-type]
    if to:
        bars = resample(bars, to)
    if out.suffix.lower() == ".csv":
        bars.to_csv(out)
    else:
        bars.to_parquet(out)
    click.echo(f"wrote {out}: {bars!r}")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="fxgate")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
