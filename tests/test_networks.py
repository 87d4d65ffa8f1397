"""Encoder invariances, the prior at 0 contexts, pool-restricted routing, vmap == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import metarouter_jax as mr
from metarouter_jax import adaptation, baselines
from metarouter_jax.config import Hparams
from metarouter_jax.networks import Dense
from metarouter_jax.profiles import make_atoms
from metarouter_jax.training import make_train


ENCODERS = {"atoms": {}, "atoms_learned": {"likelihood": "learned"}, "mean": {"posterior_atoms": 0},
            "gaussian": {"posterior_atoms": 0, "gaussian_encoder": True}}


@pytest.fixture(scope="module", params=list(ENCODERS))
def setup(request, small_data, tiny_config):
    return build(small_data, tiny_config, ENCODERS[request.param])


@pytest.fixture(scope="module")
def atom_setup(small_data, tiny_config):
    return build(small_data, tiny_config, ENCODERS["atoms"])


def build(small_data, tiny_config, changes):
    """A tiny trainer with untrained parameters and three users' contexts (3, 5 and 8 valid)."""
    trainer = make_train(tiny_config.replace(inner_steps=2, **changes), small_data)
    state = trainer.init(jax.random.key(1), Hparams.create())
    users = jax.vmap(lambda k: trainer.sample_user(k, Hparams.create(), 0.0))(jax.random.split(jax.random.key(2), 3))
    users = users.replace(count=jnp.array([3, 5, 8]))
    contexts = jax.vmap(lambda k, u: trainer.user_contexts(k, u, trainer.train_source))(
        jax.random.split(jax.random.key(3), 3), users)
    params = state.params
    if trainer.atoms is not None and trainer.config.likelihood == "bradley_terry":
        # a learned correction that is not zero, as after training
        kernel = params["encoder"]["atom_logits"]["kernel"]
        kernel[...] = 0.1 * jax.random.normal(jax.random.key(4), kernel[...].shape)
    return trainer, params, contexts


