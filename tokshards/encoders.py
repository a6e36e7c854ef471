"""Stage 2: text -> token ids, with the encoder a TokenizerSpec (tokspec.py) names.

One job: turn a batch of documents into one flat numpy array of token ids, each document framed by
the ids of the spec's document-boundary policy (tokspec.Boundary; by default GPT-2's end-of-text
*before* every document, the build-nanogpt / llm.c convention that modded-nanogpt's BOS-aligned loader
relies on); nothing before a first text that continues a document begun in an earlier batch, and
nothing after a last text that the next batch continues (a giant plain-text document cut in pieces).

Encoders are built where they encode (a worker process, or this one with --nprocs 0):
- tiktoken: encode_ordinary's ids (special-token text is plain text);
- fast GPT-2 (fastgpt2.py): the same ids, ~5-10x faster, checked against tiktoken at start and on
  1 document in `check_every` at run time; batches it refuses go to tiktoken;
- fast tokenizer.json (fastjson.py): fastokens again, checked the same way against `tokenizers`;
- tokenizers: a tokenizer.json, with special-token text encoded as plain text, never with its own
  post-processor's specials (add_special_tokens=False): the policy alone adds ids.
"""
from importlib.util import find_spec

import numpy as np

from . import fastgpt2, fastjson
from .errors import UserError
from .tokspec import load_json_tokenizer, package_version

BACKENDS = ("auto", "fast", "tiktoken")


class MismatchError(Exception):
    """The fast backend disagreed with the reference library: never written, the run stops."""


def backend_note(spec, backend):
    """In the parent, without loading anything: a line to print about the backend the workers will
    use, or None; raises UserError when --tokenizer-backend fast cannot be had at all."""
    has_fast_path = spec.kind == "tiktoken" and spec.name in fastgpt2.ENCODINGS or spec.kind == "tokenizers"
    if backend == "fast" and not has_fast_path:
        raise UserError(f"--tokenizer-backend fast: no fast path for {spec.name!r} "
                        f"(there is one for {', '.join(fastgpt2.ENCODINGS)} and for tokenizer.json tokenizers)")
    if backend == "tiktoken" or not has_fast_path or (backend == "auto" and spec.kind == "tokenizers"
                                                       and not spec.fast_proven):
        return None
    if find_spec("fastokens") is None:
        if backend == "fast":
            raise UserError("--tokenizer-backend fast: fastokens is not installed; pip install fastokens")
        ref = "tiktoken" if spec.kind == "tiktoken" else "tokenizers"
        return f"tokenizer: using {ref} (fastokens is not installed; pip install fastokens for ~5-40x)"
    return None


def make_encoder(spec, backend="auto", check_every=1000, prebuilt=None):
    """The encoder for spec. prebuilt: tiktoken's Encoding arguments or the tokenizer.json's text, from
    tokspec.load (no re-parse). backend "tiktoken" means the reference library: tiktoken, or `tokenizers`
    for a tokenizer.json; "auto" takes fastokens where it is proven (fastgpt2, tokspec.PROVEN_FAST)."""
    if spec.kind == "tokenizers":
        ref = JsonEncoder(spec, prebuilt)
        if backend == "tiktoken" or (backend == "auto" and not spec.fast_proven):
            return ref
        try:
            fast = fastjson.load(prebuilt if prebuilt is not None else open(spec.name, encoding="utf-8").read(), ref)
        except fastgpt2.Unavailable as e:
            if backend == "fast":
                raise UserError(f"--tokenizer-backend fast: {e}") from None
            return ref
        return FastEncoder(spec, fast, ref, check_every)
    enc = TiktokenEncoder(spec, prebuilt)
    if backend == "tiktoken" or spec.name not in fastgpt2.ENCODINGS:
        return enc
    try:
        fast = fastgpt2.load(spec.name, enc.enc)
    except fastgpt2.Unavailable as e:
        if backend == "fast":
            raise UserError(f"--tokenizer-backend fast: {e}") from None
        return enc
    return FastEncoder(spec, fast, enc, check_every)


