"""The fast GPT-2 backend (fastokens) must give tiktoken's ids, id for id, always."""
import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PARQUETS, needs_data, real_texts
from tokshards import fastgpt2
from tokshards.cli import main
from tokshards.tokenizer import Tokenizer

pytest.importorskip("fastokens")
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
    real = fastgpt2.FastGPT2.encode_batch

    def corrupt(self, texts, first_continues, eot, dtype):
        out = real(self, texts, first_continues, eot, dtype)
        if len(texts) > 1 or "Hello" in texts[0]:  # real batches, and one start-up self-check string
            out[len(out) // 2] ^= 1
        return out

    monkeypatch.setattr(fastgpt2.FastGPT2, "encode_batch", corrupt)
    code, out = run(tmp_path, "bad0", "--tokenizer-backend", "fast")
    assert code == 1 and "failed the start-up self-check on 'Hello world'" in capsys.readouterr().err

    def corrupt_later(self, texts, first_continues, eot, dtype):
        out = real(self, texts, first_continues, eot, dtype)
        if len(texts) > 1:  # passes the start-up check, then goes wrong on real data
            out[len(out) // 2] ^= 1
        return out

    monkeypatch.setattr(fastgpt2.FastGPT2, "encode_batch", corrupt_later)
    code, out = run(tmp_path, "bad", "--tokenizer-backend", "fast", "--check-every", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "disagrees with tiktoken on document" in err[0] and "--tokenizer-backend tiktoken" in err[0]
    assert not list(out.glob("*.bin"))


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
