"""Plain text of any size, in bounded memory.

Line endings are read as Python's open() reads text: "\\r\\n" and a lone "\\r" are each one line
break, "\\n". So a CRLF (Windows) or CR (old Mac) file gives the same documents and the same tokens
as the same text with "\\n": a separator of "\\n\\n" matches "\\r\\n\\r\\n" too, and no "\\r" is ever
tokenized. Documents are then the pieces between separators (default a blank line, "\\n\\n"), with
leading and trailing "\\n" stripped and empty pieces skipped: exactly
    text = open(path).read()   # universal newlines
    [p.strip("\\n") for p in text.split(sep) if p.strip("\\n")]
but read in fixed-size chunks, never with f.read() of the whole file (a local file, or an object
through ranged reads: objects.open_input). Positions are byte offsets in the file as it is stored.

A document larger than `max_doc_bytes` (one giant document with no separator at all) is cut into
fragments only where the tokenizer's cut rule allows (tokspec.CUT_RULES): right after a "\\n" or
right before a " " that has a printable ASCII character on both sides. The GPT-2 family of
pre-tokenizer regexes (gpt2, r50k_base, cl100k_base; and a tokenizer.json that splits with Llama 3's
or GPT-2's ByteLevel regex: tokspec.JSON_CUT_PATTERNS) ends a pre-token there and starts the next one
at the same place whether or not the text continues, and BPE never merges across pre-tokens
(tests/test_cut_rules.py proves it per pattern). The pieces of one document get its boundary ids
once (before the first, after the last: encoders.frame). For any other tokenizer a document larger than
`max_doc_bytes` stops the run with one line (GiantDocument) instead of being cut.
"""
import re

from .objects import input_size, open_input
from .tokspec import GPT2_CUT_RULE, LETTER_CUT_RULE


class GiantDocument(ValueError):
    """A document larger than the limit, for a tokenizer that may not cut it."""

    def __init__(self, path, offset, limit):
        super().__init__(f"{path}: the document at byte {offset} is larger than {limit:,} bytes")
        self.path, self.offset, self.limit = path, offset, limit


def universal_newlines(s):
    return s.replace("\r\n", "\n").replace("\r", "\n") if "\r" in s else s


class Separator:
    """The document separator in a file's raw bytes: each "\\n" of it matches "\\r\\n", a lone "\\r" or "\\n"."""

    NEWLINE = rb"(?:\r\n|\r(?!\n)|\n)"

    def __init__(self, sep):
        self.literal = universal_newlines(sep).encode("utf-8")
        # the longest raw match, plus the one byte the lone-"\r" rule looks at after it
        self.margin = len(self.literal) + self.literal.count(b"\n") + 1
        self.regex = re.compile(b"".join(self.NEWLINE if c == 10 else re.escape(bytes([c])) for c in self.literal))

    def find(self, buf, pos, final, has_cr):
        """(start, end) of the first separator in buf[pos:] that more bytes cannot change, or None.

        Without a "\\r" in the buffer a separator is its literal bytes (bytes.find, fast). With one, the
        regex; a match is taken only when every attempt that starts at or before it saw all the bytes
        it could need (or the file ends), so the result never depends on where a read stopped."""
        if not has_cr:
            j = buf.find(self.literal, pos)
            return None if j < 0 else (j, j + len(self.literal))
        m = self.regex.search(buf, pos)
        if m is None or not (final or m.end() + self.margin <= len(buf)):
            return None
        return m.span()


    def cut_limit(self, buf, has_cr):
        """Where a cut inside a giant document in `buf` must end by: before the last bytes, where a
        separator may have begun, and before a separator that find() found but could not settle yet."""
        limit = len(buf) - self.margin
        if has_cr and (m := self.regex.search(buf)) is not None:
            limit = min(limit, m.start())
        return limit


def printable(c):
    return 0x21 <= c <= 0x7E


def ascii_letter(c):
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


# What must stand on both sides of the "\n" or " " of a cut point, per cut rule (tokspec.CUT_RULES).
NEIGHBOURS = {GPT2_CUT_RULE: printable, LETTER_CUT_RULE: ascii_letter}


def allowed_cuts(buf, rule=GPT2_CUT_RULE):
    """Every index where the cut rule allows cutting `buf` (bytes): right after a "\n" and right before
    a " " that have, on both sides, printable ASCII (gpt2-regex) or an ASCII letter (letters).
    safe_cut finds the last one quickly."""
    ok = NEIGHBOURS[rule]
    for j in range(1, len(buf) - 1):
        if buf[j] in (10, 32) and ok(buf[j - 1]) and ok(buf[j + 1]):
            yield j + 1 if buf[j] == 10 else j


