"""The one retry of the tool: logged, with backoff, within a budget (--retries, --retry-time).

The Hub (hub.py) and buckets (storage.py) both retry through a Retrier: a line per retry saying what
failed and when the next try comes, and one line (a UserError) once the budget is spent. The client
libraries' own retries are kept short so that trouble reaches it quickly.

The budget reaches every process of a run through the environment: the command line sets
FINEWEB_RETRIES, FINEWEB_RETRY_TIME and FINEWEB_QUIET for as long as it runs, and tokenizer workers
and Ray tasks (which forward FINEWEB_* variables) read them as they start a retry;
FINEWEB_RETRY_BASE_SECONDS (the first wait, 1 s) is for tests.
"""
import os
import random
import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

from .errors import UserError

# Unreadable data that a re-download does not fix is a damaged file, not the network: it is
# retried this many times (consecutive failures, whatever --retries says), then named as such.
DATA_RETRIES = 2
DEFAULT_RETRIES, DEFAULT_SECONDS = 20, 1800.0
# Before the first successful contact with the Hub or a store the budget is short: a machine with no
# route to it, a wrong endpoint or a proxy that is needed and not set must hear so in about a minute.
FIRST_CONTACT_RETRIES, FIRST_CONTACT_SECONDS = 4, 60.0


BUDGET_ENV = ("FINEWEB_RETRIES", "FINEWEB_RETRY_TIME", "FINEWEB_QUIET", "FINEWEB_COMMAND_PID")


@contextmanager
def retry_budget(attempts, seconds, quiet=False):
    """The budget of this command's process and of the processes it starts (see the module's
    docstring), until the command ends; quiet: no line per retry (--quiet), only the one that ends
    the run. FINEWEB_COMMAND_PID says which process is the command (storage.is_command_process)."""
    before = {k: os.environ.get(k) for k in BUDGET_ENV}
    os.environ.update(FINEWEB_RETRIES=str(int(attempts)), FINEWEB_RETRY_TIME=repr(float(seconds)),
                      FINEWEB_QUIET="1" if quiet else "", FINEWEB_COMMAND_PID=str(os.getpid()))
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_line(msg):
    """A retry's line, on stderr (above a progress bar of this process, if any), unless --quiet."""
    if not os.environ.get("FINEWEB_QUIET"):
        tqdm.write(msg, file=sys.stderr)


def budget():
    """(attempts, seconds) set by retry_budget here or in a parent process, else the defaults."""
    try:
        return (int(os.environ.get("FINEWEB_RETRIES", DEFAULT_RETRIES)),
                float(os.environ.get("FINEWEB_RETRY_TIME", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_RETRIES, DEFAULT_SECONDS


def is_data_error(exc):
    """pyarrow could not make sense of the bytes: a damaged file, or a body cut short on the way."""
    return type(exc).__name__ in ("ArrowInvalid", "ArrowIOError", "ArrowException") or (
        type(exc) is OSError and exc.errno is None)  # pyarrow's "Couldn't deserialize thrift", "File too short"


def retry_after(exc):
    resp = getattr(exc, "response", None)
    try:
        return float(resp.headers.get("Retry-After"))
    except (AttributeError, TypeError, ValueError):
        return None


class Retrier:
    """Backoff with jitter for consecutive failures; progress resets the budget."""

    def __init__(self, attempts, seconds, log):
        self.attempts, self.seconds, self.log = attempts, seconds, log
        # 1 s, 2 s, 4 s ... 60 s. Tests shrink it; the client libraries' own waits come on top.
        self.base = float(os.environ.get("FINEWEB_RETRY_BASE_SECONDS", "1"))
        self.reset()

    def reset(self):
        self.failures, self.first_failure, self.data_failures = 0, None, 0

    def wait(self, exc, what, advice="rerun the same command to resume where it stopped", data=None):
        """Sleep before the next try, or raise UserError when the budget is spent. data: whether exc
        is unreadable data (default: is_data_error; a bucket's errors never are)."""
        now = time.monotonic()
        self.first_failure = self.first_failure or now
        self.failures += 1
        data = is_data_error(exc) if data is None else data
        self.data_failures = self.data_failures + 1 if data else 0
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.data_failures > min(DATA_RETRIES, self.attempts):
            raise UserError(
                f"{what} failed {self.failures} times in a row with data that cannot be read (last: {cause}); the "
                "file looks damaged or cut short on the server: rerun the same command to try again, and if it "
                "persists, report the file to the dataset's owners") from exc
        if self.failures > self.attempts or now - self.first_failure > self.seconds:
            raise UserError(
                f"{what} failed {self.failures} times in a row over {now - self.first_failure:.0f}s "
                f"(last: {cause}); {advice}"
            ) from exc
        delay = min(60.0, self.base * 2.0 ** (self.failures - 1)) * (0.5 + random.random())
        hinted = retry_after(exc)
        if hinted is not None:
            delay = max(delay, hinted)
        self.log(f"network: {what}: {cause}; retry {self.failures}/{self.attempts} in {delay:.1f}s")
        time.sleep(delay)
