"""Options and output helpers shared by the catalogue command modules (cluster, policy, backup, catalog)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from backupctl.cli.common import human_bytes

org_option = click.option("--org", envvar="BACKUPCTL_ORG", default="default", show_default=True, metavar="ORG",
                          help="Organisation [env BACKUPCTL_ORG].")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str) -> None:
    rows = list(rows)
    if not rows:
        click.echo(empty)
        return
    from rich.console import Console  # rich costs 30 ms: not for wal-push and wal-fetch
    from rich.table import Table

    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console()
    if not console.is_terminal:          # piped: never wrap rows, whatever the width
        console = Console(width=4096)
    console.print(table)


# Fields of a catalogue object's dict that count bytes, shown in KiB/MiB/GiB to a person (--json keeps bytes).
BYTE_FIELDS = frozenset({"logical_size", "bytes_added", "bytes_restored", "bytes", "size"})


def print_fields(data: dict[str, Any]) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {field_text(key, value)}")


def field_text(key: str, value: Any) -> str:
    """A field for a person: sizes and speeds in binary units, nested records as key=value."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key in BYTE_FIELDS:
            return human_bytes(value)
        if key == "throughput":
            return f"{human_bytes(value)}/s"
    if isinstance(value, dict):
        return ", ".join(f"{k}=({field_text(k, v)})" if isinstance(v, dict) and v else f"{k}={field_text(k, v)}"
                         for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(field_text(key, v) for v in value)
    return str(value)


def add_protection_commands(group: click.Group, noun: str, set_protection: Callable[[Any, str, str, bool], None]) -> None:
    """``protect NAME`` and ``unprotect NAME`` for a catalogue object that has deletion protection."""
    from backupctl.catalog.db import session_scope

    def make(name: str, on: bool) -> click.Command:
        @click.command(name, help=f"Turn deletion protection {'on' if on else 'off'} for {noun} NAME.")
        @click.argument("object_name", metavar="NAME")
        @org_option
        def cmd(object_name: str, org: str) -> None:
            with session_scope() as s:
                set_protection(s, object_name, org, on)
            click.echo(f"{noun} {object_name}: deletion protection {'on' if on else 'off'}")

        return cmd

    group.add_command(make("protect", True))
    group.add_command(make("unprotect", False))
