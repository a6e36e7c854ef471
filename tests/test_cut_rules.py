"""Which tokenizers may have a giant plain-text document cut into fragments (tokspec.CUT_RULES).

textfile.allowed_cuts lists the cut points of the GPT-2 cut rule: right after a "\\n" and right
before a " " that have printable ASCII (0x21..0x7E) on both sides. textfile.py cuts a document over
32 MB there, tokenizes the fragments separately and concatenates the ids. That is exact iff
tokens(a) + tokens(b) == tokens(a + b) for every allowed cut (a, b).

Why checking pre-tokens is enough: tiktoken first splits text into pre-tokens with its pattern
(regex findall), then runs BPE inside each pre-token on its own; BPE never merges across two
pre-tokens. So when findall(a) + findall(b) == findall(a + b), the token ids are equal too, for
any vocabulary that uses the pattern. The tests below check pre-tokens with the `regex` package
(the engine of tiktoken's own Python reference code) and, in addition, token ids with tiktoken's
Rust engine: gpt2's vocabulary is the only one on this offline machine, so for the other patterns
the gpt2 ranks stand in for their vocabulary (the same pre-token argument makes this a test of the
pattern in tiktoken's real regex engine).

- every pattern in CUT_RULES keeps its pre-tokens (and tokens) at every cut its rule allows;
- o200k_base has a counterexample under the GPT-2 rule (";\\n//" is one pre-token), hence its
  narrower letter rule (letters on both sides of the "\\n" or " "), proven like the others;
  p50k_base / p50k_edit are in CUT_RULES because they have exactly r50k's pattern;
- tokenizer.json tokenizers: the regex their pre-tokenizer splits with (tokspec.json_pattern), proven
  for Llama 3's and GPT-2's ByteLevel one, also in `tokenizers` itself with Llama 3.2's real file;
- a SentencePiece-style tokenizer.json (Metaspace pre-tokenizer, prefix "▁" on every piece) changes
  tokens when cut, so it has no cut rule, and a 33 MB document stops the run with one line;
- the same 33 MB document with gpt2 is cut and gives exactly tiktoken's tokens of the whole.
"""
import json
import random
from unittest import mock

import numpy as np
import pytest
import regex
import tiktoken
import tiktoken.registry
import tiktoken_ext.openai_public as openai_public
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from conftest import needs_data, real_texts, run_cli
from tokshards.textfile import NEIGHBOURS, allowed_cuts, safe_cut
from tokshards.tokspec import (BYTELEVEL_PATTERN, CUT_RULES, GPT2_CUT_RULE, JSON_CUT_PATTERNS, LETTER_CUT_RULE,
                               LLAMA3_PATTERN,
                               json_pattern, load)

GPT2 = tiktoken.get_encoding("gpt2")  # its vocabulary is in ../shared/tiktoken-cache (conftest)
MAX_DOC_BYTES = 32 << 20  # textfile.iter_pieces / plan_ranges default


# --------------------------------------------------------------------------------------------
# The patterns, without any vocabulary
# --------------------------------------------------------------------------------------------

def _no_vocab(*args, **kwargs):
    return {}


def pattern_of(name):
    """tiktoken's pre-tokenizer pattern for a registered encoding name, read from the registry's
    constructor with the vocabulary loaders of tiktoken_ext.openai_public replaced by {}: no file
    is read and nothing is downloaded (cl100k/o200k vocabularies are not on this machine)."""
    tiktoken.list_encoding_names()  # fills tiktoken.registry.ENCODING_CONSTRUCTORS
    ctor = tiktoken.registry.ENCODING_CONSTRUCTORS[name]
    with mock.patch.object(openai_public, "load_tiktoken_bpe", _no_vocab), \
            mock.patch.object(openai_public, "data_gym_to_mergeable_bpe_ranks", _no_vocab):
        return ctor()["pat_str"]


_COMPILED = {}


def pretokens(pattern, text):
    if pattern not in _COMPILED:
        _COMPILED[pattern] = regex.compile(pattern)
    return _COMPILED[pattern].findall(text)


def char_boundaries(text):
    """Byte offsets of every character boundary of text's UTF-8."""
    out, pos = {0}, 0
    for ch in text:
        pos += len(ch.encode("utf-8", "surrogatepass"))
        out.add(pos)
    return out


