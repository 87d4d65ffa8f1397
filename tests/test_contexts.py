"""Contexts: public constructor errors, masks, and the simulated-user sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.contexts import (P_MIN, PairSource, bradley_terry_label, label_log_likelihood,
                                     sample_active_contexts, sample_contexts, sample_pair, switch_targets, top2,
                                     uniform_index)
from metarouter_jax.tasks import query_utility
from metarouter_jax.profiles import LinearProfiles
from metarouter_jax.tasks import RoutingArrays, utility_scale


def test_from_feedback_pads_and_masks(small_data):
    names = small_data.model_names
    ctx = mr.Contexts.from_feedback(small_data, [0, 1, 2], [names[0], names[1], names[2]], [4, 3, 0],
                                    [True, False, True], capacity=8)
    assert ctx.capacity == 8 and int(ctx.count) == 3
    assert bool(jnp.all(ctx.model_a != ctx.model_b))
    np.testing.assert_array_equal(np.asarray(ctx.label[:3]), [1, 0, 1])


def test_from_feedback_batched_users(small_data):
    ctx = mr.Contexts.from_feedback(small_data, np.zeros((5, 2), int), np.zeros((5, 2), int),
                                    np.ones((5, 2), int), np.ones((5, 2), bool), capacity=4)
    assert ctx.mask.shape == (5, 4) and ctx.query_emb.shape == (5, 4, small_data.embed_dim)


def test_empty_feedback_is_the_prior(small_data):
    ctx = mr.Contexts.from_feedback(small_data, np.zeros((0,), int), np.zeros((0,), int), np.zeros((0,), int),
                                    np.zeros((0,), bool), capacity=4)
    assert int(ctx.count) == 0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(model_a=["nope"]), KeyError, "unknown model"),
    (dict(model_b=[0]), ValueError, "distinct models"),
    (dict(query_idx=[10**6]), ValueError, "query indices"),
    (dict(prefers_a=[2]), ValueError, "boolean"),
    (dict(capacity=0), ValueError, "capacity must be an integer >= 1"),
    (dict(query_idx=[0, 1], model_a=[0, 0], model_b=[1, 1], prefers_a=[True, False], capacity=1), ValueError,
     "2 feedbacks exceed the context capacity 1"),
    (dict(model_a=[0, 1]), ValueError, "must match|same shape"),
    (dict(query_idx=[1.7]), ValueError, r"query_idx must hold integer indices, got float64 values \[1.7\]"),
    (dict(query_idx=[2.0]), ValueError, "query_idx must hold integer indices"),  # refused as split_indices does
    (dict(model_b=[1.5]), ValueError, r"model_b must hold integer indices, got float64 values \[1.5\]"),
    (dict(query_idx=["a"]), ValueError, r"query_idx must hold integer indices, got <U1 values \['a'\]"),
    (dict(prefers_a=["yes"]), ValueError, r"prefers_a must hold numbers, got <U3 values \['yes'\]"),
    (dict(model_b=[5]), ValueError, r"model_b must be in \[0, 5\), got 5 at index 0"),
])
def test_bad_feedback_is_named(small_data, kwargs, error, message):
    args = dict(query_idx=[0], model_a=[0], model_b=[1], prefers_a=[True], capacity=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        mr.Contexts.from_feedback(small_data, **args)


OUTCOMES = dict(query_emb=np.zeros((1, 8)), model_a=[0], model_b=[1], prefers_a=[True], quality_a=[1.0],
                cost_a=[0.01], quality_b=[0.0], cost_b=[0.001], capacity=2, log_cost_stats=(-3.0, 1.0), num_models=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(model_a=[0.6]), r"model_a must hold integer indices, got float64 values \[0.6\]"),   # was model 0
    (dict(cost_a=["abc"]), r"cost_a must hold numbers, got <U3 values \['abc'\]"),
    (dict(family=[77], num_families=4), r"family ids \(-1: unknown\) must be in \[-1, 4\), got 77 at index 0"),
    (dict(family=[-2]), r"family ids \(-1: unknown\) must be in \[-1, .*got -2 at index 0"),
    (dict(family=[1.7]), r"family must hold integer indices, got float64 values \[1.7\]"),
    (dict(log_cost_stats=(-3.0, 0.0)), r"std > 0 of log10 cost \(USD\), got \(-3.0, 0.0\)"),
    (dict(log_cost_stats=(-3.0, -1.0)), r"std > 0 of log10 cost \(USD\), got \(-3.0, -1.0\)"),
    (dict(log_cost_stats=(-3.0, np.inf)), r"finite mean and a std > 0 .*got \(-3.0, inf\)"),
    (dict(log_cost_stats=(np.nan, 1.0)), r"finite mean and a std > 0 .*got \(nan, 1.0\)"),
])
def test_bad_outcomes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mr.Contexts.from_outcomes(**{**OUTCOMES, **kwargs})


def test_nan_outcome_is_refused():
    data = mr.synthetic_data(seed=1, num_queries=200, embed_dim=8)
    quality = data.quality.copy()
    quality[0, 1] = np.nan
    data = mr.RoutingData.create(data.embeddings, quality, data.cost, data.family, model_names=data.model_names,
                                 family_names=data.family_names)
    with pytest.raises(ValueError, match="NaN"):
        mr.Contexts.from_feedback(data, [0], [1], [0], [True], capacity=2)


def _simulate(data, informative, pool=None, count=16, key=0):
    arrays = RoutingArrays.from_data(data)
    profiles = LinearProfiles((0.0, 3.5))
    profile = profiles.linear_profile(2.25)
    queries = jnp.asarray(data.split("train"))
    scale = utility_scale(profiles, profile, arrays, queries[:64])
    pool = jnp.ones(data.num_models, bool) if pool is None else jnp.asarray(pool)
    source = PairSource.build(arrays, queries)
    return arrays, sample_contexts(jax.random.key(key), profiles, profile, arrays, source, pool, count=count,
                                   capacity=16, scale=scale, beta=10.0, flip=0.0, informative=informative,
                                   target_range=profiles.log10_lam_range)


def test_top2_is_top_k_including_ties_at_minus_inf():
    scores = np.array(jax.random.normal(jax.random.key(0), (500, 6)))
    scores[np.asarray(jax.random.bernoulli(jax.random.key(1), 0.6, scores.shape))] = -np.inf
    scores[:6] = -np.inf                       # none allowed
    scores[6:12] = -np.inf
    scores[np.arange(6, 12), np.arange(6)] = 1.0  # one allowed, at each position
    first, second = jax.vmap(top2)(jnp.asarray(scores))
    _, expected = jax.lax.top_k(jnp.asarray(scores), 2)
    np.testing.assert_array_equal(np.stack([first, second], -1), np.asarray(expected))


def test_uniform_index_is_uniform_and_in_range():
    n, draws = 7, 70_000
    index = np.asarray(uniform_index(jax.random.uniform(jax.random.key(0), (draws,)), n))
    assert index.min() == 0 and index.max() == n - 1
    counts = np.bincount(index, minlength=n)
    chi2 = ((counts - draws / n) ** 2 / (draws / n)).sum()
    assert chi2 < 22.5, counts                 # chi-square, 6 degrees of freedom: p ~ 0.001
    assert int(uniform_index(jnp.float32(1.0 - 2**-24), 3)) == 2 and int(uniform_index(jnp.float32(1.0), 3)) == 2


def test_uniform_pairs_are_uniform_over_allowed_ordered_pairs(small_data):
    arrays = RoutingArrays.from_data(small_data)
    source = PairSource.build(arrays, jnp.asarray(small_data.split("train")))
    pool = jnp.asarray([True, True, False, True, True])
    keys = jax.random.split(jax.random.key(3), 24_000)
    _, a, b = jax.vmap(sample_pair, in_axes=(0, None, None, None, None, None))(keys, arrays, source, pool, False, 0.0)
    a, b = np.asarray(a), np.asarray(b)
    assert np.all(a != b) and np.all(np.asarray(pool)[a]) and np.all(np.asarray(pool)[b])
    counts = np.bincount(5 * a + b, minlength=25)[[5 * i + j for i in (0, 1, 3, 4) for j in (0, 1, 3, 4) if i != j]]
    chi2 = ((counts - 2000) ** 2 / 2000).sum()
    assert chi2 < 32.9, counts                 # 12 ordered pairs, 11 degrees of freedom: p ~ 0.0005


def test_sampler_respects_pool_count_and_distinct_pairs(small_data):
    pool = np.array([True, False, True, False, True])
    _, ctx = _simulate(small_data, False, pool=pool, count=5)
    assert int(ctx.count) == 5
    assert bool(jnp.all(ctx.model_a != ctx.model_b))
    assert bool(jnp.all(jnp.asarray(pool)[ctx.model_a] & jnp.asarray(pool)[ctx.model_b]))


def test_informative_pairs_are_trade_offs(small_data):
    trade = []
    for informative in (False, True):
        arrays, ctx = _simulate(small_data, informative)
        dq = ctx.outcome_a[:, 0] - ctx.outcome_b[:, 0]
        dc = ctx.outcome_a[:, 1] - ctx.outcome_b[:, 1]
        trade.append(float(jnp.mean(dq * dc > 0)))
    assert trade[1] > 0.9 and trade[1] > trade[0] + 0.3


def test_pair_source_lists_every_trade_off_sorted(small_data):
    arrays = RoutingArrays.from_data(small_data)
    queries = small_data.split("train")[:50]
    source = PairSource.build(arrays, queries)
    q, a, b = (np.asarray(x) for x in (source.tradeoff_query, source.tradeoff_a, source.tradeoff_b))
    quality, cost = np.asarray(arrays.quality), np.asarray(arrays.cost)
    dq, dc = quality[q, a] - quality[q, b], cost[q, a] - cost[q, b]
    assert np.all(dq > 0) and np.all(dc > 0) and np.all(np.isin(q, queries))
    np.testing.assert_allclose(np.asarray(source.switch), np.log10(dq / dc), rtol=1e-5)
    assert np.all(np.diff(np.asarray(source.switch)) >= 0)
    # Brute force: the number of (query, dearer-and-better, other) triples.
    qq, cc = quality[queries], cost[queries]
    expected = sum(int(((qq[:, i] > qq[:, j]) & (cc[:, i] > cc[:, j])).sum())
                   for i in range(5) for j in range(5) if i != j)
    assert int(source.num_tradeoffs) == len(q) == expected


def test_informative_switch_points_spread_over_the_prior_range(small_data):
    arrays = RoutingArrays.from_data(small_data)
    source = PairSource.build(arrays, small_data.split("train"))
    keys = jax.random.split(jax.random.key(3), 2000)
    targets = jax.random.uniform(jax.random.key(4), (2000,), minval=0.0, maxval=3.5)
    q, a, b = jax.vmap(sample_pair, in_axes=(0, None, None, None, None, 0))(
        keys, arrays, source, jnp.ones(5, bool), True, targets)
    quality, cost = np.asarray(arrays.quality), np.asarray(arrays.cost)
    q, a, b = np.asarray(q), np.asarray(a), np.asarray(b)
    switch = np.log10((quality[q, a] - quality[q, b]) / (cost[q, a] - cost[q, b]))
    assert np.all(np.isfinite(switch))                        # every pair is a trade-off
    quarters = np.histogram(switch, bins=4, range=(0.0, 3.5))[0] / switch.size
    assert np.all(quarters > 0.15), quarters                  # every quarter of the range is tested
    assert np.mean(a != b) == 1.0 and 0.4 < np.mean(cost[q, a] > cost[q, b]) < 0.6  # both orders shown


def test_informative_targets_follow_the_askers_range_not_the_users(small_data):
    """Users of a narrow log10(lam) band are asked about the asker's whole range: the band is the
    test's, not something the asker knows (lam_bands once leaked it through the users' family)."""
    arrays = RoutingArrays.from_data(small_data)
    source = PairSource.build(arrays, small_data.split("train"))
    band = LinearProfiles((0.0, 0.5))
    profile = band.linear_profile(0.25)

    def switches(key, target_range):
        ctx = sample_contexts(key, band, profile, arrays, source, jnp.ones(5, bool), count=8, capacity=8, scale=1.0,
                              beta=10.0, flip=0.0, informative=True, target_range=target_range)
        cost = lambda o: 10.0 ** (o[:, 1] * arrays.log_cost_std + arrays.log_cost_mean)  # noqa: E731
        return jnp.log10(jnp.abs(ctx.outcome_a[:, 0] - ctx.outcome_b[:, 0]) / jnp.abs(cost(ctx.outcome_a) - cost(ctx.outcome_b)))

    keys = jax.random.split(jax.random.key(7), 200)
    wide = np.asarray(jax.vmap(lambda k: switches(k, (0.0, 3.5)))(keys)).ravel()
    narrow = np.asarray(jax.vmap(lambda k: switches(k, (0.0, 0.5)))(keys)).ravel()
    assert np.mean(wide > 1.0) > 0.5 > np.mean(narrow > 1.0)


def test_no_trade_offs_fall_back_to_uniform_pairs():
    q = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]] * 10, np.float32)   # the cheapest answer is never worse
    c = np.tile(np.array([0.001, 0.01, 0.1], np.float32), (20, 1))
    data = mr.RoutingData.create(embeddings=np.random.default_rng(0).normal(size=(20, 4)), quality=q, cost=c,
                                 family=np.zeros(20, np.int32), family_names=["all"],
                                 model_names=["a", "b", "c"])
    arrays = RoutingArrays.from_data(data)
    source = PairSource.build(arrays, np.arange(20))
    assert int(source.num_tradeoffs) == 0
    profiles = LinearProfiles((0.0, 3.0))
    ctx = sample_contexts(jax.random.key(0), profiles, profiles.linear_profile(1.0), arrays, source,
                          jnp.ones(3, bool), count=8, capacity=8, scale=1.0, beta=10.0, flip=0.0, informative=True,
                          target_range=profiles.log10_lam_range)
    assert bool(jnp.all(ctx.model_a != ctx.model_b))
    with pytest.raises(ValueError, match="non-empty"):
        PairSource.build(arrays, np.array([], np.int64))


def test_contexts_carry_the_query_family(small_data):
    ctx = mr.Contexts.from_feedback(small_data, [5, 9], [0, 1], [2, 3], [True, False], capacity=4)
    np.testing.assert_array_equal(np.asarray(ctx.family), [small_data.family[5], small_data.family[9], -1, -1])
    raw = mr.Contexts.from_outcomes(np.zeros((1, 8)), [0], [1], [True], [1.0], [0.01], [0.0], [0.001],
                                    capacity=2, log_cost_stats=(-3.0, 1.0), num_models=2)
    np.testing.assert_array_equal(np.asarray(raw.family), [-1, -1])         # raw text: unknown family
    known = mr.Contexts.from_outcomes(**{**OUTCOMES, "family": [3], "num_families": 4})
    np.testing.assert_array_equal(np.asarray(known.family), [3, -1])
    with pytest.raises(ValueError, match="family must have shape"):
        mr.Contexts.from_outcomes(np.zeros((1, 8)), [0], [1], [True], [1.0], [0.01], [0.0], [0.001],
                                  capacity=2, log_cost_stats=(-3.0, 1.0), num_models=2, family=[0, 1])


def test_switch_targets_spread_every_prefix_evenly():
    """Each prefix of a user's informative targets covers the range: its largest gap (wrapping
    around) stays within about 2.7 / n of the range, where n independent uniform draws leave
    gaps of about log(n) / n; over users the targets are uniform."""
    lo, hi = 0.5, 4.5
    targets = np.asarray(jax.vmap(lambda k: switch_targets(k, 32, (lo, hi)))(jax.random.split(jax.random.key(0), 500)))
    assert targets.shape == (500, 32) and targets.min() >= lo and targets.max() < hi
    unit = (targets - lo) / (hi - lo)
    for n in (2, 4, 6, 8, 16, 32):
        pts = np.sort(unit[:, :n], axis=1)
        gaps = np.diff(np.concatenate([pts, pts[:, :1] + 1.0], axis=1), axis=1)
        assert gaps.max() < 2.7 / n, (n, gaps.max())
    assert np.all(np.histogram(unit[:, 0], bins=4, range=(0, 1))[0] > 90)       # the start is uniform


def test_active_contexts_ask_where_the_feedback_so_far_points(small_data):
    """The t-th pair is asked at next_target(the first t contexts): here a target that climbs
    by 0.5 decade per answer, so pair t's switch point sits near 0.5 + 0.5 t."""
    arrays = RoutingArrays.from_data(small_data)
    source = PairSource.build(arrays, small_data.split("train"))
    profiles = mr.make_profiles("linear", log10_lam_range=(0.0, 4.0))
    profile = profiles.linear_profile(2.25)

    def climb(contexts):
        return 0.5 + 0.5 * contexts.mask.sum()

    ctx = jax.jit(lambda k: sample_active_contexts(
        k, profiles, profile, arrays, source, jnp.ones(5, bool), capacity=6, scale=1.0, beta=1e5, flip=0.0,
        next_target=climb))(jax.random.key(0))
    assert bool(ctx.mask.all()) and set(np.unique(np.asarray(ctx.label))) <= {0.0, 1.0}
    quality, cost = np.asarray(arrays.quality), np.asarray(arrays.cost)
    q = np.asarray(ctx.query_emb) @ np.asarray(arrays.embeddings).T              # recover the queries
    rows = np.argmax(q - 0.5 * (np.asarray(arrays.embeddings) ** 2).sum(-1), axis=1)
    a, b = np.asarray(ctx.model_a), np.asarray(ctx.model_b)
    hi, lo = np.where(cost[rows, a] > cost[rows, b], a, b), np.where(cost[rows, a] > cost[rows, b], b, a)
    switch = np.log10((quality[rows, hi] - quality[rows, lo]) / (cost[rows, hi] - cost[rows, lo]))
    np.testing.assert_allclose(switch, 0.5 + 0.5 * np.arange(6), atol=0.35)
    # A near-deterministic user (log10 lam = 2.25) pays for the dearer, better answer exactly when
    # its switch point is above 2.25.
    dearer_won = np.where(cost[rows, a] > cost[rows, b], ctx.label, 1.0 - np.asarray(ctx.label))
    clear = np.abs(switch - 2.25) > 0.02
    np.testing.assert_array_equal(dearer_won[clear], (switch[clear] > 2.25).astype(float))


