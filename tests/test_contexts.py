"""Contexts: public constructor errors, masks, and the simulated-user sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.contexts import sample_contexts
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
    (dict(capacity=0), ValueError, "exceed the context capacity"),
    (dict(model_a=[0, 1]), ValueError, "must match|same shape"),
])
def test_bad_feedback_is_named(small_data, kwargs, error, message):
    args = dict(query_idx=[0], model_a=[0], model_b=[1], prefers_a=[True], capacity=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        mr.Contexts.from_feedback(small_data, **args)


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
    profile = profiles.linear_profile(2.0)
    queries = jnp.asarray(data.split("train"))
    scale = utility_scale(profiles, profile, arrays, queries[:64])
    pool = jnp.ones(data.num_models, bool) if pool is None else jnp.asarray(pool)
    return arrays, sample_contexts(jax.random.key(key), profiles, profile, arrays, queries, pool, count=count,
                                   capacity=16, scale=scale, beta=10.0, flip=0.0, informative=informative)


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
