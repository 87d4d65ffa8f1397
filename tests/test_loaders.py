"""Loaders: counts against shared/data/README.md on the real data, and malformed-input errors."""

from __future__ import annotations

import collections
import csv
import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from metarouter_jax.data import DATA_ENV, DataError
from metarouter_jax.loaders import (DATASETS, load_dataset, load_llmrouter, load_routellm,
                                    load_routerarena, load_routerbench)
from metarouter_jax.loaders.llmrouter import estimate_tokens
from metarouter_jax.loaders.registry import detect_format
from metarouter_jax.loaders.routerarena import family_of

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else REPO.parent / "shared" / "data"


def _real(folder: str) -> Path:
    path = _data_dir() / folder
    if not path.is_dir():
        pytest.skip(f"real dataset {folder!r} not found at {path} (set ${DATA_ENV} to the shared data folder)")
    return path


def _fake_embed(texts):
    rng = np.random.default_rng(len(texts))
    emb = rng.normal(size=(len(texts), 384)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _counts(data, idx=None):
    idx = np.arange(data.num_queries) if idx is None else idx
    return dict(collections.Counter(data.family_names[f] for f in data.family[idx]))


# ====================================================================== real data
LLMROUTER_MODELS = ("codegemma-7b", "gemma-2-9b-it", "llama-3.1-8b-instruct", "llama-3.1-nemotron-51b-instruct",
                    "llama-3.3-nemotron-super-49b-v1", "llama3-chatqa-1.5-70b", "llama3-chatqa-1.5-8b",
                    "mistral-7b-instruct-v0.3", "qwen2.5-7b-instruct")
# README table; the 6 questions listed under two tasks go to the first listing in file order,
# which is mmlu for all six (so mmlu 494 + 6, arc_challenge 498, openbook_qa 496).
LLMROUTER_TRAIN = {"agentverse-logicgrid": 150, "agentverse-mgsm": 200, "arc_challenge": 498, "commongen": 150,
                   "commonsense_qa": 500, "gpqa": 448, "gsm8k": 500, "human_eval": 164, "math": 504,
                   "mbpp": 498, "mmlu": 494 + 6, "natural_qa": 500, "openbook_qa": 496, "trivia_qa": 500}
LLMROUTER_TEST = {f: 50 for f in ("agentverse-logicgrid", "agentverse-mgsm", "commongen", "gpqa", "gsm8k",
                                  "human_eval", "mbpp", "mmlu", "natural_qa", "trivia_qa")}


@pytest.fixture(scope="module")
def llmrouter():
    return load_llmrouter(_real("llmrouter_14task"))


def test_llmrouter_counts_models_families(llmrouter):
    d = llmrouter
    assert d.num_queries == 5608 + 500 and d.embed_dim == 384
    assert d.model_names == LLMROUTER_MODELS
    assert len(d.split("train")) + len(d.split("valid")) == 5608 and len(d.split("test")) == 500
    assert len(d.split("valid")) == pytest.approx(561, abs=10)
    train_rows = np.array([i for i, q in enumerate(d.query_ids) if q.startswith("train-")])
    test_rows = np.array([i for i, q in enumerate(d.query_ids) if q.startswith("test-")])
    assert _counts(d, train_rows) == LLMROUTER_TRAIN and _counts(d, test_rows) == LLMROUTER_TEST
    assert np.array_equal(np.sort(np.concatenate([d.split("train"), d.split("valid")])), train_rows)
    assert np.array_equal(d.split("test"), test_rows)
    assert d.query_ids[0] == "train-0" and d.query_ids[-1] == "test-499"
    assert not np.isnan(d.quality).any() and not np.isnan(d.cost).any()
    assert any("119 test questions" in n for n in d.notes)
    assert any("estimate" in n for n in d.notes)


def test_llmrouter_quality_embeddings_and_cost(llmrouter):
    d = llmrouter
    best = d.model_names[int(np.argmax(d.model_summary("test")["quality"]))]
    assert best == "llama-3.1-nemotron-51b-instruct"
    assert d.model_summary("test")["quality"].max() == pytest.approx(0.563, abs=1e-3)
    test = d.split("test")
    assert np.nanmean(d.quality[test].max(axis=1)) == pytest.approx(0.743, abs=1e-3)
    with np.load(_real("llmrouter_14task") / "embeddings_minilm_l6.npz") as npz:
        np.testing.assert_array_equal(d.embeddings[test], npz["test_emb"].astype(np.float32))
    # scores are indexed by name, not key position: check one item against the file
    with gzip.open(_real("llmrouter_14task") / "test.json.gz", "rt") as f:
        item = json.load(f)[7]
    row = d.query_ids.index("test-7")
    assert [item["scores"][m] for m in d.model_names] == pytest.approx(d.quality[row].tolist())
    # all prices are equal in and out, so cost ratios between models are price ratios
    k_cheap, k_big = d.model_index("gemma-2-9b-it"), d.model_index("llama3-chatqa-1.5-70b")
    np.testing.assert_allclose(d.cost[:, k_big] / d.cost[:, k_cheap], 9.0, rtol=1e-5)
    assert (d.cost > 0).all() and d.cost.max() < 0.01


def test_llmrouter_options():
    path = _real("llmrouter_14task")
    d = load_llmrouter(path, valid_fraction=0, models=["qwen2.5-7b-instruct", "codegemma-7b"],
                       output_tokens={"gsm8k": 1000})
    assert "valid" not in d.splits and len(d.split("train")) == 5608
    assert d.model_names == ("qwen2.5-7b-instruct", "codegemma-7b")
    base = load_llmrouter(path, valid_fraction=0)
    gsm = d.family == d.family_names.index("gsm8k")
    k = base.model_index("qwen2.5-7b-instruct")
    assert (d.cost[gsm, 0] > base.cost[gsm, k]).all()
    np.testing.assert_array_equal(d.cost[~gsm, 0], base.cost[~gsm, k])
    with pytest.raises(KeyError, match="gpt-5.*known models"):
        load_llmrouter(path, models=["gpt-5", "codegemma-7b"])


def test_llmrouter_test_questions_seen_in_train_can_be_left_out():
    """119 test questions also occur in train (all gpqa and human_eval, 19 mbpp): the
    "llmrouter_unseen" variant leaves their train rows out, so no test query has a twin in
    training; drop_test leaves their test rows out instead."""
    path = _real("llmrouter_14task")
    base = load_llmrouter(path, valid_fraction=0)

    def twins(d, part, other):   # rows of `part` whose embedding equals one of `other`'s
        a, b = d.embeddings[d.split(part)], d.embeddings[d.split(other)]
        return int(((a @ b.T).max(1) > 0.999).sum())

    assert twins(base, "test", "train") == 119
    unseen = load_dataset("llmrouter_unseen", path=path, valid_fraction=0)
    assert unseen.split("train").size == 5608 - 119 and unseen.split("test").size == 500
    assert twins(unseen, "test", "train") == 0 and "119 train rows whose question also occurs in test" in unseen.notes[1]
    test = base.split("test")
    np.testing.assert_array_equal(unseen.quality[unseen.split("test")], base.quality[test])   # test unchanged
    assert unseen.family_names == base.family_names
    no_test = load_llmrouter(path, valid_fraction=0, test_twins="drop_test")
    assert no_test.split("test").size == 381 and no_test.split("train").size == 5608
    left = {no_test.family_names[f] for f in no_test.family[no_test.split("test")]}
    assert "gpqa" not in left and "human_eval" not in left and "mbpp" in left
    with pytest.raises(ValueError, match="test_twins must be one of"):
        load_llmrouter(path, test_twins="drop")


ROUTERARENA_FAMILIES = {"MMLUPro": 236, "OpenTDB": 97, "QANTA": 58, "PubMedQA": 46, "ArcMMLU": 39,
                        "NarrativeQA": 39, "SuperGLUE": 39, "LiveCodeBench": 38, "WMT19": 31, "GeoBench": 30,
                        "MedMCQA": 29, "Ethics": 25, "MusicTheoryBench": 20, "MMLU": 19, "MathQA": 15,
                        "ChessInstruct": 13, "AsDiv": 7, "FinQA": 7, "SocialiQA": 7, "MATH": 5,
                        "GeoGraphyData": 4, "AIME": 3, "GSM8K": 2}


def test_routerarena_real():
    d = load_routerarena(_real("routerarena_2model"))
    assert d.num_queries == 809 and d.model_names == ("claude-3-haiku-20240307", "gemini-2.0-flash-001")
    assert len(d.family_names) == 23 and _counts(d) == ROUTERARENA_FAMILIES
    s = d.model_summary()
    assert s["quality"] == pytest.approx([0.523, 0.690], abs=1e-3)
    assert np.nansum(d.cost, axis=0) == pytest.approx([0.1424, 0.0384], abs=1e-4)
    row = d.query_ids.index("NarrativeQA_4102")
    assert d.quality[row, 0] == 0.0 and any("1 scores outside [0, 1] clipped" in n for n in d.notes)
    parts = [d.split(n) for n in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == 809
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(809))
    assert len(d.split("test")) == pytest.approx(0.3 * 809, abs=12)
    assert len(set(d.query_ids)) == 809
    with np.load(_real("routerarena_2model") / "embeddings_minilm_l6.npz") as npz:
        j = list(npz["ids"]).index("AIME_58")
        np.testing.assert_array_equal(d.embeddings[d.query_ids.index("AIME_58")], npz["emb"][j].astype(np.float32))


def test_routellm_gsm8k_real():
    path = _real("routellm_gsm8k_mtbench")
    d = load_routellm(path)
    assert d.num_queries == 1319 and d.family_names == ("gsm8k",)
    assert d.model_names == ("gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert d.model_summary()["quality"] == pytest.approx([0.857, 0.638], abs=1e-3)
    assert (d.cost[:, 0] > d.cost[:, 1]).all() and any("estimate" in n for n in d.notes)
    assert sum(len(v) for v in d.splits.values()) == 1319
    clean = load_routellm(path, exclude_contaminated=True)
    in_splits = np.concatenate(list(clean.splits.values()))
    assert in_splits.size == 1319 - 12
    assert not np.isin([0, 1, 2, 18, 932], in_splits).any()


def test_routellm_mt_bench_real_with_embed_fn():
    path = _real("routellm_gsm8k_mtbench")
    d = load_routellm(path, part="mt_bench", embed_fn=_fake_embed, exclude_contaminated=True)
    assert d.num_queries == 80 and _counts(d) == {c: 10 for c in (
        "writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")}
    # README: mean judge score (turn 1 / turn 2) 9.41 / 9.05 for GPT-4, 8.69 / 7.99 for Mixtral
    expected = [((9.41 + 9.05) / 2 - 1) / 9, ((8.69 + 7.99) / 2 - 1) / 9]
    assert d.model_summary()["quality"] == pytest.approx(expected, abs=2e-3)
    assert not any("not found in the judge prompts" in n for n in d.notes)
    assert sum(len(v) for v in d.splits.values()) == 72
    assert d.query_ids.index("mt_bench-81") not in np.concatenate(list(d.splits.values()))
    both = load_routellm(path, part="both", embed_fn=_fake_embed)
    assert both.num_queries == 1399 and both.num_families == 9


def test_routellm_mt_bench_text_embedder():
    pytest.importorskip("metarouter_jax.text", reason="MT-Bench embedding needs the `text` extra")
    try:
        d = load_routellm(_real("routellm_gsm8k_mtbench"), part="mt_bench")
    except (ImportError, FileNotFoundError, OSError) as err:  # extra present but its weights/deps are not
        pytest.skip(f"TextEmbedder unavailable: {err}")
    assert d.embeddings.shape == (80, 384)
    np.testing.assert_allclose(np.linalg.norm(d.embeddings, axis=1), 1.0, atol=1e-2)


def test_routerbench_real_counts():
    d = load_routerbench(_real("routerbench_0shot"), valid_fraction=0)
    assert d.num_queries == 3178 and d.num_models == 11
    assert _counts(d) == {"arc-challenge": 1039 + 445, "mbpp": 299 + 128, "winogrande": 887 + 380}
    train, test = d.split("train"), d.split("test")
    # 14 ARC rows with a single observed model are in no split
    assert len(train) + len(test) == 3178 - 14
    assert _counts(d, train)["mbpp"] == 299 and _counts(d, test)["winogrande"] == 380
    assert _counts(d, train)["arc-challenge"] + _counts(d, test)["arc-challenge"] == 1484 - 14
    assert not any("not read" in note for note in d.notes)                         # every column accounted for


def test_routerbench_resplit_equals_the_loaders_valid_fraction():
    """What `metarouter train --valid-fraction` does to any data gives RouterBench's own option."""
    path = _real("routerbench_0shot")
    own, resplit = load_routerbench(path, valid_fraction=0.2, seed=4), load_routerbench(path, seed=4)
    resplit = resplit.resplit_validation(0.2, seed=4)
    assert own.split("valid").size == 443 and set(own.splits) == set(resplit.splits)
    for name in own.splits:
        np.testing.assert_array_equal(resplit.split(name), own.split(name))


def test_registry_names_and_detection():
    assert DATASETS == ("synthetic", "routerbench_0shot", "llmrouter_14task", "routerarena_2model",
                        "routellm_gsm8k_mtbench")
    with pytest.raises(ValueError, match="known names.*llmrouter_14task"):
        load_dataset("no-such-dataset")
    syn = load_dataset("synthetic", seed=3, models=["tiny-1b", "frontier-xl"])
    assert syn.model_names == ("tiny-1b", "frontier-xl")
    with pytest.raises(KeyError, match="known models"):
        load_dataset("synthetic", models=["tiny-1b", "nope"])
    root = _data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    for name in DATASETS[1:]:
        assert detect_format(root / name) == name
    assert load_dataset("routerarena").num_queries == 809
    assert load_dataset(str(root / "routellm_gsm8k_mtbench")).num_queries == 1319
    rb = load_dataset("routerbench", models=["claude-v2", "gpt-4-1106-preview"], valid_fraction=0)
    assert rb.model_names == ("claude-v2", "gpt-4-1106-preview")


# ====================================================================== malformed input
def _write_gz_json(path: Path, obj):
    with gzip.open(path, "wt") as f:
        json.dump(obj, f)


def _write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _llmrouter_folder(tmp: Path, train=None, test=None, prices=None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    train = train if train is not None else [
        {"question": "What is two plus two?", "scores": {"a": 1.0, "b": 0.0}},
        {"question": "Write a function add(x, y).", "scores": {"b": 1.0, "a": 0.0}},
        {"question": "Capital of France?", "scores": {"a": 1.0, "b": 1.0}},
    ]
    test = test if test is not None else [{"question": "Capital of Spain?", "scores": {"a": 0.0, "b": 1.0}}]
    (tmp / "train.json").write_text(json.dumps(train))
    _write_gz_json(tmp / "test.json.gz", test)
    _write_jsonl(tmp / "default_query_train.jsonl", [
        {"task_name": "gsm8k", "query": "What is two plus two?"},
        {"task_name": "mbpp", "query": "Write a function add(x, y)."},
        {"task_name": "trivia_qa", "query": "Capital of France?"},
        {"task_name": "natural_qa", "query": "Capital of France?"},  # listed twice: first wins
    ])
    _write_jsonl(tmp / "default_query_test.jsonl", [{"task_name": "trivia_qa", "query": "Capital of Spain?"}])
    (tmp / "default_llm.json").write_text(json.dumps(prices or {
        "a": {"input_price": 0.2, "output_price": 0.2}, "b": {"input_price": 0.9, "output_price": 0.9}}))
    rng = np.random.default_rng(0)
    np.savez(tmp / "embeddings_minilm_l6.npz",
             train_ids=np.array([str(i) for i in range(len(train))]),
             train_emb=rng.normal(size=(len(train), 8)).astype(np.float16),
             test_ids=np.array([str(i) for i in range(len(test))]),
             test_emb=rng.normal(size=(len(test), 8)).astype(np.float16))
    return tmp


def test_llmrouter_small_folder(tmp_path):
    d = load_llmrouter(_llmrouter_folder(tmp_path), valid_fraction=0)
    assert d.model_names == ("a", "b") and d.query_ids == ("train-0", "train-1", "train-2", "test-0")
    assert d.family_names == ("gsm8k", "mbpp", "trivia_qa")
    assert d.quality[1].tolist() == [0.0, 1.0]  # keys in a different order, indexed by name
    # cost = (ceil(1.3 * 5 words) = 7 input tokens + 250 gsm8k output tokens) * 0.2 / 1e6
    assert d.cost[0, 0] == pytest.approx((7 + 250) * 0.2 / 1e6, rel=1e-6)
    assert estimate_tokens("What is two plus two?") == 7 and estimate_tokens("") == 0


def test_llmrouter_missing_scores_key(tmp_path):
    folder = _llmrouter_folder(tmp_path, train=[{"question": "What is two plus two?", "scores": {"a": 1, "b": 0}},
                                                {"question": "Capital of France?"}])
    with pytest.raises(DataError, match=r"train\.json: item 1 has no key 'scores'"):
        load_llmrouter(folder)


def test_llmrouter_non_numeric_and_missing_score(tmp_path):
    bad = _llmrouter_folder(tmp_path / "bad", train=[
        {"question": "What is two plus two?", "scores": {"a": "yes", "b": 0}}])
    with pytest.raises(DataError, match=r"item 0: non-numeric score 'yes' for model 'a'"):
        load_llmrouter(bad)
    gap = _llmrouter_folder(tmp_path / "gap", train=[
        {"question": "What is two plus two?", "scores": {"a": 1.0}},
        {"question": "Capital of France?", "scores": {"a": 0.0, "b": 1.0}}])
    d = load_llmrouter(gap, valid_fraction=0)
    assert np.isnan(d.quality[0, 1]) and np.isnan(d.cost[0, 1])
    assert any("1 (item, model) scores absent" in n for n in d.notes)


def test_llmrouter_unknown_model_missing_file_and_family(tmp_path):
    folder = _llmrouter_folder(tmp_path / "ok")
    with pytest.raises(KeyError, match=r"\['zz'\].*known models: \['a', 'b'\]"):
        load_llmrouter(folder, models=["a", "zz"])
    (folder / "default_llm.json").unlink()
    with pytest.raises(FileNotFoundError, match="default_llm.json"):
        load_llmrouter(folder)
    orphan = _llmrouter_folder(tmp_path / "orphan", test=[{"question": "Unlisted?", "scores": {"a": 0, "b": 1}}])
    with pytest.raises(DataError, match="test.json.gz: item 0: question not found in default_query_test"):
        load_llmrouter(orphan)
    priced = _llmrouter_folder(tmp_path / "neg", prices={"a": {"input_price": -1, "output_price": 0.2},
                                                          "b": {"input_price": 0.9, "output_price": 0.9}})
    with pytest.raises(DataError, match="negative.*'input_price'.*model 'a'"):
        load_llmrouter(priced)
    np.savez(tmp_path / "ok" / "embeddings_minilm_l6.npz", train_ids=np.array(["0", "2", "1"]),
             train_emb=np.zeros((3, 8), np.float16), test_ids=np.array(["0"]), test_emb=np.zeros((1, 8)))
    (folder / "default_llm.json").write_text(json.dumps({"a": {"input_price": 1, "output_price": 1},
                                                         "b": {"input_price": 1, "output_price": 1}}))
    with pytest.raises(DataError, match="'train_ids' differ from the data at row 1"):
        load_llmrouter(folder)


def _arena_record(gid, score, cost, q="Q?"):
    return {"global_index": gid, "question": q,
            "evaluation_result": {"score": score, "inference_cost": cost, "metric": "mcq_accuracy"}}


def _arena_folder(tmp: Path, a_rows, b_rows) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    _write_jsonl(tmp / "model-a.jsonl", a_rows)
    with gzip.open(tmp / "model-b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in b_rows))
    ids = sorted({r["global_index"] for r in a_rows})
    np.savez(tmp / "embeddings_minilm_l6.npz", ids=np.array(ids[::-1]),
             emb=np.arange(len(ids) * 4, dtype=np.float16).reshape(len(ids), 4)[::-1])
    return tmp


ARENA_IDS = ["MMLUPro_math_1", "SuperGLUE-Wic_2", "WMT19-de-en_3", "GSM8K_4", "OpenTDB_Science: Computers_5"]


def test_routerarena_small_folder(tmp_path):
    a = [_arena_record(g, 1.0, 1e-4) for g in ARENA_IDS] + [_arena_record(ARENA_IDS[0], 0.0, 1e-4)]
    b = [_arena_record(g, -0.2 if g.startswith("WMT") else 0.0, 2e-5) for g in ARENA_IDS]
    d = load_routerarena(_arena_folder(tmp_path, a, b))
    assert d.model_names == ("model-a", "model-b") and d.query_ids == tuple(ARENA_IDS)
    assert d.family_names == ("GSM8K", "MMLUPro", "OpenTDB", "SuperGLUE", "WMT19")
    assert d.quality[0, 0] == 1.0  # the repeated global_index keeps its first record
    assert any("1 repeated global_index records in model-a" in n for n in d.notes)
    assert any("1 scores outside [0, 1] clipped" in n for n in d.notes) and d.quality[2, 1] == 0.0
    # embeddings matched by id, not position (the npz is stored in reverse order)
    np.testing.assert_array_equal(d.embeddings[:, 0], [4, 12, 16, 0, 8])  # 4 x rank of the id in sorted order
    assert family_of("GeoGraphyData_100k_3") == "GeoGraphyData"


def test_routerarena_errors(tmp_path):
    good = [_arena_record(g, 1.0, 1e-4) for g in ARENA_IDS]
    neg = [_arena_record(g, 1.0, -1e-4 if g == "GSM8K_4" else 1e-4) for g in ARENA_IDS]
    with pytest.raises(DataError, match="negative inference_cost.*model 'model-b'.*'GSM8K_4'"):
        load_routerarena(_arena_folder(tmp_path / "neg", good, neg))
    with pytest.raises(DataError, match="global_index 'GSM8K_4' of model-a.jsonl is missing"):
        load_routerarena(_arena_folder(tmp_path / "gap", good, [r for r in good if r["global_index"] != "GSM8K_4"]))
    text = [_arena_record(g, "high" if g == "GSM8K_4" else 1.0, 1e-4) for g in ARENA_IDS]
    with pytest.raises(DataError, match="non-numeric evaluation_result.score 'high' at global_index 'GSM8K_4'"):
        load_routerarena(_arena_folder(tmp_path / "text", good, text))
    nokey = [dict(r, evaluation_result={"score": 1.0}) for r in good]
    with pytest.raises(DataError, match="no key 'evaluation_result.inference_cost'"):
        load_routerarena(_arena_folder(tmp_path / "nokey", good, nokey))
    with pytest.raises(KeyError, match=r"known models: \['model-a', 'model-b'\]"):
        load_routerarena(_arena_folder(tmp_path / "ok", good, good), models=["model-c", "model-a"])


GSM_COLS = ["prompt", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview",
            "mistralai/Mixtral-8x7B-Instruct-v0.1_response", "gpt-4-1106-preview_response"]


def _gsm_folder(tmp: Path, rows, header=GSM_COLS, raw: str | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "gsm8k_responses.csv"
    if raw is not None:
        path.write_text(raw)
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    np.savez(tmp / "embeddings_minilm_l6.npz", gsm8k_ids=np.array([str(i) for i in range(max(len(rows), 1))]),
             gsm8k_emb=np.ones((max(len(rows), 1), 4), np.float16))
    return tmp


GSM_ROWS = [["Q one two", "True", "False", "a b", "a b c d e f g h i j"],
            ["Q three", "False", "True", "x", "y"]]


def test_routellm_small_gsm8k(tmp_path):
    d = load_routellm(_gsm_folder(tmp_path, GSM_ROWS))
    assert d.quality.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # gpt-4: ceil(1.3*3)=4 input tokens x $10 + ceil(1.3*10)=13 output tokens x $30, per 1M
    assert d.cost[0, 0] == pytest.approx((4 * 10 + 13 * 30) / 1e6)
    assert d.query_ids == ("gsm8k-0", "gsm8k-1")


def test_routellm_malformed_csv(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['gpt-4-1106-preview_response'\]"):
        load_routellm(_gsm_folder(tmp_path / "col", [r[:4] for r in GSM_ROWS], header=GSM_COLS[:4]))
    with pytest.raises(DataError, match=r"row 1, column 'gpt-4-1106-preview': expected True/False, got 'maybe'"):
        load_routellm(_gsm_folder(tmp_path / "val", [GSM_ROWS[0], ["Q", "True", "maybe", "x", "y"]]))
    raw = ",".join(GSM_COLS) + "\nQ,True,False,a,b\nQ2,True,False,a\n"
    with pytest.raises(DataError, match=r"row 1 \(line 3\) has a different number of fields"):
        load_routellm(_gsm_folder(tmp_path / "ragged", GSM_ROWS, raw=raw))
    with pytest.raises(KeyError, match="known models"):
        load_routellm(_gsm_folder(tmp_path / "ok", GSM_ROWS), models=["gpt-4", "gpt-4-1106-preview"])
    with pytest.raises(ValueError, match="part must be one of"):
        load_routellm(tmp_path / "ok", part="mmlu")
    (tmp_path / "ok" / "gsm8k_responses.csv").unlink()
    with pytest.raises(FileNotFoundError, match="gsm8k_responses.csv"):
        load_routellm(tmp_path / "ok")


def _mt_folder(tmp: Path, scores: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    _write_jsonl(tmp / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
        {"question_id": 82, "category": "math", "turns": ["2+2?", "3+3?"]}])
    judg = []
    for (qid, model, turn), s in scores.items():
        prompt = ("[Question]\nq\n\n[The Start of Assistant's Answer]\none two three\n[The End of Assistant's Answer]"
                  if turn == 1 else "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nq\n\n"
                  "### Assistant A:\nfirst answer\n\n### User:\nq2\n\n### Assistant A:\nsecond\n\n"
                  "<|The End of Assistant A's Conversation with User|>")
        judg.append({"question_id": qid, "model": model, "score": s, "turn": turn, "user_prompt": prompt})
    _write_jsonl(tmp / "judgements.jsonl", judg)
    return tmp


def test_routellm_small_mt_bench(tmp_path, monkeypatch):
    g, m = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
    scores = {(81, g, 1): 10, (81, g, 2): 8.5, (81, m, 1): 1, (81, m, 2): 1.0,
              (82, g, 1): 10.0, (82, g, 2): 10, (82, m, 1): 4}  # (82, m, 2) missing
    folder = _mt_folder(tmp_path, scores)
    d = load_routellm(folder, part="mt_bench", embed_fn=_fake_embed)
    assert d.query_ids == ("mt_bench-81", "mt_bench-82") and d.family_names == ("math", "writing")
    assert d.quality[0].tolist() == pytest.approx([(9 + 7.5) / 18, 0.0])
    assert d.quality[1, 0] == 1.0 and np.isnan(d.quality[1, 1])
    assert any("lack a judgement" in n for n in d.notes)
    # turn 1 + (turn 1 + answer 1 + turn 2) input tokens; answers "first answer" and "second"
    t_in = 4 + (4 + 3 + 2)
    assert d.cost[0, 0] == pytest.approx((t_in * 10 + (3 + 2) * 30) / 1e6)
    monkeypatch.setitem(sys.modules, "metarouter_jax.text", None)  # simulate a missing `text` extra
    with pytest.raises(ImportError, match=r"`text` extra"):
        load_routellm(folder, part="mt_bench")


def test_routerbench_csv_missing_column(tmp_path):
    path = tmp_path / "x_train.csv"
    path.write_text("sample_id,prompt,a,a|total_cost\n1,['q'],1.0,0.1\n")
    with pytest.raises(DataError, match=r"x_train.csv: missing column\(s\) \['eval_name'\]"):
        load_routerbench(path, embeddings="question")


def test_truncated_or_corrupt_files_are_named(tmp_path):
    folder = _llmrouter_folder(tmp_path / "llmrouter")
    gz = folder / "test.json.gz"
    gz.write_bytes(gz.read_bytes()[:-8])                                           # cut short
    with pytest.raises(DataError, match=r"test.json.gz: cannot be read, the file is truncated or corrupt"):
        load_llmrouter(folder)
    csv_gz = tmp_path / "x_train.csv.gz"
    csv_gz.write_bytes(gzip.compress(b"sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n" * 50)[:40])
    with pytest.raises(DataError, match="x_train.csv.gz: cannot be read"):
        load_dataset(csv_gz)
    bad_utf8 = tmp_path / "y_train.csv"
    bad_utf8.write_bytes(b"sample_id,prompt,eval_name\n1,\xff\xfe,f\n")
    with pytest.raises(DataError, match="y_train.csv: cannot be read"):
        load_dataset(bad_utf8)


def test_embedding_widths_must_match_across_files(tmp_path):
    folder = _llmrouter_folder(tmp_path / "llmrouter")
    with np.load(folder / "embeddings_minilm_l6.npz") as npz:
        arrays = dict(npz)
    arrays["test_emb"] = np.zeros((len(arrays["test_ids"]), 16), np.float16)
    np.savez(folder / "embeddings_minilm_l6.npz", **arrays)
    with pytest.raises(DataError, match=r"embedding widths differ: train.json has .* \(3, 8\), test.json.gz .*\(1, 16\)"):
        load_llmrouter(folder)
    rb = tmp_path / "routerbench"
    rb.mkdir()
    rows = "".join(f"{i},['q{i}'],fam,1.0,0.0,0.1,0.01\n" for i in range(4))
    for part in ("x_train", "x_test"):
        (rb / f"{part}.csv").write_text("sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n" + rows)
    np.savez(rb / "embeddings_minilm_l6_question.npz", x_train_ids=np.arange(4).astype(str),
             x_train_emb=np.zeros((4, 8)), x_test_ids=np.arange(4).astype(str), x_test_emb=np.zeros((4, 16)))
    with pytest.raises(DataError, match=r"embedding widths differ: .*x_test.csv has .*, .*x_train.csv of shape"):
        load_dataset(rb)


def test_routerbench_official_pickle_layout(data_dir, tmp_path):
    """The official RouterBench pickle: one DataFrame with `<model>|model_response` columns too."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tokenizers")
    frame = pd.read_csv(data_dir / "routerbench_0shot" / "mbpp_test.csv.gz")
    models = [c[: -len("|total_cost")] for c in frame.columns if c.endswith("|total_cost")]
    for m in models:
        frame[f"{m}|model_response"] = "def f(): pass"
    frame["mystery-13b"] = 1.0                                                     # scores without a price
    frame.to_pickle(tmp_path / "routerbench_0shot.pkl")
    data = load_routerbench(tmp_path / "routerbench_0shot.pkl", embeddings="compute", valid_fraction=0)
    assert data.num_queries == len(frame) and sorted(data.model_names) == sorted(models)
    assert set(data.splits) == {"train", "test"} and data.embed_dim == 384
    assert any("['mystery-13b'] not read" in note for note in data.notes) and "mystery-13b" not in data.model_names
    np.testing.assert_array_equal(data.quality[:, data.model_index("gpt-4-1106-preview")],
                                  frame["gpt-4-1106-preview"].to_numpy(np.float32))


def test_routerbench_small_folder_reads_each_models_score_and_cost(tmp_path):
    """Scores come from the '<model>' columns and costs from '<model>|total_cost', matched by model
    name (models sorted, whatever the column order)."""
    rb = tmp_path / "routerbench"
    rb.mkdir()
    header = "sample_id,prompt,eval_name,b,a,b|total_cost,a|total_cost\n"
    for part, ids in (("x_train", range(0, 4)), ("x_test", range(4, 8))):
        rows = "".join(f"{i},['q{i}'],fam{i % 2},{i % 2}.0,1.0,0.00{i + 1},0.0{i + 1}\n" for i in ids)
        (rb / f"{part}.csv").write_text(header + rows)
    np.savez(rb / "embeddings_minilm_l6_question.npz",
             x_train_ids=np.arange(4).astype(str), x_train_emb=np.ones((4, 8), np.float16),
             x_test_ids=np.arange(4, 8).astype(str), x_test_emb=np.ones((4, 8), np.float16))
    d = load_routerbench(rb, valid_fraction=0)
    assert d.model_names == ("a", "b") and d.num_queries == 8
    i = np.argsort([int(q) for q in d.query_ids])                     # rows by sample_id
    np.testing.assert_allclose(d.quality[i], np.stack([np.ones(8), np.arange(8) % 2], 1))
    np.testing.assert_allclose(d.cost[i], np.stack([0.01 * (np.arange(8) + 1), 0.001 * (np.arange(8) + 1)], 1),
                               rtol=1e-6)


def test_routerbench_single_csv_gets_a_seeded_70_30_split(tmp_path):
    """One file whose name gives no split: a seeded random 70/30 train/test split of its rows, then
    the valid share of train held out (the split names were once cut to the '<U3' of "all", which
    left every split empty)."""
    n = 40
    rows = "".join(f"{i},['q{i}'],fam{i % 2},1.0,0.0,0.01,0.001\n" for i in range(n))
    path = tmp_path / "log.csv"
    path.write_text("sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n" + rows)
    np.savez(tmp_path / "embeddings_minilm_l6_question.npz", ids=np.arange(n).astype(str), emb=np.ones((n, 8)))
    d = load_routerbench(path, valid_fraction=0)
    train, test = d.split("train"), d.split("test")
    assert (len(train), len(test)) == (28, 12) and np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert not np.array_equal(load_routerbench(path, valid_fraction=0, seed=1).split("test"), test)   # random
    np.testing.assert_array_equal(load_routerbench(path, valid_fraction=0).split("test"), test)       # seeded
    d = load_dataset(path)                                       # default valid_fraction 0.1, stratified by family
    train, valid, test2 = d.split("train"), d.split("valid"), d.split("test")
    assert len(train) > 0 and len(valid) == pytest.approx(0.1 * 28, abs=1)
    np.testing.assert_array_equal(test2, test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, valid, test])), np.arange(n))


def test_llmrouter_score_outside_the_unit_interval_is_refused(tmp_path):
    bad = _llmrouter_folder(tmp_path, train=[{"question": "What is two plus two?", "scores": {"a": 1.5, "b": 0.0}}])
    with pytest.raises(DataError, match=r"item 0: score 1.5 for model 'a' is outside \[0, 1\]"):
        load_llmrouter(bad)


def test_routellm_gsm8k_reads_numeric_booleans(tmp_path):
    rows = [["Q one two", "1.0", "0.0", "a b", "a b c"], ["Q three", "0", "1", "x", "y"]]
    d = load_routellm(_gsm_folder(tmp_path, rows))
    assert d.quality.tolist() == [[0.0, 1.0], [1.0, 0.0]]


# ====================================================================== audit: bad input named, not raw
RB_HEADER = "sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n"


def _rb_rows(ids) -> str:
    return "".join(f"{i},['q{i}'],fam{int(i) % 2 if str(i).isdigit() else 0},1.0,0.0,0.01,0.001\n" for i in ids)


def _rb_npz(folder: Path, parts: dict, rows_of=None):
    """Embeddings for each part's ids; `rows_of` overrides a part's number of embedding rows."""
    rows_of = rows_of or {}
    arrays = {}
    for part, ids in parts.items():
        arrays[f"{part}_ids"] = np.array([str(i) for i in ids])
        arrays[f"{part}_emb"] = np.ones((rows_of.get(part, len(ids)), 8), np.float16)
    np.savez(folder / "embeddings_minilm_l6_question.npz", **arrays)


def test_routerbench_pickle_that_cannot_be_read_is_named(tmp_path):
    pd = pytest.importorskip("pandas")
    not_pickle = tmp_path / "notes.pkl"
    not_pickle.write_bytes(b"sample_id,prompt\n1,q\n")
    with pytest.raises(DataError, match=r"notes.pkl: cannot be read as a pickled pandas DataFrame.*UnpicklingError"):
        load_routerbench(not_pickle, embeddings="compute")
    truncated = tmp_path / "cut.pkl"
    pd.DataFrame({"sample_id": ["1", "2"], "prompt": ["q", "r"]}).to_pickle(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"cut.pkl: cannot be read as a pickled pandas DataFrame"):
        load_dataset(truncated, embeddings="compute")


def test_embedding_rows_must_match_the_ids(tmp_path):
    rb = tmp_path / "routerbench"
    rb.mkdir()
    for part, ids in (("x_train", range(4)), ("x_test", range(4, 8))):
        (rb / f"{part}.csv").write_text(RB_HEADER + _rb_rows(ids))
    _rb_npz(rb, {"x_train": range(4), "x_test": range(4, 8)}, rows_of={"x_test": 3})
    with pytest.raises(DataError, match=r"embeddings_minilm_l6_question.npz: part 'x_test': array 'x_test_emb' "
                                        r"has 3 rows and 'x_test_ids' 4 ids, but the data file has 4 rows"):
        load_routerbench(rb)
    good = [_arena_record(g, 1.0, 1e-4) for g in ARENA_IDS]
    arena = _arena_folder(tmp_path / "arena", good, good)
    np.savez(arena / "embeddings_minilm_l6.npz", ids=np.array(ARENA_IDS), emb=np.ones((4, 4), np.float16))
    with pytest.raises(DataError, match=r"embeddings_minilm_l6.npz: array 'emb' has 4 rows and 'ids' 5 ids"):
        load_routerarena(arena)


def test_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    """Excel saves CSV with a BOM; it must not become part of the first column's name."""
    rb = tmp_path / "routerbench"
    rb.mkdir()
    (rb / "x_train.csv").write_bytes(("\ufeff" + RB_HEADER + _rb_rows(range(4))).encode("utf-8"))
    with gzip.open(rb / "x_test.csv.gz", "wb") as f:
        f.write(("\ufeff" + RB_HEADER + _rb_rows(range(4, 8))).encode("utf-8"))
    _rb_npz(rb, {"x_train": range(4), "x_test": range(4, 8)})
    d = load_routerbench(rb, valid_fraction=0)
    assert sorted(d.query_ids, key=int) == [str(i) for i in range(8)]
    gsm = _gsm_folder(tmp_path / "gsm", GSM_ROWS)
    raw = (gsm / "gsm8k_responses.csv").read_bytes()
    (gsm / "gsm8k_responses.csv").unlink()
    with gzip.open(gsm / "gsm8k_responses.csv.gz", "wb") as f:
        f.write(b"\xef\xbb\xbf" + raw)
    assert load_routellm(gsm).quality.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    folder = _llmrouter_folder(tmp_path / "llmrouter")
    (folder / "train.json").write_bytes(b"\xef\xbb\xbf" + (folder / "train.json").read_bytes())
    assert load_llmrouter(folder, valid_fraction=0).num_queries == 4


def test_routerbench_row_with_no_observed_model_is_dropped_with_a_note(tmp_path):
    rb = tmp_path / "routerbench"
    rb.mkdir()
    (rb / "x_train.csv").write_text(RB_HEADER + _rb_rows(range(4)) + "s-9,['q'],fam0,,,,\n"
                                    + "s-10,['q'],fam0,1.0,,0.01,\n")              # one model observed: kept
    (rb / "x_test.csv").write_text(RB_HEADER + _rb_rows(range(4, 8)) + "s-11,['q'],famX,,,,\n")
    _rb_npz(rb, {"x_train": [*range(4), "s-9", "s-10"], "x_test": [*range(4, 8), "s-11"]})
    d = load_routerbench(rb, valid_fraction=0)
    assert d.num_queries == 9 and "s-9" not in d.query_ids and "s-11" not in d.query_ids
    assert d.family_names == ("fam0", "fam1")                               # famX had only the dropped row
    assert any("2 rows with no observed model dropped" in n and "'s-11', row 4 of x_test.csv" in n for n in d.notes)  # files in name order
    kept = d.query_ids.index("s-10")
    assert kept not in np.concatenate([d.split("train"), d.split("test")])
    assert any("1 rows with fewer than 2 observed models left out of the splits" in n for n in d.notes)
    np.testing.assert_array_equal(np.sort(np.concatenate([d.split("train"), d.split("test")])),
                                  [i for i in range(9) if i != kept])
    (rb / "x_test.csv").write_text(RB_HEADER + "s-11,['q'],famX,,,,\n")
    (rb / "x_train.csv").write_text(RB_HEADER + "s-9,['q'],fam0,,,,\n")
    _rb_npz(rb, {"x_train": ["s-9"], "x_test": ["s-11"]})
    with pytest.raises(DataError, match="no row has an observed model"):
        load_routerbench(rb)


def test_routerbench_single_file_is_split_at_random_whatever_its_name(tmp_path):
    n = 40
    path = tmp_path / "mbpp_test.csv"
    path.write_text(RB_HEADER + _rb_rows(range(n)))
    _rb_npz(tmp_path, {"mbpp_test": range(n)})
    d = load_routerbench(path, valid_fraction=0)
    assert (len(d.split("train")), len(d.split("test"))) == (28, 12)
    assert any("'_test' in its name is not used" in n for n in d.notes)


def test_routerbench_folder_mixing_split_and_unsplit_files_is_refused(tmp_path):
    rb = tmp_path / "routerbench"
    rb.mkdir()
    for part, ids in (("x_train", range(4)), ("x_test", range(4, 8)), ("extra", range(8, 12))):
        (rb / f"{part}.csv").write_text(RB_HEADER + _rb_rows(ids))
    _rb_npz(rb, {"x_train": range(4), "x_test": range(4, 8), "extra": range(8, 12)})
    with pytest.raises(DataError, match=r"routerbench: \['extra.csv'\] have no '_train'/'_test' name suffix"):
        load_routerbench(rb)
