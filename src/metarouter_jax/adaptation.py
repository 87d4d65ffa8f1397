"""Adaptation (the inner loop): contexts -> latent preference, and routing with a latent.

`adapt` is a pure function of (params, contexts): an amortised encoder pass, then optionally
T gradient steps on the latent that lower the Bradley-Terry negative log-likelihood of the
context labels under the learned utility head (meta-SGD step sizes, learned per dimension).
With 0 valid contexts the likelihood is flat, so refinement leaves the prior unchanged.

Functions take ONE user; `jax.vmap` them for many (the `MetaRouter` methods do).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from metarouter_jax.contexts import Contexts
from metarouter_jax.tasks import NEG_INF


def pairwise_logits(encoder, contexts: Contexts, descriptors, latent):
    """[N] logit of P(a preferred over b) under the utility head: v(a) - v(b)."""
    v = jax.vmap(encoder.utility, in_axes=(0, 0, 0, None))
    v_a = v(contexts.query_emb, descriptors[contexts.model_a], contexts.outcome_a, latent)
    v_b = v(contexts.query_emb, descriptors[contexts.model_b], contexts.outcome_b, latent)
    return v_a - v_b


def pairwise_nll(encoder, contexts: Contexts, descriptors, latent):
    """Mean Bradley-Terry NLL of the valid contexts' labels (0 when there are none)."""
    logits = pairwise_logits(encoder, contexts, descriptors, latent)
    sign = 2.0 * contexts.label - 1.0
    nll = -jax.nn.log_sigmoid(sign * logits)
    mask = contexts.mask.astype(nll.dtype)
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def encode(graphdef, params, contexts: Contexts, descriptors):
    """Amortised posterior over the latent: (mean [Z], log-variance [Z])."""
    return nnx.merge(graphdef, params).encoder(contexts, descriptors)


def refine(graphdef, params, contexts: Contexts, descriptors, latent, inner_steps: int,
           first_order: bool = False):
    """T meta-SGD steps on the latent lowering the context NLL (static T; a lax.scan)."""
    if inner_steps == 0:
        return latent
    encoder = nnx.merge(graphdef, params).encoder
    step = jnp.exp(encoder.log_step[...])

    def inner_step(z, _):
        grad = jax.grad(lambda z_: pairwise_nll(encoder, contexts, descriptors, z_))(z)
        if first_order:
            grad = jax.lax.stop_gradient(grad)
        return z - step * grad, None

    latent, _ = jax.lax.scan(inner_step, latent, None, length=inner_steps)
    return latent


def infer(graphdef, params, contexts: Contexts, descriptors, inner_steps: int = 0, first_order: bool = False):
    """One user's inferred preference in the encoder's space (the posterior mean, refined)."""
    mean, _ = encode(graphdef, params, contexts, descriptors)
    return refine(graphdef, params, contexts, descriptors, mean, inner_steps, first_order)


def policy_latent(graphdef, params, inferred):
    """Encoder output -> the policy's latent [Z]."""
    return nnx.merge(graphdef, params).policy_latent(inferred)


def adapt(graphdef, params, contexts: Contexts, descriptors, inner_steps: int = 0,
          first_order: bool = False):
    """One user's latent preference [Z] for the policy, from their contexts."""
    inferred = infer(graphdef, params, contexts, descriptors, inner_steps, first_order)
    return policy_latent(graphdef, params, inferred)


def profile_latent(graphdef, params, features):
    """The known-preference router's latent: an embedding of the true profile's features."""
    return nnx.merge(graphdef, params).profile_embedding(features)


def query_features(graphdef, params, query_emb):
    """[..., D] -> [..., H] policy query features (compute once, reuse for every user)."""
    return nnx.merge(graphdef, params).policy.query_features(query_emb)


def policy_scores(graphdef, params, query_feats, latent, descriptors):
    """Scores [K] of every model for one query (features [H]) and one latent [Z]."""
    return nnx.merge(graphdef, params).policy(query_feats, latent, descriptors)


def route_scores(graphdef, params, query_emb, latent, descriptors, allowed):
    """Masked scores [Q, K] for one user over many queries; disallowed models get -1e9.

    query_emb: [Q, D]; latent: [Z]; descriptors: [K, Dd]; allowed: [K] or [Q, K] bool.
    """
    model = nnx.merge(graphdef, params)
    feats = model.policy.query_features(query_emb)                        # [Q, H]
    scores = jax.vmap(model.policy, in_axes=(0, None, None))(feats, latent, descriptors)
    return jnp.where(allowed, scores, NEG_INF)
