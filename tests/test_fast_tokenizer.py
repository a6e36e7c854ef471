"""The fast GPT-2 backend (fastokens) must give tiktoken's ids, id for id, always."""
import json
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PARQUETS, needs_data, real_texts
from tokshards import fastgpt2, pool, tokspec
from tokshards.cli import main
from tokshards.encoders import MismatchError, make_encoder
from tokshards.positions import Position
from tokshards.sources import Batch

pytest.importorskip("fastokens")


def Tokenizer(name, eot_token=None, backend="auto", check_every=1000):
    """An encoder as a worker builds it (tokspec.load in the parent, make_encoder in the worker)."""
    spec, prebuilt = tokspec.load(name, eot_token)
    return make_encoder(spec, backend, check_every, prebuilt)


FAST = Tokenizer("gpt2", backend="fast", check_every=0)
SLOW = Tokenizer("gpt2", backend="tiktoken")


def same(texts, first_continues=False):
    a = FAST.encode_batch(texts, first_continues)
    b = SLOW.encode_batch(texts, first_continues)
    return a.dtype == b.dtype and np.array_equal(a, b)


def test_backends_are_what_they_say():
    assert FAST.backend.startswith("fastokens ") and SLOW.backend.startswith("tiktoken ")


@needs_data
def test_every_real_document():
    texts = real_texts()
    for i in range(0, len(texts), 256):
        assert same(texts[i : i + 256]), i
    assert same(texts[:10], first_continues=True)


