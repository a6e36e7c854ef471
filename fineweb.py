"""FineWeb-Edu (or any Hugging Face text dataset, or local files) -> training-ready token shards.

    python fineweb.py                      # sample-10BT -> edu_fineweb10B/, like build-nanogpt
    python fineweb.py --help               # every flag
    python fineweb.py verify DIR           # check shards against the manifest
    python fineweb.py inspect DIR          # summary + the first documents decoded back to text
    python fineweb.py merge DIR            # nanoGPT train.bin/val.bin, or --format to convert shards

The work is done by the modules of tokshards/, one per stage (README: "How it works"):
sources.py / hub.py (read) -> pool.py (tokenize) -> writer.py (shards) -> manifest.py, joined by
pipeline.py, in an output directory owned by outdir.py.
"""
from tokshards.command import main

if __name__ == "__main__":  # the guard multiprocessing needs: its workers import this file too
    main()
