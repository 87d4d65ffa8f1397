"""Bradley-Terry plug-ins recover a linear user's willingness to pay; hindsight baselines."""

import jax
import jax.numpy as jnp
import numpy as np

from metarouter_jax import baselines
from metarouter_jax.contexts import PairSource, sample_contexts
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
                              scale=scale, beta=10.0, flip=0.05, informative=True)
        mle, post, _ = baselines.bt_estimates(ctx, arrays, grid, scales, 10.0, 0.05)
        return jnp.abs(post - profile["log10_lam"]), jnp.abs(mle - profile["log10_lam"])

    keys = jax.random.split(jax.random.key(0), 200)
    errs = {n: jax.vmap(lambda k: error(k, n))(keys) for n in (0, 4, 32)}
    post = {n: float(e[0].mean()) for n, e in errs.items()}
    assert post[0] > post[4] > post[32]
    assert post[0] > 0.8 and post[32] < 0.5                       # prior |error| ~ 0.875 decades
    assert float(errs[0][1].mean()) == post[0]                    # no data: both are the prior centre


def test_hindsight_on_an_analytic_case():
    utility = jnp.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
    allowed = jnp.array([[True, True, True], [True, True, False]])
    random, oracle, means = baselines.hindsight(utility, allowed)
    np.testing.assert_allclose(random, (0.5 + 0.5) / 2)
    np.testing.assert_allclose(oracle, 1.0)
    np.testing.assert_allclose(means, [0.5, 0.5, 0.5])
