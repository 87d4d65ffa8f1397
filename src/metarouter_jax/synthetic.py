"""The embedded default: a synthetic routing benchmark generated in code.

It imitates the statistical character of real routing logs (RouterBench and friends):

* queries come in task families (`qa`, `code`, `math`, `chat`) that form clusters in
  embedding space, with a low-dimensional latent (topic, difficulty) inside each cluster;
* five models sit on a price ladder (USD per 1k tokens from 2e-4 to 3e-2); the per-query
  cost is price x query length x noise, and length differs by family, so costs spread over
  about three orders of magnitude, as they do in RouterBench;
* quality is 0/1 (Bernoulli correctness) with P(correct) = sigmoid(skill[model, family]
  - difficulty(query) + affinity(model, query)); two mid-price models are specialists
  (code, math) so that no single model is best everywhere, and part of the difficulty is
  not predictable from the embedding (irreducible label noise, as in real logs).

Everything is a pure function of the seed.
"""

from __future__ import annotations

import numpy as np

from metarouter_jax.data import RoutingData, random_split

FAMILIES = ("qa", "code", "math", "chat")
MODELS = ("tiny-1b", "coder-7b", "mathstral-13b", "generalist-70b", "frontier-xl")
# USD per 1k tokens (input + output) on a ~4x ladder.
PRICE_PER_1K = np.array([2e-4, 8e-4, 3e-3, 1e-2, 3e-2])
# Base logit of correctness, model x family: cheap models are weaker, with two specialists.
SKILL = np.array([
    # qa    code   math   chat
    [0.2, -1.2, -1.0, 0.6],    # tiny-1b: fine for chit-chat and easy QA
    [0.0, 1.3, -0.4, 0.4],     # coder-7b: a code specialist
    [0.5, 0.0, 1.4, 0.7],      # mathstral-13b: a math specialist
    [1.2, 0.9, 0.8, 1.3],      # generalist-70b
    [1.9, 1.8, 2.0, 1.8],      # frontier-xl: best everywhere, most expensive
])
# Mean log10 of tokens per query (prompt + answer) by family: code and math answers are long.
LOG10_TOKENS = np.array([2.3, 2.9, 2.7, 2.5])


def synthetic_data(
    seed: int = 0,
    num_queries: int = 4000,
    embed_dim: int = 64,
    latent_dim: int = 6,
    split_fractions: dict[str, float] | None = None,
) -> RoutingData:
    """Generate the synthetic routing benchmark.

    Args:
      seed: everything is a pure function of it.
      num_queries: Q.
      embed_dim: D of the unit-norm query embeddings.
      latent_dim: dimension of the within-family latent that drives difficulty and affinity.
      split_fractions: name -> fraction; default train 0.6 / valid 0.1 / test 0.3 ("valid"
        is held-out training queries for early stopping and model selection).

    Returns:
      RoutingData with quality in {0, 1}, cost in USD per query.
    """
    for name, value in (("num_queries", num_queries), ("embed_dim", embed_dim), ("latent_dim", latent_dim)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"synthetic_data: {name} must be an integer >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    n_fam, n_mod = len(FAMILIES), len(MODELS)
    family = rng.integers(0, n_fam, size=num_queries)

    # Embeddings: a family centre plus a projected latent plus isotropic noise.
    centres = rng.normal(size=(n_fam, embed_dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mixing = rng.normal(size=(n_fam, latent_dim, embed_dim)) / np.sqrt(embed_dim)
    latent = rng.normal(size=(num_queries, latent_dim))
    emb = centres[family] + 0.6 * np.einsum("ql,qld->qd", latent, mixing[family])
    emb += 0.15 * rng.normal(size=emb.shape) / np.sqrt(embed_dim)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    # Correctness: difficulty is partly predictable (latent), partly not (noise).
    difficulty_dir = rng.normal(size=(n_fam, latent_dim)) / np.sqrt(latent_dim)
    difficulty = 0.9 * np.einsum("ql,ql->q", latent, difficulty_dir[family]) + 0.7 * rng.normal(size=num_queries)
    affinity_dir = rng.normal(size=(n_mod, latent_dim)) / np.sqrt(latent_dim)
    affinity = 0.5 * latent @ affinity_dir.T                                    # [Q, K]
    logit = SKILL.T[family] - difficulty[:, None] + affinity                    # [Q, K]
    quality = (rng.random(size=logit.shape) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    # Cost: price x tokens, tokens log-normal per family with per-model verbosity noise.
    log_tokens = LOG10_TOKENS[family] + 0.3 * rng.normal(size=num_queries)
    verbosity = 0.1 * rng.normal(size=(num_queries, n_mod))
    cost = PRICE_PER_1K[None, :] * 10.0 ** (log_tokens[:, None] + verbosity - 3.0)

    splits = random_split(num_queries, split_fractions or {"train": 0.6, "valid": 0.1, "test": 0.3},
                          seed=seed)
    return RoutingData.create(
        emb, quality, cost.astype(np.float32), family,
        model_names=MODELS, family_names=FAMILIES,
        query_ids=[f"synthetic-{i}" for i in range(num_queries)],
        splits=splits,
        notes=(f"synthetic benchmark, seed {seed}",),
    )
