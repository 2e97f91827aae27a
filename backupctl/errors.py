"""Project exceptions. Each carries a message a user can act on; the CLI prints it as one line."""

from __future__ import annotations

import os


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


class NoRepositoryError(UsageError):
    """No repository was named and none is set for the cluster (policy or default)."""


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


class PermissionDeniedError(BackupctlError):
    """A file backupctl needs belongs to another OS user: most often backupctl was run as root beside
    a database server that runs it as postgres (archive_command), or the other way round."""

    @classmethod
    def at(cls, path: str | None, detail: str | None = None) -> "PermissionDeniedError":
        import pwd

        def user(uid: int) -> str:
            try:
                return pwd.getpwuid(uid).pw_name
            except KeyError:
                return f"uid {uid}"

        if not path:
            return cls(f"permission denied: {detail or 'a file'}", "check who owns BACKUPCTL_HOME and the repository")
        try:
            whose = f"it belongs to {user(os.stat(path).st_uid)}"
        except OSError:
            whose = "a directory above it cannot be searched"
        return cls(f"permission denied: {path}: {whose} and backupctl runs as {user(os.geteuid())}",
                   "run backupctl as the OS user that owns the catalogue and repository files, which for a "
                   "cluster that archives is the database server's; or give this user access")
