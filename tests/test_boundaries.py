"""Document-boundary policies and tokenizers beyond GPT-2 (issue 13, items 2 and 3).

Every run is compared with a reference built here, outside the tool: each document encoded by the
tokenizer's own library (tiktoken's encode_ordinary, or `tokenizers` with special-token text kept
as text) with the policy's ids around it. The non-GPT-2 tokenizer is Llama 3.2's real tokenizer.json
and tokenizer_config.json (conftest.llama_dir), read from a local path and from the loopback Hub.
"""
import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import needs_data, real_texts, run_cli
from hub import hub_env, start_hub
from tokshards.encoders import frame
from tokshards.tokspec import Boundary, default_policy

LITERALS = "A page that quotes <|begin_of_text|>, <|end_of_text|>, <|endoftext|> and <|eot_id|> as text."
BOS, EOS = 128000, 128001  # Llama 3's <|begin_of_text|>, <|end_of_text|>
FRAMES = {"bos-eos": ([BOS], [EOS]), "bos-before": ([BOS], []), "eos-after": ([], [EOS]), "eot-before": ([EOS], [])}


# ---------------------------------------------------------------- the framing itself


@settings(max_examples=300, deadline=None)
@given(docs=st.lists(st.lists(st.integers(10, 99), max_size=4), max_size=6), first_continues=st.booleans(),
       last_continues=st.booleans(), before=st.lists(st.integers(1, 9), max_size=2),
       after=st.lists(st.integers(1, 9), max_size=2))
def test_frame_puts_the_ids_around_each_document_in_order(docs, first_continues, last_continues, before, after):
    """Empty documents included: where one document ends and the next begins, its after-ids come first.
    A first document continued from the batch before has no ids before it; a last one that the next
    batch continues has none after it."""
    if not before and not after:
        after = [5]
    b = Boundary("x", tuple(before), tuple(after))
    ids = np.array([t for d in docs for t in d], dtype=np.uint32)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.intp)
    out, spans = frame(b, ids, offsets, first_continues, np.dtype("<u4"), last_continues)
    want = []
    for i, d in enumerate(docs):
        want += ([] if i == 0 and first_continues else before) + d + ([] if i == len(docs) - 1 and last_continues else after)
    assert out.tolist() == want
    assert [out[a:e].tolist() for a, e in spans] == docs


def test_default_policy_follows_what_the_tokenizer_config_names():
    assert default_policy("<|begin_of_text|>", "<|end_of_text|>", True) == "bos-eos"  # Llama 3
    assert default_policy(None, "<|endoftext|>", True) == "eos-after"  # Qwen2
    assert default_policy("<|endoftext|>", "<|endoftext|>", True) == "eos-after"  # SmolLM, GPT-2's tokenizer.json
    assert default_policy("<s>", None, True) == "bos-before"
    assert default_policy(None, None, True) is None  # refused: the user must choose
    assert default_policy("<s>", "</s>", False) == "eot-before"  # a bare tokenizer.json: the bytes it always had


# ---------------------------------------------------------------- runs against a reference


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory):
    """~150 real documents and one that quotes every special token of Llama 3 and GPT-2 as text."""
    texts = real_texts()[:150]
    texts.insert(3, LITERALS)
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, texts


def llama_reference(llama_dir, texts, policy):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    tok.encode_special_tokens = True  # special-token text is text (split_special_tokens=True)
    before, after = FRAMES[policy]
    return [before + e.ids + after for e in tok.encode_batch(texts, add_special_tokens=False)]


def gpt2_reference(texts, policy):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    return [([50256] if policy == "eot-before" else []) + enc.encode_ordinary(t) + ([50256] if policy == "eos-after" else [])
            for t in texts]


def shard_tokens(out):
    """Every token of a run, shards in order (bin format)."""
    m = json.loads((out / "manifest.json").read_text())
    dtype = m["settings"]["dtype"]
    return np.concatenate([np.fromfile(out / s["file"], dtype=dtype) for s in m["shards"]]), m


def ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def one_line_error(r, *needles):
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("fineweb.py: error: "), r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@needs_data
@pytest.mark.parametrize("policy", [None, "bos-before", "eos-after", "eot-before"])
def test_every_policy_frames_each_llama_document_as_tokenizers_encodes_it(tmp_path, llama_dir, docs_file, policy):
    path, texts = docs_file
    out = tmp_path / "out"
    flags = ["--doc-boundary", policy] if policy else []
    r = ok(run_cli("--input", path, "--tokenizer", llama_dir / "tokenizer.json", "--local-dir", out, "--nprocs", 2,
                   "--shard-size", "20K", *flags))
    policy = policy or "bos-eos"  # Llama 3's tokenizer_config.json names both: torchtitan's [BOS]+text+[EOS]
    tokens, m = shard_tokens(out)
    want = llama_reference(llama_dir, texts, policy)
    assert tokens.tolist() == [t for d in want for t in d]
    assert (tokens == BOS).sum() == len(texts) * (policy in ("bos-eos", "bos-before"))  # the quoted ones stayed text
    before, after = FRAMES[policy]
    st_ = m["settings"]
    assert (st_["doc_boundary"], st_["boundary_before"], st_["boundary_after"]) == (policy, before, after)
    assert st_["dtype"] == "<u4" and sum(s["docs"] for s in m["shards"]) == len(texts)
    said = {"bos-eos": "<|begin_of_text|> (128000) before, <|end_of_text|> (128001) after every document",
            "bos-before": "<|begin_of_text|> (128000) before every document",
            "eos-after": "<|end_of_text|> (128001) after every document",
            "eot-before": "<|end_of_text|> (128001) before every document"}[policy]
    assert f"document boundary {policy}: {said}" in r.stderr
    # inspect shows the policy and the first document's ids, boundary ids included
    shown = ok(run_cli("inspect", out, "--docs", 1, "--chars", 40)).stdout
    assert f"document boundary: {policy}:" in shown
    assert f"ids: [{', '.join(map(str, want[0][:6]))}, ..." in shown, shown
    assert ok(run_cli("verify", out)).stdout.strip().endswith("OK: every shard matches the manifest")


@needs_data
def test_gpt2_puts_its_end_of_text_after_with_eos_after_and_refuses_bos_policies(tmp_path, docs_file):
    path, texts = docs_file
    out = tmp_path / "out"
    ok(run_cli("--input", path, "--local-dir", out, "--nprocs", 1, "--doc-boundary", "eos-after"))
    tokens, m = shard_tokens(out)
    assert tokens.tolist() == [t for d in gpt2_reference(texts, "eos-after") for t in d]
    assert m["settings"]["boundary_after"] == [50256] and m["settings"]["boundary_before"] == []
    for policy in ("bos-eos", "bos-before"):
        one_line_error(run_cli("--input", path, "--local-dir", tmp_path / policy, "--doc-boundary", policy),
                       f"--doc-boundary {policy}: gpt2 has no beginning-of-text token", "eot-before or eos-after")
        assert not (tmp_path / policy).exists()


@needs_data
def test_nprocs_resume_and_a_changed_policy(tmp_path, llama_dir, docs_file):
    """--nprocs 1 and 2, and a run stopped by --max-tokens then resumed, give the same bytes; resuming
    with another --doc-boundary is refused in one line naming it."""
    path, _ = docs_file
    tok = llama_dir / "tokenizer.json"
    runs = {}
    for name, nprocs in (("one", 1), ("two", 2)):
        runs[name] = tmp_path / name
        ok(run_cli("--input", path, "--tokenizer", tok, "--local-dir", runs[name], "--nprocs", nprocs, "--shard-size", "20K"))
    resumed = tmp_path / "resumed"
    ok(run_cli("--input", path, "--tokenizer", tok, "--local-dir", resumed, "--shard-size", "20K", "--max-tokens", "50K"))
    r = one_line_error(run_cli("--input", path, "--tokenizer", tok, "--local-dir", resumed, "--shard-size", "20K",
                               "--doc-boundary", "eos-after"), "doc_boundary='bos-eos', not 'eos-after'")
    assert "--overwrite" in r
    ok(run_cli("--input", path, "--tokenizer", tok, "--local-dir", resumed, "--shard-size", "20K"))
    a, ma = shard_tokens(runs["one"])
    for other in (runs["two"], resumed):
        b, mb = shard_tokens(other)
        assert np.array_equal(a, b)
        assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]


