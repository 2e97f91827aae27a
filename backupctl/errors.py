"""Project exceptions. Each carries a message a user can act on; the CLI prints it as one line."""

from __future__ import annotations


class BackupctlError(Exception):
    """Base of every error a user may see. ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(BackupctlError):
    """The command line or an input is malformed."""

    exit_code = 2


class RepositoryError(BackupctlError):
    """The repository is missing, of an unknown format, or cannot be used."""


class WrongPasswordError(RepositoryError):
    """No key slot opens with the given password."""

    exit_code = 3


class IntegrityError(RepositoryError):
    """An object failed authentication or its content does not match its id."""

    exit_code = 4


class NotFoundError(BackupctlError):
    """A named snapshot, key or object does not exist."""


class LockedError(RepositoryError):
    """Another process holds a lock that conflicts with this operation."""

    exit_code = 5


class StorageError(BackupctlError):
    """The storage backend failed (network, permissions, missing bucket)."""


class BusyError(BackupctlError):
    """Another process is doing the same thing to the same object (e.g. backing up the same cluster
    with the same method)."""

    exit_code = 5