def one(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def latent(trainer, params, ctx):
    return adaptation.adapt(trainer.graphdef, params, ctx, trainer.arrays.descriptors, inner_steps=2,
                            atoms=trainer.atoms)


def test_encoder_is_invariant_to_context_order(setup):
    trainer, params, contexts = setup
    ctx = one(contexts, 2)                      # 8 valid contexts, capacity 8
    perm = np.random.default_rng(0).permutation(ctx.capacity)
    shuffled = jax.tree.map(lambda x: x[perm], ctx)
    np.testing.assert_allclose(latent(trainer, params, ctx), latent(trainer, params, shuffled), atol=1e-5)


def test_encoder_is_invariant_to_swapping_a_and_b(setup):
    trainer, params, contexts = setup
    ctx = one(contexts, 1)
    swapped = ctx.replace(model_a=ctx.model_b, model_b=ctx.model_a, outcome_a=ctx.outcome_b,
                          outcome_b=ctx.outcome_a, label=1.0 - ctx.label)
    np.testing.assert_allclose(latent(trainer, params, ctx), latent(trainer, params, swapped), atol=1e-5)


def test_zero_contexts_give_the_prior(setup):
    trainer, params, contexts = setup
    empty_a = one(contexts, 0).replace(mask=jnp.zeros(8, bool))
    empty_b = one(contexts, 2).replace(mask=jnp.zeros(8, bool))   # different (masked) garbage
    z_a, z_b = latent(trainer, params, empty_a), latent(trainer, params, empty_b)
    np.testing.assert_allclose(z_a, z_b, atol=1e-6)
    if trainer.atoms is not None:              # the learned prior over the atoms, untouched by refinement
        weights = adaptation.posterior_weights(trainer.graphdef, params, empty_a, trainer.arrays.descriptors,
                                               trainer.atoms, inner_steps=2)
        prior = jax.nn.softmax(params["encoder"]["prior_logits"][...])
        np.testing.assert_allclose(weights, prior, atol=1e-6)
    if trainer.config.gaussian_encoder:       # product of Gaussians with no factor = the N(0, I) prior
        mean, logvar = adaptation.encode(trainer.graphdef, params, empty_a, trainer.arrays.descriptors)
        np.testing.assert_allclose(mean, 0.0, atol=1e-7)
        np.testing.assert_allclose(logvar, 0.0, atol=1e-7)


def test_vmap_over_tasks_equals_a_python_loop(setup):
    trainer, params, contexts = setup
    # Each side jitted (one compile, not thousands of eager ops): the loop calls the one-user program.
    batched = jax.jit(jax.vmap(lambda p, c: latent(trainer, p, c), in_axes=(None, 0)))(params, contexts)
    single = jax.jit(lambda p, c: latent(trainer, p, c))
    looped = jnp.stack([single(params, one(contexts, i)) for i in range(3)])
    np.testing.assert_allclose(batched, looped, atol=1e-5)
    keys = jax.random.split(jax.random.key(0), 3)
    hp = Hparams.create()
    losses, _ = jax.jit(jax.vmap(trainer.task_loss, in_axes=(None, 0, None, None)))(params, keys, hp, 0.5)
    single_loss = jax.jit(trainer.task_loss)
    loop = jnp.stack([single_loss(params, k, hp, 0.5)[0] for k in keys])
    np.testing.assert_allclose(losses, loop, rtol=1e-4, atol=1e-5)


def test_bradley_terry_likelihood_is_the_grid_baselines(small_data, tiny_config):
    """Untrained (no correction; beta the prior's geometric mean, flip rate 0.05) the encoder's
    Bradley-Terry term is the likelihood `baselines` computes on the atoms' lam."""
    trainer = make_train(tiny_config, small_data)               # the default likelihood
    params = trainer.init(jax.random.key(1), Hparams.create()).params
    users = jax.vmap(lambda k: trainer.sample_user(k, Hparams.create(), 0.0))(jax.random.split(jax.random.key(2), 2))
    ctx = one(jax.vmap(lambda k, u: trainer.user_contexts(k, u, trainer.train_source))(
        jax.random.split(jax.random.key(3), 2), users.replace(count=jnp.array([5, 7]))), 1)   # 7 of 8 valid
    atoms, desc = trainer.atoms, trainer.arrays.descriptors
    assert float(atoms.scale.min()) > 0 and float(jnp.std(atoms.scale)) > 0   # measured, one per atom
    beta = np.sqrt(np.prod(tiny_config.beta_range))
    want = baselines.context_log_likelihood(ctx, trainer.arrays, atoms.log10_lam, atoms.scale, beta, 0.05)
    encoder = nnx.merge(trainer.graphdef, params).encoder
    np.testing.assert_allclose(encoder.bradley_terry_log_likelihood(ctx, atoms), want, rtol=1e-4, atol=1e-4)
    prior = params["encoder"]["prior_logits"][...]
    np.testing.assert_allclose(encoder.posterior_logits(ctx, desc, atoms) - prior, want, rtol=1e-4, atol=1e-4)
    short = jax.tree.map(lambda x: x[:6], ctx)                  # a capacity that is no multiple of the group
    np.testing.assert_allclose(encoder.bradley_terry_log_likelihood(short, atoms),
                               baselines.context_log_likelihood(short, trainer.arrays, atoms.log10_lam, atoms.scale,
                                                                beta, 0.05), rtol=1e-4, atol=1e-4)
    # In training the term reads the contexts before outcome noise (the learned part reads them after).
    noisy = ctx.replace(outcome_a=ctx.outcome_a + 0.3)
    assert not np.allclose(encoder.posterior_logits(noisy, desc, atoms), prior + want, atol=1e-3)
    np.testing.assert_allclose(encoder.posterior_logits(noisy, desc, atoms, clean=ctx), prior + want,
                               rtol=1e-4, atol=1e-4)
    # Atoms that agree with the labels gain: the posterior moves off the prior, towards the truth
    # (over 64 users: for one whose lam is near the prior mean, the prior can be as close).
    many = jax.vmap(lambda k: trainer.sample_user(k, Hparams.create(), 0.0))(jax.random.split(jax.random.key(4), 64))
    contexts = jax.vmap(lambda k, u: trainer.user_contexts(k, u, trainer.train_source))(
        jax.random.split(jax.random.key(5), 64), many)
    weights = jax.vmap(adaptation.posterior_weights, in_axes=(None, None, 0, None, None))(
        trainer.graphdef, params, contexts, desc, atoms)
    truth = many.profile["log10_lam"]
    posterior_error = float(jnp.abs(weights @ atoms.log10_lam - truth).mean())
    prior_error = float(jnp.abs(atoms.log10_lam.mean() - truth).mean())
    assert posterior_error < 0.7 * prior_error


def test_atomic_posterior_routes_by_the_posterior_expected_score(atom_setup):
    """Scores are linear in the routing weights: the adapted user scores every answer by the
    posterior average of the atoms' scores (the Bayes decision), in one policy pass."""
    trainer, params, contexts = atom_setup
    ctx, desc = one(contexts, 2), trainer.arrays.descriptors
    weights = adaptation.posterior_weights(trainer.graphdef, params, ctx, desc, trainer.atoms)
    emb = trainer.arrays.embeddings[:5]
    allowed = jnp.ones((5, desc.shape[0]), bool)
    user = adaptation.adapt(trainer.graphdef, params, ctx, desc, atoms=trainer.atoms)
    mixed = adaptation.route_scores(trainer.graphdef, params, emb, user, desc, allowed)
    per_atom = jax.vmap(lambda z: adaptation.route_scores(trainer.graphdef, params, emb, z, desc, allowed))(
        adaptation.atom_latents(trainer.graphdef, params, trainer.atoms))                  # [G, Q, K]
    np.testing.assert_allclose(mixed, jnp.einsum("g,gqk->qk", weights, per_atom), rtol=1e-4, atol=1e-5)
    assert weights.shape == (trainer.config.posterior_atoms,) and abs(float(weights.sum()) - 1.0) < 1e-5


def test_policy_never_routes_outside_the_pool(trained_router, small_data):
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(20, trained_router.net_config.latent_dim)) * 3
    emb = small_data.embeddings[small_data.split("test")[:200]]
    for pool in (["tiny-1b", "frontier-xl"], [1], np.array([False, True, True, False, False])):
        mask = trained_router.pool_mask(pool)
        choice = trained_router.route(latents, emb, pool=pool)
        assert choice.shape == (20, 200) and mask[choice].all()


