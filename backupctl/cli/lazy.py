"""Command groups whose subcommands are imported on first use, so ``backupctl snapshot ...``
does not pay for SQLAlchemy and Alembic (about half a second) when it never touches the catalogue."""

from __future__ import annotations

import gc
import importlib

import click


class LazyGroup(click.Group):
    def __init__(self, *args, lazy_subcommands: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}  # name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_subcommands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_subcommands and name not in self.commands:
            module, attr = self.lazy_subcommands[name].split(":")
            self.add_command(getattr(_import_for_good(module), attr), name)
        return super().get_command(ctx, name)


def _import_for_good(module: str):
    """Import a command's module (SQLAlchemy and the models with it: ~1.8 G instructions) with the
    cyclic collector paused, then freeze what the import made. Imports make long-lived objects and no
    garbage, so collections during them are wasted (~5% of the import), and frozen objects are not
    walked again by the full collections of a long restore or backup."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
