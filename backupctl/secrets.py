"""Where passwords come from: an environment variable, a file, or a command, never an argument.

Values are read at the moment of use and never logged or stored.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import click

from backupctl.errors import UsageError


def read_secret(*, env: str, file: str | None = None, command: str | None = None, what: str = "password",
                prompt: bool = True, confirm: bool = False) -> str:
    if file:
        try:
            with open(os.path.expanduser(file), encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read the {what} file {file}: {exc.strerror}", "check the path and permissions") from None
    elif command:
        try:
            proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UsageError(f"the {what} command failed to run: {exc}", "check --password-command") from None
        if proc.returncode != 0:
            raise UsageError(f"the {what} command exited with status {proc.returncode}", "check --password-command")
        value = proc.stdout.rstrip("\r\n")
    elif os.environ.get(env):
        value = os.environ[env]
    elif prompt and sys.stdin.isatty():
        value = click.prompt(f"Repository {what}", hide_input=True, confirmation_prompt=confirm, err=True)
    else:
        raise UsageError(f"no {what} given", f"set {env}, or pass --password-file or --password-command")
    if not value:
        raise UsageError(f"the {what} is empty", f"set a non-empty {what}")
    return value
