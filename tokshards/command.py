"""The command itself: `python fineweb.py ...` and, once installed, `fineweb ...` both run main().

Ctrl-C and SIGTERM get their handlers here, first, before the modules that do the work are
imported (numpy alone takes ~0.1 s): a signal at any moment, even during start-up, ends the command
with one line and exit code 130 / 143, never a traceback. cli.main installs the handlers that
clean up once a run has begun.
"""
import os
import signal
import sys


def _stopped_before_start(signum, frame):
    what = b"terminated (SIGTERM)" if signum == signal.SIGTERM else b"interrupted"
    os.write(2, b"fineweb.py: " + what + b" before it began; nothing was written\n")
    os._exit(128 + signum)


def main():
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_before_start)
    # numpy's OpenBLAS starts a thread per core when numpy is imported, and they spin before they sleep:
    # ~0.2 CPU s of a 2-core run's ~1.6 s start-up, in the main process and every worker (which inherit
    # this). The command does no linear algebra. Set before the import below; a value of the user's stands.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli import main as run

    code = run()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the command is over; a signal now cannot change its result
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