def cut_texts(text, rule=GPT2_CUT_RULE):
    """(k, text before, text after) for every allowed cut k of text's UTF-8 bytes."""
    b = text.encode("utf-8")
    bounds = char_boundaries(text)
    for k in allowed_cuts(b, rule):
        assert k in bounds, f"allowed cut {k} of {text!r} is not on a character boundary"
        yield k, b[:k].decode("utf-8"), b[k:].decode("utf-8")


def pretoken_mismatches(pattern, text, rule=GPT2_CUT_RULE):
    """[(k, whole, through the cut)] for each allowed cut where the pre-tokens change."""
    whole = pretokens(pattern, text)
    out = []
    for k, a, b in cut_texts(text, rule):
        got = pretokens(pattern, a) + pretokens(pattern, b)
        if got != whole:
            out.append((k, whole, got))
    return out


def fragments(text, rule=GPT2_CUT_RULE):
    """text cut at ALL its allowed cuts at once (what a giant document becomes, at the finest)."""
    b = text.encode("utf-8")
    cuts = list(allowed_cuts(b, rule))
    return [b[i:j].decode("utf-8") for i, j in zip([0] + cuts, cuts + [len(b)])]


# --------------------------------------------------------------------------------------------
# Generated text, built from pieces that stress the pre-tokenizers and the cut rule
# --------------------------------------------------------------------------------------------

