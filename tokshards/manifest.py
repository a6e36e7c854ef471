"""Stage 4: manifest.json, the record that makes a run resumable and verifiable.

It is rewritten atomically after every shard. Each shard entry has its size, token and
document counts, sha256, and `end`: the source position (batch start + tokens to skip) where the
next shard's first token comes from. Resuming means: keep every full shard, reopen the source at
the last full shard's `end`, and carry on; the output is the same bytes as an uninterrupted run.
"""
import json
import os

from .errors import UserError

NAME = "manifest.json"
VERSION = 1


def atomic_write(path, write, tag=""):
    """Write to a temporary name, fsync, rename, fsync the directory: a crash leaves old or new.

    `write` is the bytes, or a function that writes to the open file (its result is returned).
    `tag` makes the temporary name unique when several processes may write the same file."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}{tag}.tmp")
    try:
        with open(tmp, "wb") as f:
            result = write(f) if callable(write) else f.write(write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")
    return result


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(p):
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


class Manifest:
    def __init__(self, out_dir, data):
        self.out_dir = out_dir
        self.data = data

    @property
    def path(self):
        return os.path.join(self.out_dir, NAME)

    @property
    def shards(self):
        return self.data["shards"]

    @classmethod
    def load(cls, out_dir):
        path = os.path.join(out_dir, NAME)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); rerun with --overwrite to start over") from None
        if data.get("version") != VERSION:
            raise UserError(f"{path} was written by another version of this tool; rerun with --overwrite")
        return cls(out_dir, data)

    @classmethod
    def start(cls, out_dir, settings, source, overwrite):
        """The manifest to continue, or a new one. Refuses to mix settings into one output."""
        old = None if overwrite else cls.load(out_dir)
        if old is None:
            return cls(out_dir, {"version": VERSION, "settings": settings, "source": source, "shards": [],
                                 "complete": False, "max_tokens": None})
        # Settings the user chose come first: eot and dtype follow from --tokenizer.
        order = ("prefix", "tokenizer", "format", "shard_size", "text_column", "doc_separator")
        keys = sorted(set(settings) | set(old.data["settings"]),
                      key=lambda k: (order.index(k) if k in order else len(order), k))
        for key in keys:
            was, now = old.data["settings"].get(key), settings.get(key)
            if was != now:
                raise UserError(
                    f"{out_dir} holds a run with {key}={was!r}, not {now!r}; rerun with the same settings "
                    "to resume it, or add --overwrite to start over"
                )
        if old.data["source"] != source:
            raise UserError(
                f"{out_dir} was made from other input ({_short(old.data['source'])}); "
                "use another --local-dir, or --overwrite to start over"
            )
        return old

    def full_shards(self, shard_size):
        """Shards that a resumed run keeps: every shard up to the last full one."""
        n = 0
        while n < len(self.shards) and self.shards[n]["tokens"] == shard_size:
            n += 1
        return n

    def save(self):
        os.makedirs(self.out_dir, exist_ok=True)
        atomic_write(self.path, (json.dumps(self.data, indent=1) + "\n").encode())


def _short(source):
    s = json.dumps(source)
    return s if len(s) < 120 else s[:117] + "..."
