"""Device-side routing arrays and per-task utilities.

`RoutingArrays` is the jit-friendly view of `RoutingData`: unknown cells become 0 with an
`observed` mask beside them (so no NaN reaches a gradient, and nothing unknown is ever
scored: every use of quality/cost is masked by `observed`).

A *task* is one user: a profile drawn from a `ProfileFamily`, plus that profile's utility
scale on the training queries, used to normalise utilities across users (DESIGN.md section 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarouter_jax.data import RoutingData

NEG_INF = -1e9


@struct.dataclass
class RoutingArrays:
    """Arrays of a RoutingData on device.

    embeddings: [Q, D]; quality, cost: [Q, K] (0 where unknown); observed: [Q, K] bool;
    log_cost: [Q, K] standardised log10 cost (0 where unknown); family: [Q] int32;
    descriptors: [K, Dd] model descriptors.
    """

    embeddings: jax.Array
    quality: jax.Array
    cost: jax.Array
    log_cost: jax.Array
    observed: jax.Array
    family: jax.Array
    descriptors: jax.Array
    log_cost_mean: jax.Array
    log_cost_std: jax.Array

    @classmethod
    def from_data(cls, data: RoutingData, descriptor_split: str | None = None,
                  log_cost_stats: tuple[float, float] | None = None, descriptors=None) -> "RoutingArrays":
        """`data` on the device; costs standardised with `log_cost_stats` (mean, std of log10
        USD; default: over every query, `RoutingData.log_cost_stats()`), the models described by
        `descriptors` [K, 1 + F] (default: `data.descriptors(descriptor_split)`). Training passes
        its config's units (`training.cost_units`), a router its own units and descriptors."""
        observed = data.observed
        quality = np.where(observed, data.quality, 0.0)
        cost = np.where(observed, data.cost, 0.0)
        mean, std = data.log_cost_stats() if log_cost_stats is None else log_cost_stats
        log_cost = np.where(observed, (np.log10(np.maximum(cost, 1e-12)) - mean) / std, 0.0)
        return cls(
            embeddings=jnp.asarray(data.embeddings),
            quality=jnp.asarray(quality, jnp.float32),
            cost=jnp.asarray(cost, jnp.float32),
            log_cost=jnp.asarray(log_cost, jnp.float32),
            observed=jnp.asarray(observed),
            family=jnp.asarray(data.family),
            descriptors=jnp.asarray(data.descriptors(descriptor_split) if descriptors is None else descriptors),
            log_cost_mean=jnp.asarray(mean, jnp.float32),
            log_cost_std=jnp.asarray(std, jnp.float32),
        )

    def standardise_cost(self, cost):
        """USD -> the standardised log10 cost that contexts and the utility head see."""
        return (jnp.log10(jnp.maximum(cost, 1e-12)) - self.log_cost_mean) / self.log_cost_std

    def usd_cost(self, outcome):
        """[...] the USD cost of outcomes [..., 2] (quality, standardised log10 cost)."""
        return 10.0 ** (outcome[..., 1] * self.log_cost_std + self.log_cost_mean)


def query_utility(profiles, profile, arrays: RoutingArrays, query):
    """[K] utility of each model's answer to one query (0 where unknown; mask with observed)."""
    u = profiles.utility(profile, arrays.quality[query], arrays.cost[query], arrays.family[query])
    return jnp.where(arrays.observed[query], u, 0.0)


def utility_scale(profiles, profile, arrays: RoutingArrays, calib_queries):
    """The profile's utility scale: mean over `calib_queries` of the max-min spread over models.

    Dividing by it puts users with very different lam on a common footing, so large-lam users
    dominate neither gradients nor averages.
    """
    def spread(q):
        u = query_utility(profiles, profile, arrays, q)
        obs = arrays.observed[q]
        return jnp.max(jnp.where(obs, u, -jnp.inf)) - jnp.min(jnp.where(obs, u, jnp.inf))

    return jnp.mean(jax.vmap(spread)(calib_queries)) + 1e-6


def masked_log_softmax(scores, mask):
    """log pi over the allowed entries of the last axis; disallowed get a large negative value."""
    scores = jnp.where(mask, scores, NEG_INF)
    return jax.nn.log_softmax(scores, axis=-1)
