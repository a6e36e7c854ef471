"""The three shard formats, in one place for the writer, verify and the loader.

- bin:  raw little-endian tokens, no header: nanoGPT's np.memmap(path, dtype=np.uint16, mode="r").
- npy:  np.save of a 1-D array: build-nanogpt's np.load (byte-identical to what its fineweb.py writes).
- llmc: llm.c's .bin: 256 int32 header (magic, version, token count, zeros) then the tokens.
        uint16: magic 20240520 version 1; uint32 (vocab > 65536): magic 20240801 version 7.
"""
import hashlib
import io
import os

import numpy as np

FORMATS = ("bin", "npy", "llmc")
EXTENSION = {"bin": ".bin", "npy": ".npy", "llmc": ".bin"}
LLMC_HEADER_BYTES = 256 * 4
LLMC = {np.dtype("<u2"): (20240520, 1), np.dtype("<u4"): (20240801, 7)}


def header_bytes(fmt, tokens):
    """The bytes that precede the tokens in a shard file of this format."""
    return header_for(fmt, tokens.dtype, len(tokens))


def header_for(fmt, dtype, n):
    """The header of a shard of n tokens of this dtype (known before the tokens are)."""
    if fmt == "bin":
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
    if fmt == "bin":
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


def check_file(path, fmt, dtype, nbytes, ntokens):
    """What is wrong with a shard file, cheaply (exists, size, header, token count), or "" if nothing."""
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return f"missing: {name}"
    if size != nbytes:
        kind = "truncated" if size < nbytes else "too long"
        return f"{kind}: {name} is {size:,} bytes, manifest says {nbytes:,}"
    try:
        arr = open_tokens(path, fmt, dtype)
    except (OSError, ValueError) as e:
        return f"corrupt header: {name}: {e}"
    if len(arr) != ntokens:
        return f"corrupt: {name} holds {len(arr):,} tokens, manifest says {ntokens:,}"
    return ""


def sha256_file(path, block=8 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
