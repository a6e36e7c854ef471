"""The exceptions the command line turns into one line and an exit code, and the one way the tool
holds Ctrl-C / SIGTERM for a moment."""
import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class UserError(Exception):
    """Something the user can fix; the message says what to do. Exit code 1."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM reached the run: it stops, cleans up, says so in one line.
    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block ends, then act as if they came then: around steps that
    must not be cut in two (a shard renamed into place and entered in the manifest; workers being
    started, which are born with both blocked). Only the main thread can hold them; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # (inherited by processes started here)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if held:
        handler = handlers[held[0]]
        if callable(handler):
            handler(held[0], None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(held[0])
