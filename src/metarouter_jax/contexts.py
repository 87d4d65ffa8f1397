"""Contexts: a user's pairwise feedback, with a static capacity and a validity mask.

One context is a query, two distinct models a and b, their observed outcomes (quality in
[0, 1] and standardised log10 cost) and the label y = 1 if the user preferred a. A set has a
static capacity N and a mask, so 0..N contexts are valid; 0 valid contexts is the prior.

Simulated users follow Bradley-Terry: P(y = 1) = sigmoid(beta * (u_a - u_b) / scale),
then the label is flipped with probability eps. Which pair is shown is the pair strategy:

* `uniform`: a random query and a random pair of observed models;
* `informative`: a trade-off pair - the dearer answer is the better one - whose switch point
  (the willingness to pay lam* = dq / dc at which a linear user is indifferent) is near a
  target in the prior's range of log10(lam). On 0/1 logs a random pair is mostly decided by
  correctness alone, and a trade-off that every user in the prior answers the same way says
  nothing about which user this is (DESIGN.md 4); spreading the switch points over the range
  lets a few answers bracket the user's lam. The targets of one user's set are a randomly
  shifted golden-ratio (Kronecker) sequence over the range: every prefix of it, the first n
  feedbacks for any n, covers the range evenly (gaps of at most three sizes, about 1/n of
  the range), where independent uniform targets leave gaps twice as wide around a typical
  user and spend feedbacks on near-duplicate questions.
* `active` (evaluation, `sample_active_contexts`): feedbacks asked one at a time, each an
  informative pair at a target chosen from the feedback so far; evaluation takes the median
  of the router's own posterior (a noisy bisection of log10(lam)). DESIGN.md section 4 calls
  choosing the next comparison actively the natural extension of the same interface.

Simulation draws from a `PairSource`: a query set with its trade-off pairs precomputed and
sorted by switch point, so an informative pair is one target, a binary search and a
gather (no rejection loop over random pairs).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarouter_jax.data import RoutingData
from metarouter_jax.tasks import RoutingArrays, query_utility

PRODUCT_GROUP, P_MIN = 4, 1e-6  # contexts per log in `label_log_likelihood`; floor of a label's probability

PAIR_STRATEGIES = ("uniform", "informative")   # drawn up front (training and evaluation)
ACTIVE_STRATEGIES = ("active",)                 # chosen one at a time from the feedback so far (evaluation)
CANDIDATES = 8   # trade-off pairs tried around the target switch point (the first in the pool wins)
WINDOW = 32      # ... drawn from this many neighbours either side in the sorted table
GOLDEN = 0.6180339887498949  # (sqrt(5) - 1) / 2: the additive recurrence with the most even prefixes


@struct.dataclass
class Contexts:
    """A set of pairwise feedbacks; leading batch axes allowed (many users at once).

    query_emb: [..., N, D]; model_a, model_b: [..., N] int32 model indices;
    outcome_a, outcome_b: [..., N, 2] (quality, standardised log10 cost);
    label: [..., N] float32 (1 = a preferred); mask: [..., N] bool (valid contexts);
    family: [..., N] int32 task family of each context's query (-1 where unknown, e.g. raw text).
    """

    query_emb: jax.Array
    model_a: jax.Array
    model_b: jax.Array
    outcome_a: jax.Array
    outcome_b: jax.Array
    label: jax.Array
    mask: jax.Array
    family: jax.Array

    @property
    def capacity(self) -> int:
        return self.mask.shape[-1]

    @property
    def count(self) -> jax.Array:
        return self.mask.sum(-1)

    def zero_padding(self) -> "Contexts":
        """The same contexts with the numbers of every padded slot (mask False) set to 0.

        The encoder pools contexts as mask-weighted sums, and 0 x NaN is NaN: a NaN or inf left in
        a padded slot (which `MetaRouter.adapt` accepts: only valid contexts are checked) would
        reach every user's latent. Valid contexts are unchanged."""
        def zero(x):
            mask = self.mask.reshape(self.mask.shape + (1,) * (x.ndim - self.mask.ndim))
            return jnp.where(mask, x, jnp.zeros((), x.dtype))

        return self.replace(query_emb=zero(self.query_emb), outcome_a=zero(self.outcome_a),
                            outcome_b=zero(self.outcome_b), label=zero(self.label))

    @classmethod
    def empty(cls, capacity: int, embed_dim: int, batch_shape: tuple[int, ...] = ()) -> "Contexts":
        """No feedback at all: the router falls back to its prior."""
        check_capacity(capacity)
        if not isinstance(embed_dim, (int, np.integer)) or embed_dim < 1:
            raise ValueError(f"embed_dim must be an integer >= 1 (the router's query embedding width), got {embed_dim!r}")
        shape = batch_shape + (capacity,)
        return cls(
            query_emb=jnp.zeros(shape + (embed_dim,)),
            model_a=jnp.zeros(shape, jnp.int32), model_b=jnp.ones(shape, jnp.int32),
            outcome_a=jnp.zeros(shape + (2,)), outcome_b=jnp.zeros(shape + (2,)),
            label=jnp.zeros(shape), mask=jnp.zeros(shape, bool), family=jnp.full(shape, -1, jnp.int32),
        )

    @classmethod
    def from_feedback(cls, data: RoutingData, query_idx, model_a, model_b, prefers_a,
                      capacity: int = 16, log_cost_stats: tuple[float, float] | None = None) -> "Contexts":
        """Contexts from real users' judgements on queries of `data`, indexed by `data`'s models.
        For a router at hand, `router.contexts_from_feedback` is the safe form: it takes the
        router's cost units and matches models and families to the router's by name.

        Args:
          data: the routing data the router was trained on (model names, observed outcomes,
            query embeddings).
          query_idx: [..., n] query indices into `data`.
          model_a, model_b: [..., n] model names or indices.
          prefers_a: [..., n] bool/0-1, True where the user preferred model a's answer.
          capacity: static N >= n; the rest is masked out (n = 0 is the prior).
          log_cost_stats: the router's (mean, std) of log10 cost (`router.info`); default: as a
            router trained on `data` with the default settings measures them, on its "train"
            split (every query where it has none).
        Returns:
          Contexts with leading batch axes [...].
        """
        outcomes = feedback_outcomes(data, query_idx, model_a, model_b)
        if log_cost_stats is None:   # as `training.cost_units` gives a router of the default config
            from metarouter_jax.config import TrainConfig
            from metarouter_jax.training import cost_units   # (training imports this module)

            default = TrainConfig()
            log_cost_stats = (cost_units(default, data) if default.descriptor_source in data.splits
                              else data.log_cost_stats(None))
        return cls.from_outcomes(**outcomes, prefers_a=prefers_a, capacity=capacity, log_cost_stats=log_cost_stats,
                                 num_models=data.num_models, num_families=data.num_families)

    @classmethod
    def from_outcomes(cls, query_emb, model_a, model_b, prefers_a, quality_a, cost_a, quality_b, cost_b, *,
                      capacity: int, log_cost_stats: tuple[float, float], num_models: int,
                      family=None, num_families: int | None = None) -> "Contexts":
        """Contexts from explicit outcomes (queries need not be in any dataset, e.g. raw text).

        query_emb: [..., n, D]; model_a, model_b: [..., n] indices; prefers_a: [..., n];
        quality_*: [..., n] in [0, 1]; cost_*: [..., n] USD; log_cost_stats: the router's
        (mean, std) of log10 cost, so that these contexts are in its training units;
        family: [..., n] task-family ids of the queries, or None (unknown: -1), checked
        against `num_families` when given.
        """
        model_a, model_b = _numeric("model_a", model_a, integer=True), _numeric("model_b", model_b, integer=True)
        prefers_a = _numeric("prefers_a", prefers_a).astype(np.float32)
        query_emb = _numeric("query_emb", query_emb).astype(np.float32)
        if model_a.ndim == 0:
            raise ValueError("feedback must be a sequence (shape [..., n]), got a scalar")
        if model_a.shape != model_b.shape or model_a.shape != prefers_a.shape:
            raise ValueError(f"model_a {model_a.shape}, model_b {model_b.shape} and prefers_a "
                             f"{prefers_a.shape} must have the same shape")
        model_a, model_b = _in_range("model_a", model_a, 0, num_models), _in_range("model_b", model_b, 0, num_models)
        if np.any(model_a == model_b):
            raise ValueError(f"each context needs two distinct models (model_a == model_b at index "
                             f"{_first(model_a == model_b)})")
        if not np.all(np.isin(prefers_a, (0.0, 1.0))):
            bad = _first(~np.isin(prefers_a, (0.0, 1.0)))
            raise ValueError(f"prefers_a must be boolean (0/1), got {prefers_a[bad]} at index {bad}")
        n = model_a.shape[-1]
        check_capacity(capacity)
        if n > capacity:
            raise ValueError(f"{n} feedbacks exceed the context capacity {capacity}")
        if query_emb.ndim != model_a.ndim + 1 or query_emb.shape[:-1] != model_a.shape:
            raise ValueError(f"query_emb must be {model_a.shape} + (D,), got {query_emb.shape}")
        if not np.all(np.isfinite(query_emb)):
            raise ValueError(f"query embeddings hold NaN/inf at index {_first(~np.isfinite(query_emb).all(-1))}")
        outcomes = {}
        for name, v in (("quality_a", quality_a), ("cost_a", cost_a), ("quality_b", quality_b), ("cost_b", cost_b)):
            v = _numeric(name, v).astype(np.float32)
            if v.shape != model_a.shape:
                raise ValueError(f"{name} must have shape {model_a.shape}, got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} holds NaN/inf at index {_first(~np.isfinite(v))}: the outcome of that "
                                 "answer is unknown, so this feedback cannot be used")
            quality = name.startswith("quality")
            bad = ((v < 0) | (v > 1)) if quality else v < 0
            if bad.any():
                rule = "in [0, 1] (normalised quality)" if quality else ">= 0 (USD)"
                raise ValueError(f"{name} must be {rule}, got {v[_first(bad)]:.6g} at index {_first(bad)}")
            outcomes[name] = v
        family = np.full(model_a.shape, -1) if family is None else _numeric("family", family, integer=True)
        if family.shape != model_a.shape:
            raise ValueError(f"family must have shape {model_a.shape}, got {family.shape}")
        family = _in_range("family ids (-1: unknown)", family, -1,
                           np.iinfo(np.int32).max if num_families is None else num_families)
        mean, std = log_cost_stats
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ValueError(f"log_cost_stats must be a finite mean and a std > 0 of log10 cost (USD), got "
                             f"({mean}, {std})")
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
            family=jnp.asarray(np.pad(family, pad, constant_values=-1)),
        )