def test_label_log_likelihood_is_the_simulated_users_label_distribution(small_data):
    """exp of one label's log-likelihood is how often `bradley_terry_label` draws that label."""
    arrays, profiles = RoutingArrays.from_data(small_data, "train"), LinearProfiles()
    profile, beta, flip = profiles.linear_profile(2.0), 10.0, 0.05
    gaps = jax.vmap(lambda q: query_utility(profiles, profile, arrays, q)[:2] @ jnp.array([1.0, -1.0]))(
        jnp.arange(200))
    query = int(jnp.argmax(jnp.abs(gaps) > 0))
    scale = float(beta * jnp.abs(gaps[query]))                 # beta * gap / scale = +-1: a label worth sampling
    labels = jax.vmap(lambda k: bradley_terry_label(k, profiles, profile, arrays, query, 0, 1, scale, beta, flip))(
        jax.random.split(jax.random.key(0), 20_000))
    one = jnp.ones((1,), bool)
    p_a = float(jnp.exp(label_log_likelihood(gaps[query:query + 1] / scale, jnp.ones(1), one, beta, flip)))
    p_b = float(jnp.exp(label_log_likelihood(gaps[query:query + 1] / scale, jnp.zeros(1), one, beta, flip)))
    assert abs(p_a + p_b - 1.0) < 1e-6 and 0.2 < p_a < 0.8
    assert abs(float(labels.mean()) - p_a) < 4 * np.sqrt(p_a * (1 - p_a) / labels.size)


