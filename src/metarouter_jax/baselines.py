"""Explicit-inference and hindsight baselines.

* Bradley-Terry plug-ins: infer log10(lam) of a linear utility from the contexts on a grid
  over the prior range, by maximum likelihood or by the posterior mean under the (uniform in
  log10 lam) prior, then route with the known-preference router given that profile. They
  are handed the true rationality beta and flip rate of the test users, so they are
  well-specified on linear users: the explicit-inference bar the meta-learned encoder must
  meet (DESIGN.md sections 8-9).
* `bt_marginal`: the posterior-mean plug-in told only what the MetaRouter was trained with:
  the likelihood averaged over the training prior of beta (log-uniform) and flip rate
  (uniform), on a midpoint quadrature. The like-for-like explicit-inference comparison.
* The Bradley-Terry Bayes decision: the same exact grid posterior, routed by the known
  router's posterior expected score (its routing weights averaged over the posterior; the
  scores are linear in them). What the MetaRouter's atomic posterior learns to approximate.
* Hindsight baselines on a user's true utilities: random routing (exact expectation),
  the best fixed model, and the per-query oracle.

All functions are for ONE user; callers vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metarouter_jax.contexts import Contexts, label_log_likelihood
from metarouter_jax.tasks import RoutingArrays, utility_scale

GRID_SIZE = 161


def lam_grid(profiles, size: int = GRID_SIZE):
    """[G] grid of log10(lam) over the profile family's prior range."""
    lo, hi = profiles.log10_lam_range
    return jnp.linspace(lo, hi, size)


def grid_scales(profiles, arrays: RoutingArrays, calib_queries, grid):
    """[G] utility scale of the linear profile at each grid point (as the simulator normalises)."""
    return jax.vmap(lambda l: utility_scale(profiles, profiles.linear_profile(l), arrays, calib_queries))(grid)


def grid_gaps(contexts: Contexts, arrays: RoutingArrays, grid, scales):
    """[G, N] each grid lam's normalised linear utility of answer a minus answer b, per context."""
    q_a, q_b = contexts.outcome_a[:, 0], contexts.outcome_b[:, 0]
    c_a, c_b = arrays.usd_cost(contexts.outcome_a), arrays.usd_cost(contexts.outcome_b)
    lam = 10.0 ** grid[:, None]
    return ((q_a - lam * c_a) - (q_b - lam * c_b)) / scales[:, None]


def context_log_likelihood(contexts: Contexts, arrays: RoutingArrays, grid, scales, beta, flip):
    """[G] log-likelihood of one user's context labels under a linear utility at each grid lam."""
    return label_log_likelihood(grid_gaps(contexts, arrays, grid, scales), contexts.label, contexts.mask, beta, flip)


def bt_estimates(contexts: Contexts, arrays: RoutingArrays, grid, scales, beta, flip):
    """(MLE, posterior mean, posterior [G]) of log10(lam) on the grid, under a uniform prior.

    With no contexts both estimates are the prior's centre and the posterior is the prior."""
    ll = context_log_likelihood(contexts, arrays, grid, scales, beta, flip)
    posterior = jax.nn.softmax(ll)
    # With few comparisons the likelihood is often flat at its maximum; take the middle of the
    # arg-max plateau rather than its first point.
    at_max = ll >= ll.max() - 1e-6
    mle = jnp.sum(jnp.where(at_max, grid, 0.0)) / jnp.sum(at_max)
    return _or_centre(contexts, grid, mle), _or_centre(contexts, grid, jnp.sum(posterior * grid)), posterior


def _or_centre(contexts: Contexts, grid, estimate):
    """The estimate, or the prior's centre when there are no valid contexts."""
    return jnp.where(contexts.mask.any(), estimate, 0.5 * (grid[0] + grid[-1]))


def noise_quadrature(beta_range, flip_max, num_beta: int = 8, num_flip: int = 4):
    """([B * F] betas, [B * F] flips): midpoints of equal-mass bins of beta ~ log-uniform over
    `beta_range` and flip ~ U[0, flip_max], every pair (the training users' noise prior)."""
    lo, hi = jnp.log(jnp.asarray(beta_range, jnp.float32))
    betas = jnp.exp(lo + (hi - lo) * (jnp.arange(num_beta) + 0.5) / num_beta)
    flips = flip_max * (jnp.arange(num_flip) + 0.5) / num_flip
    return jnp.repeat(betas, num_flip), jnp.tile(flips, num_beta)


def marginal_posterior_mean(contexts: Contexts, arrays: RoutingArrays, grid, scales, betas, flips):
    """Posterior mean of log10(lam) (uniform prior on the grid) with the likelihood averaged over
    the (beta, flip) quadrature; the prior's centre with no contexts."""
    ll = jax.vmap(lambda b, f: context_log_likelihood(contexts, arrays, grid, scales, b, f))(betas, flips)
    posterior = jax.nn.softmax(jax.nn.logsumexp(ll, axis=0))
    return _or_centre(contexts, grid, jnp.sum(posterior * grid))


def hindsight(utility, allowed):
    """One user's hindsight figures on a query set.

    utility: [Q, K] normalised utility; allowed: [Q, K] bool.
    Returns (random, oracle, model_means [K]): mean utility of uniform random routing, of the
    per-query best model, and of each single model over the queries where it is observed
    (-inf if never observed); its argmax is the best fixed model in hindsight.
    """
    count = allowed.sum(-1)
    random = jnp.mean((utility * allowed).sum(-1) / count)
    oracle = jnp.mean(jnp.where(allowed, utility, -jnp.inf).max(-1))
    # A model's mean over the queries where it is observed; never-observed models never win.
    seen = allowed.sum(0)
    per_model = jnp.where(seen > 0, (utility * allowed).sum(0) / jnp.maximum(seen, 1), -jnp.inf)
    return random, oracle, per_model


def best_fixed_choice(model_means, allowed):
    """Per query, the best fixed model in hindsight (the argmax of `model_means` [K], from
    `hindsight`), or where it is unobserved the best observed one. allowed: [Q, K]. Returns [Q]."""
    return jnp.argmax(jnp.where(allowed, model_means[None, :], -jnp.inf), -1)


def rescale(mean_utility, u_random, u_oracle):
    """A mean utility on the normalised scale: uniform random routing 0, the per-query oracle 1."""
    return (mean_utility - u_random) / (u_oracle - u_random + 1e-9)