def test_route_rejects_bad_input(trained_router, small_data):
    z = np.zeros(trained_router.net_config.latent_dim)
    with pytest.raises(ValueError, match="query_emb must be"):
        trained_router.route(z, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        trained_router.route(z, np.full((3, small_data.embed_dim), np.nan))
    with pytest.raises(KeyError, match="unknown model"):
        trained_router.route(z, small_data.embeddings[:3], pool=["gpt-17"])
    with pytest.raises(ValueError, match="latent must"):
        trained_router.route(np.zeros(3), small_data.embeddings[:3])


def test_adapt_many_users_at_once(trained_router, small_data):
    names = small_data.model_names
    ctx = mr.Contexts.from_feedback(small_data, np.arange(12).reshape(4, 3), [[names[0]] * 3] * 4,
                                    [[names[4]] * 3] * 4, [[True] * 3, [False] * 3] * 2, capacity=8)
    z = trained_router.adapt(ctx)
    assert z.shape == (4, trained_router.net_config.latent_dim)
    np.testing.assert_allclose(z[0], trained_router.adapt(jax.tree.map(lambda x: x[0], ctx)), atol=1e-5)


def test_adapt_names_a_missing_or_wrong_atom_set(setup):
    trainer, params, contexts = setup
    ctx, desc = one(contexts, 0), trainer.arrays.descriptors
    if trainer.atoms is None:
        with pytest.raises(ValueError, match="point estimate"):
            adaptation.adapt(trainer.graphdef, params, ctx, desc, atoms=make_atoms(trainer.profiles, 4))
    else:
        with pytest.raises(ValueError, match="pass atoms="):
            adaptation.adapt(trainer.graphdef, params, ctx, desc)
        with pytest.raises(ValueError, match="pass atoms="):
            adaptation.adapt(trainer.graphdef, params, ctx, desc, atoms=make_atoms(trainer.profiles, 4))


def test_posterior_median_of_log10_lam():
    """The median under atom weights: a point mass gives its atom, the uniform posterior the grid's
    middle, and mass split 30/70 between two atoms the heavier one (order of the atoms is free)."""
    atoms = make_atoms(mr.make_profiles("family_weights", num_families=3, log10_lam_range=(0.0, 4.0)), 8)
    lam = np.asarray(atoms.log10_lam)
    assert sorted(lam.tolist()) == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75])
    assert not np.all(np.diff(lam) > 0)                     # permuted: the median must sort them
    median = lambda w: float(adaptation.posterior_median_log10_lam(jnp.asarray(w, jnp.float32), atoms))  # noqa: E731
    assert median(np.eye(8)[5]) == pytest.approx(lam[5])
    assert median(np.full(8, 1 / 8)) in (pytest.approx(1.75), pytest.approx(2.25))
    w = np.zeros(8)
    w[np.argmin(lam)], w[np.argmax(lam)] = 0.3, 0.7
    assert median(w) == pytest.approx(3.75)