def test_every_code_point():
    """Each of the 1,112,064 code points in letter, digit, contraction and whitespace contexts."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(cps), 8192):
        chunk = [f"a{chr(c)}'s {chr(c)}1 {chr(c)}{chr(c)}x 1{chr(c)} {chr(c)}" for c in cps[i : i + 8192]]
        assert same(chunk), hex(cps[i])


CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf",
              "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cn"]
PIECES = ["'s", "'S", "'ll", "’s", " ", "  ", "\n", "\n\n", "\r\n", "\t", "\u00a0", "\u3000", "\u180e", "\u0085",
          "<|endoftext|>", "<|endo", "1234", "٣", "🎉", "👩\u200d💻", "🇩🇪", "\U0001fae8", "\U00031350", "\U0002ebf0",
          "a" * 300, "x" * 3000]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES),
                          st.text(st.characters(categories=CATEGORIES), max_size=30)),
                max_size=40))
def test_generated_text(parts):
    text = "".join(parts)
    assert same([text, text[::-1], text.upper()])


def test_lone_surrogates_go_to_tiktoken():
    texts = ["fine", "bad \ud800 surrogate", "also \udfff here"]
    assert same(texts)


def run(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["--input", str(PARQUETS[0]), "--shard-size", "200K", "--local-dir", str(out), "--nprocs", "0",
                 "--quiet", *extra])
    return code, out


@needs_data
def test_manifest_records_backend_and_bytes_do_not_change(tmp_path):
    code_f, fast = run(tmp_path, "fast", "--tokenizer-backend", "fast", "--check-every", "1")
    code_t, slow = run(tmp_path, "slow", "--tokenizer-backend", "tiktoken")
    assert code_f == code_t == 0
    mf, mt = (json.loads((d / "manifest.json").read_text()) for d in (fast, slow))
    assert {s["backend"].split()[0] for s in mf["shards"]} == {"fastokens"}
    assert {s["backend"].split()[0] for s in mt["shards"]} == {"tiktoken"}
    assert [s["sha256"] for s in mf["shards"]] == [s["sha256"] for s in mt["shards"]]


@needs_data
def test_a_mismatch_stops_the_run_before_writing(tmp_path, monkeypatch, capsys):
    real = fastgpt2.FastTokens.encode_batch_flat

    def corrupt(self, texts):
        ids, offsets = real(self, texts)
        ids = ids.copy()
        if len(texts) > 1 or "Hello" in texts[0]:  # real batches, and one start-up self-check string
            ids[len(ids) // 2] ^= 1
        return ids, offsets

    monkeypatch.setattr(fastgpt2.FastTokens, "encode_batch_flat", corrupt)
    code, out = run(tmp_path, "bad0", "--tokenizer-backend", "fast")
    assert code == 1 and "failed the start-up self-check on 'Hello world'" in capsys.readouterr().err

    bad = []

    def corrupt_later(self, texts):
        ids, offsets = real(self, texts)
        ids = ids.copy()
        if len(texts) > 1:  # passes the start-up check, then goes wrong on real data: document 5 only
            ids[offsets[5]] ^= 1
            bad.append(texts[5])
        return ids, offsets

    monkeypatch.setattr(fastgpt2.FastTokens, "encode_batch_flat", corrupt_later)
    code, out = run(tmp_path, "bad", "--tokenizer-backend", "fast", "--check-every", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "disagrees with tiktoken on document 5 of a batch" in err[0] and repr(bad[0][:60]) in err[0]
    assert "--tokenizer-backend tiktoken" in err[0]
    assert not list(out.glob("*.bin"))


DOCS = [f"document {i}: some text, with words{'!' * i}" for i in range(10)]


def corrupting(monkeypatch, bad):
    """Make the fast backend wrong on the documents numbered in `bad` (counted over all its batches)."""
    real, seen = fastgpt2.FastTokens.encode_batch_flat, [0]

    def corrupt(self, texts):
        ids, offsets = real(self, texts)
        ids = ids.copy()
        for i in range(len(texts)):
            if seen[0] + i in bad:
                ids[offsets[i + 1] - 1] ^= 1  # the document's last id
        seen[0] += len(texts)
        return ids, offsets

    monkeypatch.setattr(fastgpt2.FastTokens, "encode_batch_flat", corrupt)


@pytest.mark.parametrize("k", [0, 3, 9])
def test_check_catches_the_one_wrong_document_and_names_it(monkeypatch, k):
    tok = Tokenizer("gpt2", backend="fast", check_every=1)
    corrupting(monkeypatch, {k})
    with pytest.raises(MismatchError) as e:
        tok.encode_batch(DOCS, first_continues=k > 0)  # k > 0: also with a continued document 0 (no eot)
    assert f"on document {k} of a batch of 10, starting {DOCS[k]!r}" in str(e.value)


def test_check_is_one_document_in_n_across_batches(monkeypatch):
    def run_batches(check_every, bad):
        tok = Tokenizer("gpt2", backend="fast", check_every=check_every)
        corrupting(monkeypatch, bad)
        try:
            for i in range(0, 10, 3):  # batches of 3, 3, 3, 1 documents: 0-2, 3-5, 6-8, 9
                tok.encode_batch(DOCS[i : i + 3])
        except MismatchError as e:
            return str(e)

    # check_every=4: documents 0, 4 and 8 are re-encoded, in batches 1, 2 and 3; the others are not
    assert "on document 1 of a batch of 3" in run_batches(4, {4})
    assert "on document 2 of a batch of 3" in run_batches(4, {8})
    assert run_batches(4, {1, 2, 3, 5, 6, 7, 9}) is None
    assert "on document 0 of a batch of 1" in run_batches(1, {9})
    assert run_batches(0, set(range(10))) is None  # 0 = off


def test_check_passes_exact_output():
    """No false alarm: empty documents, a continued first one, the end-of-text token's text inside a
    document (encoded as text). (An ordinary token as --eot-token is refused: test_trust.)"""
    texts = ["", "a!b!", "!", "", "<|endoftext|> stays text", "x" * 3000, ""]
    tok = Tokenizer("gpt2", "<|endoftext|>", backend="fast", check_every=1)
    ref = Tokenizer("gpt2", "<|endoftext|>", backend="tiktoken")
    for first_continues in (False, True):
        assert np.array_equal(tok.encode_batch(texts, first_continues), ref.encode_batch(texts, first_continues))
    assert tok.checked_from == 2 * len(texts)  # every document was checked


def test_workers_get_the_parents_tiktoken_encoding(monkeypatch):
    """A worker builds its encoder from the parent's EncoderArgs without reading the vocabulary again."""
    import tiktoken

    spec, prebuilt = tokspec.load("gpt2")  # as the command line does, once, in the parent
    args = pickle.loads(pickle.dumps(pool.EncoderArgs(spec, "fast", 1, prebuilt)))  # what a worker receives

    def no_get_encoding(name):
        raise AssertionError("a worker called tiktoken.get_encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", no_get_encoding)
    enc = args.build()
    texts = ["Hello world", "<|endoftext|> literal", "naïve café 漢字 🎉"]
    batch = Batch(texts, Position(0))
    ids, counts, docs = pool.encode(enc, batch, pool.read(batch, None))
    assert docs == len(texts)
    assert enc.backend.startswith("fastokens ") and counts is None
    assert np.array_equal(ids, SLOW.encode_batch(texts)) and ids.dtype == SLOW.spec.np_dtype
    assert enc.spec.eot == SLOW.spec.eot and enc.spec.n_vocab == SLOW.spec.n_vocab


