"""The resume rules, as one pure function: what a run does with the shards a manifest lists.

    plan(shards, intact, complete, recorded_max, shard_size, max_tokens) -> Plan

- Keep every shard up to the last full one, but never past the first shard that failed its
  check on disk (missing, wrong size, wrong header): that one and every later one is redone.
- A trailing short shard (the end of a --max-tokens run, or of the input) is rewritten, which is
  how a finished --max-tokens run is extended.
- A complete run whose shards are all intact is done, unless a larger --max-tokens extends it;
  a smaller --max-tokens than what is there is refused (--overwrite makes a smaller run).
tests/test_resume_plan.py checks it as a table.
"""
from dataclasses import dataclass
from typing import Optional

from .positions import End

DONE, RUN, ERROR = "done", "run", "error"


@dataclass(frozen=True)
class Plan:
    action: str  # DONE, RUN or ERROR
    keep: int = 0  # shards kept as they are
    start: Optional[End] = None  # where the source is reopened (None: at its beginning)
    drop: tuple = ()  # indices of listed shards to delete before writing (redone, or a short last one)
    message: str = ""  # for the user: why this plan (an error's one line)


def plan(shards, intact, complete, recorded_max, shard_size, max_tokens):
    """shards: the manifest's ShardEntry list; intact: how many of them, from the first, passed the
    check on disk; complete/recorded_max: the manifest's; max_tokens: this run's --max-tokens or None."""
    total = sum(s.tokens for s in shards)
    if complete and intact == len(shards):
        if recorded_max is None or (max_tokens is not None and max_tokens <= total):
            if max_tokens is not None and max_tokens < total:
                return Plan(ERROR, message=f"already holds {total:,} tokens, more than --max-tokens {max_tokens:,}; "
                                           "use --overwrite to make a smaller run")
            return Plan(DONE, keep=len(shards), message=f"is already complete ({total:,} tokens in {len(shards)} "
                                                        "shards); nothing to do")
    keep = 0
    # a full shard: it records where its successor begins, and holds shard_size tokens (a megatron
    # shard, cut at a document start, at least that many)
    while keep < intact and shards[keep].end is not None and shards[keep].tokens >= shard_size:
        keep += 1
    written = sum(s.tokens for s in shards[:keep])
    if max_tokens is not None and written > max_tokens:
        return Plan(ERROR, message=f"already holds {written:,} tokens, more than --max-tokens {max_tokens:,}; "
                                   "use --overwrite to make a smaller run")
    message = f"keeping {keep} complete shards ({written:,} tokens)" if keep else ""
    if intact < len(shards):
        message = f"redoing from shard {keep}" + (f", {message}" if keep else "")
    return Plan(RUN, keep, shards[keep - 1].end if keep else None, tuple(range(keep, len(shards))), message)
