"""Stage 2: text -> token ids.

One job: turn a batch of documents into one flat numpy array of token ids, with the
end-of-text token *before* every document (the build-nanogpt / llm.c convention that
modded-nanogpt's BOS-aligned loader relies on).

Two kinds of tokenizer:
- any tiktoken encoding by name (gpt2, r50k_base, cl100k_base, o200k_base, ...);
- a local Hugging Face `tokenizer.json` (via the `tokenizers` package).
"""
import os
import signal

import numpy as np

from .errors import UserError

# Names tried, in order, to find the document delimiter of a tokenizer.json.
EOT_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|begin_of_text|>", "<s>")


BACKENDS = ("auto", "fast", "tiktoken")


class MismatchError(Exception):
    """The fast backend disagreed with tiktoken: never written, the run stops."""


class Tokenizer:
    """encode_batch(texts) -> flat array: [eot] + ids(text) for each text."""

    def __init__(self, spec, eot_token=None, backend="auto", check_every=1000, encode=True, tiktoken_parts=None):
        """encode=False: only the facts (name, eot, vocabulary size, dtype), for a parent process
        whose workers do the encoding: the fast backend is then loaded and checked by them.
        check_every=N: with the fast backend, re-encode documents 0, N, 2N, ... with tiktoken (0 = never).
        tiktoken_parts: the tiktoken encoding as built by another process (see worker_args)."""
        self.spec, self.eot_spec, self.backend_spec, self.check_every = spec, eot_token, backend, check_every
        self._fast, self.note, self._fast_docs = None, None, 0  # _fast_docs: documents the fast path encoded
        if spec.endswith(".json") or os.path.sep in spec or os.path.isfile(spec):
            self._init_hf(spec, eot_token)
            self.backend = f"tokenizers {_version('tokenizers')}"
        else:
            self._init_tiktoken(spec, eot_token, tiktoken_parts)
            self.backend = f"tiktoken {_version('tiktoken')}"
            if backend != "tiktoken" and encode:
                self._init_fast(backend)
            elif backend != "tiktoken":
                self._probe_fast(backend)
        # Tokens are stored as uint16 whenever they fit, exactly like nanoGPT / llm.c;
        # a larger vocabulary switches to uint32 so that no id can ever wrap.
        self.dtype = np.dtype("<u2") if self.n_vocab <= 2**16 else np.dtype("<u4")
        self._eot = np.array([self.eot], dtype=np.uint32)

    def worker_args(self):
        """init_worker's arguments, for a process pool that encodes for this process.

        A tiktoken encoding goes as the parts this process already built (tiktoken's documented
        Encoding(name=, pat_str=, mergeable_ranks=, special_tokens=) rebuild): a worker then skips
        get_encoding's parsing of the vocabulary files (gpt2: ~0.2 s of a worker's ~0.65 s start-up,
        for ~0.6 MB pickled per worker). The fast backend's JSON is not sent: with workers this
        process never builds it, and building it here would only move that ~0.07 s into the parent."""
        parts = None
        if self._encode_one is not None:  # tiktoken (a tokenizer.json is loaded from its file by each worker)
            e = self._enc
            parts = {"name": e.name, "pat_str": e._pat_str, "mergeable_ranks": e._mergeable_ranks,
                     "special_tokens": e._special_tokens}
        return (self.spec, self.eot_spec, self.backend_spec, self.check_every, parts)

    def _init_tiktoken(self, name, eot_token, parts=None):
        import tiktoken

        try:
            self._enc = tiktoken.Encoding(**parts) if parts else tiktoken.get_encoding(name)
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
        self.name = name
        self.n_vocab = self._enc.n_vocab
        if eot_token is None:
            self.eot = self._enc.eot_token
        else:
            self.eot = self._enc.encode_single_token(eot_token)
        self._encode_one = self._encode_tiktoken

    def _init_fast(self, backend):
        from . import fastgpt2

        try:
            self._fast = fastgpt2.load(self.name, self._enc)
        except fastgpt2.Unavailable as e:
            if backend == "fast":
                raise UserError(f"--tokenizer-backend fast: {e}") from None
            self.note = f"tokenizer: using tiktoken ({e})" if self.name in fastgpt2.ENCODINGS else None
            return
        self.backend = f"fastokens {_version('fastokens')}"

    def _probe_fast(self, backend):
        """Without loading it: is the fast path installed? (The workers load and self-check it.)"""
        from importlib.util import find_spec

        from . import fastgpt2

        if self.name in fastgpt2.ENCODINGS and find_spec("fastokens") is None:
            if backend == "fast":
                raise UserError("--tokenizer-backend fast: fastokens is not installed; pip install fastokens")
            self.note = "tokenizer: using tiktoken (fastokens is not installed; pip install fastokens for ~5-10x)"

    def _encode_tiktoken(self, text):
        try:
            # Same ids as encode_ordinary (special-token text is encoded as plain text),
            # but straight into numpy: 10-20% faster than a Python list.
            return self._enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:
            # A lone surrogate: encode_ordinary repairs it where encode_to_numpy raises.
            return np.asarray(self._enc.encode_ordinary(text), dtype=np.uint32)

    def _init_hf(self, path, eot_token):
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
            raise UserError(f"could not load {path} as a Hugging Face tokenizer.json: {e}") from None
        # Text that happens to contain "<|endoftext|>" must stay text, as with encode_ordinary.
        tok.encode_special_tokens = True
        vocab = tok.get_vocab(with_added_tokens=True)
        if eot_token is None:
            eot_token = next((t for t in EOT_CANDIDATES if t in vocab), None)
            if eot_token is None:
                raise UserError(f"{path}: no end-of-text token found among {EOT_CANDIDATES}; name it with --eot-token")
        elif eot_token not in vocab:
            raise UserError(f"{path}: --eot-token {eot_token!r} is not in the vocabulary")
        self._hf = tok
        self.name = path
        self.eot = vocab[eot_token]
        self.n_vocab = max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)
        self._encode_one = None

    def encode_batch(self, texts, first_continues=False):
        """Flat token array for `texts`; no end-of-text before texts[0] if it continues a document."""
        if self._fast is not None:
            got = self._fast.encode_batch_spans(texts, first_continues, self.eot, self.dtype)
            if got is not None:  # None: the fast path refused this batch (lone surrogates): tiktoken does it
                out, spans = got
                if self.check_every:
                    self._check(texts, first_continues, out, spans)
                return out
        return self._encode_slow(texts, first_continues)

    def _check(self, texts, first_continues, out, spans):
        """Re-encode 1 document in check_every with tiktoken and compare its ids, id for id; a difference
        stops the run before the batch is written. The documents checked are numbers 0, N, 2N, ... of
        those the fast path encoded in this process, whatever the batches: a batch can be a whole
        parquet row group (~1000 documents), too much to re-encode at once.
        spans[i] = (begin, end) of document i's ids in `out` (after its eot, if it has one)."""
        n, step = len(texts), self.check_every
        first = -self._fast_docs % step
        self._fast_docs += n
        for i in range(first, n, step):
            a, b = (int(x) for x in spans[i])
            ref = self._encode_one(texts[i])
            eot_ok = (i == 0 and first_continues) or (a > 0 and out[a - 1] == self.eot)
            if not (eot_ok and np.array_equal(out[a:b], ref)):
                raise MismatchError(
                    f"the fast tokenizer ({self.backend}) disagrees with tiktoken on document {i} of a batch of {n}, "
                    f"starting {texts[i][:60]!r}; rerun with --tokenizer-backend tiktoken"
                )

    def _encode_slow(self, texts, first_continues):
        if self._encode_one is None:
            encs = self._hf.encode_batch(list(texts), add_special_tokens=False)
            ids = [np.asarray(e.ids, dtype=np.uint32) for e in encs]
        else:
            ids = [self._encode_one(t) for t in texts]
        parts = []
        for i, a in enumerate(ids):
            if i or not first_continues:
                parts.append(self._eot)
            parts.append(a)
        if not parts:
            return np.empty(0, dtype=self.dtype)
        return np.concatenate(parts).astype(self.dtype, copy=False)

    def decode(self, ids):
        ids = [int(i) for i in ids]
        if self._encode_one is None:
            return self._hf.decode(ids, skip_special_tokens=False)
        return self._enc.decode(ids)


