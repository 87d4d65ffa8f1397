"""Baselines from the routing literature that are not meta-learned (DESIGN.md section 8).

- **Quality predictors with the preference plugged in** (RouterBench's predictive routers):
  a k-nearest-neighbour and an MLP predictor of each model's quality and cost on a query,
  fitted once on the training queries, route a query to the model of the best predicted
  utility under a profile: the user's true one (`knn_known`, `mlp_known`, beside the
  known-preference router) or the Bradley-Terry posterior-mean estimate from the contexts
  (`knn_posterior`, `mlp_posterior`, beside `bt_posterior`).
- **LinUCB fed the same feedback** (`linucb`): a disjoint linear UCB bandit, one ridge
  regression per model over a few features of the query, fed each pairwise judgement as two
  rewards (1 for the preferred answer's model, 0 for the other's), routing by its upper
  confidence bound (alpha = 1).
- **Per-user training from scratch** (`scratch`): a small scoring network over (query
  features, model descriptor), freshly initialised for each user and trained by Adam on that
  user's contexts alone with the Bradley-Terry likelihood; what a few feedbacks buy without
  meta-learning.

The predictors read the full query embedding; LinUCB and the per-user network read its
projection on the first `NUM_FEATURES` principal directions of the training queries
(standardised), since a few dozen answers cannot fit hundreds of weights per model.
Everything per user is a pure function of (contexts, features), vmappable and jittable.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metarouter_jax.contexts import Contexts

NUM_FEATURES = 8                      # principal directions LinUCB and the per-user network read
KNN_CHOICES = (5, 10, 20, 40, 80)     # neighbour counts tried; the validation queries choose
LINUCB_ALPHA = 1.0                    # the confidence width (the usual default)
LINUCB_RIDGE = 1.0
SCRATCH_STEPS = 100
SCRATCH_HIDDEN = 32
SCRATCH_LR = 1e-2
SCRATCH_WEIGHT_DECAY = 1e-2


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A predictor's estimates for the evaluation queries: quality, cost [Q, K] (USD), and the
    setting its validation chose."""

    quality: jax.Array
    cost: jax.Array
    setting: dict


def _masked_mean(values, mask, axis):
    count = mask.sum(axis)
    return (values * mask).sum(axis) / np.maximum(count, 1), count


def _model_means(quality, cost, observed):
    """Each model's mean quality and cost over the observed cells (the fallback of a predictor)."""
    q, _ = _masked_mean(quality, observed, 0)
    c, _ = _masked_mean(cost, observed, 0)
    return q, c


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest(train_embeddings, queries, k: int) -> np.ndarray:
    """[Q, k] indices of each query's `k` training queries of highest cosine similarity, the
    nearest first (so a prefix [:, :j] is the j nearest)."""
    k = min(int(k), train_embeddings.shape[0])
    sims = _unit(np.asarray(queries, np.float32)) @ _unit(np.asarray(train_embeddings, np.float32)).T   # [Q, T]
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1), 1)


def knn_predict(train, queries, k: int, neighbours=None) -> tuple[np.ndarray, np.ndarray]:
    """(quality, cost) [Q, K] of `queries`' embeddings [Q, D]: each model's mean over the `k`
    training queries of highest cosine similarity on which it was observed among them (its
    mean over all training queries where none was). train: (embeddings [T, D], quality [T, K],
    cost [T, K], observed [T, K] bool), unknown cells anything (masked). `neighbours`: `nearest`'s
    indices for these queries with at least k columns, when already found."""
    emb, quality, cost, observed = train
    top = (nearest(emb, queries, k) if neighbours is None else neighbours)[:, :k]           # [Q, k]
    obs = observed[top]                                                                      # [Q, k, K]
    q, count = _masked_mean(np.where(observed, quality, 0.0)[top], obs, 1)
    c, _ = _masked_mean(np.where(observed, cost, 0.0)[top], obs, 1)
    mean_q, mean_c = _model_means(np.where(observed, quality, 0.0), np.where(observed, cost, 0.0), observed)
    return np.where(count > 0, q, mean_q), np.where(count > 0, c, mean_c)


def fit_knn(train, valid, queries) -> Predictions:
    """The kNN predictor for `queries`, its neighbour count chosen among `KNN_CHOICES` by the
    masked squared error of predicted quality on the validation queries (`valid`, as `train`)."""
    errors = {}
    neighbours = nearest(train[0], valid[0], max(KNN_CHOICES))   # once: each k reads a prefix
    for k in KNN_CHOICES:
        q, _ = knn_predict(train, valid[0], k, neighbours)
        errors[k] = float(_masked_mean((q - np.where(valid[3], valid[1], 0.0)) ** 2, valid[3], None)[0])
    best = min(errors, key=errors.get)
    q, c = knn_predict(train, queries, best)
    return Predictions(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32), {"k": best, "valid_mse": errors[best]})