def test_label_log_likelihood_sums_the_valid_contexts():
    """Per hypothesis, the sum of each valid context's log-probability (capacity 7: no multiple of
    the product group); a certain disagreement costs log(P_MIN), not -inf."""
    rng = np.random.default_rng(0)
    gap, label = rng.normal(size=(3, 7)), (rng.random(7) < 0.5).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 1, 0], bool)
    beta, flip = 4.0, 0.1
    p = flip + (1 - 2 * flip) / (1 + np.exp(-beta * np.where(label > 0.5, gap, -gap)))
    np.testing.assert_allclose(label_log_likelihood(gap, label, mask, beta, flip), (np.log(p) * mask).sum(-1),
                               rtol=1e-5)
    assert float(label_log_likelihood(gap, label, np.zeros(7, bool), beta, flip).max()) == 0.0
    sure = label_log_likelihood(jnp.array([[-100.0]]), jnp.ones(1), jnp.ones(1, bool), beta, 0.0)
    np.testing.assert_allclose(sure, [np.log(P_MIN)], rtol=1e-5)


def test_pairs_without_two_allowed_models_are_left_out():
    """A uniform pair on a query with fewer than two models observed and in the pool would show an
    answer the log lacks (a zero fill): such contexts are masked out, up front and asked actively."""
    data = mr.synthetic_data(seed=1, num_queries=200, embed_dim=8)
    quality, cost = data.quality.copy(), data.cost.copy()
    quality[:20, 1:], cost[:20, 1:] = np.nan, np.nan                   # queries 0..19: only model 0 observed
    data = mr.RoutingData.create(data.embeddings, quality, cost, data.family, model_names=data.model_names,
                                 family_names=data.family_names)
    arrays = RoutingArrays.from_data(data)
    source = PairSource.build(arrays, np.arange(40))                   # half the queries lack a pair
    profiles = LinearProfiles((0.0, 3.0))
    profile, pool = profiles.linear_profile(1.0), jnp.asarray([True, True, True, False, True])
    keys = jax.random.split(jax.random.key(0), 32)
    ctx = jax.vmap(lambda k: sample_contexts(k, profiles, profile, arrays, source, pool, count=6, capacity=8,
                                             scale=1.0, beta=10.0, flip=0.0, informative=False,
                                             target_range=profiles.log10_lam_range))(keys)
    rows = np.argmax(np.asarray(ctx.query_emb)[..., None, :] == np.asarray(arrays.embeddings), axis=-2)[..., 0]
    a, b, mask = np.asarray(ctx.model_a), np.asarray(ctx.model_b), np.asarray(ctx.mask)
    observed, in_pool = np.asarray(arrays.observed), np.asarray(pool)
    allowed = observed[rows, a] & observed[rows, b] & in_pool[a] & in_pool[b]
    np.testing.assert_array_equal(mask, allowed & (np.arange(8) < 6))
    assert not mask[rows < 20].any() and mask[rows >= 20].mean() > 0.6
    # Asked actively with no trade-off pair to ask about, every question falls back to a uniform pair.
    lone = PairSource.build(arrays, np.arange(20))
    active = jax.vmap(lambda k: sample_active_contexts(k, profiles, profile, arrays, lone, pool, capacity=8,
                                                       scale=1.0, beta=10.0, flip=0.0,
                                                       next_target=lambda c: 1.0))(keys)
    assert not bool(active.mask.any())