def check_capacity(capacity) -> None:
    """Refuse a static context capacity that is not an integer >= 1."""
    if not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"the context capacity must be an integer >= 1 (no feedback is a mask of zeros), "
                         f"got {capacity!r}")


def _first(bad: np.ndarray):
    """Index of the first True of `bad` (an int for one user's [n] feedback, else a tuple)."""
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return index[0] if len(index) == 1 else index


def feedback_outcomes(data: RoutingData, query_idx, model_a, model_b) -> dict:
    """What `Contexts.from_outcomes` needs of judgements on queries of `data` (all but the
    labels): the queries' embeddings and families, the models' indices into `data` (from names
    or indices) and their answers' quality and cost. Checks the indices and shapes."""
    model_a, model_b = _model_indices(data, "model_a", model_a), _model_indices(data, "model_b", model_b)
    query_idx = _numeric("query_idx", query_idx, integer=True)
    if query_idx.shape != model_a.shape:
        raise ValueError(f"query_idx {query_idx.shape} must match model_a {model_a.shape}")
    query_idx = _in_range("query indices", query_idx, 0, data.num_queries)
    if model_a.shape != model_b.shape:
        raise ValueError(f"model_a {model_a.shape} and model_b {model_b.shape} must have the same shape")
    return {"query_emb": data.embeddings[query_idx], "model_a": model_a, "model_b": model_b,
            "quality_a": data.quality[query_idx, model_a], "cost_a": data.cost[query_idx, model_a],
            "quality_b": data.quality[query_idx, model_b], "cost_b": data.cost[query_idx, model_b],
            "family": data.family[query_idx]}


