"""Bradley-Terry plug-ins recover a linear user's willingness to pay; hindsight baselines."""

import jax
import jax.numpy as jnp
import numpy as np

from metarouter_jax import baselines
from metarouter_jax.contexts import Contexts, PairSource, sample_contexts
from metarouter_jax.profiles import LinearProfiles
from metarouter_jax.tasks import RoutingArrays, utility_scale


def test_posterior_mean_converges_to_the_true_lam(small_data):
    arrays = RoutingArrays.from_data(small_data)
    profiles = LinearProfiles((0.0, 3.5))
    queries = jnp.asarray(small_data.split("train"))
    source = PairSource.build(arrays, small_data.split("train"))
    calib = queries[:128]
    grid = baselines.lam_grid(profiles)
    scales = baselines.grid_scales(profiles, arrays, calib, grid)

    def error(key, n):
        key_lam, key_ctx = jax.random.split(key)
        profile = profiles.sample(key_lam)
        scale = utility_scale(profiles, profile, arrays, calib)
        ctx = sample_contexts(key_ctx, profiles, profile, arrays, source, jnp.ones(5, bool), count=n, capacity=32,
                              scale=scale, beta=10.0, flip=0.05, informative=True,
                              target_range=profiles.log10_lam_range)
        mle, post, _ = baselines.bt_estimates(ctx, arrays, grid, scales, 10.0, 0.05)
        # One quadrature point at the true noise: the marginal plug-in is the posterior mean.
        exact = baselines.marginal_posterior_mean(ctx, arrays, grid, scales, jnp.array([10.0]), jnp.array([0.05]))
        marginal = baselines.marginal_posterior_mean(ctx, arrays, grid, scales, *baselines.noise_quadrature((3.0, 30.0), 0.1))
        return (jnp.abs(post - profile["log10_lam"]), jnp.abs(mle - profile["log10_lam"]), post - exact,
                jnp.abs(marginal - profile["log10_lam"]))

    keys = jax.random.split(jax.random.key(0), 200)
    errs = {n: jax.vmap(lambda k: error(k, n))(keys) for n in (0, 4, 32)}
    post = {n: float(e[0].mean()) for n, e in errs.items()}
    assert post[0] > post[4] > post[32]
    assert post[0] > 0.8 and post[32] < 0.5                       # prior |error| ~ 0.875 decades
    assert float(errs[0][1].mean()) == post[0]                    # no data: both are the prior centre
    for n in (0, 4, 32):
        np.testing.assert_allclose(errs[n][2], 0.0, atol=1e-4)
    marginal = {n: float(e[3].mean()) for n, e in errs.items()}
    assert marginal[0] == post[0] and marginal[32] < 0.5         # it learns too, from the prior centre
    assert marginal[4] >= post[4] - 0.02                          # knowing the true noise is no handicap


def test_noise_quadrature_spans_the_training_prior():
    betas, flips = baselines.noise_quadrature((3.0, 30.0), 0.1, num_beta=8, num_flip=4)
    assert betas.shape == flips.shape == (32,)
    assert 3.0 < float(betas.min()) < float(betas.max()) < 30.0
    np.testing.assert_allclose(np.sqrt(float(betas.min()) * float(betas.max())), np.sqrt(90.0), rtol=1e-5)  # log-symmetric
    np.testing.assert_allclose(np.unique(np.asarray(flips)), [0.0125, 0.0375, 0.0625, 0.0875], rtol=1e-5)


def test_hindsight_on_an_analytic_case():
    utility = jnp.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    allowed = jnp.array([[True, True, True], [True, True, False]])
    random, oracle, means = baselines.hindsight(utility, allowed)
    np.testing.assert_allclose(random, (0.5 + 0.5) / 2)
    np.testing.assert_allclose(oracle, 1.0)
    np.testing.assert_allclose(means, [0.5, 0.5, 0.5])


def _grid_setup(small_data):
    arrays = RoutingArrays.from_data(small_data)
    profiles = LinearProfiles((0.0, 3.5))
    calib = jnp.asarray(small_data.split("train"))[:128]
    grid = baselines.lam_grid(profiles)
    return arrays, profiles, grid, baselines.grid_scales(profiles, arrays, calib, grid)


def test_mle_is_the_middle_of_a_flat_likelihood_plateau(small_data):
    """A valid context whose two answers tie (same quality, same cost) says nothing: the
    likelihood is flat over the whole grid, so the MLE is the middle of that plateau (the grid's
    centre), not its first point."""
    arrays, _, grid, scales = _grid_setup(small_data)
    ctx = Contexts.from_outcomes(np.zeros((1, 4)), [0], [1], [True], [1.0], [0.01], [1.0], [0.01], capacity=4,
                                 log_cost_stats=(float(arrays.log_cost_mean), float(arrays.log_cost_std)),
                                 num_models=5)
    assert int(ctx.count) == 1
    mle, post, posterior = baselines.bt_estimates(ctx, arrays, grid, scales, 10.0, 0.05)
    centre = 0.5 * float(grid[0] + grid[-1])
    np.testing.assert_allclose(posterior, np.full(grid.shape, 1.0 / grid.shape[0]), rtol=1e-5)
    np.testing.assert_allclose([float(mle), float(post)], [centre, centre], atol=1e-5)


def test_marginal_posterior_averages_the_likelihood_over_the_noise_quadrature(small_data):
    """bt_marginal's likelihood is the MIXTURE over (beta, flip) quadrature points, not their
    product: its posterior mean is that of the averaged likelihood."""
    arrays, profiles, grid, scales = _grid_setup(small_data)
    source = PairSource.build(arrays, small_data.split("train"))
    calib = jnp.asarray(small_data.split("train"))[:128]
    profile = profiles.linear_profile(1.5)
    ctx = sample_contexts(jax.random.key(5), profiles, profile, arrays, source, jnp.ones(5, bool), count=6,
                          capacity=8, scale=utility_scale(profiles, profile, arrays, calib), beta=10.0, flip=0.05,
                          informative=True, target_range=profiles.log10_lam_range)
    betas, flips = jnp.array([2.0, 30.0]), jnp.array([0.0, 0.2])
    ll = np.stack([np.asarray(baselines.context_log_likelihood(ctx, arrays, grid, scales, b, f), np.float64)
                   for b, f in zip(betas, flips)])
    mixture = np.log(np.exp(ll - ll.max()).mean(0))
    expected = float((np.exp(mixture - mixture.max()) / np.exp(mixture - mixture.max()).sum()) @ np.asarray(grid))
    product = ll.sum(0)
    by_product = float((np.exp(product - product.max()) / np.exp(product - product.max()).sum()) @ np.asarray(grid))
    assert abs(expected - by_product) > 0.02                     # the two rules differ on these contexts
    got = float(baselines.marginal_posterior_mean(ctx, arrays, grid, scales, betas, flips))
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_hindsight_oracle_and_random_ignore_disallowed_models():
    """A model outside the pool (or unobserved) is no one's answer, however good its (zero-filled
    or real) utility: the oracle is the best ALLOWED answer."""
    utility = jnp.array([[0.2, 0.9, -0.1], [-0.5, 0.0, -0.3]])
    allowed = jnp.array([[True, False, True], [True, False, True]])
    random, oracle, means = baselines.hindsight(utility, allowed)
    np.testing.assert_allclose(oracle, (0.2 - 0.3) / 2, rtol=1e-6)
    np.testing.assert_allclose(random, ((0.2 - 0.1) / 2 + (-0.5 - 0.3) / 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(means, [-0.15, -np.inf, -0.2], rtol=1e-6)