def safe_cut(buf, window, end, rule=GPT2_CUT_RULE):
    """Index in buf[:end] where a giant document may be cut (the last such point), or -1."""
    ok = NEIGHBOURS[rule]
    buf = buf[: max(0, end)]
    lo = max(0, len(buf) - window)
    # Prefer the last newline cut (after it); fall back to the last space cut (before it).
    for needle, after in ((b"\n", 1), (b" ", 0)):
        j = buf.rfind(needle, lo)
        while j > lo:
            if ok(buf[j - 1]) and j + 1 < len(buf) and ok(buf[j + 1]):
                return j + after
            j = buf.rfind(needle, lo, j)
    return -1


def _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes, end=None, end_in_doc=False, cut=GPT2_CUT_RULE,
                on_giant=None):
    """Yield (offset, raw bytes, continues, last, next_offset) for each document or fragment.

    last: the piece ends its document (at a separator or the end), so trailing "\n" go.
    next_offset: where reading resumes after it (past the separator, or at the cut point).
    `end` stops at that byte as if the file ended there; `end_in_doc` says a document goes on.
    cut: the tokenizer's cut rule (tokspec.CUT_RULES); None: a document over max_doc_bytes raises
    GiantDocument instead of being cut.
    on_giant(path, offset, limit): called when a document is first cut into fragments.
    """
    separator = Separator(sep)
    window = min(max_doc_bytes, 1 << 20)
    with open_input(path) as f:
        f.seek(start)
        buf = b""
        buf_off = start  # file offset of buf[0]
        while True:
            want = chunk_bytes if end is None else min(chunk_bytes, end - buf_off - len(buf))
            chunk = f.read(want) if want > 0 else b""
            final = not chunk  # end of file (or range): what is left is the last piece
            buf = buf + chunk if buf else chunk
            has_cr = b"\r" in buf
            pos = 0
            while (m := separator.find(buf, pos, final, has_cr)) is not None:
                yield buf_off + pos, buf[pos : m[0]], cont, True, buf_off + m[1]
                cont = False
                pos = m[1]
            if final:
                if pos < len(buf) or end_in_doc:
                    yield buf_off + pos, buf[pos:], cont, not end_in_doc, buf_off + len(buf)
                return
            buf = buf[pos:]
            buf_off += pos
            while len(buf) > max_doc_bytes:
                if not cut:
                    raise GiantDocument(path, buf_off, max_doc_bytes)
                # not within the last bytes where a separator may have begun, nor at or after one that
                # more bytes may still settle (a regex match, with a "\r" in the buffer)
                k = safe_cut(buf, window, separator.cut_limit(buf, has_cr), cut)
                if k <= 0:
                    break  # no safe cut point yet: keep reading (memory grows with this run)
                if not cont and on_giant is not None:
                    on_giant(path, buf_off, max_doc_bytes)
                yield buf_off, buf[:k], cont, False, buf_off + k
                buf = buf[k:]
                buf_off += k
                cont = True


def iter_pieces(path, start=0, cont=False, sep="\n\n", chunk_bytes=8 << 20, max_doc_bytes=32 << 20,
                end=None, end_in_doc=False, cut=GPT2_CUT_RULE):
    """Yield (offset, text, continues) from byte `start` of `path` (up to `end`).

    offset: byte where this piece's raw bytes begin; reading again from (offset, continues)
    gives the same tokens from this piece on, which is what resume relies on.
    continues: the piece continues the previous document (a fragment of a giant one).
    """
    for off, raw, c, last, _ in _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes, end, end_in_doc,
                                            cut):
        text = _text(raw, path, off, c, last)
        if text or not last:
            yield off, text, c


def plan_ranges(path, start=0, cont=False, sep="\n\n", task_bytes=2 << 20, chunk_bytes=8 << 20,
                max_doc_bytes=32 << 20, cut=GPT2_CUT_RULE, on_giant=None):
    """Cut a text file into byte ranges for workers to read and tokenize themselves.

    Yields (start, end, continues, end_in_doc). A range ends right after a separator (whole
    documents) or at a safe cut inside a giant document (end_in_doc: the next range continues it),
    so iter_pieces over each range, with no cutting of its own, gives the file's pieces exactly.
    """
    task_start, task_cont = start, cont
    for _, _, _, last, nxt in _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes, cut=cut,
                                          on_giant=on_giant):
        if not last or nxt - task_start >= task_bytes:
            yield task_start, nxt, task_cont, not last
            task_start, task_cont = nxt, not last
    size = input_size(path)
    if size > task_start:
        yield task_start, size, task_cont, False


def _text(raw, path, offset, cont, last):
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: invalid UTF-8 at byte {offset + e.start}; convert the file to UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8) and rerun"
        ) from None
    s = universal_newlines(s)
    if not cont:
        s = s.lstrip("\n")
    return s.rstrip("\n") if last else s
