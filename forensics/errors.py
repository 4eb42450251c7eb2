"""Every failure o2f reports on purpose: one class per kind, one sentence each.

The CLI maps these to exit code 2 with ``str(error)`` as the message; anything
else escaping to the CLI is a bug and is reported as one.
"""

from __future__ import annotations

import enum


class O2fError(Exception):
    """Base of every expected failure; the message is one sentence for the user."""


class UsageError(O2fError):
    """The command line asks for something that cannot be done."""


class SourceError(O2fError):
    """The evidence source cannot be read or is not a data root we understand."""


class NotADataRootError(SourceError):
    """The source has no storage layout o2f recognises."""


class SnapshotError(O2fError):
    """A snapshot file is missing, unreadable, truncated or of an unknown version."""


class BaselineError(SnapshotError):
    """The baseline of ``collect --reuse`` cannot be trusted to supply hashes (found while collecting)."""


class SnapshotExistsError(O2fError):
    """Refusing to overwrite an existing snapshot without --force."""


class MountTableError(O2fError):
    """A saved mount table has a line in no known format."""


class NotFoundError(O2fError):
    """A container, image or path named on the command line does not exist."""


class ChainError(O2fError):
    """A layer chain is broken: a missing lower file, a dangling link or a cycle."""


class PolicyError(O2fError):
    """A drift policy file is missing or malformed."""


class ExitCode(enum.IntEnum):
    """The documented exit codes of every o2f command (docs/cli.md#exit-codes)."""

    OK = 0  # finished; no findings, or findings on a command that is not a gate
    FOUND = 1  # finished; a gate found something (drift, tamper, failed verify)
    TROUBLE = 2  # usage error, bad input, or an internal error
    INTERRUPTED = 130  # Ctrl-C; a partial snapshot is never marked complete