def _model_indices(data: RoutingData, name: str, models) -> np.ndarray:
    models = np.asarray(models)
    if models.dtype.kind in "US":
        return data.model_index(models.ravel().tolist()).reshape(models.shape)
    return _in_range(name, _numeric(name, models, integer=True), 0, data.num_models)


def _numeric(name: str, values, integer: bool = False) -> np.ndarray:
    """`values` as an array, or an error naming the argument if it does not hold numbers; where
    indices are meant, floats are refused rather than truncated (as in `split_indices`)."""
    values = np.asarray(values)
    if values.size and values.dtype.kind not in ("iu" if integer else "biuf"):
        raise ValueError(f"{name} must hold {'integer indices' if integer else 'numbers'}, got {values.dtype} "
                         f"values {values.ravel()[:4].tolist()}")
    return values


def _in_range(name: str, idx: np.ndarray, low: int, high: int) -> np.ndarray:
    """Integer `idx` as int32, or an error naming the first value outside [low, high)."""
    bad = (idx < low) | (idx >= high)
    if bad.any():
        at = f" at index {_first(bad)}" if idx.ndim else ""
        raise ValueError(f"{name} must be in [{low}, {high}), got {idx[_first(bad)]}{at}")
    return idx.astype(np.int32)


# ---------------------------------------------------------------------------- simulation
@struct.dataclass
class PairSource:
    """A query set to draw simulated feedback from, with its trade-off pairs precomputed.

    queries: [Q] query indices. tradeoff_query, tradeoff_a, tradeoff_b: [P] int32, every
    observed pair (q, a, b) of the set in which answer a is both dearer and better than b;
    switch: [P] float32, their switch points log10(dq / dc), ascending. num_tradeoffs: P
    (the arrays hold one padding entry with switch = +inf when P = 0).
    """

    queries: jax.Array
    tradeoff_query: jax.Array
    tradeoff_a: jax.Array
    tradeoff_b: jax.Array
    switch: jax.Array
    num_tradeoffs: jax.Array

    @classmethod
    def build(cls, arrays: RoutingArrays, queries) -> "PairSource":
        """Enumerate the trade-off pairs of `queries` (host-side numpy, once per query set)."""
        queries = np.asarray(queries, np.int64)
        if queries.ndim != 1 or queries.size == 0:
            raise ValueError(f"a pair source needs a non-empty 1-d array of query indices, got shape {queries.shape}")
        row, a, b, switch = tradeoff_pairs(np.asarray(arrays.quality)[queries], np.asarray(arrays.cost)[queries],
                                           np.asarray(arrays.observed)[queries])
        switch = switch.astype(np.float32)
        num = len(switch)
        if num == 0:  # nothing to choose from: informative falls back to uniform pairs
            row, a, b = np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64)
            switch = np.full(1, np.inf, np.float32)
        return cls(queries=jnp.asarray(queries, jnp.int32), tradeoff_query=jnp.asarray(queries[row], jnp.int32),
                   tradeoff_a=jnp.asarray(a, jnp.int32), tradeoff_b=jnp.asarray(b, jnp.int32),
                   switch=jnp.asarray(switch), num_tradeoffs=jnp.asarray(num, jnp.int32))