def _mlp_forward(params, emb):
    """(quality logits, standardised log10 cost) [..., K] of embeddings [..., D]."""
    out = jax.nn.gelu(emb @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    half = out.shape[-1] // 2
    return out[..., :half], out[..., half:]


def _mlp_loss(params, split):
    emb, quality, log_cost, observed = split
    logit, pred_log_cost = _mlp_forward(params, emb)
    per_cell = optax.sigmoid_binary_cross_entropy(logit, quality) + (pred_log_cost - log_cost) ** 2
    return (per_cell * observed).sum() / jnp.maximum(observed.sum(), 1.0)


@functools.partial(jax.jit, static_argnames=("hidden", "steps"))
def _train_mlp(key, train, valid, learning_rate, weight_decay, hidden: int, steps: int):
    """(the parameters of lowest validation loss, that loss) after `steps` full-batch AdamW steps."""
    in_dim, num_models = train[0].shape[1], train[1].shape[1]
    k1, k2 = jax.random.split(key)
    params = {"w1": jax.random.normal(k1, (in_dim, hidden)) / np.sqrt(in_dim), "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden, 2 * num_models)) / np.sqrt(hidden), "b2": jnp.zeros(2 * num_models)}
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)

    def step(carry, _):
        p, state, best, best_loss = carry
        updates, state = opt.update(jax.grad(_mlp_loss)(p, train), state, p)
        p = optax.apply_updates(p, updates)
        loss = _mlp_loss(p, valid)
        better = loss < best_loss
        best = jax.tree.map(lambda b, x: jnp.where(better, x, b), best, p)
        return (p, state, best, jnp.where(better, loss, best_loss)), None

    init = (params, opt.init(params), params, _mlp_loss(params, valid))
    (_, _, best, best_loss), _ = jax.lax.scan(step, init, None, length=steps)
    return best, best_loss


def fit_mlp(key, train, valid, queries, hidden: int = 64, steps: int = 1000, learning_rate: float = 1e-3,
            weight_decay: float = 1e-2) -> Predictions:
    """An MLP predictor (one hidden layer of `hidden` gelu units) of each model's quality
    (sigmoid, cross-entropy: quality lies in [0, 1]) and standardised log10 cost (squared
    error), trained full-batch with AdamW on the observed cells of `train`; the parameters
    of lowest validation loss are kept (early stopping on `valid`)."""
    observed = np.asarray(train[3])
    log_cost = np.log10(np.maximum(np.where(observed, np.asarray(train[2]), 1.0), 1e-12))
    mu, sd = log_cost[observed].mean(), log_cost[observed].std() + 1e-6

    def arrays(split):
        e, q, c, o = (np.asarray(x) for x in split)
        lc = (np.log10(np.maximum(np.where(o, c, 1.0), 1e-12)) - mu) / sd
        return (jnp.asarray(e, jnp.float32), jnp.asarray(np.where(o, q, 0.0), jnp.float32),
                jnp.asarray(lc, jnp.float32), jnp.asarray(o, jnp.float32))

    best, best_loss = _train_mlp(key, arrays(train), arrays(valid), learning_rate, weight_decay,
                                 hidden=hidden, steps=steps)
    logit, pred_log_cost = _mlp_forward(best, jnp.asarray(queries, jnp.float32))
    return Predictions(jax.nn.sigmoid(logit), 10.0 ** (pred_log_cost * sd + mu),
                       {"hidden": hidden, "steps": steps, "valid_loss": float(best_loss)})


@struct.dataclass
class Principal:
    """Embeddings [..., D] -> [..., num]: the projection on the training queries' first `num`
    principal directions, each standardised over them (a pytree: it can enter a jitted program
    as an argument)."""

    mean: jax.Array    # [D]
    basis: jax.Array   # [D, num], scaled

    def __call__(self, embeddings):
        return (embeddings - self.mean) @ self.basis


def principal_features(train_embeddings, num: int = NUM_FEATURES) -> Principal:
    """The `Principal` map of the training queries' embeddings [N, D] onto `num` standardised
    principal features."""
    emb = np.asarray(train_embeddings, np.float64)
    mean = emb.mean(0)
    _, _, vt = np.linalg.svd(emb - mean, full_matrices=False)
    basis = vt[:num].T                                                        # [D, num]
    scale = (emb - mean) @ basis
    sd = scale.std(0) + 1e-6
    return Principal(mean=jnp.asarray(mean, jnp.float32), basis=jnp.asarray(basis / sd, jnp.float32))


def _dueling_rewards(contexts: Contexts, num_models: int):
    """Per context and model: how often it was an arm ([N, K]) and its reward (1 for the
    preferred answer's model, 0 for the other's), masked contexts left out."""
    mask = contexts.mask.astype(jnp.float32)[:, None]
    one_a = jax.nn.one_hot(contexts.model_a, num_models) * mask
    one_b = jax.nn.one_hot(contexts.model_b, num_models) * mask
    label = contexts.label[:, None]
    return one_a + one_b, one_a * label + one_b * (1.0 - label)


def _with_bias(features):
    return jnp.concatenate([jnp.ones(features.shape[:-1] + (1,)), features], -1)


def linucb_fit(contexts: Contexts, context_features, num_models: int, ridge: float = LINUCB_RIDGE):
    """(theta [K, F+1], A^-1 [K, F+1, F+1]) of a disjoint LinUCB after the user's contexts: per
    model A = ridge * I + sum of x x' over the contexts it was in, theta = A^-1 (sum of reward *
    x), x = (1, the context query's features [N, F]); rewards as `_dueling_rewards`."""
    x = _with_bias(context_features)
    pulls, rewards = _dueling_rewards(contexts, num_models)
    a = ridge * jnp.eye(x.shape[-1]) + jnp.einsum("nk,nd,ne->kde", pulls, x, x)
    a_inv = jnp.linalg.inv(a)
    return jnp.einsum("kde,ne,nk->kd", a_inv, x, rewards), a_inv


def linucb_means(theta, features):
    """[Q, K] `linucb_fit`'s estimated reward of every model on queries' features [Q, F]."""
    return _with_bias(features) @ theta.T


def linucb_scores(fitted, query_features, key, alpha: float = LINUCB_ALPHA):
    """[Q, K] LinUCB scores of queries' features [Q, F] for one user's `linucb_fit` (theta,
    A^-1): theta . x + alpha * sqrt(x' A^-1 x), x = (1, features). Ties (no feedback) are
    broken by a random jitter of `key`."""
    theta, a_inv = fitted
    x = _with_bias(query_features)
    width = jnp.sqrt(jnp.maximum(jnp.einsum("qd,kde,qe->qk", x, a_inv, x), 0.0))
    jitter = 1e-6 * jax.random.uniform(key, (theta.shape[0],))
    return linucb_means(theta, query_features) + alpha * width + jitter


def _scratch_init(key, in_dim: int, hidden: int):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (in_dim, hidden)) / jnp.sqrt(in_dim), "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden,)) / jnp.sqrt(hidden)}


