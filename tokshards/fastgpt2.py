"""An exact, faster GPT-2 path: fastokens, loaded from GPT-2's own vocabulary files.

fastokens (Rust, Apache-2.0) gives ids identical to tiktoken's gpt2 `encode_ordinary` on every real
document, stress string and code point tried (shared/notes/fast-tokenizers.md), at ~5-10x the speed
per core, when it is loaded from a GPT-2 tokenizer.json with NO added tokens (so a literal
"<|endoftext|>" in the text stays text). We build that JSON from the same two files tiktoken reads
(vocab.bpe and encoder.json, hash-checked by tiktoken's cache), so the vocabulary cannot drift.

Never trusted blindly: a self-check against tiktoken at start; batches it cannot take (lone
surrogates raise) go to tiktoken; encoders.FastGPT2Encoder re-encodes 1 document in N at run time.
"""
import json

import numpy as np

# r50k_base has exactly GPT-2's ranks and regex.
ENCODINGS = ("gpt2", "r50k_base")
_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
_FILES = {  # tiktoken_ext.openai_public.gpt2: the same addresses and sha256 tiktoken checks
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# Strings where tokenizers have been seen to differ: whitespace of every kind, contractions,
# U+180E, NBSP, ideographic space, newline runs, long words, digits, emoji, literal specials.
SELF_CHECK = [
    "Hello world", "  leading and trailing  ", "a\n\nb\n\n\n\nc", "\n" * 100, "\t\tTab\x0b\x0c\r\n",
    "it's I'm we'll they're you've he'd IT'S", "a\u180e's \u180e1", "x\u00a0y\u3000z\u2028w\u0085v",
    "<|endoftext|> literal <|endo", "1234567890 3.14159 ١٢٣", "🎉👩\u200d💻 flags 🇩🇪", "naïve café Ωμέγα 漢字",
    "a" * 5000, " " * 300 + "x", "Dansk: æøå ÆØÅ. Deutsch: Straße Übermäßig", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𪜀",
]


class Unavailable(Exception):
    """The fast path cannot be used here; the message says why."""


def _read(name):
    """One of GPT-2's files, from tiktoken's cache (downloaded on first use), its sha256 checked by tiktoken."""
    from tiktoken.load import read_file_cached

    return read_file_cached(_GPT2 + name, _FILES[name])


def tokenizer_json():
    """GPT-2's tokenizer.json (ByteLevel BPE, no added tokens) from tiktoken's cached files."""
    vocab = json.loads(_read("encoder.json"))
    merges = [m for m in _read("vocab.bpe").decode().split("\n")[1:] if m]
    vocab.pop("<|endoftext|>", None)  # an ordinary-text encoder: no special tokens at all
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    })


def _data_gym_bytes():
    """str.translate table from GPT-2's file alphabet to bytes as latin-1 code points: a printable
    byte other than the space stands for itself, every other byte b for chr(256 + its place among
    them), the mapping of tiktoken.load.data_gym_to_mergeable_bpe_ranks."""
    shifted = [b for b in range(256) if not (chr(b).isprintable() and chr(b) != " ")]
    return {256 + n: b for n, b in enumerate(shifted)}


def gpt2_parts():
    """tiktoken's gpt2 Encoding arguments (tokspec.tiktoken_parts' shape) read from encoder.json alone,
    each token's bytes by one str.translate: ~0.1 s of the main process's start-up, where tiktoken's
    loader spends 0.25-0.5 s in Python rebuilding the same ranks from vocab.bpe's merges and comparing
    them with this file. The same ranks in the same order (tests/test_fast_tokenizer.py); tokspec.load
    takes them only under the tiktoken versions they were compared with and when their content hash is
    the one tiktoken's own loader gives (GPT2_PROVEN_TIKTOKEN, GPT2_SHA256)."""
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    table, vocab = _data_gym_bytes(), json.loads(_read("encoder.json"))
    specials = (ENDOFTEXT, "<|startoftext|>")  # not mergeable: tiktoken drops them from the ranks too
    ranks = {token.translate(table).encode("latin-1"): rank for token, rank in vocab.items() if token not in specials}
    return {"name": "gpt2", "pat_str": r50k_pat_str, "mergeable_ranks": ranks,
            "special_tokens": {ENDOFTEXT: vocab[ENDOFTEXT]}}


class FastTokens:
    """A fastokens tokenizer, as the encoders use it (this module's GPT-2, or fastjson's tokenizer.json)."""

    def __init__(self, tok):
        self.tok = tok

    def encode_batch_flat(self, texts):
        """(ids, offsets): every text's ids in one uint32 array, text i = ids[offsets[i]:offsets[i+1]];
        or None if fastokens refuses the batch (encoders.frame adds the document-boundary ids)."""
        try:
            ids, offsets = self.tok.encode_batch_flat(list(texts))
        except Exception:  # lone surrogates (UnicodeEncodeError): tiktoken repairs them, we defer to it
            return None
        return np.frombuffer(ids, dtype=np.uint32), np.frombuffer(offsets, dtype=np.uint64).astype(np.intp)


_preloaded = {}  # name -> a fastokens Tokenizer built by preload(), for load() to check and use


def preload(name):
    """Build encoding `name`'s fastokens tokenizer now (~0.4 s of the ~0.45 s a worker's encoder takes),
    before the encoding itself is at hand: a worker does it while the parent plans the run. load()
    takes it, and self-checks it as ever; a failure here is left for load() to meet and report."""
    if name not in ENCODINGS or name in _preloaded:
        return
    try:
        import fastokens

        _preloaded[name] = fastokens.Tokenizer.from_json_str(tokenizer_json())
    except Exception:
        pass


def load(name, enc):
    """A checked FastTokens for tiktoken encoding `name`, or raise Unavailable."""
    if name not in ENCODINGS:
        raise Unavailable(f"no fast path for {name!r}")
    try:
        import fastokens
    except ImportError:
        raise Unavailable("fastokens is not installed; pip install fastokens for a ~5-10x faster GPT-2 path") from None
    try:
        tok = _preloaded.pop(name, None)
        fast = FastTokens(tok if tok is not None else fastokens.Tokenizer.from_json_str(tokenizer_json()))
    except Exception as e:
        raise Unavailable(f"fastokens could not load GPT-2 ({type(e).__name__}: {e})") from None
    for s in SELF_CHECK:
        got = fast.encode_batch_flat([s])
        if got is None or got[0].tolist() != enc.encode_ordinary(s):
            raise Unavailable(f"fastokens failed the start-up self-check on {s[:30]!r}")
    return fast
