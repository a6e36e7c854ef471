"""build-nanogpt's fineweb.py, re-implemented for the benchmark (row "b" of bench.py).

The algorithm is build-nanogpt's, line for line (github.com/karpathy/build-nanogpt, fineweb.py):
  - fw = load_dataset(..., split="train"): the non-streaming read, which first converts the
    parquet files into an Arrow cache (here: the local parquet files, into --cache-dir);
  - tokenize(doc) = [eot] + enc.encode_ordinary(doc["text"]) -> np.array -> assert < 2**16 -> uint16;
  - nprocs = max(1, os.cpu_count() // 2); mp.Pool(nprocs).imap(tokenize, fw, chunksize=16)
    (the default start method, fork on Linux with Python < 3.14);
  - a preallocated 1e8-token uint16 buffer, the same remainder logic at the shard boundary,
    np.save to edufineweb_{val|train}_{index:06d}.npy, shard 0 = val; tqdm progress per document.
The only changes: the input is `load_dataset("parquet", data_files=...)` on local files instead of
the Hub, the output directory and HF cache are flags, --nprocs can override the default, and it
prints one JSON line with its timings at the end.
"""
import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np
import tiktoken
from datasets import load_dataset
from tqdm import tqdm

# init the tokenizer (module level, as in build-nanogpt: fork-started workers inherit it)
enc = tiktoken.get_encoding("gpt2")
eot = enc._special_tokens["<|endoftext|>"]  # end of text token


def tokenize(doc):
    # tokenizes a single document and returns a numpy array of uint16 tokens
    tokens = [eot]  # the special <|endoftext|> token delimits all documents
    tokens.extend(enc.encode_ordinary(doc["text"]))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    tokens_np_uint16 = tokens_np.astype(np.uint16)
    return tokens_np_uint16


def write_datafile(filename, tokens_np):
    np.save(filename, tokens_np)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-files", nargs="+", required=True)
    p.add_argument("--local-dir", required=True)
    p.add_argument("--cache-dir", required=True, help="HF datasets cache (use a fresh one to time the conversion)")
    p.add_argument("--nprocs", type=int, default=None, help="default: max(1, os.cpu_count() // 2), as build-nanogpt")
    p.add_argument("--shard-size", type=int, default=int(1e8))
    args = p.parse_args()

    t0 = time.time()
    shard_size = args.shard_size  # 100M tokens per shard
    DATA_CACHE_DIR = args.local_dir
    os.makedirs(DATA_CACHE_DIR, exist_ok=True)

    # download the dataset -> here: convert the local parquet files, exactly like the Hub path does
    fw = load_dataset("parquet", data_files=args.data_files, split="train", cache_dir=args.cache_dir)
    t_load = time.time() - t0

    # tokenize all documents and write output shards, each of shard_size tokens (last shard has remainder)
    nprocs = args.nprocs or max(1, os.cpu_count() // 2)
    with mp.Pool(nprocs) as pool:
        shard_index = 0
        # preallocate buffer to hold current shard
        all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
        token_count = 0
        progress_bar = None
        for tokens in pool.imap(tokenize, fw, chunksize=16):
            # is there enough space in the current shard for the new tokens?
            if token_count + len(tokens) < shard_size:
                # simply append tokens to current shard
                all_tokens_np[token_count : token_count + len(tokens)] = tokens
                token_count += len(tokens)
                # update progress bar
                if progress_bar is None:
                    progress_bar = tqdm(total=shard_size, unit="tokens", desc=f"Shard {shard_index}")
                progress_bar.update(len(tokens))
            else:
                # write the current shard and start a new one
                split = "val" if shard_index == 0 else "train"
                filename = os.path.join(DATA_CACHE_DIR, f"edufineweb_{split}_{shard_index:06d}")
                # split the document into whatever fits in this shard; the remainder goes to next one
                remainder = shard_size - token_count
                progress_bar.update(remainder)
                all_tokens_np[token_count : token_count + remainder] = tokens[:remainder]
                write_datafile(filename, all_tokens_np)
                shard_index += 1
                progress_bar = None
                # populate the next shard with the leftovers of the current doc
                all_tokens_np[0 : len(tokens) - remainder] = tokens[remainder:]
                token_count = len(tokens) - remainder

        # write any remaining tokens as the last shard
        if token_count != 0:
            split = "val" if shard_index == 0 else "train"
            filename = os.path.join(DATA_CACHE_DIR, f"edufineweb_{split}_{shard_index:06d}")
            write_datafile(filename, all_tokens_np[:token_count])
    if progress_bar is not None:
        progress_bar.close()
    print(json.dumps({"load_s": round(t_load, 3), "total_s": round(time.time() - t0, 3), "nprocs": nprocs,
                      "docs": len(fw)}), flush=True)


if __name__ == "__main__":
    main()