def _scratch_score(params, features, descriptor):
    return jax.nn.gelu(jnp.concatenate([features, descriptor], -1) @ params["w1"] + params["b1"]) @ params["w2"]


def scratch_fit(contexts: Contexts, context_features, descriptors, key, steps: int = SCRATCH_STEPS,
                hidden: int = SCRATCH_HIDDEN, learning_rate: float = SCRATCH_LR,
                weight_decay: float = SCRATCH_WEIGHT_DECAY):
    """The parameters of a network trained on this user's contexts alone: s(query, model) =
    MLP(query features, model descriptor), freshly initialised from `key`, `steps` Adam steps
    on the Bradley-Terry log-likelihood of the answers, P(a preferred) = sigmoid(s_a - s_b),
    plus `weight_decay` times the squared weights (no contexts: the initialisation, shrunk)."""
    params = _scratch_init(key, context_features.shape[-1] + descriptors.shape[-1], hidden)
    mask = contexts.mask.astype(jnp.float32)

    def loss(p):
        nll = optax.sigmoid_binary_cross_entropy(scratch_pair_logits(p, context_features, descriptors, contexts),
                                                 contexts.label)
        decay = sum(jnp.sum(w ** 2) for name, w in p.items() if name.startswith("w"))
        return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0) + weight_decay * decay

    opt = optax.adam(learning_rate)

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def scratch_scores(params, query_features, descriptors):
    """[Q, K] scores of `scratch_fit`'s network for queries' features [Q, F] and every model."""
    return jax.vmap(lambda f: _scratch_score(params, jnp.broadcast_to(f, (descriptors.shape[0], f.shape[-1])),
                                             descriptors))(query_features)


def scratch_pair_logits(params, context_features, descriptors, contexts: Contexts):
    """[N] logit of P(a preferred) of `scratch_fit`'s network on pairs: s_a - s_b."""
    return (_scratch_score(params, context_features, descriptors[contexts.model_a])
            - _scratch_score(params, context_features, descriptors[contexts.model_b]))