def frame(boundary, ids, offsets, first_continues, dtype, last_continues=False):
    """(out, spans): the documents' ids (flat `ids`, document i = ids[offsets[i]:offsets[i+1]]) with the
    boundary ids around each (nothing before a first document that continues one begun in an earlier
    batch, nothing after a last one that a later batch continues), as one array of `dtype`;
    spans[i] = (begin, end) of document i's own ids in out."""
    n = len(offsets) - 1
    before, after = boundary.before, boundary.after
    skip = len(before) if first_continues and n else 0  # the continued first document has no ids before it
    # Each id goes in before an index of `ids`: document i's before-ids at its start, its after-ids at
    # its end. Where indices meet (a document's end is the next one's start; an empty document), the ids
    # must stay in document order: sorted by (index, document, before/after), then np.insert, which keeps
    # the given order of equal indices (a stable sort).
    where, what, key = [], [], []
    docs = np.arange(n, dtype=np.intp)
    for k, t in enumerate(before):
        first = 1 if skip else 0
        where.append(offsets[first:-1])
        what.append(np.full(n - first, t, dtype=np.uint32))
        key.append(docs[first:] * 64 + k)
    last = n - 1 if last_continues and n else n  # the last document goes on in the next batch: no ids after it
    for k, t in enumerate(after):
        where.append(offsets[1 : last + 1])
        what.append(np.full(last, t, dtype=np.uint32))
        key.append(docs[:last] * 64 + 32 + k)
    shift = np.arange(n, dtype=np.intp) * (len(before) + len(after)) + len(before) - skip
    spans = np.stack([offsets[:-1] + shift, offsets[1:] + shift], axis=1) if n else np.empty((0, 2), dtype=np.intp)
    if not where:
        return ids.astype(dtype, copy=False), spans
    if len(where) == 1 and len(where[0]):  # one id per document (eot-before, the default): already in order
        return np.insert(ids, where[0], what[0][0]).astype(dtype, copy=False), spans
    where, what, key = np.concatenate(where), np.concatenate(what), np.concatenate(key)
    order = np.lexsort((key, where))
    return np.insert(ids, where[order], what[order]).astype(dtype, copy=False), spans


def frame_list(boundary, arrays, first_continues, dtype, last_continues=False):
    """frame() for one id array per document."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.intp, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.intp)
    ids = np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.empty(0, dtype=np.uint32)
    return frame(boundary, ids, offsets, first_continues, dtype, last_continues)[0]


class TiktokenEncoder:
    def __init__(self, spec, prebuilt=None):
        import tiktoken

        self.spec = spec
        self.enc = tiktoken.Encoding(**prebuilt) if prebuilt else tiktoken.get_encoding(spec.name)
        self.backend = f"tiktoken {package_version('tiktoken')}"

    def encode_one(self, text):
        try:
            # Same ids as encode_ordinary (special-token text is encoded as plain text),
            # but straight into numpy: 10-20% faster than a Python list.
            return self.enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:
            # A lone surrogate: encode_ordinary repairs it where encode_to_numpy raises.
            return np.asarray(self.enc.encode_ordinary(text), dtype=np.uint32)

    def encode_batch(self, texts, first_continues=False, last_continues=False):
        return frame_list(self.spec.boundary, [self.encode_one(t) for t in texts], first_continues, self.spec.np_dtype,
                          last_continues)

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids])


class JsonEncoder:
    def __init__(self, spec, text=None):
        """text: the tokenizer.json's content (tokspec.load's prebuilt); else it is read from spec.name."""
        self.spec = spec
        self.tok = load_json_tokenizer(spec.name, text)
        self.backend = f"tokenizers {package_version('tokenizers')}"

    def encode_one(self, text):
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_batch(self, texts, first_continues=False, last_continues=False):
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        return frame_list(self.spec.boundary, [np.asarray(e.ids, dtype=np.uint32) for e in encs], first_continues,
                          self.spec.np_dtype, last_continues)

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


class FastEncoder:
    """fastokens, never trusted blindly: 1 document in check_every re-encoded with the reference library
    (tiktoken for GPT-2, `tokenizers` for a tokenizer.json)."""

    def __init__(self, spec, fast, reference, check_every):
        self.spec, self.fast, self.reference, self.check_every = spec, fast, reference, check_every
        self.checked_from = 0  # documents the fast path encoded in this process so far
        self.backend = f"fastokens {package_version('fastokens')}"

    def encode_batch(self, texts, first_continues=False, last_continues=False):
        got = self.fast.encode_batch_flat(texts)
        if got is None:  # the fast path refused this batch (lone surrogates): the reference does it
            return self.reference.encode_batch(texts, first_continues, last_continues)
        out, spans = frame(self.spec.boundary, *got, first_continues, self.spec.np_dtype, last_continues)
        if self.check_every:
            self._check(texts, first_continues, out, spans)
        return out

    def _check(self, texts, first_continues, out, spans):
        """Re-encode 1 document in check_every with the reference and compare its ids, id for id; a difference
        stops the run before the batch is written. The documents checked are numbers 0, N, 2N, ... of
        those the fast path encoded in this process, whatever the batches: a batch can be a whole
        parquet row group (~1000 documents), too much to re-encode at once.
        spans[i] = (begin, end) of document i's own ids in `out` (frame() put the boundary ids around them)."""
        n, step = len(texts), self.check_every
        first = -self.checked_from % step
        self.checked_from += n
        for i in range(first, n, step):
            a, b = (int(x) for x in spans[i])
            ref = self.reference.encode_one(texts[i])
            if not np.array_equal(out[a:b], ref):
                ref_name = self.reference.backend.split()[0]
                raise MismatchError(
                    f"the fast tokenizer ({self.backend}) disagrees with {ref_name} on document {i} of a batch of {n}, "
                    f"starting {texts[i][:60]!r}; rerun with --tokenizer-backend tiktoken"
                )

    def decode(self, ids):
        return self.reference.decode(ids)