def test_dense_is_nnx_linear_with_its_kernel_transposed():
    """Same initial values (same keys consumed) and the same function as nnx.Linear; the weighted
    sum of its outputs (how contexts are pooled) equals the loop over them, empty sets included."""
    dense, linear = Dense(5, 3, rngs=nnx.Rngs(params=0)), nnx.Linear(5, 3, rngs=nnx.Rngs(params=0))
    np.testing.assert_array_equal(dense.kernel[...], linear.kernel[...].T)
    x = jax.random.normal(jax.random.key(1), (4, 7, 5))
    np.testing.assert_allclose(dense(x), linear(x), rtol=1e-5, atol=1e-6)
    assert Dense(5, 3, use_bias=False, rngs=nnx.Rngs(params=0)).bias is None
    weights = jnp.array([1.0, 0.0, 0.5, 2.0, 0.0, 0.0, 1.0])
    for w in (weights, jnp.zeros(7)):
        np.testing.assert_allclose(dense.weighted_sum(x[0], w), (w[:, None] * dense(x[0])).sum(0), rtol=1e-5, atol=1e-5)


def _context_nll(trainer, params, ctx, latent):
    encoder = nnx.merge(trainer.graphdef, params).encoder
    return adaptation.pairwise_nll(encoder, ctx, trainer.arrays.descriptors, latent)


def test_pairwise_nll_is_low_where_labels_agree_with_the_utility_head(atom_setup):
    """The Bradley-Terry NLL of label y on logit v(a) - v(b): below log 2 when every label agrees with
    the head's sign, above it when every label disagrees; the mean over the valid contexts."""
    trainer, params, contexts = atom_setup
    ctx, desc = one(contexts, 1), trainer.arrays.descriptors                       # 5 of 8 valid
    encoder = nnx.merge(trainer.graphdef, params).encoder
    z = adaptation.posterior_weights(trainer.graphdef, params, ctx, desc, trainer.atoms) @ trainer.atoms.features
    logits = np.asarray(adaptation.pairwise_logits(encoder, ctx, desc, z))
    assert np.all(np.abs(logits) > 1e-6)
    agree = ctx.replace(label=jnp.asarray(logits > 0, jnp.float32))
    disagree = ctx.replace(label=jnp.asarray(logits < 0, jnp.float32))
    valid = np.asarray(ctx.mask)
    np.testing.assert_allclose(float(_context_nll(trainer, params, agree, z)),
                               np.log1p(np.exp(-np.abs(logits)))[valid].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(_context_nll(trainer, params, disagree, z)),
                               np.log1p(np.exp(np.abs(logits)))[valid].mean(), rtol=1e-5)


def test_inner_steps_lower_the_context_nll(setup):
    """Refinement (meta-SGD on the latent, or on the atom logits) descends the context NLL."""
    trainer, params, contexts = setup
    ctx, desc = one(contexts, 2), trainer.arrays.descriptors
    if trainer.atoms is None:
        mean, _ = adaptation.encode(trainer.graphdef, params, ctx, desc)
        refined = adaptation.refine(trainer.graphdef, params, ctx, desc, mean, 2)
        before, after = _context_nll(trainer, params, ctx, mean), _context_nll(trainer, params, ctx, refined)
    else:
        feats = lambda steps: adaptation.posterior_weights(trainer.graphdef, params, ctx, desc, trainer.atoms,  # noqa: E731
                                                           steps) @ trainer.atoms.features
        before, after = _context_nll(trainer, params, ctx, feats(0)), _context_nll(trainer, params, ctx, feats(2))
    assert float(after) < float(before) - 1e-6, (float(before), float(after))
