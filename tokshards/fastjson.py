"""A fast path for tokenizer.json tokenizers: fastokens, loaded from the same tokenizer.json.

fastokens reads a Hugging Face tokenizer.json (BPE with ByteLevel or Split pre-tokenizers) and gives
the ids of the `tokenizers` library at ~20-40x less CPU per token (bench/fast_json.py). It is loaded
from the run's own tokenizer.json with its *special* added tokens left out and no post-processor, so
that it encodes the way the tool uses `tokenizers` (special-token text stays text; no ids added: the
document-boundary policy adds them).

Used only behind the same guards as the GPT-2 path:
- by default (--tokenizer-backend auto) only for a tokenizer whose pre-tokenizing and model are proven
  identical by the test suite (tokspec.PROVEN_FAST: its id is tokspec.fast_key of the tokenizer.json);
  --tokenizer-backend fast asks for it on any tokenizer.json, with the guards below;
- a start-up self-check against `tokenizers` in every process; batches it refuses go to `tokenizers`;
- 1 document in --check-every re-encoded with `tokenizers` during the run (encoders.FastEncoder);
- each shard's manifest entry records the backend that encoded it.
"""
import json

from .fastgpt2 import SELF_CHECK, FastTokens, Unavailable

# Special-token text that must stay text, and text around it.
SPECIAL_TEXT = ["<|begin_of_text|> a <|end_of_text|>", "<|eot_id|><|start_header_id|>", "</s><s> <unk>", "<|endoftext|>"]


def fast_json(text):
    """The tokenizer.json as fastokens is given it: no special added tokens, no post-processor."""
    d = json.loads(text)
    d["added_tokens"] = [t for t in d.get("added_tokens") or [] if not t.get("special")]
    d["post_processor"] = None
    return json.dumps(d)


def load(text, reference):
    """A checked FastTokens for the tokenizer.json `text`, or raise Unavailable. reference: the
    encoders.JsonEncoder of the same file (its encode_one is the truth)."""
    try:
        import fastokens
    except ImportError:
        raise Unavailable("fastokens is not installed; pip install fastokens") from None
    try:
        fast = FastTokens(fastokens.Tokenizer.from_json_str(fast_json(text)))
    except Exception as e:
        raise Unavailable(f"fastokens could not load this tokenizer.json ({type(e).__name__}: {str(e)[:200]})") from None
    for s in SELF_CHECK + SPECIAL_TEXT:
        got = fast.encode_batch_flat([s])
        if got is None or got[0].tolist() != reference.encode_one(s).tolist():
            raise Unavailable(f"fastokens failed the start-up self-check against tokenizers on {s[:30]!r}")
    return fast