def tradeoff_pairs(quality, cost, observed):
    """Every trade-off pair of a query set (host-side numpy): (row, a, b, switch), [P] each.

    quality, cost (USD): [Q, K]; observed: [Q, K] bool. A trade-off pair is an observed (a, b)
    on one query where answer a is both better and dearer than b; a linear user prefers a
    exactly when lam < dq / dc, so its switch point log10(dq / dc) is the one log10(lam) its
    answer tells about. Sorted by switch point, ascending (stable)."""
    quality, cost, observed = np.asarray(quality), np.asarray(cost), np.asarray(observed, bool)
    dq = quality[:, :, None] - quality[:, None, :]                                    # [Q, K, K]: a - b
    dc = cost[:, :, None] - cost[:, None, :]
    both = observed[:, :, None] & observed[:, None, :]
    row, a, b = np.nonzero(both & (dq > 0) & (dc > 0))
    switch = np.log10(dq[row, a, b] / dc[row, a, b])
    order = np.argsort(switch, kind="stable")
    return row[order], a[order], b[order], switch[order]


def uniform_index(u, n):
    """Integers uniform on [0, n) from uniforms u on [0, 1): floor(u n). One random draw where
    `jax.random.randint` makes three (it splits its key and draws two words per integer).
    A float32 uniform takes 2^23 values, so an integer's probability is off by at most a
    fraction n / 2^23 of it (5e-4 for 4,000 queries)."""
    return jnp.minimum((u * n).astype(jnp.int32), n - 1)


