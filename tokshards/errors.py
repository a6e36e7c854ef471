"""The one exception type the command line turns into a one-line message and exit code 1."""


class UserError(Exception):
    """Something the user can fix; the message says what to do."""
