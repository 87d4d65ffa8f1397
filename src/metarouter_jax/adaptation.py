"""Adaptation (the inner loop): contexts -> latent preference, and routing with a latent.

`adapt` is a pure function of (params, contexts): an amortised encoder pass, then optionally
T gradient steps that lower the Bradley-Terry negative log-likelihood of the context labels
under the learned utility head (meta-SGD step sizes, learned per dimension). With 0 valid
contexts the likelihood is flat, so refinement leaves the prior unchanged.

Two kinds of encoder output (`NetworkConfig.posterior_atoms`):

* a point estimate (default 0 atoms): the inferred profile features, routed as if known;
* an atomic posterior over G fixed prior profiles (`profiles.make_atoms`): the user's routing
  weights are the posterior average of the atoms' known-router weights. Since policy scores
  are linear in those weights, this routes by the posterior expected score: the Bayes
  decision, which hedges where a point estimate would cross a cliff (DESIGN.md section 9).

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


def posterior_weights(graphdef, params, contexts: Contexts, descriptors, atoms, inner_steps: int = 0,
                      first_order: bool = False, clean_contexts: Contexts | None = None):
    """[G] posterior probabilities of the atoms (refined like `refine`, on the logits).

    clean_contexts: in training, the contexts before outcome noise (see `posterior_logits`)."""
    encoder = nnx.merge(graphdef, params).encoder
    logits = encoder.posterior_logits(contexts, descriptors, atoms, clean_contexts)
    if inner_steps:
        step = jnp.exp(encoder.log_step[...])

        def inner_step(x, _):
            nll = lambda x_: pairwise_nll(encoder, contexts, descriptors, jax.nn.softmax(x_) @ atoms.features)  # noqa: E731
            grad = jax.grad(nll)(x)
            return x - step * (jax.lax.stop_gradient(grad) if first_order else grad), None

        logits, _ = jax.lax.scan(inner_step, logits, None, length=inner_steps)
    return jax.nn.softmax(logits)


def posterior_median_log10_lam(weights, atoms):
    """The median of log10(lam) under atom weights [G]: the switch point whose answer splits the
    posterior mass in half (what the `active` pair strategy asks about next)."""
    order = jnp.argsort(atoms.log10_lam)
    cdf = jnp.cumsum(weights[order])
    index = jnp.minimum(jnp.searchsorted(cdf, 0.5 * cdf[-1]), order.shape[0] - 1)
    return atoms.log10_lam[order][index]


def atom_latents(graphdef, params, atoms):
    """[G, R] the known router's routing weights of every atom."""
    return jax.vmap(nnx.merge(graphdef, params).known_latent)(atoms.features)


def atomic_latent(graphdef, params, contexts: Contexts, descriptors, atoms, inner_steps: int = 0,
                  first_order: bool = False, clean_contexts: Contexts | None = None):
    """(routing weights [R], atom posterior [G]) of an atomic-posterior encoder: the posterior
    average of the atoms' known-router weights (the Bayes decision)."""
    weights = posterior_weights(graphdef, params, contexts, descriptors, atoms, inner_steps, first_order,
                                clean_contexts)
    return weights @ atom_latents(graphdef, params, atoms), weights


def policy_latent(graphdef, params, inferred):
    """Encoder output -> the user's routing weights [R] (the latent the policy reads)."""
    return nnx.merge(graphdef, params).policy_latent(inferred)


def adapt(graphdef, params, contexts: Contexts, descriptors, inner_steps: int = 0,
          first_order: bool = False, atoms=None):
    """One user's routing weights [R] (the adapted latent the policy reads), from their contexts.

    atoms: the router's `Atoms` when its encoder is an atomic posterior (else None). Padded
    contexts may hold anything (`Contexts.zero_padding`)."""
    contexts = contexts.zero_padding()
    num_atoms = nnx.merge(graphdef, params).encoder.cfg.posterior_atoms
    if (atoms is None) != (num_atoms == 0) or (atoms is not None and atoms.features.shape[0] != num_atoms):
        raise ValueError(f"this encoder has posterior_atoms={num_atoms}: pass atoms=make_atoms(profiles, "
                         f"{num_atoms}) (the router's `atoms`)" if num_atoms else
                         "this encoder is a point estimate (posterior_atoms=0): pass atoms=None")
    if atoms is not None:
        return atomic_latent(graphdef, params, contexts, descriptors, atoms, inner_steps, first_order)[0]
    inferred = infer(graphdef, params, contexts, descriptors, inner_steps, first_order)
    return policy_latent(graphdef, params, inferred)


def profile_latent(graphdef, params, features):
    """The known-preference router's routing weights, from the true profile's features."""
    return nnx.merge(graphdef, params).known_latent(features)


def prior_latent(graphdef, params):
    """The preference-agnostic routing weights (no contexts, no profile)."""
    return nnx.merge(graphdef, params).prior_latent()


def query_features(graphdef, params, query_emb):
    """[..., D] -> [..., H] policy query features (compute once, reuse for every user)."""
    return nnx.merge(graphdef, params).policy.query_features(query_emb)


def answer_components(graphdef, params, query_feats, descriptors, family=None):
    """[B, K, R] the policy's components of every model's answer to B queries (features [B, H]):
    one pass serves every user, whose scores are these components times their routing weights.
    family: [B] the queries' task-family ids (-1: unknown) or None; read only by a policy with
    `family_quality`."""
    policy = nnx.merge(graphdef, params).policy
    return jax.vmap(policy.answer_components, in_axes=(0, None, family_axis(family)))(query_feats, descriptors, family)


def policy_scores(graphdef, params, query_feats, latent, descriptors, family=None):
    """Scores [K] of every model for one query (features [H], family id or None) and one user's
    routing weights [R]."""
    return nnx.merge(graphdef, params).policy(query_feats, latent, descriptors, family)


def route_scores(graphdef, params, query_emb, latent, descriptors, allowed, family=None):
    """Masked scores [Q, K] for one user over many queries; disallowed models get -1e9.

    query_emb: [Q, D]; latent: routing weights [R]; descriptors: [K, Dd]; allowed: [K] or [Q, K] bool;
    family: [Q] task-family ids (-1: unknown) or None.
    """
    model = nnx.merge(graphdef, params)
    feats = model.policy.query_features(query_emb)                        # [Q, H]
    scores = jax.vmap(model.policy, in_axes=(0, None, None, family_axis(family)))(feats, latent, descriptors, family)
    return jnp.where(allowed, scores, NEG_INF)


def family_axis(family):
    """vmap's axis for an optional per-query family array."""
    return None if family is None else 0
