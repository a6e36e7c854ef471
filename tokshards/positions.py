"""Where a batch of documents starts in the source, and where a shard's successor starts.

A source yields batches in dataset order, each with the Position of its first document (or
fragment). Opening the source again at that Position yields that batch's documents and everything
after them again: that is the whole resume contract. Positions are values, written into the
manifest as JSON and read back exactly.

- Local files and Hub parquet: file index, offset (a row for parquet/Hub parquet, a byte for
  JSON lines and plain text), and cont (plain text: the batch continues a giant document).
- Hub datasets read with `datasets` streaming (JSON lines on the Hub, ...): file index and the
  IterableDataset.state_dict() at the batch's start (None at the start of the file).
"""
from dataclasses import dataclass
from typing import Optional

from .errors import UserError


def _count(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


@dataclass(frozen=True)
class Position:
    file: int
    offset: int = 0
    cont: bool = False
    state: Optional[dict] = None  # datasets' state_dict: then offset/cont are unused

    def to_json(self):
        if self.state is not None or self.offset is None:
            return {"file": self.file, "state": self.state}
        return {"file": self.file, "offset": self.offset, "cont": self.cont}

    @classmethod
    def from_json(cls, d):
        if not isinstance(d, dict) or not _count(d.get("file")):
            raise ValueError(f"not a source position: {d!r}")
        if "state" in d:
            if d["state"] is not None and not isinstance(d["state"], dict):
                raise ValueError(f"not a source position: {d!r}")
            return cls(d["file"], None, False, d["state"])
        if not _count(d.get("offset")) or not isinstance(d.get("cont"), bool):
            raise ValueError(f"not a source position: {d!r}")
        return cls(d["file"], d["offset"], d["cont"])

    @classmethod
    def start_of_file(cls, i, datasets_state=False):
        return cls(i, None, False, None) if datasets_state else cls(i)


@dataclass(frozen=True)
class End:
    """Where the next shard's first token comes from: the batch starting at `pos`, after `skip` of its tokens."""

    pos: Position
    skip: int

    def to_json(self):
        return {"pos": self.pos.to_json(), "skip": self.skip}

    @classmethod
    def from_json(cls, d):
        if d is None:
            return None
        if not isinstance(d, dict) or not _count(d.get("skip")):
            raise ValueError(f"not a shard end position: {d!r}")
        return cls(Position.from_json(d.get("pos")), d["skip"])


def check_position_kind(pos, parquet_or_local):
    """A Hub run started by an older fineweb.py recorded datasets' state where today's reads rows."""
    if pos is not None and parquet_or_local and pos.state is not None:
        raise UserError("this output was started by an older fineweb.py (another resume position); "
                        "rerun with --overwrite")