def jsonl_files(where, texts, n):
    """texts written as n JSON-lines files in turn (a run over several files: ranks, parts)."""
    size = -(-len(texts) // n)
    files = []
    for k in range(n):
        f = where / f"in{k}.jsonl"
        f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[k * size : (k + 1) * size]))
        files.append(f)
    return files


@needs_data
def test_ranks_and_assemble_give_the_one_machine_bytes_with_a_policy(tmp_path, llama_dir):
    texts = real_texts()[:120]
    files = jsonl_files(tmp_path, texts, 3)
    tok = llama_dir / "tokenizer.json"
    common = ["--input", *files, "--tokenizer", tok, "--shard-size", "15K", "--doc-boundary", "eos-after", "--prefix", "p"]
    ok(run_cli(*common, "--local-dir", tmp_path / "one", "--nprocs", 1))
    for rank in range(2):
        ok(run_cli(*common, "--local-dir", tmp_path / "many", "--nprocs", 1, "--rank", rank, "--world-size", 2))
    ok(run_cli("assemble", tmp_path / "many", "--nprocs", 1))
    a, ma = shard_tokens(tmp_path / "one")
    b, mb = shard_tokens(tmp_path / "many")
    assert np.array_equal(a, b) and a.tolist() == [t for d in llama_reference(llama_dir, texts, "eos-after") for t in d]
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    assert [s["docs"] for s in ma["shards"]] == [s["docs"] for s in mb["shards"]]


