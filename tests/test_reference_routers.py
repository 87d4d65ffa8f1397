"""The routing literature's baselines (reference_routers): predictors, LinUCB, per-user training."""

import jax
import jax.numpy as jnp
import numpy as np

from metarouter_jax import reference_routers as rr
from metarouter_jax.contexts import Contexts


def contexts(model_a, model_b, label, mask=None, dim=2):
    n = len(model_a)
    mask = np.ones(n, bool) if mask is None else np.asarray(mask)
    return Contexts(query_emb=jnp.zeros((n, dim)), model_a=jnp.asarray(model_a, jnp.int32),
                    model_b=jnp.asarray(model_b, jnp.int32), outcome_a=jnp.zeros((n, 2)), outcome_b=jnp.zeros((n, 2)),
                    label=jnp.asarray(label, jnp.float32), mask=jnp.asarray(mask), family=jnp.zeros(n, jnp.int32))


def two_cluster_log(rng, size):
    """Model 0 answers queries whose first coordinate is positive, model 1 the others; model 0
    costs 1e-3 USD, model 1 1e-1."""
    emb = rng.normal(size=(size, 4)).astype(np.float32)
    right = emb[:, 0] > 0
    quality = np.stack([right, ~right], 1).astype(np.float32)
    cost = np.broadcast_to(np.array([1e-3, 1e-1], np.float32), (size, 2)).copy()
    return emb, quality, cost, np.ones((size, 2), bool)


def test_knn_averages_the_nearest_observed_answers_and_falls_back_to_the_model_mean():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    quality = np.array([[1.0, 0.0], [0.0, 7.0], [0.0, 1.0], [0.0, 1.0]])     # 7: an unobserved cell, never read
    cost = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    observed = np.array([[True, True], [True, False], [True, True], [True, True]])
    q, c = rr.knn_predict((emb, quality, cost, observed), np.array([[1.0, 0.05]]), k=2)
    np.testing.assert_allclose(q, [[0.5, 0.0]])                # model 1 seen on one of the two neighbours
    np.testing.assert_allclose(c, [[2.0, 2.0]])
    observed[:2, 1] = False                                    # model 1 on neither neighbour: its overall mean
    q, c = rr.knn_predict((emb, quality, cost, observed), np.array([[1.0, 0.05]]), k=2)
    np.testing.assert_allclose(q[0, 1], 1.0) and np.testing.assert_allclose(c[0, 1], 7.0)


def test_knn_chooses_its_neighbour_count_on_the_validation_queries():
    rng = np.random.default_rng(0)
    train, valid, test = two_cluster_log(rng, 400), two_cluster_log(rng, 100), two_cluster_log(rng, 50)
    pred = rr.fit_knn(train, valid, test[0])
    errors = {k: np.mean((rr.knn_predict(train, valid[0], k)[0] - valid[1]) ** 2) for k in rr.KNN_CHOICES}
    assert pred.setting["k"] == min(errors, key=errors.get)
    neighbours = rr.nearest(train[0], valid[0], 80)                     # a prefix serves every smaller k
    np.testing.assert_array_equal(rr.knn_predict(train, valid[0], 10, neighbours)[0], rr.knn_predict(train, valid[0], 10)[0])
    assert np.mean((np.asarray(pred.quality) > 0.5) == test[1]) > 0.9


def test_the_mlp_predictor_learns_quality_and_cost():
    rng = np.random.default_rng(1)
    train, valid, test = two_cluster_log(rng, 400), two_cluster_log(rng, 100), two_cluster_log(rng, 100)
    pred = rr.fit_mlp(jax.random.key(0), train, valid, test[0], steps=400, learning_rate=1e-2)
    assert np.mean((np.asarray(pred.quality) > 0.5) == test[1]) > 0.9
    assert np.median(np.abs(np.log10(np.asarray(pred.cost)) - np.log10(test[2]))) < 0.05   # decades


def test_principal_features_are_standardised_projections():
    emb = np.random.default_rng(2).normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    feats = np.asarray(rr.principal_features(emb, num=3)(jnp.asarray(emb, jnp.float32)))
    np.testing.assert_allclose(feats.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(feats.std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.abs(np.corrcoef(feats[:, 0], emb[:, 0])[0, 1]), 1.0, atol=1e-2)


def test_linucb_is_a_ridge_regression_per_model_with_its_confidence_width():
    rng = np.random.default_rng(3)
    ctx = contexts([0, 0, 2, 1], [1, 2, 1, 0], [1.0, 1.0, 0.0, 0.0])
    f_ctx, f_q = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    key = jax.random.key(0)
    fitted = rr.linucb_fit(ctx, jnp.asarray(f_ctx), 4, ridge=2.0)
    scores = np.asarray(rr.linucb_scores(fitted, jnp.asarray(f_q), key, alpha=0.7))
    x, xq = np.c_[np.ones(4), f_ctx], np.c_[np.ones(5), f_q]
    # model 0: preferred as a (rows 0, 1) and as b in row 3 (label 0: b preferred); model 3: never asked
    rows, rewards = [0, 1, 3], [1.0, 1.0, 1.0]
    a = 2.0 * np.eye(3) + x[rows].T @ x[rows]
    theta = np.linalg.solve(a, x[rows].T @ np.array(rewards))
    width = np.sqrt(np.einsum("qd,de,qe->q", xq, np.linalg.inv(a), xq))
    np.testing.assert_allclose(scores[:, 0], xq @ theta + 0.7 * width, atol=1e-4)
    np.testing.assert_allclose(scores[:, 3], 0.7 * np.linalg.norm(xq, axis=1) / np.sqrt(2.0), atol=1e-4)
    masked = contexts([0, 0, 2, 1, 3], [1, 2, 1, 0, 1], [1.0, 1.0, 0.0, 0.0, 1.0], mask=[1, 1, 1, 1, 0])
    f_more = jnp.asarray(np.r_[f_ctx, rng.normal(size=(1, 2))], jnp.float32)
    np.testing.assert_allclose(rr.linucb_scores(rr.linucb_fit(masked, f_more, 4, ridge=2.0), jnp.asarray(f_q), key,
                                                alpha=0.7), scores, atol=1e-5)     # a masked context is not read
    np.testing.assert_allclose(fitted[0][0], theta, atol=1e-4)


def test_a_network_trained_from_scratch_on_one_users_answers_prefers_what_they_chose():
    rng = np.random.default_rng(4)
    n = 12
    ctx = contexts(np.zeros(n), np.ones(n), np.ones(n))                   # model 0 preferred every time
    f_ctx, f_q = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32), jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    descriptors = jnp.asarray([[-1.0, 0.5], [1.0, 0.2], [0.0, 0.0]])
    def scores(c):
        return rr.scratch_scores(jax.jit(rr.scratch_fit)(c, f_ctx, descriptors, jax.random.key(0)), f_q, descriptors)

    assert scores(ctx).shape == (7, 3) and bool(jnp.all(scores(ctx)[:, 0] > scores(ctx)[:, 1]))
    flipped = ctx.replace(label=jnp.zeros(n))
    assert bool(jnp.all(scores(flipped)[:, 1] > scores(flipped)[:, 0]))
    params = rr.scratch_fit(flipped, f_ctx, descriptors, jax.random.key(0))
    assert bool(jnp.all(rr.scratch_pair_logits(params, f_ctx, descriptors, flipped) < 0))   # it predicts b
    none = ctx.replace(mask=jnp.zeros(n, bool))                           # no answers: only the decay acts
    assert float(jnp.abs(scores(none)).max()) < 0.1
