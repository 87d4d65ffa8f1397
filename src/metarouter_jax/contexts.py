"""Contexts: a user's pairwise feedback, with a static capacity and a validity mask.

One context is a query, two distinct models a and b, their observed outcomes (quality in
[0, 1] and standardised log10 cost) and the label y = 1 if the user preferred a. A set has a
static capacity N and a mask, so 0..N contexts are valid; 0 valid contexts is the prior.

Simulated users follow Bradley-Terry: P(y = 1) = sigmoid(beta * (u_a - u_b) / scale),
then the label is flipped with probability eps. Which pair is shown is the pair strategy:

* `uniform`: a random query and a random pair of observed models;
* `informative`: among a few uniform draws, a pair whose quality and cost disagree (the
  dearer answer is the better one) and whose switch point - the willingness to pay
  lam* = dq / dc at which a linear user is indifferent - lies inside the prior's range of
  log10(lam); failing that, any pair that disagrees; failing that, a uniform pair. On 0/1
  logs a random pair is mostly decided by correctness alone, and a trade-off that every user
  in the prior answers the same way says nothing about which user this is (DESIGN.md 4).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarouter_jax.data import RoutingData
from metarouter_jax.tasks import RoutingArrays, query_utility

PAIR_STRATEGIES = ("uniform", "informative")
INFORMATIVE_TRIES = 16


@struct.dataclass
class Contexts:
    """A set of pairwise feedbacks; leading batch axes allowed (many users at once).

    query_emb: [..., N, D]; model_a, model_b: [..., N] int32 model indices;
    outcome_a, outcome_b: [..., N, 2] (quality, standardised log10 cost);
    label: [..., N] float32 (1 = a preferred); mask: [..., N] bool (valid contexts).
    """

    query_emb: jax.Array
    model_a: jax.Array
    model_b: jax.Array
    outcome_a: jax.Array
    outcome_b: jax.Array
    label: jax.Array
    mask: jax.Array

    @property
    def capacity(self) -> int:
        return self.mask.shape[-1]

    @property
    def count(self) -> jax.Array:
        return self.mask.sum(-1)

    @classmethod
    def empty(cls, capacity: int, embed_dim: int, batch_shape: tuple[int, ...] = ()) -> "Contexts":
        """No feedback at all: the router falls back to its prior."""
        shape = batch_shape + (capacity,)
        return cls(
            query_emb=jnp.zeros(shape + (embed_dim,)),
            model_a=jnp.zeros(shape, jnp.int32), model_b=jnp.ones(shape, jnp.int32),
            outcome_a=jnp.zeros(shape + (2,)), outcome_b=jnp.zeros(shape + (2,)),
            label=jnp.zeros(shape), mask=jnp.zeros(shape, bool),
        )

    @classmethod
    def from_feedback(cls, data: RoutingData, query_idx, model_a, model_b, prefers_a,
                      capacity: int = 16) -> "Contexts":
        """Contexts from real users' judgements on queries of `data`.

        Args:
          data: the routing data the router was trained on (model names, observed outcomes,
            query embeddings, the cost standardisation).
          query_idx: [..., n] query indices into `data`.
          model_a, model_b: [..., n] model names or indices.
          prefers_a: [..., n] bool/0-1, True where the user preferred model a's answer.
          capacity: static N >= n; the rest is masked out (n = 0 is the prior).
        Returns:
          Contexts with leading batch axes [...].
        """
        model_a, model_b = _model_indices(data, model_a), _model_indices(data, model_b)
        query_idx = np.asarray(query_idx, dtype=np.int64)
        if query_idx.shape != model_a.shape:
            raise ValueError(f"query_idx {query_idx.shape} must match model_a {model_a.shape}")
        if query_idx.size and (query_idx.min() < 0 or query_idx.max() >= data.num_queries):
            raise ValueError(f"query indices must be in [0, {data.num_queries})")
        if model_a.shape != model_b.shape:
            raise ValueError(f"model_a {model_a.shape} and model_b {model_b.shape} must have the same shape")
        return cls.from_outcomes(
            data.embeddings[query_idx], model_a, model_b, prefers_a,
            data.quality[query_idx, model_a], data.cost[query_idx, model_a],
            data.quality[query_idx, model_b], data.cost[query_idx, model_b],
            capacity=capacity, log_cost_stats=data.log_cost_stats(), num_models=data.num_models)

    @classmethod
    def from_outcomes(cls, query_emb, model_a, model_b, prefers_a, quality_a, cost_a, quality_b, cost_b, *,
                      capacity: int, log_cost_stats: tuple[float, float], num_models: int) -> "Contexts":
        """Contexts from explicit outcomes (queries need not be in any dataset, e.g. raw text).

        query_emb: [..., n, D]; model_a, model_b: [..., n] indices; prefers_a: [..., n];
        quality_*: [..., n] in [0, 1]; cost_*: [..., n] USD; log_cost_stats: the router's
        (mean, std) of log10 cost, so that these contexts are in its training units.
        """
        model_a, model_b = np.asarray(model_a, np.int32), np.asarray(model_b, np.int32)
        prefers_a = np.asarray(prefers_a, dtype=np.float32)
        query_emb = np.asarray(query_emb, np.float32)
        if model_a.ndim == 0:
            raise ValueError("feedback must be a sequence (shape [..., n]), got a scalar")
        if model_a.shape != model_b.shape or model_a.shape != prefers_a.shape:
            raise ValueError(f"model_a {model_a.shape}, model_b {model_b.shape} and prefers_a "
                             f"{prefers_a.shape} must have the same shape")
        if model_a.size and (min(model_a.min(), model_b.min()) < 0 or max(model_a.max(), model_b.max()) >= num_models):
            raise ValueError(f"model indices must be in [0, {num_models})")
        if np.any(model_a == model_b):
            raise ValueError("each context needs two distinct models (model_a == model_b somewhere)")
        if not np.all(np.isin(prefers_a, (0.0, 1.0))):
            raise ValueError("prefers_a must be boolean (0/1)")
        n = model_a.shape[-1]
        if n > capacity:
            raise ValueError(f"{n} feedbacks exceed the context capacity {capacity}")
        if query_emb.ndim != model_a.ndim + 1 or query_emb.shape[:-1] != model_a.shape:
            raise ValueError(f"query_emb must be {model_a.shape} + (D,), got {query_emb.shape}")
        if not np.all(np.isfinite(query_emb)):
            raise ValueError("query embeddings hold NaN/inf")
        outcomes = {}
        for name, v in (("quality_a", quality_a), ("cost_a", cost_a), ("quality_b", quality_b), ("cost_b", cost_b)):
            v = np.asarray(v, np.float32)
            if v.shape != model_a.shape:
                raise ValueError(f"{name} must have shape {model_a.shape}, got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} holds NaN/inf: the outcome of that answer is unknown, "
                                 "so this feedback cannot be used")
            if name.startswith("cost") and np.any(v < 0):
                raise ValueError(f"{name} must be >= 0 (USD)")
            outcomes[name] = v
        mean, std = log_cost_stats
        standard = lambda c: (np.log10(np.maximum(c, 1e-12)) - mean) / std  # noqa: E731
        pad = [(0, 0)] * (model_a.ndim - 1) + [(0, capacity - n)]
        padded = lambda x, extra=0: jnp.asarray(np.pad(x, pad + [(0, 0)] * extra))  # noqa: E731
        out_a = np.stack([outcomes["quality_a"], standard(outcomes["cost_a"])], -1)
        out_b = np.stack([outcomes["quality_b"], standard(outcomes["cost_b"])], -1)
        return cls(
            query_emb=padded(query_emb, 1),
            model_a=padded(model_a),
            model_b=padded(model_b) + jnp.asarray(np.arange(capacity) >= n, jnp.int32),  # padding: a != b
            outcome_a=padded(out_a, 1), outcome_b=padded(out_b, 1),
            label=padded(prefers_a), mask=padded(np.ones(model_a.shape, bool)),
        )


def _model_indices(data: RoutingData, models) -> np.ndarray:
    models = np.asarray(models)
    if models.dtype.kind in "US":
        return data.model_index(models.ravel().tolist()).reshape(models.shape)
    models = models.astype(np.int32)
    if models.size and (models.min() < 0 or models.max() >= data.num_models):
        raise ValueError(f"model indices must be in [0, {data.num_models})")
    return models


# ---------------------------------------------------------------------------- simulation
def _sample_pair(key, arrays: RoutingArrays, queries, pool):
    """One uniform (query, a, b) with a != b both observed and in the pool."""
    key_q, key_ab = jax.random.split(key)
    query = jax.random.choice(key_q, queries)
    allowed = arrays.observed[query] & pool
    gumbel = jax.random.gumbel(key_ab, allowed.shape)
    _, (a, b) = jax.lax.top_k(jnp.where(allowed, gumbel, -jnp.inf), 2)
    return query, a, b


def sample_pair(key, arrays: RoutingArrays, queries, pool, informative, log10_lam_range):
    """A (query, a, b) by the pair strategy; `informative` is a traced bool."""
    keys = jax.random.split(key, INFORMATIVE_TRIES)
    query, a, b = jax.vmap(_sample_pair, in_axes=(0, None, None, None))(keys, arrays, queries, pool)
    dq = arrays.quality[query, a] - arrays.quality[query, b]
    dc = arrays.cost[query, a] - arrays.cost[query, b]
    trade_off = dq * dc > 0  # the dearer answer is the better one
    switch = jnp.log10(jnp.where(trade_off, dq / jnp.where(trade_off, dc, 1.0), 1.0))
    lo, hi = log10_lam_range
    telling = trade_off & (switch >= lo) & (switch <= hi)
    best = jnp.where(telling.any(), jnp.argmax(telling), jnp.argmax(trade_off))
    pick = jnp.where(informative & trade_off.any(), best, 0)
    return query[pick], a[pick], b[pick]


def bradley_terry_label(key, profiles, profile, arrays, query, a, b, scale, beta, flip):
    """y ~ Bernoulli(sigmoid(beta (u_a - u_b) / scale)), then flipped with probability `flip`."""
    key_bt, key_flip = jax.random.split(key)
    u = query_utility(profiles, profile, arrays, query)
    y = jax.random.bernoulli(key_bt, jax.nn.sigmoid(beta * (u[a] - u[b]) / scale))
    return jnp.where(jax.random.bernoulli(key_flip, flip), ~y, y).astype(jnp.float32)


def sample_contexts(key, profiles, profile, arrays: RoutingArrays, queries, pool, *, count, capacity: int,
                    scale, beta, flip, informative) -> Contexts:
    """Simulate one user's context set (capacity static, `count` valid; all else traced)."""
    keys_pair, keys_label = jax.random.split(key)
    query, a, b = jax.vmap(sample_pair, in_axes=(0, None, None, None, None, None))(
        jax.random.split(keys_pair, capacity), arrays, queries, pool, informative, profiles.log10_lam_range)
    label = jax.vmap(bradley_terry_label, in_axes=(0, None, None, None, 0, 0, 0, None, None, None))(
        jax.random.split(keys_label, capacity), profiles, profile, arrays, query, a, b, scale, beta, flip)
    outcome = lambda m: jnp.stack([arrays.quality[query, m], arrays.log_cost[query, m]], -1)  # noqa: E731
    return Contexts(
        query_emb=arrays.embeddings[query], model_a=a, model_b=b,
        outcome_a=outcome(a), outcome_b=outcome(b), label=label,
        mask=jnp.arange(capacity) < count,
    )
