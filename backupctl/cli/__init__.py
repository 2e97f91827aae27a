"""The ``backupctl`` command line. Thin: parse, call a service function, print.

Each command group lives in its own module and is registered in COMMAND_MODULES.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import click

from backupctl import __version__
from backupctl.cli.lazy import LazyGroup
from backupctl.errors import BackupctlError, PermissionDeniedError
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
    _exit(_run(argv))


def _run(argv: list[str] | None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="backupctl", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # non-standalone click returns ctx.exit() codes
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was committed by the interrupted operation", err=True)
        return 130
    except BrokenPipeError:
        return 141
    except PermissionError as exc:          # most often files another OS user made: say whose
        click.echo(f"error: {PermissionDeniedError.at(exc.filename, exc.strerror)}", err=True)
        return PermissionDeniedError.exit_code
    except Exception as exc:  # last resort: one line, the traceback only on request
        if os.environ.get("BACKUPCTL_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with BACKUPCTL_DEBUG=1 for a traceback "
                   "and report it)", err=True)
        return 70


def _exit(code: int) -> NoReturn:
    """Exit without the interpreter's teardown, which frees every object one by one: ~0.2 s of each
    command, and PostgreSQL runs wal-push and wal-fetch once per WAL segment. Only once nothing is
    left to finish: the atexit handlers run and the streams are flushed first, and while another
    thread still runs, the normal exit (which waits for it) is taken."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141
        except (OSError, ValueError, AttributeError):   # closed, gone, or the disk is full: no place to say so
            code = code or 1
    os._exit(code)