def _version(pkg):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


# --- worker-process side: one tokenizer per process, built once (never per document) ---
_worker_tok = None


_worker_error = None


def init_worker(spec, eot_token, backend, check_every, tiktoken_parts=None):
    """A process pool's initializer: init_worker(*tok.worker_args())."""
    # one process per core already: the fast tokenizer must not start threads of its own
    os.environ["FASTOKENS_BPE_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "1"
    # Ctrl-C reaches the whole process group: leave it to the parent (one line, exit 130)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _worker_tok, _worker_error
    try:
        _worker_tok = Tokenizer(spec, eot_token, backend, check_every, tiktoken_parts=tiktoken_parts)
    except UserError as e:  # e.g. --tokenizer-backend fast failing its self-check: say so, from the first task
        _worker_error = e


def encode_in_worker(texts, first_continues, task=None):
    """(tokens, source token counts or None, backend that encoded them), in a worker process."""
    if _worker_error is not None:
        raise _worker_error
    return (*encode(_worker_tok, texts, first_continues, task), _worker_tok.backend)


def encode(tok, texts, first_continues, task=None):
    """(tokens, the source's token counts or None): reading the texts first when given a task."""
    counts = None
    if task is not None:
        texts, counts = task.read()
    if not isinstance(texts, list):  # an Arrow string column (parquet): made into str here, not by the reader
        texts = [t if t is not None else "" for t in texts.to_pylist()]  # null text: empty document
    return tok.encode_batch(texts, first_continues), counts
