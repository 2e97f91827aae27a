"""Validation of the names and references users type."""

from __future__ import annotations

import re

from backupctl.errors import UsageError

# DNS-1123 subdomain style, so names export unchanged as Kubernetes object names.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(name: str, what: str) -> str:
    if not name or len(name) > 63 or not _NAME.match(name):
        raise UsageError(f"invalid {what} name {name!r}",
                         "use at most 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit")
    return name


def check_env_var_name(name: str, option: str) -> str:
    """An environment variable NAME (never its value: secrets are not stored)."""
    if not _ENV_VAR.match(name):
        raise UsageError(f"{option} takes the name of an environment variable, not {name!r}",
                         f"e.g. {option} PGPASSWORD, with the secret exported in that variable")
    return name
