"""The exception and warning types a user sees: each message is printed on one line by the CLI."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


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


class _Signals:
    """SIGINT/SIGTERM received by the CLI's handler (process-wide, as signals are)."""

    received: list[int] = []
    deferred = 0  # > 0: only record them; check_signals raises them at a safe point


SIGNALS = _Signals()


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Within: a signal is only recorded, and :func:`check_signals` raises it where an
    exception cannot land inside native code (raised in a callback from C++, such as soxr's
    or torch's, it aborts the process instead of unwinding)."""
    SIGNALS.deferred += 1
    try:
        yield
    finally:
        SIGNALS.deferred -= 1
    check_signals()


def check_signals() -> None:
    """Raise :class:`Interrupted` if a signal arrived while deferred."""
    if SIGNALS.received:
        raise Interrupted(SIGNALS.received[0])

