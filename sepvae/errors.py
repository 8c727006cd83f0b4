"""The exception and warning types a user sees: each message is printed on one line by the CLI."""

from __future__ import annotations

import signal


class SepvaeError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``error: <message>`` and exits non-zero; anything else escaping is a bug.
    """


class SepvaeWarning(UserWarning):
    """Something the user should know about input that was still used (``warning: ...``).

    ``path``: the file it is about, when the message itself does not name it.
    """

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class SeparationWarning(SepvaeWarning):
    """Something the user should know about a separation that still succeeded."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so that it unwinds like Ctrl-C:
    every ``finally`` runs (temporary files are removed) before the CLI exits 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
