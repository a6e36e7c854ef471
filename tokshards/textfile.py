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


def iter_pieces(path, start=0, cont=False, sep="\n\n", chunk_bytes=8 << 20, max_doc_bytes=32 << 20):
    """Yield (offset, text, continues) from byte `start` of `path`.

    offset: byte where this piece's raw bytes begin; reading again from (offset, continues)
    yields this piece and everything after it again, which is what resume relies on.
    continues: the piece continues the previous document (a fragment of a giant one).
    """
    sepb = sep.encode("utf-8")
    window = min(max_doc_bytes, 1 << 20)
    with open(path, "rb") as f:
        f.seek(start)
        buf = b""
        buf_off = start  # file offset of buf[0]
        while True:
            chunk = f.read(chunk_bytes)
            buf = buf + chunk if buf else chunk
            pos = 0
            while True:
                j = buf.find(sepb, pos)
                if j < 0:
                    break
                piece = _text(buf[pos:j], path, buf_off + pos, cont, last=True)
                if piece:
                    yield buf_off + pos, piece, cont
                cont = False
                pos = j + len(sepb)
            if not chunk:  # end of file: what is left is the last document
                piece = _text(buf[pos:], path, buf_off + pos, cont, last=True)
                if piece:
                    yield buf_off + pos, piece, cont
                return
            buf = buf[pos:]
            buf_off += pos
            while len(buf) > max_doc_bytes:
                # not within the last len(sep) bytes: a separator may have begun there
                k = _safe_cut(buf, window, len(buf) - len(sepb))
                if k <= 0:
                    break  # no safe cut point yet: keep reading (memory grows with this run)
                yield buf_off, _text(buf[:k], path, buf_off, cont, last=False), cont
                buf = buf[k:]
                buf_off += k
                cont = True


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