WHITESPACE = [" ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\r", "\r\n", "\n\r", "\t", "\t\n", " \n", "\n ",
              "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u3000", "\u0085", "\u180e", "\u2028", "\u2029",
              "\u200b", "\u2009", "\ufeff"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'VE", "\u2019s", "'x", "''"]
DIGITS = ["0", "7", "42", "123", "1234", "1234567", "3.14", "1,000", "\u0663", "\u0967\u0968", "\u00bd",
          "\u00b2", "\u216b", "\uff11"]
PUNCT = list(";/:.,!?'\"-_()[]{}<>|\\@#$%^&*+=~`") + [
    "//", "/*", "*/", "...", "--", "->", "::", "?!", "\\n", ";\n//", ".\n/", ")\n/", "}\n//", "/\n/"]
LETTERS = ["a", "x", "Z", "I", "s", "word", "The", "don", "\u00e9", "e\u0301", "\u00df", "\u0130", "\u01c5",
           "\u02b0", "\u03a9", "\u0434\u043e\u043c", "\u0639", "\u6f22\u5b57", "\ud55c\uad6d", "\uff71",
           "\ufb01", "\u0915\u093f"]
EMOJI = ["\U0001f389", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u2764\ufe0f",
         "\U0001f1eb\U0001f1f7"]
TRICKY = WHITESPACE + CONTRACTIONS + DIGITS + PUNCT + LETTERS + EMOJI

PRINTABLE = [chr(c) for c in range(0x21, 0x7F)]
ASCII_LETTERS = [chr(c) for c in range(0x41, 0x5B)] + [chr(c) for c in range(0x61, 0x7B)]
# A cut point and its two neighbours, so that most texts have several, with every neighbour (and
# letters on both sides, the letter rule's cut points, as often).
cut_context = st.builds(lambda a, s, c: a + s + c, st.sampled_from(PRINTABLE), st.sampled_from([" ", "\n"]),
                        st.sampled_from(PRINTABLE))
letter_context = st.builds(lambda a, s, c: a + s + c, st.sampled_from(ASCII_LETTERS), st.sampled_from([" ", "\n"]),
                           st.sampled_from(ASCII_LETTERS))
piece = st.one_of(
    st.sampled_from(TRICKY),
    cut_context,
    letter_context,
    st.characters(codec="utf-8", exclude_categories=["Cs"]),  # general unicode
    st.lists(st.sampled_from(TRICKY + PRINTABLE), max_size=6).map("".join),
)
texts = st.lists(piece, max_size=60).map("".join)


def _draw(rnd):
    """A text drawn like `texts` (minus the general-unicode branch) with a seeded Random: a fixed
    sample for test_every_tiktoken_encoding_is_proven_or_has_a_counterexample."""
    out = []
    for _ in range(rnd.randrange(61)):
        kind = rnd.randrange(3)
        if kind == 0:
            out.append(rnd.choice(TRICKY))
        elif kind == 1:
            out.append(rnd.choice(PRINTABLE) + rnd.choice(" \n") + rnd.choice(PRINTABLE))
        else:
            out.append("".join(rnd.choice(TRICKY + PRINTABLE) for _ in range(rnd.randrange(7))))
    return "".join(out)

# Fixed texts with cuts where o200k's punctuation pre-token runs on over "\n" and "/".
FIXED = ["x;\n//y", "a.\n//b", "x)\n/y", "int x;\n// comment", "f(a);\n/* c */", "end.\n/path", "x}\n//y",
         "a b", "x\ny", "it's\nok", "x 's", "12 34", "a\n'b", "a .b", "x;\n//y z;\n/w", "a\n\nb", "a \nb"]


# --------------------------------------------------------------------------------------------
# 1. The patterns with a cut rule keep their pre-tokens (and tokens) at every allowed cut
# --------------------------------------------------------------------------------------------

def test_gpt2_pattern_is_r50k_pattern():
    """gpt2 (whose vocabulary is here) and r50k_base share r50k_pat_str, read three ways."""
    assert GPT2._pat_str == openai_public.r50k_pat_str
    assert pattern_of("gpt2") == pattern_of("r50k_base") == openai_public.r50k_pat_str
    assert pattern_of("cl100k_base") != openai_public.r50k_pat_str


def test_cut_rules_are_the_rules_allowed_cuts_implements():
    """allowed_cuts implements exactly these rules: a new rule name would need its own proof here."""
    assert set(CUT_RULES.values()) == {GPT2_CUT_RULE, LETTER_CUT_RULE} == set(NEIGHBOURS)
    assert load("gpt2")[0].cut_rule == GPT2_CUT_RULE
    # the letter rule's cut points are some of the GPT-2 rule's
    text = "a b;\n//c d\ne 1 2\nZ"
    assert set(allowed_cuts(text.encode(), LETTER_CUT_RULE)) == {1, 8, 11} < set(allowed_cuts(text.encode()))


def check_pretokens_survive_cuts(pattern, max_examples, expect_failure=False, rule=GPT2_CUT_RULE):
    """The property, over generated text: pre-tokens of text[:k] then of text[k:] are those of text,
    for every allowed cut k of the UTF-8 bytes. (Equal pre-tokens => equal tokens: BPE runs inside
    a pre-token and never merges across two.) Returns how many texts, cuts and newline cuts it saw."""
    stats = {"texts": 0, "cuts": 0, "newline_cuts": 0}
    phases = [Phase.explicit, Phase.generate] if expect_failure else list(Phase)

    @settings(max_examples=max_examples, deadline=None, phases=phases, report_multiple_bugs=False,
              derandomize=expect_failure, database=None if expect_failure else settings.default.database)
    @given(text=texts)
    def prop(text):
        b = text.encode()
        ks = list(allowed_cuts(b, rule))
        stats["texts"] += 1
        stats["cuts"] += len(ks)
        stats["newline_cuts"] += sum(1 for k in ks if b[k - 1] == 10)
        assert pretoken_mismatches(pattern, text, rule) == []

    prop()
    return stats


@pytest.mark.parametrize("name", sorted(CUT_RULES))
def test_pretokens_survive_every_allowed_cut(name):
    stats = check_pretokens_survive_cuts(pattern_of(name), max_examples=400, rule=CUT_RULES[name])
    # the generator really makes cut points of both kinds, else the property would be vacuous
    assert stats["cuts"] > stats["texts"] and stats["newline_cuts"] > stats["texts"] // 4, stats


def test_the_property_catches_o200k_under_the_gpt2_rule():
    """The same property and generator, with o200k_base's pattern and the GPT-2 rule, must find a
    counterexample (so the test above can fail: a wrong rule in CUT_RULES would be caught)."""
    with pytest.raises(AssertionError):
        check_pretokens_survive_cuts(pattern_of("o200k_base"), max_examples=400, expect_failure=True)


def encoding_with_gpt2_ranks(pattern):
    """tiktoken's Rust engine with `pattern` and the gpt2 vocabulary (the only one on this machine)."""
    return tiktoken.Encoding(name=f"gpt2-ranks-{abs(hash(pattern))}", pat_str=pattern,
                             mergeable_ranks=GPT2._mergeable_ranks, special_tokens={})


RUST = {name: encoding_with_gpt2_ranks(pattern_of(name)) for name in sorted(CUT_RULES)}


def token_mismatches(enc, text, rule=GPT2_CUT_RULE):
    whole = enc.encode_ordinary(text)
    return [(k, a, b) for k, a, b in cut_texts(text, rule) if enc.encode_ordinary(a) + enc.encode_ordinary(b) != whole]


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_gpt2_tokens_survive_every_allowed_cut(text):
    """Token level, the real gpt2 encoding: encode_ordinary(a) + encode_ordinary(b) == encode_ordinary(a + b)."""
    assert token_mismatches(GPT2, text) == []


@pytest.mark.parametrize("name", sorted(CUT_RULES))
@settings(max_examples=150, deadline=None)
@given(text=texts)
def test_tokens_survive_cuts_in_tiktokens_own_regex_engine(name, text):
    """The pattern in tiktoken's Rust regex engine (not the `regex` package), with gpt2's ranks."""
    assert token_mismatches(RUST[name], text, CUT_RULES[name]) == []


def test_fixed_texts_and_the_o200k_token_counterexample_under_the_gpt2_rule():
    for name, enc in RUST.items():
        for text in FIXED:
            assert token_mismatches(enc, text, CUT_RULES[name]) == [], (name, text)
    # the same check does see o200k's run-on pre-token, in tiktoken's engine too: ";\n/*" is one
    # pre-token, BPE'd (with these ranks) to ";" "\n" "/" "*"; cut after "\n", "/*" is one token
    o200k = encoding_with_gpt2_ranks(pattern_of("o200k_base"))
    assert [k for k, _, _ in token_mismatches(o200k, "f(a);\n/* c */")] == [6]


@pytest.fixture(scope="module")
def docs():
    return real_texts()


@needs_data
def test_real_documents_cut_everywhere_at_once(docs):
    """Every real document cut at ALL its allowed cuts: the fragments' tokens, concatenated, are the
    document's, for the gpt2 encoding and each other CUT_RULES pattern in tiktoken's engine
    (gpt2 and r50k_base share one pattern: checked once)."""
    assert len(docs) == 2454
    frags = [fragments(d) for d in docs]
    assert sum(map(len, frags)) > 2_000_000  # ~2.5 M cuts (69 K after a "\n"): not vacuous
    others = sorted((n, e) for n, e in RUST.items() if e._pat_str != GPT2._pat_str)
    seen = set()
    for name, enc in [("gpt2", GPT2)] + others:
        if (enc._pat_str, CUT_RULES[name]) in seen:  # o200k_harmony: o200k_base's pattern
            continue
        seen.add((enc._pat_str, CUT_RULES[name]))
        encode = enc.encode_ordinary
        for d, fs in zip(docs, frags if CUT_RULES[name] == GPT2_CUT_RULE else (fragments(d, CUT_RULES[name])
                                                                                 for d in docs)):
            assert [i for f in fs for i in encode(f)] == encode(d), (name, d[:80])


@needs_data
def test_real_documents_single_cuts(docs):
    """Single cuts (a, b) of real documents, with the real gpt2 encoding: one newline and one space
    cut per document (every cut is too many: ~2.5 M, each a re-encoding of the document)."""
    rnd = random.Random(1234)
    pairs, wholes = [], []
    for n, d in enumerate(docs):
        b = d.encode()
        ks = list(allowed_cuts(b))
        nl = [k for k in ks if b[k - 1] == 10]
        sp = [k for k in ks if b[k] == 32]
        for k in rnd.sample(nl, min(1, len(nl))) + rnd.sample(sp, min(1, len(sp))):
            pairs += [b[:k].decode(), b[k:].decode()]
            wholes.append(n)
    assert len(wholes) > 3000
    ids = GPT2.encode_ordinary_batch(pairs, num_threads=2)
    whole_ids = GPT2.encode_ordinary_batch(docs, num_threads=2)
    for i, n in enumerate(wholes):
        assert ids[2 * i] + ids[2 * i + 1] == whole_ids[n], (pairs[2 * i][-40:], pairs[2 * i + 1][:40])


@needs_data
def test_real_documents_pretokens_for_every_pattern(docs):
    """The `regex`-package pre-tokens of a sample of real documents, all cuts at once."""
    sample = docs[::10]
    for name in sorted(CUT_RULES):
        pat = pattern_of(name)
        for d in sample:
            assert [t for f in fragments(d, CUT_RULES[name]) for t in pretokens(pat, f)] == pretokens(pat, d), \
                (name, d[:80])


@pytest.mark.parametrize("rule", sorted(NEIGHBOURS))
@settings(max_examples=300, deadline=None)
@given(text=texts, window=st.integers(1, 64), margin=st.integers(0, 8))
def test_safe_cut_only_returns_allowed_cuts(rule, text, window, margin):
    """The proof is about allowed_cuts; the reader cuts where safe_cut says. It must say one of them
    (in the window it looks at), and -1 only when the window holds none."""
    buf = text.encode()
    end = len(buf) - margin
    k = safe_cut(buf, window, end, rule)
    head = buf[: max(0, end)]
    lo = max(0, len(head) - window)
    in_window = {c for c in allowed_cuts(head, rule) if (c - 1 if head[c - 1] == 10 else c) > lo}
    if k == -1:
        assert not in_window
    else:
        assert k in in_window


# --------------------------------------------------------------------------------------------
# 2. Every registered tiktoken encoding: in CUT_RULES and proven, or shown unsafe
# --------------------------------------------------------------------------------------------

# p50k_base and p50k_edit are built in tiktoken_ext.openai_public with exactly r50k_pat_str, the
# pattern proven above, so no counterexample exists: cutting is exact for them too (BPE runs inside
# pre-tokens, whatever the vocabulary); CUT_RULES has them for that reason, checked here.
SAME_PATTERN_AS_PROVEN = {"p50k_base", "p50k_edit"}


def find_counterexample(pattern):
    """(text, mismatches) where some allowed cut changes the pre-tokens, or None: the fixed texts
    first, then a hypothesis search over the generated texts."""
    for text in FIXED:
        if pretoken_mismatches(pattern, text):
            return text, pretoken_mismatches(pattern, text)
    try:
        text = find(texts, lambda t: bool(pretoken_mismatches(pattern, t)),
                    settings=settings(max_examples=2000, database=None, deadline=None,
                                      suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        return None
    return text, pretoken_mismatches(pattern, text)


def test_every_tiktoken_encoding_is_proven_or_has_a_counterexample():
    names = tiktoken.list_encoding_names()
    assert {"gpt2", "r50k_base", "cl100k_base", "o200k_base"} <= set(names)
    assert set(CUT_RULES) <= set(names), "CUT_RULES names an encoding tiktoken does not have"
    sample = FIXED + [_draw(random.Random(s)) for s in range(300)]
    seen = {}
    for name in names:
        pattern = pattern_of(name)  # raises if a constructor cannot be built offline: see pattern_of
        if name in SAME_PATTERN_AS_PROVEN:
            # the very pattern of gpt2/r50k_base: proven above, so no counterexample can exist
            assert pattern == openai_public.r50k_pat_str and name in CUT_RULES, name
        elif name in CUT_RULES:
            bad = [(t, m) for t in sample if (m := pretoken_mismatches(pattern, t, CUT_RULES[name]))]
            assert bad == [], (name, bad[:3])
        else:
            found = find_counterexample(pattern)
            assert found is not None, f"{name} is not in CUT_RULES, yet no cut changes its pre-tokens"
            seen[name] = found
        if CUT_RULES.get(name) != GPT2_CUT_RULE and name not in SAME_PATTERN_AS_PROVEN:
            # a narrower rule must be needed: the GPT-2 rule has a counterexample for this pattern
            seen[name] = find_counterexample(pattern)
    # o200k_base and o200k_harmony share one pattern: ";\n//" is one pre-token, hence the letter rule
    assert seen["o200k_base"][0] == "x;\n//y"
    assert seen["o200k_base"][1] == [(3, ["x", ";\n//", "y"], ["x", ";\n", "//", "y"])]
    assert set(seen) == {"o200k_base", "o200k_harmony"}, sorted(seen)


# --------------------------------------------------------------------------------------------
# 3. A SentencePiece-style tokenizer.json: no cut rule; a giant document stops the run
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def metaspace_json(tmp_path_factory, docs):
    """A small BPE with a Metaspace pre-tokenizer ("▁" before every piece, prepend_scheme always),
    trained here on 500 lines of real text; "</s>" is its end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    lines = [line + "\n" for d in docs[:100] for line in d.split("\n") if line][:500]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    path = tmp_path_factory.mktemp("metaspace") / "tok.json"
    tok.save(str(path))
    return path


@needs_data
def test_metaspace_tokenizer_changes_tokens_when_cut(metaspace_json, docs):
    from tokshards.tokspec import load_json_tokenizer

    spec = load(str(metaspace_json))[0]
    assert spec.kind == "tokenizers" and spec.cut_rule is None
    tok = load_json_tokenizer(str(metaspace_json))

    def ids(text):
        return tok.encode(text, add_special_tokens=False).ids

    # one newline cut: the fragment after it gains the "▁" prefix the whole text does not have there
    assert ids("x\n") + ids("y") != ids("x\ny")
    whole = through_cuts = 0
    changed = 0
    for d in docs[:50]:
        w = ids(d)
        c = [i for f in fragments(d) for i in ids(f)]
        whole, through_cuts, changed = whole + len(w), through_cuts + len(c), changed + (w != c)
    assert whole != through_cuts and changed > 25, (whole, through_cuts, changed)


def _write_giant(path, docs):
    """One ~34 MB document: real text joined by single "\\n" (no blank line), over the 32 MiB limit.
    Returns its text."""
    text = "\n".join(docs)
    assert "\n\n" not in text and "\r" not in text
    tail = " ".join(docs[:500])
    big = text + "\n" + text + "\n" + tail
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(big)
    assert path.stat().st_size > MAX_DOC_BYTES + (256 << 10)
    return big


@pytest.fixture(scope="module")
def giant(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("giant") / "big.txt"
    return path, _write_giant(path, docs)


@needs_data
def test_giant_document_stops_a_tokenizer_without_cut_rule(tmp_path, giant, metaspace_json):
    path, _ = giant
    out = tmp_path / "OUT"
    r = run_cli("--input", path, "--tokenizer", metaspace_json, "--nprocs", 0, "--local-dir", out, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    # a tokenizer.json's document boundary is said at start (one line), then the error is one line
    info, *lines = r.stderr.splitlines()
    assert info.startswith(f"tokenizer {metaspace_json}: document boundary eot-before:"), r.stderr
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("fineweb.py: error: ")
    assert str(path) in line, line
    assert "at byte 0" in line and "--doc-separator" in line, line
    assert not out.exists(), list(out.iterdir())  # nothing half-written: not even an empty manifest


@needs_data
@pytest.mark.parametrize("backend", ["auto", "tiktoken"])
def test_giant_document_is_cut_exactly_with_gpt2(tmp_path, giant, backend):
    """The default gpt2 tokenizer may cut: the run succeeds, warns once, and writes exactly
    [eot] + tiktoken's encode_ordinary of the whole document (auto: fastokens when installed)."""
    path, big = giant
    out = tmp_path / "OUT"
    r = run_cli("--input", path, "--nprocs", 2, "--local-dir", out, "--shard-size", "2M",
                "--tokenizer-backend", backend, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.stderr
    assert "at byte 0" in warnings[0] and "larger than" in warnings[0] and path.name in warnings[0]
    assert "error" not in r.stderr.lower(), r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    files = [s["file"] for s in manifest["shards"]]
    assert len(files) >= 3  # 2M-token shards: the check spans shard boundaries
    got = np.concatenate([np.fromfile(out / f, dtype=np.uint16) for f in files])
    want = np.array([GPT2.eot_token] + GPT2.encode_ordinary(big.strip("\n")), dtype=np.uint16)
    assert len(got) == len(want)
    assert np.array_equal(got, want)


# --------------------------------------------------------------------------------------------
# 4. tokenizer.json tokenizers: the same rule for the regexes in JSON_CUT_PATTERNS (tokspec.json_pattern
#    reads it off the pre-tokenizer), proven in `regex` and in `tokenizers` itself with Llama 3.2's real
#    tokenizer; a document cut in pieces still gets its boundary ids once
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", sorted(JSON_CUT_PATTERNS))
def test_tokenizer_json_patterns_keep_their_pretokens_at_every_cut(pattern):
    stats = check_pretokens_survive_cuts(pattern, max_examples=400)
    assert stats["cuts"] > stats["texts"] and stats["newline_cuts"] > stats["texts"] // 4, stats


def test_the_bytelevel_pattern_is_what_tokenizers_bytelevel_splits_with():
    from tokenizers.pre_tokenizers import ByteLevel

    bl = ByteLevel(add_prefix_space=False, use_regex=True)
    sample = FIXED + [_draw(random.Random(s)) for s in range(300)]
    for text in sample:
        spans = [text[a:b] for _, (a, b) in bl.pre_tokenize_str(text)]
        assert spans == pretokens(BYTELEVEL_PATTERN, text), text


def test_json_pattern_reads_the_pre_tokenizer(llama_dir, metaspace_json):
    raw = (llama_dir / "tokenizer.json").read_bytes()
    assert json_pattern(raw) == LLAMA3_PATTERN and load(str(llama_dir))[0].cut_rule == GPT2_CUT_RULE
    assert json_pattern(metaspace_json.read_bytes()) is None and load(str(metaspace_json))[0].cut_rule is None
    d = json.loads(raw)
    assert json_pattern(json.dumps(dict(d, normalizer={"type": "NFC"}))) is None  # text changed before splitting
    assert json_pattern(json.dumps(dict(d, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False,
                                                          "use_regex": True}))) == BYTELEVEL_PATTERN
    assert json_pattern(json.dumps(dict(d, pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True}))) is None
    o200k = json.loads(raw)
    o200k["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern_of("o200k_base")
    assert json_pattern(json.dumps(o200k)) not in JSON_CUT_PATTERNS  # a pattern with no proof: never cut


_LLAMA = {}


def llama_ids(llama_dir, text):
    if "tok" not in _LLAMA:
        from tokshards.tokspec import load_json_tokenizer

        _LLAMA["tok"] = load_json_tokenizer(str(llama_dir / "tokenizer.json"))
    return _LLAMA["tok"].encode(text, add_special_tokens=False).ids


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_llama_tokens_survive_every_allowed_cut_in_tokenizers(llama_dir, text):
    whole = llama_ids(llama_dir, text)
    for k, a, b in cut_texts(text):
        assert llama_ids(llama_dir, a) + llama_ids(llama_dir, b) == whole, (k, text)


@needs_data
def test_real_documents_cut_everywhere_at_once_with_llama(docs, llama_dir):
    from tokshards.tokspec import load_json_tokenizer

    tok = load_json_tokenizer(str(llama_dir / "tokenizer.json"))
    sample = docs[::3]
    whole = tok.encode_batch(sample, add_special_tokens=False)
    for d, w in zip(sample, whole):
        frags = tok.encode_batch(fragments(d), add_special_tokens=False)
        assert [i for f in frags for i in f.ids] == w.ids, d[:80]


@needs_data
@pytest.mark.parametrize("policy,fmt", [("bos-eos", "bin"), ("eos-after", "megatron")])
def test_a_giant_document_is_cut_exactly_with_llama(tmp_path, docs, llama_dir, policy, fmt):
    """Small read chunks and document limit (test_resume's driver): a 2 MB document and its neighbours
    are cut in dozens of pieces in separate tasks; the ids are `tokenizers`' of the whole documents,
    with the policy's ids once around each (megatron: each one sequence)."""
    from test_resume import run_ok

    big = "\n".join(docs[:400])
    texts = [docs[500], big, docs[501]]
    path = tmp_path / "giant.txt"
    path.write_text("\n\n".join(texts) + "\n")
    out = tmp_path / "out"
    run_ok(["--input", path, "--tokenizer", llama_dir, "--doc-boundary", policy, "--format", fmt, "--nprocs", 2,
            "--shard-size", "100K", "--local-dir", out], tmp_path / "logs", fragment="65536,200000")
    m = json.loads((out / "manifest.json").read_text())
    got = np.concatenate([np.fromfile(out / s["file"], dtype=m["settings"]["dtype"]) for s in m["shards"]])
    before, after = {"bos-eos": ([128000], [128001]), "eos-after": ([], [128001])}[policy]
    want = [before + llama_ids(llama_dir, t) + after for t in texts]
    assert got.tolist() == [i for d in want for i in d]
    assert sum(s["docs"] for s in m["shards"]) == 3
    if fmt == "megatron":  # whole documents: the giant one is one sequence, in one shard
        lengths = []
        for s in m["shards"]:
            idx = (out / (s["file"][:-4] + ".idx")).read_bytes()
            lengths += np.frombuffer(idx, "<i4", int.from_bytes(idx[18:26], "little"), 34).tolist()
        assert lengths == [len(d) for d in want]
