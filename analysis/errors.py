"""The one exception type for mistakes a user can make (bad data, bad config, bad files).

``DncsimError`` subclasses ``ValueError`` so Python callers can catch either; the CLI catches it
once and prints its message as a single line with exit status 2. Programming errors keep their
ordinary exception types and tracebacks.
"""


class DncsimError(ValueError):
    """A user-facing error whose message names the field, file or value and what is expected."""
