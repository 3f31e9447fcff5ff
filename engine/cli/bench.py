"""``fxgate bench``: every script in benchmarks/ run in turn, their summaries in one table (SUMMARY.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

import fxgate.engine
from fxgate.engine.core.atomic import write_text

__all__ = ["bench_cmd"]


@click.command("bench")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("benchmarks/out"),
    show_default=True,
    help="Where each script's JSON and the summary table go.",
)
@click.option("--only", multiple=True, help="Run only these scripts (e.g. --only gate --only load).")
def bench_cmd(out: Path, only: tuple[str, ...]) -> None:
    """Run every script in benchmarks/ and print one table: figure, ours, reference, ratio, target, met.

    Writes each script's JSON and SUMMARY.md (a table for benchmarks/RESULTS.md, with the command and date) to --out.
    Needs a source checkout (benchmarks/ is not part of the installed package).
    """
    root = Path(fxgate.engine.__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(root.glob("bench_*.py"))
    if not scripts:
        raise ValueError(f"no benchmark scripts under {root}: run `fxgate bench` from a source checkout")
    if only:
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in only]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for script in scripts:
        dest = out / f"{script.stem.removeprefix('bench_')}.json"
        click.echo(f"==> python {script.relative_to(root.parent)} --json {dest}")
        done = subprocess.run([sys.executable, str(script), "--json", str(dest)])
        if done.returncode != 0:
            raise ValueError(f"{script.name} failed with exit status {done.returncode}")
        rows += json.loads(dest.read_text()).get("summary", [])
    head = ("figure", "ours", "reference", "ratio", "target", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = {True: "yes", False: "no", None: "-"}[r["met"]]
        lines.append("| " + " | ".join(str(r[k]) for k in head[:-1]) + f" | {met} |")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    text = f"`fxgate bench` ({stamp}, {len(scripts)} scripts)\n\n" + "\n".join(lines) + "\n"
    write_text(out / "SUMMARY.md", text)
    click.echo("\n" + text)