def top2(scores):
    """Indices of the largest and second-largest score (lower index first on ties, as
    `jax.lax.top_k`, which sorts: on CPU a sort of a few entries per row is many times dearer)."""
    index = jnp.arange(scores.shape[-1])
    first = jnp.argmax(scores)
    rest = jnp.where(index == first, -jnp.inf, scores)
    second = jnp.argmax(rest)
    # every other score -inf: top_k's next is the lowest index that is not `first`
    return first, jnp.where(rest[second] == -jnp.inf, jnp.where(first == 0, 1, 0), second)


def _uniform_pair(u, arrays: RoutingArrays, source: PairSource, pool):
    """A random query of the source and a random pair a != b of models observed and in the pool
    (the top two of the allowed models' iid uniforms: every ordered pair equally likely);
    u: [1 + K] uniforms. Where the query has fewer than two such models the pair holds one that
    is not (see `pair_is_allowed`)."""
    query = source.queries[uniform_index(u[0], source.queries.shape[0])]
    allowed = arrays.observed[query] & pool
    return (query, *top2(jnp.where(allowed, u[1:], -jnp.inf)))


def pair_is_allowed(arrays: RoutingArrays, pool, query, a, b):
    """Whether both models of a drawn pair were observed on its query and are in the pool: false
    only for a uniform pair on a query with fewer than two such models, whose outcomes the log
    lacks (zero fills), so the context is left out rather than shown to the router."""
    allowed = arrays.observed[query] & pool
    return allowed[a] & allowed[b]


def switch_targets(key, capacity: int, log10_lam_range) -> jax.Array:
    """[capacity] target switch points of one user's informative pairs: a golden-ratio sequence
    over the log10(lam) range from a uniform random start, so every prefix spreads evenly."""
    lo, hi = log10_lam_range
    start = jax.random.uniform(key, ())
    return lo + (hi - lo) * jnp.mod(start + GOLDEN * jnp.arange(capacity, dtype=jnp.float32), 1.0)


def _informative_pair(u, source: PairSource, pool, target):
    """A trade-off pair in the pool whose switch point is near `target`; (q, a, b, found).
    u: [CANDIDATES + 1] uniforms."""
    centre = jnp.searchsorted(source.switch, target)
    offsets = uniform_index(u[:CANDIDATES], 2 * WINDOW + 1) - WINDOW
    index = jnp.clip(centre + offsets, 0, jnp.maximum(source.num_tradeoffs - 1, 0))
    a, b = source.tradeoff_a[index], source.tradeoff_b[index]
    ok = pool[a] & pool[b] & (source.num_tradeoffs > 0)
    pick = jnp.argmax(ok)
    a, b = a[pick], b[pick]
    swap = u[CANDIDATES] < 0.5  # either order: the dearer answer is not always shown first
    return source.tradeoff_query[index[pick]], jnp.where(swap, b, a), jnp.where(swap, a, b), ok.any()


def sample_pair(key, arrays: RoutingArrays, source: PairSource, pool, informative, target):
    """A (query, a, b) by the pair strategy; `informative` is a traced bool, `target` the switch
    point (log10 lam) an informative pair should test (see `switch_targets`).

    Both candidates come from one uniform draw per context: random-number generation was a
    third of a meta-step's time when each variate had its own (three for an integer)."""
    u = jax.random.uniform(key, (CANDIDATES + 2 + pool.shape[0],))
    uniform = _uniform_pair(u[CANDIDATES + 1:], arrays, source, pool)
    *telling, found = _informative_pair(u[:CANDIDATES + 1], source, pool, target)
    use = informative & found
    return tuple(jnp.where(use, t, r) for t, r in zip(telling, uniform))


def bradley_terry_label(key, profiles, profile, arrays, query, a, b, scale, beta, flip):
    """y ~ Bernoulli(sigmoid(beta (u_a - u_b) / scale)), then flipped with probability `flip`."""
    draw = jax.random.uniform(key, (2,))
    u = query_utility(profiles, profile, arrays, query)
    y = draw[0] < jax.nn.sigmoid(beta * (u[a] - u[b]) / scale)
    return jnp.where(draw[1] < flip, ~y, y).astype(jnp.float32)


