"""Plain text in bounded chunks: no chunk or fragment boundary may change a single token."""
import numpy as np
import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA, needs_data, real_texts
from tokshards.encoders import make_encoder
from tokshards.textfile import iter_pieces, plan_ranges
from tokshards.tokspec import load

ENC = tiktoken.get_encoding("gpt2")
TOK = make_encoder(load("gpt2")[0], backend="tiktoken")

# Characters that stress the GPT-2 pre-tokenizer: whitespace of every kind, contractions,
# digits, punctuation, multi-byte letters and emoji, NEL/NBSP/ideographic space, U+180E.
TRICKY = list("aZ1 .,'s\n\t\r\x0b\x0c-_(") + ["\u00a0", "\u3000", "\u0085", "\u180e", "é", "漢", "🎉", "ß", "\u2028"]
chars = st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8", exclude_categories=["Cs"]))
texts = st.text(alphabet=chars, max_size=400)


def split_reference(text, sep):
    """What `open(path).read().split(sep)` gives: Python reads text with universal newlines
    ("\r\n" and a lone "\r" are "\n"), and the separator is written the same way."""
    def nl(s):
        return s.replace("\r\n", "\n").replace("\r", "\n")

    return [p.strip("\n") for p in nl(text).split(nl(sep)) if p.strip("\n")]


def stream_of_pieces(pieces):
    """What the pipeline makes of the reader's pieces: EOT before each document, none before a fragment."""
    out = [TOK.encode_batch([t], first_continues=cont) for _, t, cont in pieces]
    return np.concatenate(out) if out else np.empty(0, np.uint16)


def expected_stream(docs):
    ids = []
    for d in docs:
        ids.append(ENC.eot_token)
        ids.extend(ENC.encode_ordinary(d))
    return np.array(ids, dtype=np.uint16)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, chunk=st.integers(1, 64), sep=st.sampled_from(["\n\n", "<|endoftext|>", "\n", "§§"]))
def test_documents_equal_split_reference_for_any_chunk_size(tmp_path, text, chunk, sep):
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    got = [t for _, t, cont in iter_pieces(path, sep=sep, chunk_bytes=chunk, max_doc_bytes=1 << 20)]
    assert got == split_reference(text, sep)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, chunk=st.integers(1, 48), max_doc=st.integers(4, 40),
       sep=st.sampled_from(["\n\n", "\n--\n", "a b", " | "]))
def test_giant_document_fragments_give_identical_tokens(tmp_path, text, chunk, max_doc, sep):
    """Tiny limits force documents to be cut into fragments: the token stream must not change,
    even with separators that contain the characters cut points are made of."""
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(iter_pieces(path, sep=sep, chunk_bytes=chunk, max_doc_bytes=max_doc))
    docs = split_reference(text, sep)
    assert np.array_equal(stream_of_pieces(pieces), expected_stream(docs))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(alphabet=chars, min_size=1, max_size=12), min_size=1, max_size=80),
       joins=st.lists(st.sampled_from([" ", "\n", "  ", " \n", "\n ", "\t", "'s ", ". "]), min_size=80, max_size=80))
def test_cut_points_inside_words_and_whitespace_runs(tmp_path, words, joins):
    text = "".join(w + j for w, j in zip(words, joins))
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(iter_pieces(path, chunk_bytes=7, max_doc_bytes=8))
    assert np.array_equal(stream_of_pieces(pieces), expected_stream(split_reference(text, "\n\n")))


def test_resume_offsets_reproduce_the_rest(tmp_path):
    """Reading again from any piece's (offset, continues) gives the same token stream from there on.

    (Fragment cut points may fall elsewhere when reading starts elsewhere; tokens cannot differ.)"""
    text = "".join(f"line {i} of a long document\n" if i % 7 else "\n\n" for i in range(400))
    path = tmp_path / "t.txt"
    path.write_text(text)
    pieces = list(iter_pieces(path, chunk_bytes=33, max_doc_bytes=100))
    assert any(c for _, _, c in pieces), "the test should exercise fragments"
    for k in range(0, len(pieces), 5):
        off, _, cont = pieces[k]
        again = list(iter_pieces(path, start=off, cont=cont, chunk_bytes=33, max_doc_bytes=100))
        assert np.array_equal(stream_of_pieces(again), stream_of_pieces(pieces[k:]))


@needs_data
def test_real_corpus_with_tiny_chunks_and_fragments(tmp_path):
    """train_fineweb.txt read 4 KB at a time with every document over 2 KB cut into fragments."""
    pieces = list(iter_pieces(DATA / "train_fineweb.txt", chunk_bytes=4096, max_doc_bytes=2048))
    assert sum(1 for p in pieces if p[2]) > 1000  # fragments really happened
    assert np.array_equal(stream_of_pieces(pieces), expected_stream(real_texts()))


def test_a_run_with_no_cut_point_keeps_reading(tmp_path):
    """One 'word' longer than the limit cannot be cut; it stays whole (memory grows with it)."""
    path = tmp_path / "t.txt"
    path.write_text("x" * 5000 + "\n\nsecond")
    pieces = list(iter_pieces(path, chunk_bytes=100, max_doc_bytes=1000))
    assert [(t, c) for _, t, c in pieces] == [("x" * 5000, False), ("second", False)]


@pytest.mark.parametrize("sep", ["\n\n"])
def test_invalid_utf8_names_the_byte(tmp_path, sep):
    path = tmp_path / "t.txt"
    path.write_bytes(b"good\n\nbad \xc3(\n\n")
    with pytest.raises(ValueError, match=r"invalid UTF-8 at byte 10"):
        list(iter_pieces(path, sep=sep))


def test_no_cut_inside_a_separator_that_has_begun(tmp_path):
    """A cut point ("x\\n|-") can lie inside a multi-character separator whose end is not read yet; also
    when a "\\r" in the buffer makes the separator a regex match that more bytes may still settle."""
    path = tmp_path / "t.txt"
    for sep, head in [(s, h) for s in ("\n--\n", "a b", "\n<|endoftext|>\n") for h in ("", "a\r\nb ")]:
        text = head + "word " * 6 + f"x{sep}y" + " more" * 4 + f"z{sep}" + "last words here"
        path.write_text(text)
        want = expected_stream(split_reference(text, sep))
        for chunk in range(1, 24):
            for max_doc in range(4, 24):
                pieces = list(iter_pieces(path, sep=sep, chunk_bytes=chunk, max_doc_bytes=max_doc))
                assert np.array_equal(stream_of_pieces(pieces), want), (sep, chunk, max_doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, task=st.integers(1, 64), chunk=st.integers(1, 48), max_doc=st.integers(4, 40),
       sep=st.sampled_from(["\n\n", "\n--\n", " | "]))
def test_worker_ranges_give_the_file_stream(tmp_path, text, task, chunk, max_doc, sep):
    """The parent cuts byte ranges; each worker reads its own range with no cutting of its own."""
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = []
    for s, e, cont, in_doc in plan_ranges(path, sep=sep, task_bytes=task, chunk_bytes=chunk, max_doc_bytes=max_doc):
        part = list(iter_pieces(path, s, cont, sep=sep, end=e, end_in_doc=in_doc, max_doc_bytes=1 << 40))
        assert all(not c for _, _, c in part[1:]), "only a range's first piece may continue a document"
        pieces += part
    assert np.array_equal(stream_of_pieces(pieces), expected_stream(split_reference(text, sep)))
