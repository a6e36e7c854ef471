"""A tokenizer's facts, apart from the code that encodes with it (encoders.py).

The parent process needs only facts: the end-of-text id, the vocabulary size and so the token
dtype, a content hash that identifies the vocabulary (so that a resumed run never mixes two
tokenizers that share a name or a path), and where a giant plain-text document may be cut without
changing a token. Encoding happens in the workers, which build an encoder from this spec.

- any tiktoken encoding by name (gpt2, r50k_base, cl100k_base, o200k_base, ...);
- a local Hugging Face `tokenizer.json` (via the `tokenizers` package).
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import UserError

# Names tried, in order, to find the document delimiter of a tokenizer.json.
EOT_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|begin_of_text|>", "<s>")

# Tokenizers whose pre-tokenizer regex ends a pre-token right after a "\n" and right before a " "
# when printable ASCII stands on both sides, whether or not the text goes on (textfile.py's cut
# points), so that cutting a giant document there cannot change a token: proven per pattern by
# tests/test_cut_rules.py. o200k_base is NOT one (its punctuation pre-token runs on over "\n" and
# "/": ";\n//" is one pre-token), nor is any tokenizer.json (a SentencePiece-style Metaspace
# pre-tokenizer adds a prefix to every piece): those documents are never cut.
GPT2_CUT_RULE = "gpt2-regex"
CUT_RULES = {"gpt2": GPT2_CUT_RULE, "r50k_base": GPT2_CUT_RULE, "p50k_base": GPT2_CUT_RULE, "p50k_edit": GPT2_CUT_RULE,
             "cl100k_base": GPT2_CUT_RULE}  # p50k_*: r50k's very pattern


@dataclass(frozen=True)
class TokenizerSpec:
    name: str  # a tiktoken encoding name, or the path of a tokenizer.json
    kind: str  # "tiktoken" | "tokenizers"
    eot: int  # the id put before every document
    n_vocab: int
    dtype: str  # "<u2" when every id fits, else "<u4" (nanoGPT / llm.c convention)
    sha256: str  # of the vocabulary: tiktoken's ranks + pattern + specials, or the tokenizer.json bytes
    cut_rule: Optional[str]  # GPT2_CUT_RULE, or None: a giant document is never cut

    @property
    def np_dtype(self):
        return np.dtype(self.dtype)


def is_tokenizer_file(name):
    return name.endswith(".json") or os.path.sep in name or os.path.isfile(name)


def load(name, eot_token=None):
    """(spec, prebuilt): prebuilt is what a worker needs to encode without re-reading the vocabulary
    (tiktoken's Encoding constructor arguments), or None for a tokenizer.json (workers load the file)."""
    if is_tokenizer_file(name):
        return _load_json(name, eot_token), None
    return _load_tiktoken(name, eot_token)


def _dtype(n_vocab):
    return "<u2" if n_vocab <= 2**16 else "<u4"


def _load_tiktoken(name, eot_token):
    import tiktoken

    try:
        enc = tiktoken.get_encoding(name)
    except ValueError:
        raise UserError(
            f"unknown tokenizer {name!r}: use a tiktoken encoding "
            f"({', '.join(tiktoken.list_encoding_names())}) or a path to a tokenizer.json"
        ) from None
    except Exception as e:  # vocab download failed (offline machine)
        raise UserError(
            f"could not load tiktoken encoding {name!r} ({type(e).__name__}: {e}); "
            "tiktoken downloads its vocabulary on first use: check the network or set TIKTOKEN_CACHE_DIR"
        ) from None
    parts = tiktoken_parts(enc)
    if eot_token is None:
        eot = enc.eot_token
    else:
        try:
            eot = enc.encode_single_token(eot_token)
        except (KeyError, TypeError):
            specials = ", ".join(sorted(enc.special_tokens_set))
            raise UserError(f"--eot-token {eot_token!r} is not a single token of {name} "
                            f"(its special tokens: {specials})") from None
    spec = TokenizerSpec(name, "tiktoken", int(eot), enc.n_vocab, _dtype(enc.n_vocab), tiktoken_sha256(parts),
                         CUT_RULES.get(name))
    return spec, parts


def tiktoken_parts(enc):
    """tiktoken's documented Encoding(name=, pat_str=, mergeable_ranks=, special_tokens=) arguments: a
    worker rebuilds the encoding from them without parsing the vocabulary files again (gpt2: ~0.2 s
    of a worker's start-up, for ~0.6 MB pickled per worker)."""
    return {"name": enc.name, "pat_str": enc._pat_str, "mergeable_ranks": enc._mergeable_ranks,
            "special_tokens": enc._special_tokens}


def tiktoken_sha256(parts):
    """The vocabulary's identity: every (token bytes, rank) in rank order, the regex and the specials."""
    h = hashlib.sha256(parts["pat_str"].encode())
    for token, rank in sorted(parts["mergeable_ranks"].items(), key=lambda kv: kv[1]):
        h.update(b"%d:%d:" % (rank, len(token)) + token)
    for token, rank in sorted(parts["special_tokens"].items()):
        h.update(b"special %d:" % rank + token.encode())
    return h.hexdigest()


def load_json_tokenizer(path):
    """A `tokenizers.Tokenizer` from a tokenizer.json that encodes special-token text as plain text."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its threads hang after fork
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise UserError("a tokenizer.json needs the 'tokenizers' package: pip install tokenizers") from None
    if not os.path.isfile(path):
        raise UserError(f"tokenizer file not found: {path}")
    try:
        tok = HFTokenizer.from_file(path)
    except Exception as e:
        raise UserError(f"could not load {path} as a Hugging Face tokenizer.json: {str(e).splitlines()[0]}") from None
    # Text that happens to contain "<|endoftext|>" must stay text, as with tiktoken's encode_ordinary.
    tok.encode_special_tokens = True
    return tok


def _load_json(path, eot_token):
    tok = load_json_tokenizer(path)
    vocab = tok.get_vocab(with_added_tokens=True)
    if eot_token is None:
        eot_token = next((t for t in EOT_CANDIDATES if t in vocab), None)
        if eot_token is None:
            raise UserError(f"{path}: no end-of-text token found among {EOT_CANDIDATES}; name it with --eot-token")
    elif eot_token not in vocab:
        raise UserError(f"{path}: --eot-token {eot_token!r} is not in the vocabulary")
    n_vocab = max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return TokenizerSpec(path, "tokenizers", int(vocab[eot_token]), n_vocab, _dtype(n_vocab), sha, None)