def test_tokenizer_refusals_are_one_line(tmp_path, llama_dir):
    txt = tmp_path / "t.txt"
    txt.write_text("hello\n\nworld\n")
    bare = tmp_path / "bare"  # a tokenizer.json whose config names no BOS
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((llama_dir / "tokenizer.json").read_bytes())
    (bare / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    one_line_error(run_cli("--input", txt, "--tokenizer", bare, "--doc-boundary", "bos-eos", "--local-dir", tmp_path / "o"),
                   "--doc-boundary bos-eos", "names no BOS token")
    (bare / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|nope|>", "eos_token": "<|end_of_text|>"}))
    one_line_error(run_cli("--input", txt, "--tokenizer", bare, "--local-dir", tmp_path / "o"),
                   "its BOS '<|nope|>' is not in the vocabulary")
    one_line_error(run_cli("--input", txt, "--tokenizer", "gpt2", "--tokenizer-revision", "main", "--local-dir", tmp_path / "o"),
                   "--tokenizer-revision is for a Hub tokenizer")
    one_line_error(run_cli("--input", txt, "--tokenizer", bare, "--eot-token", ".", "--doc-boundary", "eos-after",
                           "--local-dir", tmp_path / "o"), "--eot-token '.' is an ordinary token (text encodes to it)")
    (tmp_path / "sub" / "tok").mkdir(parents=True)  # a local directory named like OWNER/NAME: never the Hub
    one_line_error(run_cli("--input", txt, "--tokenizer", "sub/tok", "--local-dir", tmp_path / "o", cwd=tmp_path),
                   "--tokenizer sub/tok: this directory holds no tokenizer.json")
    garbled = tmp_path / "garbled.json"  # valid JSON but for one byte that is not UTF-8, inside a string
    garbled.write_bytes((llama_dir / "tokenizer.json").read_bytes().replace(b'"<|end_of_text|>"', b'"<|end\xff|>"', 1))
    one_line_error(run_cli("--input", txt, "--tokenizer", garbled, "--local-dir", tmp_path / "o"),
                   "is not UTF-8 text (byte")
    r = run_cli(  # a misspelt policy: argparse's own message and exit 2, as for every flag with choices
"--input", txt, "--doc-boundary", "bos-around", "--local-dir", tmp_path / "o")
    assert r.returncode == 2 and "invalid choice: 'bos-around'" in r.stderr
    assert not (tmp_path / "o").exists()


@needs_data
def test_a_version_2_manifest_resumes_as_eot_before(tmp_path, docs_file):
    """Manifests written before policies existed put the end-of-text id before every document: read so."""
    path, _ = docs_file
    out = tmp_path / "out"
    ok(run_cli("--input", path, "--local-dir", out, "--shard-size", "20K", "--max-tokens", "45K"))
    m = json.loads((out / "manifest.json").read_text())
    for key in ("doc_boundary", "boundary_before", "boundary_after"):
        del m["settings"][key]
    m["version"] = 2
    (out / "manifest.json").write_text(json.dumps(m))
    ok(run_cli("--input", path, "--local-dir", out, "--shard-size", "20K"))
    ok(run_cli("--input", path, "--local-dir", tmp_path / "fresh", "--shard-size", "20K"))
    a, ma = shard_tokens(out)
    b, _ = shard_tokens(tmp_path / "fresh")
    assert np.array_equal(a, b) and ma["version"] == 3 and ma["settings"]["doc_boundary"] == "eot-before"


# ---------------------------------------------------------------- a tokenizer from the (loopback) Hub


@pytest.fixture
def model_hub(tmp_path, llama_dir):
    with start_hub({}, tmp_path, models={"meta-llama/Llama-3.2-1B": llama_dir}) as hub:
        yield hub


@needs_data
def test_a_hub_tokenizer_is_pinned_and_recorded_by_content(tmp_path, llama_dir, docs_file, model_hub):
    path, texts = docs_file
    env = hub_env(model_hub, tmp_path)
    out = tmp_path / "hub"
    r = ok(run_cli("--input", path, "--tokenizer", "meta-llama/Llama-3.2-1B", "--local-dir", out, "--shard-size", "20K",
                   env=env))
    assert "tokenizer meta-llama/Llama-3.2-1B at " in r.stderr and "document boundary bos-eos" in r.stderr
    tokens, m = shard_tokens(out)
    assert tokens.tolist() == [t for d in llama_reference(llama_dir, texts, "bos-eos") for t in d]
    st_ = m["settings"]
    assert st_["tokenizer"] == "meta-llama/Llama-3.2-1B"
    assert st_["tokenizer_sha256"] == hashlib.sha256((llama_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert len(st_["tokenizer_revision"]) == 40 and st_["tokenizer_revision"] in model_hub.output.read_text()
    assert "HF_TOKEN" not in json.dumps(m)
    # inspect and a rerun read the tokenizer at the recorded commit, from the cache: no network needed
    model_hub.stop()
    shown = ok(run_cli("inspect", out, "--docs", 1, env=env)).stdout
    assert "document boundary: bos-eos:" in shown and "ids: [128000, " in shown
    r = ok(run_cli("--input", path, "--tokenizer", "meta-llama/Llama-3.2-1B", "--local-dir", out, "--shard-size", "20K",
                   env=env))
    assert "is already complete" in r.stderr


def test_hub_tokenizer_errors_are_one_line(tmp_path, llama_dir):
    txt = tmp_path / "t.txt"
    txt.write_text("hello\n\nworld\n")
    with start_hub({}, tmp_path, models={"meta-llama/Llama-3.2-1B": llama_dir}, require_token="secret") as hub:
        env = hub_env(hub, tmp_path)
        one_line_error(run_cli("--input", txt, "--tokenizer", "meta-llama/Llama-3.2-1B", "--local-dir", tmp_path / "o",
                               env=env), "gated", "HF_TOKEN")
        ok(run_cli("--input", txt, "--tokenizer", "meta-llama/Llama-3.2-1B", "--local-dir", tmp_path / "o",
                   env={**env, "HF_TOKEN": "secret"}))
        one_line_error(run_cli("--input", txt, "--tokenizer", "meta-llama/Llama-3.2-1B", "--tokenizer-revision", "v9",
                               "--local-dir", tmp_path / "o2", env={**env, "HF_TOKEN": "secret"}), "no revision 'v9'")
        hub.stop()
    one_line_error(run_cli("--input", txt, "--tokenizer", "meta-llama/Llama-3.2-1B", "--local-dir", tmp_path / "o3",
                           env=env), "could not fetch the tokenizer meta-llama/Llama-3.2-1B", "HF_ENDPOINT")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
