"""The shard formats, in one place for the writer, verify and the loader.

- bin:  raw little-endian tokens, no header: nanoGPT's np.memmap(path, dtype=np.uint16, mode="r").
- npy:  np.save of a 1-D array: build-nanogpt's np.load (byte-identical to what its fineweb.py writes).
- llmc: llm.c's .bin: 256 int32 header (magic, version, token count, zeros) then the tokens.
        uint16: magic 20240520 version 1; uint32 (vocab > 65536): magic 20240801 version 7.
- megatron: Megatron-LM's indexed dataset (megatron/core/datasets/indexed_dataset.py), a pair per shard:
        .bin  the tokens, raw, in the dtype Megatron's own builder picks (DType.optimal_dtype:
              uint16 when the vocabulary is under 65,500, else int32);
        .idx  "MMIDIDX\0\0", <Q version 1, <B dtype code, <Q sequence count, <Q document count, then
              int32 sequence lengths, int64 byte offsets, int64 document indices [0, 1, ..., n]:
              each document is one sequence (as tools/preprocess_data.py writes without sentence splits).
        A shard holds whole documents: Megatron samples within one file.
"""
import hashlib
import io
import os
import struct

import numpy as np

FORMATS = ("bin", "npy", "llmc", "megatron")
EXTENSION = {"bin": ".bin", "npy": ".npy", "llmc": ".bin", "megatron": ".bin"}
INDEX_EXTENSION = ".idx"  # the second file of a megatron shard
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {np.dtype("<u2"): 8, np.dtype("<i4"): 4}  # megatron.core.datasets.indexed_dataset.DType
LLMC_HEADER_BYTES = 256 * 4
LLMC = {np.dtype("<u2"): (20240520, 1), np.dtype("<u4"): (20240801, 7)}


def token_dtype(fmt, tokenizer_dtype, n_vocab):
    """The dtype shards of this format hold: Megatron's own rule for megatron, else the tokenizer's."""
    if fmt == "megatron":
        return "<u2" if n_vocab < 65500 else "<i4"
    return tokenizer_dtype


def whole_documents(fmt):
    """Shards of this format end at a document boundary (else every shard but the last is exactly full)."""
    return fmt == "megatron"


def megatron_index(lengths, dtype):
    """The .idx bytes for a .bin holding one sequence (document) per entry of `lengths`."""
    lengths = np.asarray(lengths, dtype=np.int64)
    pointers = np.zeros(len(lengths), dtype="<i8")
    np.cumsum(lengths[:-1] * np.dtype(dtype).itemsize, out=pointers[1:])
    return b"".join([
        MEGATRON_MAGIC, struct.pack("<Q", 1), struct.pack("<B", MEGATRON_CODES[np.dtype(dtype)]),
        struct.pack("<Q", len(lengths)), struct.pack("<Q", len(lengths) + 1),
        lengths.astype("<i4").tobytes(), pointers.tobytes(), np.arange(len(lengths) + 1, dtype="<i8").tobytes(),
    ])


def read_megatron_index(path, dtype):
    """The sequence lengths of a megatron .idx, checked against what this tool writes; raises ValueError."""
    with open(path, "rb") as f:
        head = f.read(34)
        if len(head) < 34 or head[:9] != MEGATRON_MAGIC:
            raise ValueError("not a Megatron index (no MMIDIDX header)")
        version, code, n, ndocs = struct.unpack("<QBQQ", head[9:])
        if version != 1 or code != MEGATRON_CODES.get(np.dtype(dtype)):
            raise ValueError(f"index version {version} dtype code {code}, expected 1 and {MEGATRON_CODES[np.dtype(dtype)]}")
        rest = f.read()
    if ndocs != n + 1 or len(rest) != n * (4 + 8) + (n + 1) * 8:
        raise ValueError(f"index of {n} sequences and {ndocs} document indices holds {len(rest)} more bytes")
    lengths = np.frombuffer(rest, dtype="<i4", count=n)
    if rest != megatron_index(lengths, dtype)[34:]:
        raise ValueError("index offsets or document indices are not those of its sequence lengths")
    return lengths


def header_bytes(fmt, tokens):
    """The bytes that precede the tokens in a shard file of this format."""
    return header_for(fmt, tokens.dtype, len(tokens))


