"""`python fineweb.py ARGS`, with the progress bar replaced by a recorder (for bench.py --scale).

Runs exactly the code path of fineweb.py (tokshards.cli.main), except that tqdm's progress bar is
(or plain progress lines) swapped for an object that appends "unix_time tokens_so_far" lines to $BENCH_PROGRESS_FILE, so the
plot can show tokens/s over the run. Do not pass --quiet (that would skip the recorder).
"""
import os
import sys
import time

# the checkout to run: this one, or $BENCH_TOOL_ROOT (bench.py --scale --alt-tool DIR)
sys.path.insert(0, os.environ.get("BENCH_TOOL_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokshards import cli  # noqa: E402


class ProgressRecorder:
    def __init__(self, desc):
        self.f = open(os.environ["BENCH_PROGRESS_FILE"], "w", buffering=1 << 16)
        self.n = 0

    def start(self, initial, total):
        self.n = initial
        self.f.write(f"{time.time():.4f} {self.n}\n")

    def update(self, n):
        self.n += n
        self.f.write(f"{time.time():.4f} {self.n}\n")

    def close(self, ok=True):
        self.f.close()


# a terminal gets TqdmProgress(desc), a log file LineProgress(log): replace both
cli.TqdmProgress = ProgressRecorder
cli.LineProgress = ProgressRecorder

if __name__ == "__main__":  # forkserver preloads this file as __mp_main__: keep the guard
    sys.exit(cli.main(sys.argv[1:]))
