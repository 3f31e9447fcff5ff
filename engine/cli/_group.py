"""The root command group: user errors as one clean line (exit 2), and subcommands imported only when run.

Lazy loading is click's documented pattern ("Lazily Loading Subcommands"): the group knows each subcommand as
``"module:attr"`` and imports it in :meth:`LazyGroup.get_command`, so ``fxgate demo`` never imports the training
stack and ``fxgate data check`` never imports the boosters. Each subcommand also declares its one-line help here,
so that ``fxgate --help`` lists them without importing any (tests/engine/test_cli.py checks that every declared
line is the command's own).
"""

from __future__ import annotations

import importlib

import click

from fxgate.engine.core.errors import FxgateError

__all__ = ["ErrorGroup", "LazyGroup"]


class ErrorGroup(click.Group):
    """Turns user errors (bad files, bad arguments) into one clean message and exit status 2.

    The root group catches them for every subcommand below it: a subcommand runs inside the root's ``invoke``."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (FxgateError, ValueError) as exc:
            click.secho("error: " + str(exc).replace("\n", "\n       "), fg="red", err=True)
            ctx.exit(2)
        except OSError as exc:  # a full disk, a permission, a path that is a directory: the file is in the message
            click.secho(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), fg="red", err=True)
            ctx.exit(2)


class LazyGroup(ErrorGroup):
    """A group whose subcommands are ``{name: ("package.module:attr", "one-line help")}``, imported on first use."""

    def __init__(self, *args: object, lazy_subcommands: dict[str, tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy_subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return None  # click then says "No such command" (with a did-you-mean)
        module_name, attr = self.lazy_subcommands[cmd_name][0].split(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"fxgate bug: {module_name}:{attr} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, from the declared one-line helps (importing no command module)."""
        limit = formatter.width - 6 - max(len(n) for n in self.lazy_subcommands)
        rows = [
            (name, click.Command(name, help=self.lazy_subcommands[name][1]).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