def header_for(fmt, dtype, n):
    """The header of a shard of n tokens of this dtype (known before the tokens are)."""
    if fmt in ("bin", "megatron"):
        return b""
    if fmt == "npy":
        # Exactly what np.save writes for a 1-D array (format version 1.0).
        buf = io.BytesIO()
        d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
        np.lib.format.write_array_header_1_0(buf, d)
        return buf.getvalue()
    if fmt == "llmc":
        if n >= 2**31:
            raise ValueError("llm.c shards hold fewer than 2**31 tokens; use a smaller --shard-size")
        header = np.zeros(256, dtype="<i4")
        header[0], header[1] = LLMC[np.dtype(dtype)]
        header[2] = n
        return header.tobytes()
    raise ValueError(f"unknown format {fmt!r}")


def write_shard(f, fmt, tokens):
    """Write header + tokens to an open binary file; return (bytes written, sha256 hex)."""
    head = header_bytes(fmt, tokens)
    h = hashlib.sha256(head)
    h.update(memoryview(tokens).cast("B"))
    f.write(head)
    f.write(memoryview(np.ascontiguousarray(tokens)).cast("B"))  # (ndarray.tofile hides ENOSPC's errno)
    return len(head) + tokens.nbytes, h.hexdigest()


def open_tokens(path, fmt, dtype):
    """Memory-map a shard's tokens, checking its header. Raises ValueError saying what is wrong."""
    dtype = np.dtype(dtype)
    if fmt in ("bin", "megatron"):
        if os.path.getsize(path) == 0:  # np.memmap refuses an empty file
            return np.empty(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")
    if fmt == "npy":
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 1 or arr.dtype != dtype:
            raise ValueError(f"npy header says {arr.dtype} shape {arr.shape}, expected 1-D {dtype}")
        return arr
    if fmt == "llmc":
        header = np.fromfile(path, dtype="<i4", count=256)
        if len(header) < 256:
            raise ValueError("shorter than the 1024-byte llm.c header")
        magic, version, ntok = (int(x) for x in header[:3])
        if (magic, version) != LLMC[dtype]:
            raise ValueError(f"llm.c header magic/version {magic}/{version}, expected {LLMC[dtype]}")
        tokens = np.memmap(path, dtype=dtype, mode="r", offset=LLMC_HEADER_BYTES)
        if len(tokens) != ntok:
            raise ValueError(f"llm.c header says {ntok} tokens, file holds {len(tokens)}")
        return tokens
    raise ValueError(f"unknown format {fmt!r}")


def check_file(path, fmt, dtype, nbytes, ntokens, index_bytes=None):
    """What is wrong with a shard file, cheaply (exists, size, header, token count), or "" if nothing.
    A megatron shard's .idx (index_bytes: its size) is checked too: size, header, lengths adding up."""
    name = os.path.basename(path)
    problem = size_problem(path, nbytes)
    if problem:
        return problem
    try:
        arr = open_tokens(path, fmt, dtype)
    except (OSError, ValueError) as e:
        return f"corrupt header: {name}: {e}"
    if len(arr) != ntokens:
        return f"corrupt: {name} holds {len(arr):,} tokens, manifest says {ntokens:,}"
    if fmt == "megatron":
        idx = path[: -len(EXTENSION[fmt])] + INDEX_EXTENSION
        iname = os.path.basename(idx)
        problem = size_problem(idx, index_bytes)
        if problem:
            return problem
        try:
            lengths = read_megatron_index(idx, dtype)
        except (OSError, ValueError) as e:
            return f"corrupt: {iname}: {e}"
        if int(lengths.sum()) != ntokens:
            return f"corrupt: {iname} indexes {int(lengths.sum()):,} tokens, {name} holds {ntokens:,}"
    return ""


def size_problem(path, nbytes):
    """"missing: NAME", "truncated: ..." or "too long: ..." for a file that is not `nbytes` long, else ""."""
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return f"missing: {name}"
    if size != nbytes:
        kind = "truncated" if size < nbytes else "too long"
        return f"{kind}: {name} is {size:,} bytes, manifest says {nbytes:,}"
    return ""


def sha256_file(path, block=8 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
