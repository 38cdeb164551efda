"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (bad flag, missing file, incompatible checkpoint). Exit code 2."""

    exit_code = 2


class JobFailed(Exception):
    """A job ran but its outcome fails the user's bar (e.g. too many failed sources). Exit code 1."""

    exit_code = 1


class ShardDamaged(UserError):
    """A committed shard whose tar does not match its marker (byte count or SHA-1): rebuild it. Exit code 2."""
