"""The exceptions the command line turns into one line and an exit code."""


class UserError(Exception):
    """Something the user can fix; the message says what to do. Exit code 1."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM reached the run: it stops, cleans up, says so in one line.
    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