def test_informative_pairs_stay_in_the_pool(small_data):
    """Both models of an informative (trade-off) pair are in the pool: with three of five models
    allowed, every pair drawn is among them, and nearly all are still trade-offs."""
    arrays = RoutingArrays.from_data(small_data)
    source = PairSource.build(arrays, small_data.split("train"))
    pool = np.array([True, False, True, False, True])
    keys = jax.random.split(jax.random.key(5), 2000)
    targets = jax.random.uniform(jax.random.key(6), (2000,), minval=0.0, maxval=3.5)
    q, a, b = (np.asarray(x) for x in jax.vmap(sample_pair, in_axes=(0, None, None, None, None, 0))(
        keys, arrays, source, jnp.asarray(pool), True, targets))
    assert pool[a].all() and pool[b].all() and (a != b).all()
    quality, cost = np.asarray(arrays.quality), np.asarray(arrays.cost)
    dq, dc = quality[q, a] - quality[q, b], cost[q, a] - cost[q, b]
    assert np.mean(dq * dc > 0) > 0.9


def test_from_feedback_carries_each_answers_own_outcomes(small_data):
    """Each context holds its query's embedding and family and the logged quality and standardised
    log10 cost of answer a and of answer b (each its own model's), in the units a router trained on
    the data with the default settings simulates contexts in."""
    from metarouter_jax.training import cost_units

    query, a, b = np.array([5, 17, 42]), np.array([0, 4, 2]), np.array([3, 1, 4])
    ctx = mr.Contexts.from_feedback(small_data, query, a, b, [True, False, True], capacity=4)
    arrays = RoutingArrays.from_data(small_data, log_cost_stats=cost_units(mr.TrainConfig(), small_data))
    for side, models in (("outcome_a", a), ("outcome_b", b)):
        expected = np.stack([np.asarray(arrays.quality)[query, models], np.asarray(arrays.log_cost)[query, models]], -1)
        np.testing.assert_allclose(np.asarray(getattr(ctx, side))[:3], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ctx.query_emb)[:3], small_data.embeddings[query])
    np.testing.assert_array_equal(np.asarray(ctx.family)[:3], small_data.family[query])
    np.testing.assert_array_equal(np.asarray(ctx.model_b)[:3], b)
