"""The one exception type users see as a clean message instead of a traceback."""


class LensError(Exception):
    """A problem with the user's input or environment, explained in the message.

    The CLI prints the message (no traceback) and exits with ``exit_code``.
    Messages name the offending file, key or value.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
