"""Plain text of any size, in bounded memory.

Documents are the pieces between separators (default a blank line, "\\n\\n"), with leading and
trailing "\\n" stripped and empty pieces skipped: exactly
    [p.strip("\\n") for p in text.split(sep) if p.strip("\\n")]
but read in fixed-size chunks, never with f.read() of the whole file.

A document larger than `max_doc_bytes` (one giant document with no separator at all) is cut into
fragments at points where cutting cannot change a token: right after a "\\n" or right before a
" " that has a printable ASCII character on both sides. Every tiktoken pre-tokenizer regex
(gpt2, cl100k, o200k) ends a pre-token there and starts the next one at the same place whether
or not the text continues, and BPE never merges across pre-tokens; tests check it as a property.
"""
import os


def _safe_cut(buf, window, end):
    """Index in buf[:end] where a giant document may be cut (the last such point), or -1."""
    buf = buf[: max(0, end)]
    lo = max(0, len(buf) - window)
    # Prefer the last newline cut (after it); fall back to the last space cut (before it).
    for needle, after in ((b"\n", 1), (b" ", 0)):
        j = buf.rfind(needle, lo)
        while j > lo:
            if 0x21 <= buf[j - 1] <= 0x7E and j + 1 < len(buf) and 0x21 <= buf[j + 1] <= 0x7E:
                return j + after
            j = buf.rfind(needle, lo, j)
    return -1


def _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes, end=None, end_in_doc=False):
    """Yield (offset, raw bytes, continues, last, next_offset) for each document or fragment.

    last: the piece ends its document (at a separator or the end), so trailing "\n" go.
    next_offset: where reading resumes after it (past the separator, or at the cut point).
    `end` stops at that byte as if the file ended there; `end_in_doc` says a document goes on.
    """
    sepb = sep.encode("utf-8")
    window = min(max_doc_bytes, 1 << 20)
    with open(path, "rb") as f:
        f.seek(start)
        buf = b""
        buf_off = start  # file offset of buf[0]
        while True:
            want = chunk_bytes if end is None else min(chunk_bytes, end - buf_off - len(buf))
            chunk = f.read(want) if want > 0 else b""
            buf = buf + chunk if buf else chunk
            pos = 0
            while True:
                j = buf.find(sepb, pos)
                if j < 0:
                    break
                yield buf_off + pos, buf[pos:j], cont, True, buf_off + j + len(sepb)
                cont = False
                pos = j + len(sepb)
            if not chunk:  # end of file (or range): what is left is the last piece
                if pos < len(buf) or end_in_doc:
                    yield buf_off + pos, buf[pos:], cont, not end_in_doc, buf_off + len(buf)
                return
            buf = buf[pos:]
            buf_off += pos
            while len(buf) > max_doc_bytes:
                # not within the last len(sep) bytes: a separator may have begun there
                k = _safe_cut(buf, window, len(buf) - len(sepb))
                if k <= 0:
                    break  # no safe cut point yet: keep reading (memory grows with this run)
                yield buf_off, buf[:k], cont, False, buf_off + k
                buf = buf[k:]
                buf_off += k
                cont = True


def iter_pieces(path, start=0, cont=False, sep="\n\n", chunk_bytes=8 << 20, max_doc_bytes=32 << 20,
                end=None, end_in_doc=False):
    """Yield (offset, text, continues) from byte `start` of `path` (up to `end`).

    offset: byte where this piece's raw bytes begin; reading again from (offset, continues)
    gives the same tokens from this piece on, which is what resume relies on.
    continues: the piece continues the previous document (a fragment of a giant one).
    """
    for off, raw, c, last, _ in _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes, end, end_in_doc):
        text = _text(raw, path, off, c, last)
        if text or not last:
            yield off, text, c


def plan_ranges(path, start=0, cont=False, sep="\n\n", task_bytes=2 << 20, chunk_bytes=8 << 20,
                max_doc_bytes=32 << 20):
    """Cut a text file into byte ranges for workers to read and tokenize themselves.

    Yields (start, end, continues, end_in_doc). A range ends right after a separator (whole
    documents) or at a safe cut inside a giant document (end_in_doc: the next range continues it),
    so iter_pieces over each range, with no cutting of its own, gives the file's pieces exactly.
    """
    task_start, task_cont = start, cont
    for _, _, _, last, nxt in _raw_pieces(path, start, cont, sep, chunk_bytes, max_doc_bytes):
        if not last or nxt - task_start >= task_bytes:
            yield task_start, nxt, task_cont, not last
            task_start, task_cont = nxt, not last
    size = os.path.getsize(path)
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
    if not cont:
        s = s.lstrip("\n")
    return s.rstrip("\n") if last else s
