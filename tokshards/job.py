"""A run, as the command line resolved it: what to read, how to tokenize it, where to write what.

A Job is a value: the one-machine pipeline, a rank of a multi-machine run and a Ray task all get
the same one, and `settings()` is what an output directory is made with (a resume, a part and an
assembly must match it exactly).
"""
import os
from dataclasses import dataclass
from typing import Optional

from .formats import token_dtype
from .pool import EncoderArgs
from .tokspec import TokenizerSpec

# Tokens a known config holds (GPT-2, with one end-of-text per document): for the disk check
# and the progress bar. From the dataset card and build-nanogpt/llm.c shard counts.
KNOWN_TOKENS = {"sample-10BT": 9.95e9, "sample-100BT": 100.1e9, "sample-350BT": 362.0e9}


@dataclass(frozen=True)
class Job:
    source: object  # LocalSource or HubSource
    out_dir: str
    prefix: str
    spec: TokenizerSpec
    prebuilt: object = None  # tiktoken's Encoding arguments or a tokenizer.json's text, for the workers (tokspec.load)
    fmt: str = "bin"
    backend: str = "auto"  # tokenizer backend: auto | fast | tiktoken (same bytes either way)
    check_every: int = 1000  # fast backend: re-encode 1 document in N with tiktoken and compare
    shard_size: int = 100_000_000
    max_tokens: Optional[int] = None
    nprocs: Optional[int] = None  # None: the usable cores
    text_column: str = "text"
    doc_separator: str = "\n\n"
    overwrite: bool = False
    disk_check: bool = True
    config_name: Optional[str] = None  # the Hub config, for the size estimate

    @property
    def dtype(self):
        """The dtype of the shards' tokens (the format may choose its own: megatron)."""
        return token_dtype(self.fmt, self.spec.dtype, self.spec.n_vocab)

    def settings(self):
        """What an output directory is made with; a resume or a part must match it exactly (but for
        manifest.INFO keys)."""
        b = self.spec.boundary
        st = {
            "prefix": self.prefix, "format": self.fmt, "tokenizer": self.spec.name,
            "tokenizer_sha256": self.spec.sha256, "eot": self.spec.eot, "dtype": self.dtype,
            "doc_boundary": b.policy, "boundary_before": list(b.before), "boundary_after": list(b.after),
            "shard_size": self.shard_size, "text_column": self.text_column, "doc_separator": self.doc_separator,
        }
        if self.spec.revision:
            st["tokenizer_revision"] = self.spec.revision
        return st

    def encoder_args(self):
        return EncoderArgs(self.spec, self.backend, self.check_every, self.prebuilt)

    def estimate_tokens(self):
        """Tokens this run will write, roughly (for the disk check and the progress bar), or None."""
        if self.max_tokens:
            return self.max_tokens
        if known := self._known_tokens():
            return int(known)
        files = getattr(self.source, "files", [])
        per_file = [self.estimate_file_tokens(i) for i in range(len(files))]
        return sum(per_file) if files and None not in per_file else None

    def estimate_file_tokens(self, i):
        """Tokens of source file i, roughly (for the space a part needs), or None."""
        if known := self._known_tokens():
            return int(known / max(1, len(self.source.files)))
        nbytes = self.source.file_bytes(i)
        return None if nbytes is None else _tokens_in(nbytes, self.source.files[i])

    def _known_tokens(self):
        """The tokens of a known config on the Hub (KNOWN_TOKENS), or None."""
        return None if getattr(self.source, "local", False) else KNOWN_TOKENS.get(self.config_name)


def _tokens_in(nbytes, name):
    """~4.4 bytes of text per GPT-2 token; snappy parquet holds ~2x its size in text, gzip or zstd ~3x."""
    name = str(name)
    return int(nbytes * (2.0 if name.endswith(".parquet") else 3.0 if name.endswith((".gz", ".zst")) else 1.0) / 4.4)


def usable_cpus():
    """Cores this process may run on: affinity mask and cgroup CPU quota (containers, cloud VMs)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)
