"""The fast tokenizer.json path (fastjson.py) must give the `tokenizers` library's ids, id for id.

This file is the proof behind tokspec.PROVEN_FAST: Llama 3.2's real tokenizer.json (conftest.llama_dir),
compared with `tokenizers` (special-token text as text, no added ids) on every real document, on every
code point in several contexts, and on text of every Unicode category. Then the guards: the start-up
self-check, the run-time re-encoding that names the document, and the default (auto) that takes the
fast path only for a proven tokenizer.
"""
import json

import numpy as np
import pytest

from conftest import needs_data, real_texts, run_cli
from test_fast_tokenizer import CATEGORIES, PIECES
from tokshards import fastgpt2, tokspec
from tokshards.encoders import FastEncoder, JsonEncoder, MismatchError, make_encoder

pytest.importorskip("fastokens")


@pytest.fixture(scope="module")
def encoders(llama_dir):
    spec, text = tokspec.load(str(llama_dir / "tokenizer.json"))
    return (make_encoder(spec, "fast", 0, text), make_encoder(spec, "tiktoken", 0, text), spec, text)


def same(encoders, texts, first_continues=False):
    fast, slow = encoders[:2]
    a, b = fast.encode_batch(texts, first_continues), slow.encode_batch(texts, first_continues)
    return a.dtype == b.dtype and np.array_equal(a, b)


def test_the_llama_tokenizer_is_proven_and_auto_takes_the_fast_path(encoders):
    fast, slow, spec, text = encoders
    assert spec.fast_proven and tokspec.fast_key(text.encode()) in tokspec.PROVEN_FAST
    assert isinstance(fast, FastEncoder) and fast.backend.startswith("fastokens ")
    assert isinstance(slow, JsonEncoder) and slow.backend.startswith("tokenizers ")
    assert isinstance(make_encoder(spec, "auto", 1000, text), FastEncoder)


@needs_data
def test_every_real_document(encoders):
    texts = real_texts()
    for i in range(0, len(texts), 256):
        assert same(encoders, texts[i : i + 256]), i


def test_every_code_point(encoders):
    """Each of the 1,112,064 code points in letter, digit, contraction and whitespace contexts."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(cps), 16384):
        chunk = [f"a{chr(c)}'s {chr(c)}1 {chr(c)}{chr(c)}x 1{chr(c)}\n{chr(c)}" for c in cps[i : i + 16384]]
        assert same(encoders, chunk), hex(cps[i])


def test_text_of_every_category_and_the_special_token_texts(encoders):
    import random
    import unicodedata

    rng = random.Random(13)
    by_cat = {}
    for c in range(0x110000):
        if not 0xD800 <= c <= 0xDFFF:
            by_cat.setdefault(unicodedata.category(chr(c)), []).append(chr(c))
    texts = []
    for _ in range(3000):
        parts = [rng.choice(PIECES) if rng.random() < 0.4 else rng.choice(by_cat[rng.choice(CATEGORIES)])
                 for _ in range(rng.randint(1, 40))]
        texts.append("".join(parts))
    texts += ["<|begin_of_text|>", "<|end_of_text|><|begin_of_text|>", "<|eot_id|>", "<|reserved_special_token_5|>"]
    assert same(encoders, texts)
    fast, slow = encoders[:2]
    ids = fast.encode_batch(["<|begin_of_text|> and <|end_of_text|>"])
    assert 128000 not in ids[1:-1].tolist() and 128001 not in ids[1:-1].tolist()  # the text stayed text


def test_a_wrong_fast_id_stops_the_run_naming_the_document(encoders, monkeypatch):
    _, _, spec, text = encoders
    tok = make_encoder(spec, "fast", 1, text)
    real = fastgpt2.FastTokens.encode_batch_flat

    def corrupt(self, texts):
        ids, offsets = real(self, texts)
        ids = ids.copy()
        ids[offsets[2]] ^= 1  # document 2's first id
        return ids, offsets

    monkeypatch.setattr(fastgpt2.FastTokens, "encode_batch_flat", corrupt)
    docs = [f"document {i} says hello" for i in range(5)]
    with pytest.raises(MismatchError) as e:
        tok.encode_batch(docs)
    assert "disagrees with tokenizers on document 2 of a batch of 5" in str(e.value)


def test_a_tokenizer_that_fails_the_self_check_is_never_used(encoders, monkeypatch):
    _, _, spec, text = encoders
    real = fastgpt2.FastTokens.encode_batch_flat

    def corrupt(self, texts):
        ids, offsets = real(self, texts)
        return (ids + 1).astype(np.uint32), offsets

    monkeypatch.setattr(fastgpt2.FastTokens, "encode_batch_flat", corrupt)
    assert isinstance(make_encoder(spec, "auto", 1000, text), JsonEncoder)  # auto: quietly the reference
    with pytest.raises(Exception, match="failed the start-up self-check against tokenizers"):
        make_encoder(spec, "fast", 1000, text)


@needs_data
def test_an_unproven_tokenizer_json_gets_the_reference_unless_asked(tmp_path, llama_dir):
    """A tokenizer.json not in PROVEN_FAST (here Llama's without its last 1,000 merges): auto uses
    `tokenizers`; --tokenizer-backend fast uses fastokens, self-checked and re-checked: the same bytes.
    One whose pre-tokenizer fastokens does not follow (a regex with \\s, which it reads differently
    around U+180E) is refused by the start-up self-check in one line."""
    d = json.loads((llama_dir / "tokenizer.json").read_text())
    d["model"]["merges"] = d["model"]["merges"][:-1000]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in real_texts()[:60]))

    def tokenizer(name, d):
        where = tmp_path / name
        where.mkdir()
        (where / "tokenizer.json").write_text(json.dumps(d))
        (where / "tokenizer_config.json").write_bytes((llama_dir / "tokenizer_config.json").read_bytes())
        return where

    fewer = tokenizer("fewer", d)
    runs = {}
    for backend in ("auto", "fast"):
        runs[backend] = tmp_path / backend
        r = run_cli("--input", src, "--tokenizer", fewer, "--tokenizer-backend", backend, "--local-dir", runs[backend])
        assert r.returncode == 0, r.stderr
    (ma, mf) = (json.loads((runs[b] / "manifest.json").read_text()) for b in ("auto", "fast"))
    assert {s["backend"].split()[0] for s in ma["shards"]} == {"tokenizers"}
    assert {s["backend"].split()[0] for s in mf["shards"]} == {"fastokens"}
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mf["shards"]]

    d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    words = tokenizer("words", d)
    r = run_cli("--input", src, "--tokenizer", words, "--tokenizer-backend", "fast", "--local-dir", tmp_path / "w")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "fineweb.py: error: --tokenizer-backend fast: fastokens failed the start-up self-check against tokenizers"), r.stderr
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").glob("*.bin"))
    assert not (tmp_path / "w" / "manifest.json").exists()
    assert run_cli("--input", src, "--tokenizer", words, "--local-dir", tmp_path / "w2").returncode == 0
