"""Throughput of metarouter_jax.text.TextEmbedder on realistic routing queries.

Queries come from the llmrouter_14task questions when the routing data is present
(``$METAROUTER_DATA`` or ``<repo>/../shared/data``), else from synthetic sentences with a
similar spread of lengths. A warm-up pass compiles every batch shape; then each repeat
embeds the same queries with an empty cache, and the median is reported.

    python benchmarks/bench_text.py [--n-queries 512] [--repeats 3]

``run()`` returns a dict, for a larger benchmark runner to import.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

SEED = 0


def _data_dir() -> Path:
    env = os.environ.get("METAROUTER_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _synthetic(n: int, rng: np.random.Generator) -> list[str]:
    words = (
        "the model answer question which of following is true compute value function "
        "return list string python code given number probability team city year river "
        "explain why how many students passage author suggests best describes"
    ).split()
    # Word counts spread like real routing prompts: mostly short, a long tail past 256 tokens.
    counts = np.clip(rng.lognormal(mean=3.2, sigma=1.0, size=n).astype(int), 3, 400)
    return [" ".join(rng.choice(words, size=c)).capitalize() + "?" for c in counts]


def load_queries(n_queries: int = 512) -> tuple[list[str], str]:
    """Returns (queries, source), source being 'llmrouter_14task' or 'synthetic'."""
    rng = np.random.default_rng(SEED)
    path = _data_dir() / "llmrouter_14task" / "train.json.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            questions = sorted({item["question"] for item in json.load(f)})
        if len(questions) >= n_queries:
            idx = rng.choice(len(questions), size=n_queries, replace=False)
            return [questions[i] for i in idx], "llmrouter_14task"
    return _synthetic(n_queries, rng), "synthetic"


def run(n_queries: int = 512, repeats: int = 3, batch_size: int = 64) -> dict:
    """Benchmark embed() on ``n_queries`` queries.

    Returns a dict with ``qps`` (median queries/s over ``repeats`` cold-cache runs after
    warm-up), ``compile_s`` (warm-up time minus the median run time, i.e. roughly the XLA
    compilation cost), ``load_s`` (constructing the first embedder: reading, hashing and
    loading the weights), ``warmup_s``, ``times_s``, ``n_queries``, ``source``.
    """
    from metarouter_jax.text import TextEmbedder

    queries, source = load_queries(n_queries)
    t0 = time.perf_counter()
    emb = TextEmbedder(batch_size=batch_size)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    emb.embed(queries)
    warmup_s = time.perf_counter() - t0

    times = []
    for _ in range(repeats):
        # A fresh embedder has an empty cache; weights and compiled code are shared.
        fresh = TextEmbedder(batch_size=batch_size)
        t0 = time.perf_counter()
        fresh.embed(queries)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "qps": n_queries / median,
        "compile_s": max(warmup_s - median, 0.0),
        "load_s": load_s,
        "warmup_s": warmup_s,
        "times_s": times,
        "n_queries": n_queries,
        "source": source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-queries", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    res = run(args.n_queries, args.repeats, args.batch_size)
    print(f"queries: {res['n_queries']} ({res['source']})")
    print(f"load: {res['load_s']:.2f} s  warm-up: {res['warmup_s']:.2f} s  "
          f"compile: {res['compile_s']:.2f} s")
    print(f"runs: {', '.join(f'{t:.2f}' for t in res['times_s'])} s")
    print(f"throughput: {res['qps']:.1f} queries/s (median)")


if __name__ == "__main__":
    main()