def label_log_likelihood(gap, label, mask, beta, flip):
    """[...] log P(labels) of `bradley_terry_label` users, summed over the valid contexts.

    gap: [..., N] each hypothesis' normalised utility of answer a minus answer b; label, mask:
    [N]. A label's probability is flip + (1 - 2 flip) sigmoid(beta * margin), margin = +-gap
    signed by the label. The transcendentals are the cost: the probabilities of PRODUCT_GROUP
    contexts (each floored at P_MIN, so a product >= 1e-24: no underflow) go into one log.
    0 with no valid contexts."""
    margin = (2.0 * label - 1.0) * gap                  # > 0 where the hypothesis agrees with the label
    p = flip + (1.0 - 2.0 * flip) * jax.nn.sigmoid(beta * margin)
    p = jnp.where(mask, jnp.maximum(p, P_MIN), 1.0)
    p = jnp.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, -p.shape[-1] % PRODUCT_GROUP)], constant_values=1.0)
    return jnp.log(p.reshape(*p.shape[:-1], -1, PRODUCT_GROUP).prod(-1)).sum(-1)


def sample_contexts(key, profiles, profile, arrays: RoutingArrays, source: PairSource, pool, *, count,
                    capacity: int, scale, beta, flip, informative, target_range) -> Contexts:
    """Simulate one user's context set on `source`'s queries (capacity static, the first `count`
    valid, less any pair on a query with fewer than two models observed and in the pool).

    target_range: the (lo, hi) log10(lam) range informative pairs test (`switch_targets`): the
    asker's prior, the router's. It is not taken from `profiles`, the users' family: a test
    population narrower than the prior (one log10(lam) band) would otherwise be asked only
    about its own range, as if the asker knew it."""
    keys_pair, keys_label, key_targets = jax.random.split(key, 3)
    targets = switch_targets(key_targets, capacity, target_range)
    query, a, b = jax.vmap(sample_pair, in_axes=(0, None, None, None, None, 0))(
        jax.random.split(keys_pair, capacity), arrays, source, pool, informative, targets)
    label = jax.vmap(bradley_terry_label, in_axes=(0, None, None, None, 0, 0, 0, None, None, None))(
        jax.random.split(keys_label, capacity), profiles, profile, arrays, query, a, b, scale, beta, flip)
    allowed = jax.vmap(pair_is_allowed, in_axes=(None, None, 0, 0, 0))(arrays, pool, query, a, b)
    return _simulated(arrays, query, a, b, label, (jnp.arange(capacity) < count) & allowed)


def _simulated(arrays: RoutingArrays, query, a, b, label, mask) -> Contexts:
    """Contexts (one or [N]) of simulated feedback on logged queries: what the log shows of them."""
    outcome = lambda m: jnp.stack([arrays.quality[query, m], arrays.log_cost[query, m]], -1)  # noqa: E731
    return Contexts(query_emb=arrays.embeddings[query], model_a=a, model_b=b, outcome_a=outcome(a),
                    outcome_b=outcome(b), label=label, mask=jnp.asarray(mask), family=arrays.family[query])


def sample_active_contexts(key, profiles, profile, arrays: RoutingArrays, source: PairSource, pool, *,
                           capacity: int, scale, beta, flip, next_target) -> Contexts:
    """Simulate one user's feedback asked one at a time (all `capacity` contexts valid, less any
    pair on a query with fewer than two models observed and in the pool).

    The t-th pair is the informative pair at `next_target(contexts)`, a log10(lam) computed
    from the contexts so far (the first t valid); so the first n contexts are exactly what
    asking n questions this way gives. A lax.scan over the capacity.
    """
    def ask(contexts, inputs):
        t, key_t = inputs
        key_pair, key_label = jax.random.split(key_t)
        query, a, b = sample_pair(key_pair, arrays, source, pool, True, next_target(contexts))
        label = bradley_terry_label(key_label, profiles, profile, arrays, query, a, b, scale, beta, flip)
        answer = _simulated(arrays, query, a, b, label, pair_is_allowed(arrays, pool, query, a, b))
        return jax.tree.map(lambda so_far, new: so_far.at[t].set(new), contexts, answer), None

    empty = Contexts.empty(capacity, arrays.embeddings.shape[-1])
    contexts, _ = jax.lax.scan(ask, empty, (jnp.arange(capacity), jax.random.split(key, capacity)))
    return contexts
