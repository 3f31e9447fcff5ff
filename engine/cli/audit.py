"""``fxgate audit verify LOG_DIR``: check an audit log of decisions and exit 0 (sound) or 1 (the first problem)."""

from __future__ import annotations

from pathlib import Path

import click

from fxgate.engine.audit_verify import parse_anchor, verify

__all__ = ["audit_group"]


@click.group("audit")
def audit_group() -> None:
    """Check audit logs: hash chain, sequence, schema, bar times."""


@audit_group.command("verify")
@click.argument("log_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--anchor",
    metavar="SEQ:SHA256",
    help="A line's seq and sha256 recorded elsewhere (AuditLog.seq and .head): also checks the newest lines, "
    "which the hash chain alone cannot protect.",
)
def audit_verify(log_dir: Path, anchor: str | None) -> None:
    """Check the audit log in LOG_DIR: files, hash chain, sequence, every Decision against the committed schema,
    per-symbol increasing bar times and no duplicates. Exit 0 if sound, 1 with the first problem and its
    file:line."""
    report = verify(log_dir, anchor=parse_anchor(anchor) if anchor else None)
    if not report.ok:
        click.secho(str(report), fg="red")
        click.get_current_context().exit(1)
    click.echo(str(report))
    for note in report.notes:
        click.echo(f"note: {note}")
