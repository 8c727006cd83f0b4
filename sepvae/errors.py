"""The one exception type a user sees: its message is printed on one line by the CLI."""


class SepvaeError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``error: <message>`` and exits non-zero; anything else escaping is a bug.
    """
