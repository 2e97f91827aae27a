"""The ``backupctl`` command line. Thin: parse, call a service function, print.

Each command group lives in its own module and is registered in COMMAND_MODULES.
"""

from __future__ import annotations

import os
import sys

import click

from backupctl import __version__
from backupctl.cli.lazy import LazyGroup
from backupctl.errors import BackupctlError
from backupctl.memory import tune_allocator

# Modules that each define a click group or command named ``command``.
COMMAND_MODULES = ["repo", "snapshot", "cluster", "policy", "backup", "catalog", "scheduler", "retention", "wal",
                   "restore"]
# Top-level commands defined in a module under another name (the server calls wal-push and wal-fetch).
EXTRA_COMMANDS = {"wal-push": "backupctl.cli.wal:push_command", "wal-fetch": "backupctl.cli.wal:fetch_command",
                  "wal-verify": "backupctl.cli.wal:verify_command"}


class _Cli(LazyGroup):
    """Turns project errors into one line on stderr and the error's exit code, wherever they are raised."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BackupctlError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Cli, lazy_subcommands={**{name: f"backupctl.cli.{name}:command" for name in COMMAND_MODULES},
                                **EXTRA_COMMANDS},
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="backupctl")
def cli() -> None:
    """backupctl: backups of PostgreSQL, MySQL/MariaDB and Redis into encrypted, deduplicated repositories."""


def main(argv: list[str] | None = None) -> None:
    tune_allocator()
    try:
        rv = cli.main(args=argv, prog_name="backupctl", standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)  # non-standalone click returns ctx.exit() codes
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was committed by the interrupted operation", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # last resort: one line, the traceback only on request
        if os.environ.get("BACKUPCTL_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with BACKUPCTL_DEBUG=1 for a traceback "
                   "and report it)", err=True)
        sys.exit(70)