def test_gpt2_parts_are_tiktokens_own(monkeypatch):
    """The parent reads gpt2 from encoder.json alone (fastgpt2.gpt2_parts): tiktoken's loader's very
    arguments, the ranks in the same order, and the content hash tokspec checks them against. Under
    the tiktoken installed here, which must be one they were compared with, tiktoken's loader is not run."""
    import tiktoken

    own = tokspec.tiktoken_parts(tiktoken.get_encoding("gpt2"))
    fast = fastgpt2.gpt2_parts()
    assert fast == own and list(fast["mergeable_ranks"].items()) == list(own["mergeable_ranks"].items())
    assert tokspec.tiktoken_sha256(own) == tokspec.GPT2_SHA256
    assert tokspec.tiktoken_sha256(tokspec.tiktoken_parts(tiktoken.get_encoding("r50k_base"))) == tokspec.GPT2_SHA256
    assert tokspec.package_version("tiktoken").startswith(tokspec.GPT2_PROVEN_TIKTOKEN)

    def no_get_encoding(name):
        raise AssertionError("tiktoken.get_encoding was called")

    monkeypatch.setattr(tiktoken, "get_encoding", no_get_encoding)
    spec, parts = tokspec.load("gpt2")
    assert parts == own and (spec.n_vocab, spec.eot, spec.sha256) == (50257, 50256, tokspec.GPT2_SHA256)


def swapped_ranks(read):
    def swapped():
        parts = read()
        ranks = parts["mergeable_ranks"]
        ranks[b"the"], ranks[b" the"] = ranks[b" the"], ranks[b"the"]
        return parts
    return swapped


def unreadable():
    raise ImportError("cannot import name 'r50k_pat_str'")  # as a tiktoken that renamed it would


@pytest.mark.parametrize("case", ["other ranks", "an error", "another tiktoken"])
def test_gpt2_parts_are_not_used_where_they_may_differ(monkeypatch, case):
    """Ranks read otherwise than tiktoken reads them (here two swapped: their content hash differs), a
    failure reading them, or a tiktoken they were not compared with: tiktoken's own loader is used
    instead, and the spec and the workers' encoding are tiktoken's."""
    import tiktoken

    get_encoding = tiktoken.get_encoding
    if case == "other ranks":
        monkeypatch.setattr(fastgpt2, "gpt2_parts", swapped_ranks(fastgpt2.gpt2_parts))
    elif case == "an error":
        monkeypatch.setattr(fastgpt2, "gpt2_parts", unreadable)
    else:
        monkeypatch.setattr(tokspec, "GPT2_PROVEN_TIKTOKEN", ("0.0.",))
    calls = []
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: calls.append(name) or get_encoding(name))
    spec, parts = tokspec.load("gpt2")
    assert calls == ["gpt2"]
    assert parts == tokspec.tiktoken_parts(get_encoding("gpt2")) and spec.sha256 == tokspec.GPT2_SHA256


def test_missing_fastokens(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastokens", None)  # import fails as if not installed
    (tmp_path / "t.txt").write_text("hello\n\nworld")
    base = ["--input", str(tmp_path / "t.txt"), "--nprocs", "0"]
    assert main(base + ["--local-dir", str(tmp_path / "a"), "--tokenizer-backend", "fast"]) == 1
    assert "fastokens is not installed" in capsys.readouterr().err
    assert main(base + ["--local-dir", str(tmp_path / "b")]) == 0  # auto: tiktoken, with a one-line note
    assert "tokenizer: using tiktoken (fastokens is not installed" in capsys.readouterr().err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["shards"][0]["backend"].startswith("tiktoken")
