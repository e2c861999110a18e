"""The one exception type for user errors.

Library code raises :class:`FuseError` for anything a user can fix (a missing file, a bad stack,
an unreadable image). Its message is one line that names the file and what is wrong. Only
``fusecli.cli`` turns it into a printed message and an exit code; everything else is a bug and
keeps its traceback.
"""


class FuseError(Exception):
    """A user-facing error: one line naming the file (when there is one) and the problem."""


class UsageError(FuseError):
    """A FuseError about how the command was called (a bad option value): exit code 2, as Click's
    own usage errors, where a problem with the input exits 1."""
