"""Meta-training (the outer loop): `make_train(config, data)` returns pure functions.

One meta-step samples `tasks_per_step` users (profile, rationality, label noise, context
count, pair strategy, pool), simulates their contexts, adapts, routes a batch of training
queries per user and takes one optax step on

    - E[normalised utility]  - alpha_H(t) * entropy  + aux losses,

all vmapped over users inside one jit. Steps run as `lax.scan` chunks; after every chunk the
router is scored on fixed held-out users and queries and the best parameters are kept (early
stopping: DESIGN.md section 9, routers overfit per-query 0/1 labels). The whole run,
`train(key, hparams)`, is a `lax.scan` over chunks and can be vmapped over keys and
hyperparameters; `run_chunk` is the same computation one chunk at a time, for progress bars
and checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from metarouter_jax import adaptation, baselines
from metarouter_jax.checkpoint import CheckpointError, host_leaves
from metarouter_jax.config import FROZEN_WHEN_WARM, VALID_KEYS, Hparams, TrainConfig
from metarouter_jax.contexts import PairSource, sample_contexts, top2, uniform_index
from metarouter_jax.data import DataError, RoutingData
from metarouter_jax.networks import NetworkConfig, init_router_net, router_graphdef
from metarouter_jax.profiles import Atoms, LinearProfiles, frontier_log10_lam_range, make_atoms, make_profiles
from metarouter_jax.tasks import RoutingArrays, masked_log_softmax, query_utility, utility_scale


FEW_CONTEXTS = 8


@struct.dataclass
class TrainState:
    """A run's state. `average`: the running average of the parameters where
    `TrainConfig.ema_decay` > 0 (`average_params`; validation scores it and `best_params` keeps
    it), else None."""

    params: object
    opt_state: object
    key: jax.Array
    step: jax.Array
    best_params: object
    best_score: jax.Array
    average: object = None

    def start_from(self, params) -> "TrainState":
        """This state starting from `params` instead (a warm start): current, best and average."""
        return self.replace(params=params, best_params=params, average=None if self.average is None else params)

    @property
    def scored_params(self):
        """The parameters validation scores and early stopping keeps: the average where there is one."""
        return self.params if self.average is None else self.average


@struct.dataclass
class User:
    """One simulated user (a task): everything sampled about them."""

    profile: dict
    scale: jax.Array
    beta: jax.Array
    flip: jax.Array
    count: jax.Array
    informative: jax.Array
    pool: jax.Array


def entropy_weight(hparams: Hparams, progress):
    """The entropy weight at `progress` in [0, 1]: from entropy_start to entropy_end geometrically,
    or linearly where either is 0 (no geometric path leads to or from 0; 0 and 0: no entropy term)."""
    start, end = hparams.entropy_start, hparams.entropy_end
    both = (start > 0) & (end > 0)
    geometric = start * (end / jnp.where(both, start, 1.0)) ** progress
    return jnp.where(both, geometric, start + (end - start) * progress)


def average_params(average, params, decay: float, count):
    """The running parameter average after the `count`-th update (count >= 1) brought `params`:
    the plain mean of the iterates while count <= 1 / (1 - decay), an exponential moving average
    with `decay` after that (Polyak averaging with an exponential tail; no weight stays on the
    starting parameters, so no bias correction is needed)."""
    rate = jnp.maximum(1.0 - decay, 1.0 / count)
    return jax.tree.map(lambda a, p: a + rate * (p - a), average, params)


def make_optimizer(hparams: Hparams, total_steps: int) -> optax.GradientTransformation:
    """AdamW with gradient clipping and a cosine learning-rate decay (traced rate and decay)."""
    def schedule(count):
        frac = jnp.minimum(count / total_steps, 1.0)
        return hparams.learning_rate * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
                       optax.add_decayed_weights(hparams.weight_decay), optax.scale_by_learning_rate(schedule))


def resolve_profiles(config: TrainConfig, data: RoutingData) -> LinearProfiles:
    """The training profile family, with the lam range taken from the data when not given."""
    lam_range = config.log10_lam_range or frontier_log10_lam_range(data, config.train_split)
    return make_profiles(config.profile, data, log10_lam_range=tuple(lam_range))


def cost_units(config: TrainConfig, data: RoutingData) -> tuple[float, float]:
    """The log10-cost standardisation (mean, std) a router of `config` is trained in: measured on
    the descriptor split's queries (`cost_units="train"`), or on every query of `data` ("all")."""
    return data.log_cost_stats(config.descriptor_source if config.cost_units == "train" else None)


def network_fields(config: TrainConfig) -> dict:
    """The NetworkConfig fields that the TrainConfig alone sets (a loaded router's two must agree)."""
    return dict(query_dim=config.query_dim, hidden=config.hidden, latent_dim=config.latent_dim,
                gaussian=config.gaussian_encoder, observe_quality=config.observe_quality,
                profile_latent=config.profile_latent, context_query=config.context_query,
                posterior_atoms=config.posterior_atoms, likelihood=config.likelihood,
                beta_range=tuple(config.beta_range), family_quality=config.family_quality,
                answer_readout=config.answer_weight > 0)


def network_config(config: TrainConfig, data: RoutingData, profiles: LinearProfiles) -> NetworkConfig:
    log_cost_mean, log_cost_std = cost_units(config, data)
    return NetworkConfig(
        embed_dim=data.embed_dim, descriptor_dim=1 + data.num_families,
        profile_feature_dim=profiles.feature_dim, profile_target_dim=profiles.target_dim,
        num_families=data.num_families if config.context_family else 0,
        log_cost_mean=log_cost_mean, log_cost_std=log_cost_std,
        num_models=data.num_models if config.model_identity else 0, **network_fields(config),
    )


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Pure training functions bound to a config and a dataset (see module docstring)."""

    config: TrainConfig
    net_config: NetworkConfig
    profiles: LinearProfiles
    arrays: RoutingArrays
    train_source: PairSource     # training queries (and their trade-off pairs)
    valid_source: PairSource     # held-out training queries for early stopping
    calib_queries: jax.Array
    graphdef: object
    atoms: Atoms | None = None   # the atomic posterior's support (config.posterior_atoms > 0)
    trace_counter: list = dataclasses.field(default_factory=lambda: [0])
    # Optional sharding of the task axis (data parallel over users): a jax.sharding.Sharding
    # for a [tasks_per_step] array, e.g. NamedSharding(mesh, P("tasks")). None: one device.
    task_sharding: object = None

    @property
    def known_frozen(self) -> bool:
        """The known-profile pathway (policy and profile embedding) does not train."""
        return set(FROZEN_WHEN_WARM) <= set(self.config.frozen)

    @property
    def train_queries(self) -> jax.Array:
        return self.train_source.queries

    @property
    def valid_queries(self) -> jax.Array:
        return self.valid_source.queries

    # ------------------------------------------------------------------ users
    def sample_user(self, key, hparams: Hparams, pool_dropout: float) -> User:
        cfg, k = self.config, self.arrays.observed.shape[1]
        key_profile, key_scalars, key_pool = jax.random.split(key, 3)
        profile = self.profiles.sample(key_profile)
        u = jax.random.uniform(key_scalars, (6,))  # one draw for the scalars (see contexts.uniform_index)
        lo, hi = np.log(cfg.beta_range)
        beta = jnp.exp(lo + (hi - lo) * u[0])
        flip = hparams.flip_max * u[1] if cfg.label_flips else jnp.zeros(())
        if cfg.random_counts:  # half the users give few feedbacks: the regime that matters (n ~ 6)
            few = uniform_index(u[2], min(cfg.max_contexts, FEW_CONTEXTS) + 1)
            count = jnp.where(u[3] < 0.5, few, uniform_index(u[4], cfg.max_contexts + 1))
        else:
            count = jnp.asarray(cfg.max_contexts)
        informative = u[5] < cfg.informative_fraction
        pool = jnp.ones(k, bool)
        if pool_dropout > 0:  # random pools teach the policy that the candidate set changes
            keep, order = jax.random.uniform(key_pool, (2, k))
            pool = (keep < 1.0 - pool_dropout).at[jnp.stack(top2(order))].set(True)
        scale = utility_scale(self.profiles, profile, self.arrays, self.calib_queries)
        return User(profile, scale, beta, flip, count, informative, pool)

    def user_contexts(self, key, user: User, source: PairSource):
        return sample_contexts(key, self.profiles, user.profile, self.arrays, source, user.pool,
                               count=user.count, capacity=self.config.max_contexts, scale=user.scale,
                               beta=user.beta, flip=user.flip, informative=user.informative,
                               target_range=self.profiles.log10_lam_range)

    def latent(self, params, contexts, user: User, key=None, hparams: Hparams | None = None, clean=None):
        """The router's latent for one user, by `latent_source` (with training noise when keyed;
        `clean`: the contexts before outcome noise, for a Bradley-Terry likelihood head).

        Returns (routing weights [R], encoder output or None, KL term, atom posterior [G] or None)."""
        cfg, desc = self.config, self.arrays.descriptors
        kl, inferred, weights = jnp.zeros(()), None, None
        if cfg.latent_source == "contexts" and self.atoms is not None:
            z, weights = adaptation.atomic_latent(self.graphdef, params, contexts, desc, self.atoms, cfg.inner_steps,
                                                  cfg.first_order, clean)
            inferred = weights @ self.atoms.features
        elif cfg.latent_source == "contexts":
            mean, logvar = adaptation.encode(self.graphdef, params, contexts, desc)
            inferred = adaptation.refine(self.graphdef, params, contexts, desc, mean, cfg.inner_steps,
                                         cfg.first_order)
            sample = inferred
            if cfg.gaussian_encoder:
                kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar)
                if key is not None:
                    sample = inferred + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.fold_in(key, 1),
                                                                                  inferred.shape)
            z = adaptation.policy_latent(self.graphdef, params, sample)
        elif cfg.latent_source == "profile":
            z = adaptation.profile_latent(self.graphdef, params, self.profiles.features(user.profile))
        else:
            z = adaptation.prior_latent(self.graphdef, params)
        if key is not None and cfg.latent_noise and cfg.latent_source != "none":
            z = z + hparams.latent_noise * jax.random.normal(key, z.shape)
        return z, inferred, kl, weights

    def answer_loss(self, params, components, queries):
        """Mean over the observed answers of the readout's cross-entropy on quality and squared error
        on standardised log cost: a direct, per-answer signal for the policy's components."""
        readout = nnx.merge(self.graphdef, params).policy.readout(components)                 # [B, K, 2]
        arrays = self.arrays
        observed = arrays.observed[queries].astype(readout.dtype)
        per_answer = (optax.sigmoid_binary_cross_entropy(readout[..., 0], arrays.quality[queries])
                      + (readout[..., 1] - arrays.log_cost[queries]) ** 2)
        return (per_answer * observed).sum() / jnp.maximum(observed.sum(), 1.0)

    # ------------------------------------------------------------------ loss of one user
    def task_loss(self, params, key, hparams: Hparams, progress):
        cfg, arrays = self.config, self.arrays
        keys = jax.random.split(key, 8)
        user = self.sample_user(keys[0], hparams, cfg.pool_dropout)
        contexts = clean = self.user_contexts(keys[1], user, self.train_source)
        if cfg.outcome_noise:
            noise = hparams.outcome_noise * jax.random.normal(keys[2], (2,) + contexts.outcome_a.shape)
            contexts = contexts.replace(outcome_a=contexts.outcome_a + noise[0], outcome_b=contexts.outcome_b + noise[1])
        z, inferred, kl, weights = self.latent(params, contexts, user, keys[3], hparams, clean)

        queries = self.train_queries[uniform_index(jax.random.uniform(keys[4], (cfg.queries_per_task,)),
                                                   self.train_queries.shape[0])]
        allowed = arrays.observed[queries] & user.pool                                      # [B, K]
        feats = adaptation.query_features(self.graphdef, params, arrays.embeddings[queries])  # [B, H]
        feats = feats + hparams.query_noise * jax.random.normal(keys[5], feats.shape)
        u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(self.profiles, user.profile, arrays, queries)
        u = u / user.scale
        # Centring per query changes no expected-utility gradient (probabilities sum to 1) but
        # lowers the variance of the bandit estimator. A query no model of the pool can answer
        # (a random pool on a log with missing cells) earns 0 and teaches nothing (was 0 / 0).
        u = u - (u * allowed).sum(-1, keepdims=True) / jnp.maximum(allowed.sum(-1, keepdims=True), 1)
        alpha = entropy_weight(hparams, progress)
        # The answers' policy components do not depend on the user: one pass (and one backward
        # pass) serves this user's latent and, below, the known profile's.
        components = adaptation.answer_components(self.graphdef, params, feats, arrays.descriptors,
                                                  self.query_family(queries))                   # [B, K, R]
        loss, expected, entropy = self.routing_loss(components @ z, u, allowed, alpha, keys[6])
        if cfg.answer_weight > 0:   # supervised: each answer's quality and log cost from its components
            loss = loss + cfg.answer_weight * self.answer_loss(params, components, queries)

        if cfg.latent_source == "contexts":  # auxiliary signals for the encoder (DESIGN.md section 9)
            held_out = self.user_contexts(keys[7], user.replace(count=jnp.asarray(cfg.max_contexts)),
                                          self.train_source)
            net = nnx.merge(self.graphdef, params)
            pair_nll = adaptation.pairwise_nll(net.encoder, held_out, arrays.descriptors, inferred)
            if weights is not None:  # a proper score of the atomic posterior against the true profile
                profile_err = atom_log_score(weights, self.atoms, self.profiles.targets(user.profile))
            elif cfg.profile_latent:  # regression onto the true features: optimum = posterior mean
                profile_err = jnp.mean((inferred - self.profiles.features(user.profile)) ** 2)
            else:
                profile_err = jnp.mean((net.profile_head(inferred) - self.profiles.targets(user.profile)) ** 2)
            loss = loss + hparams.pair_weight * pair_nll + hparams.profile_weight * profile_err
            loss = loss + hparams.kl_weight * kl
            if cfg.profile_latent and cfg.joint_known and not self.known_frozen:  # it shares the policy
                z_known = adaptation.profile_latent(self.graphdef, params, self.profiles.features(user.profile))
                known_loss, _, _ = self.routing_loss(components @ z_known, u, allowed, alpha,
                                                     jax.random.fold_in(keys[6], 1))
                loss = loss + known_loss
        return loss, {"loss": loss, "utility": expected.mean(), "entropy": entropy}

    def routing_loss(self, scores, u, allowed, alpha, key):
        """-E[normalised utility] - alpha * entropy of the policy on one user's queries.

        scores: [B, K] the policy's scores; u: [B, K] centred normalised utilities.
        Returns (loss, expected utility [B], mean entropy).
        """
        logp = masked_log_softmax(scores, allowed)                                          # [B, K]
        probs = jnp.exp(logp) * allowed
        expected = (probs * u).sum(-1)                                                      # [B]
        if self.config.loss == "full":
            utility_loss = -expected.mean()
        else:  # REINFORCE on one sampled arm per query, batch-mean baseline
            arm = jax.random.categorical(key, jnp.where(allowed, logp, -jnp.inf))
            answerable = allowed.any(-1)             # else the arm is no model at all: no reward, no gradient
            reward = jnp.where(answerable, jnp.take_along_axis(u, arm[:, None], 1)[:, 0], 0.0)
            advantage = jax.lax.stop_gradient(reward - reward.mean()) * answerable
            utility_loss = -(advantage * jnp.take_along_axis(logp, arm[:, None], 1)[:, 0]).mean()
        entropy = -(probs * jnp.where(allowed, logp, 0.0)).sum(-1).mean()
        return utility_loss - alpha * entropy, expected, entropy

    def query_family(self, queries):
        """The queries' task families where the policy reads them (`family_quality`), else None."""
        return self.arrays.family[queries] if self.config.family_quality else None

    # ------------------------------------------------------------------ validation
    def validation_users(self, key, hparams: Hparams):
        """Fixed held-out users and their contexts: counts spread over 0..N, half with informative pairs.

        Sampled once per run (`train`, `run_training`) and scored after every chunk."""
        cfg = self.config
        # One key per user, split in two: a user's preference and its contexts draw on distinct streams.
        pairs = jax.vmap(jax.random.split)(jax.random.split(key, cfg.valid_users))          # [V, 2]
        user_keys, ctx_keys = pairs[:, 0], pairs[:, 1]
        users = jax.vmap(lambda k: self.sample_user(k, hparams, 0.0))(user_keys)
        index = jnp.arange(cfg.valid_users)
        counts = index % (cfg.max_contexts + 1)
        # Every count with both strategies: with an even number of counts (an odd max_contexts)
        # index % 2 would give each count one strategy, so the strategy alternates by cycle there.
        cycle = 1 if (cfg.max_contexts + 1) % 2 else cfg.max_contexts + 1
        informative = (index // cycle) % 2 == 1
        users = users.replace(count=counts, informative=informative,
                              beta=jnp.full_like(users.beta, 10.0), flip=jnp.full_like(users.flip, 0.05))
        contexts = jax.vmap(lambda k, u: self.user_contexts(k, u, self.valid_source))(ctx_keys, users)
        return users, contexts

    def validation_score(self, params, users, contexts) -> dict[str, jax.Array]:
        """Argmax routing of the validation users on the held-out queries, scored two ways.

        valid_utility: the users' mean normalised utility (random routing 0, the per-query oracle 1).
        valid_worst_band: the users ranked by log10(lam) into `valid_bands` bands of (nearly)
        equal size; per band, the mean margin of their normalised utility over that of the best
        fixed model in hindsight (each user's own, on these queries); the lowest band's. It is
        below 0 where the router loses to one model for some part of the preference range, which
        a mean over the whole range can hide (DESIGN.md section 9).
        `TrainConfig.valid_criterion` picks the one early stopping keeps the best of."""
        arrays, queries = self.arrays, self.valid_queries
        allowed = arrays.observed[queries]

        def one(user, ctx):
            z, _, _, _ = self.latent(params, ctx, user)
            scores = adaptation.route_scores(self.graphdef, params, arrays.embeddings[queries], z,
                                             arrays.descriptors, allowed, self.query_family(queries))
            u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(self.profiles, user.profile, arrays, queries)
            rand, best, model_means = baselines.hindsight(u, allowed)
            normalised = lambda choice: baselines.rescale(  # noqa: E731
                jnp.take_along_axis(u, choice[:, None], 1)[:, 0].mean(), rand, best)
            return normalised(jnp.argmax(scores, -1)), normalised(baselines.best_fixed_choice(model_means, allowed))

        routed, fixed = jax.vmap(one)(users, contexts)                                        # [V], [V]
        margins = band_means(users.profile["log10_lam"], routed - fixed, self.config.valid_bands)
        return {"valid_utility": routed.mean(), "valid_worst_band": margins.min()}

    # ------------------------------------------------------------------ steps, chunks, runs
    def init(self, key, hparams: Hparams) -> TrainState:
        key_net, key_run = jax.random.split(key)
        _, params = init_router_net(self.net_config, key_net)
        opt_state = make_optimizer(hparams, self.config.num_steps).init(params)
        return TrainState(params, opt_state, key_run, jnp.zeros((), jnp.int32), params, jnp.asarray(-jnp.inf, jnp.float32),
                          params if self.config.ema_decay else None)

    def meta_step(self, state: TrainState, hparams: Hparams):
        cfg = self.config
        key, key_tasks = jax.random.split(state.key)
        progress = state.step / cfg.num_steps

        task_keys = jax.random.split(key_tasks, cfg.tasks_per_step)
        if self.task_sharding is not None:  # XLA propagates the split through the vmapped loss
            task_keys = jax.lax.with_sharding_constraint(task_keys, self.task_sharding)

        def batch_loss(params):
            if cfg.frozen:  # no gradient at all: no backward pass through them, none in the clipping norm
                params = jax.tree_util.tree_map_with_path(
                    lambda path, p: jax.lax.stop_gradient(p) if _part(path) in cfg.frozen else p, params)
            losses, metrics = jax.vmap(self.task_loss, in_axes=(None, 0, None, None))(
                params, task_keys, hparams, progress)
            return losses.mean(), jax.tree.map(jnp.mean, metrics)

        grads, metrics = jax.grad(batch_loss, has_aux=True)(state.params)
        optimizer = make_optimizer(hparams, cfg.num_steps)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        if cfg.frozen:  # no update at all (weight decay included) for the frozen parts
            updates = jax.tree_util.tree_map_with_path(
                lambda path, u: jnp.zeros_like(u) if _part(path) in cfg.frozen else u, updates)
        params = optax.apply_updates(state.params, updates)
        if cfg.ema_decay:
            state = state.replace(average=average_params(state.average, params, cfg.ema_decay, state.step + 1))
        return state.replace(params=params, opt_state=opt_state, key=key, step=state.step + 1), metrics

    def run_chunk(self, state: TrainState, hparams: Hparams, valid):
        """`chunk_steps` meta-steps in a lax.scan, then validation and best-parameter tracking
        (of the parameter average where `ema_decay` > 0).

        valid: the run's fixed validation set, `validation_users(valid_key, hparams)`."""
        self.trace_counter[0] += 1  # Python side effect: counts traces, not calls
        state, metrics = jax.lax.scan(lambda s, _: self.meta_step(s, hparams), state, None,
                                      length=self.config.chunk_steps)
        users, contexts = valid
        scored = state.scored_params
        # Diverged parameters score NaN (argmax routing would still give them a finite score) and
        # are never kept; a NaN score is never better, so the best so far stays.
        finite = jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(scored)]).all()
        valid_metrics = {k: jnp.where(finite, v, jnp.nan)
                         for k, v in self.validation_score(scored, users, contexts).items()}
        score = valid_metrics[self.config.valid_key]
        better = score > state.best_score
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), scored, state.best_params)
        state = state.replace(best_params=best, best_score=jnp.where(better, score, state.best_score))
        metrics = jax.tree.map(jnp.mean, metrics)
        return state, {**metrics, **valid_metrics}

    # ------------------------------------------------------------------ data as arguments
    def data_args(self):
        """The dataset arrays, to pass into jitted functions as arguments (not as constants)."""
        return (self.arrays, self.train_source, self.valid_source, self.calib_queries)

    def bind(self, data_args) -> "Trainer":
        """This trainer over other (e.g. traced) dataset arrays."""
        arrays, train_source, valid_source, calib_q = data_args
        return dataclasses.replace(self, arrays=arrays, train_source=train_source, valid_source=valid_source,
                                   calib_queries=calib_q)

    @functools.cached_property
    def jit_chunk(self):
        """`run_chunk` jitted with the data as an argument: fn(data_args, state, hparams, valid)."""
        return jax.jit(lambda args, state, hparams, valid: self.bind(args).run_chunk(state, hparams, valid))

    @functools.cached_property
    def jit_validation_users(self):
        """`validation_users` jitted with the data as an argument: fn(data_args, valid_key, hparams)."""
        return jax.jit(lambda args, key, hparams: self.bind(args).validation_users(key, hparams))

    @functools.cached_property
    def jit_init(self):
        return jax.jit(self.init)

    def train_with_data(self, data_args, key, hparams: Hparams):
        """`train` with the dataset arrays as an explicit argument (for jit/vmap without constants)."""
        return self.bind(data_args).train(key, hparams)

    def train(self, key, hparams: Hparams):
        """The whole run: init, then a lax.scan over chunks. Pure; vmap it over keys/hparams."""
        key_init, key_valid = jax.random.split(key)
        state = self.init(key_init, hparams)
        valid = self.validation_users(key_valid, hparams)
        state, history = jax.lax.scan(lambda s, _: self.run_chunk(s, hparams, valid), state, None,
                                      length=self.config.num_chunks)
        return state, history


def band_means(log10_lam, values, num_bands: int):
    """Mean of `values` [V] in each of `num_bands` bands of the users ranked by `log10_lam` [V]:
    band b holds the users of rank r with r * num_bands // V == b (sizes differ by at most one;
    ties keep the users' order). Returns [num_bands]; every band is non-empty when num_bands <= V."""
    rank = jnp.argsort(jnp.argsort(log10_lam, stable=True), stable=True)
    bands = jax.nn.one_hot(rank * num_bands // log10_lam.shape[0], num_bands)           # [V, B]
    return (values @ bands) / bands.sum(0)


def _part(path) -> str:
    """The RouterNet part ("encoder", "policy", ...) a parameter's pytree path starts in."""
    first = path[0]
    return str(getattr(first, "key", getattr(first, "name", first)))


def atom_log_score(weights, atoms: Atoms, target):
    """-log of the atomic posterior's kernel density at the true profile's targets (a proper score:
    minimised in expectation when the weights are the posterior mass near each atom)."""
    dist2 = jnp.sum((atoms.targets - target) ** 2, -1)
    return -jax.nn.logsumexp(jnp.log(weights + 1e-12) - 0.5 * dist2 / atoms.width**2)


def build_atoms(config: TrainConfig, profiles: LinearProfiles, arrays: RoutingArrays, calib_queries) -> Atoms | None:
    """The atomic posterior's support (None without one), with each atom's utility scale
    measured on the calibration queries, as its users would be normalised."""
    if not config.posterior_atoms:
        return None
    atoms = make_atoms(profiles, config.posterior_atoms)
    calib = jnp.asarray(calib_queries)
    return atoms.with_scales(jax.vmap(lambda p: utility_scale(profiles, p, arrays, calib))(atoms.profiles))


def calibration_queries(data: RoutingData, config: TrainConfig) -> np.ndarray:
    """The training queries on which each user's utility scale is measured (fixed, seeded)."""
    return np.random.default_rng(0).permutation(data.split(config.train_split))[: config.calib_queries]


def check_data(config: TrainConfig, data: RoutingData) -> LinearProfiles:
    """Raise, naming the problem, unless `data` can train `config`: its training, validation and
    descriptor splits exist and hold queries, every model has an answer on the descriptor split
    (else every descriptor is NaN and training only 'diverges'), and the config's profile family
    can be built for the data. Returns that family (`resolve_profiles`). `make_train`'s first step."""
    for split in dict.fromkeys((config.train_split, config.valid_split, config.descriptor_source)):
        data.nonempty_split(split)
    data.descriptor_centre(config.descriptor_source)   # a DataError naming a model without an answer there
    valid = data.split(config.valid_split)
    if not offers_choice(data, valid).any():
        raise DataError(f"the validation split {config.valid_split!r} offers no choice: on each of its {valid.size} "
                        "queries every answered model has the same quality and cost, so every routing scores alike "
                        "(normalised utility is undefined) and early stopping has nothing to rank")
    return resolve_profiles(config, data)


def offers_choice(data: RoutingData, queries) -> np.ndarray:
    """[len(queries)] bool: two of the query's answered models (`RoutingData.observed`) differ in
    quality or in cost, so that routing it can matter to some user."""
    answered = data.observed[queries]

    def spread(x):
        return np.where(answered, x, -np.inf).max(1) > np.where(answered, x, np.inf).min(1)

    return spread(data.quality[queries]) | spread(data.cost[queries])


def make_train(config: TrainConfig, data: RoutingData) -> Trainer:
    """Bind a config to a dataset; `Trainer.train(key, hparams)` is the pure training function."""
    profiles = check_data(config, data)
    net_config = network_config(config, data, profiles)
    graphdef = router_graphdef(net_config)
    arrays = RoutingArrays.from_data(data, config.descriptor_source,
                                     (net_config.log_cost_mean, net_config.log_cost_std))
    calib = calibration_queries(data, config)
    atoms = build_atoms(config, profiles, arrays, calib)
    return Trainer(config, net_config, profiles, arrays, PairSource.build(arrays, data.split(config.train_split)),
                   PairSource.build(arrays, data.split(config.valid_split)), jnp.asarray(calib), graphdef, atoms)


def run_training(trainer: Trainer, key, hparams: Hparams, *, on_chunk=None, checkpointer=None, init_params=None):
    """Run `trainer` chunk by chunk (jitted once), with optional progress and checkpoints.

    Gives the same result as `trainer.train(key, hparams)` computed one chunk at a time; with a
    `TrainCheckpointer` it saves every `checkpointer.every` steps and resumes from the latest
    saved state when there is one (same key, same result as an uninterrupted run); states of
    another run (config, hyperparameters, key, data or `init_params`) raise CheckpointError.

    Args:
      on_chunk: called as on_chunk(chunk_index, num_chunks, metrics: dict[str, float]).
      init_params: start from these parameters instead of a fresh initialisation (warm start).
    Returns:
      (final TrainState, history: dict name -> np.ndarray [num_chunks]).
    """
    cfg = trainer.config
    if checkpointer is not None:
        checkpointer.bind_run(run_fingerprint(trainer, key, hparams, init_params))  # another run's: refused
    key_init, key_valid = jax.random.split(key)
    state = trainer.jit_init(key_init, hparams)
    if init_params is not None:
        state = state.start_from(init_params)
    history: dict[str, list[float]] = {}
    if checkpointer is not None and checkpointer.latest_step() is not None:
        restored, saved_history = checkpointer.restore((state, _history_template(cfg)))
        # where the fresh state lives (a sharded trainer's mesh), so the first chunk is not compiled again
        state = jax.tree.map(lambda saved, fresh: jax.device_put(saved, fresh.sharding), restored, state)
        step = int(state.step)
        if step % cfg.chunk_steps or step > cfg.num_steps:
            raise CheckpointError(f"{checkpointer.directory}: a state at step {step} does not fit this run "
                                  f"({cfg.num_steps} steps in chunks of {cfg.chunk_steps})")
        history = {k: list(np.asarray(v)[: step // cfg.chunk_steps]) for k, v in saved_history.items()}
    data_args = trainer.data_args()
    valid = trainer.jit_validation_users(data_args, key_valid, hparams)
    for index in range(int(state.step) // cfg.chunk_steps, cfg.num_chunks):
        state, metrics = trainer.jit_chunk(data_args, state, hparams, valid)
        metrics = {k: float(v) for k, v in metrics.items()}
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
        step = (index + 1) * cfg.chunk_steps
        if checkpointer is not None and (checkpointer.due(step) or step == cfg.num_steps):
            checkpointer.save(step, (state, _padded_history(history, cfg)))
        if on_chunk is not None:
            on_chunk(index, cfg.num_chunks, metrics)
    return state, {k: np.asarray(v) for k, v in history.items()}


def run_fingerprint(trainer: Trainer, key, hparams: Hparams, init_params=None) -> dict:
    """What decides a training run's states: its config, hyperparameters and PRNG key, and digests
    of its data and starting parameters (JSON-ready). A checkpoint directory keeps the one of the
    run that wrote it and refuses to resume a run with another (`TrainCheckpointer.bind_run`)."""
    def digest(tree) -> str:
        sha = hashlib.sha256()
        for array in map(np.ascontiguousarray, host_leaves(tree)):  # 0-d as (1,): the digests checkpoints hold
            sha.update(f"{array.dtype}{array.shape}".encode())
            sha.update(array.tobytes())
        return sha.hexdigest()[:16]

    (key_data,) = host_leaves(key)
    return {"config": trainer.config.to_dict(), "hparams": hparams.to_json(),
            "key": key_data.tolist(), "data": digest(trainer.data_args()),
            "init_params": None if init_params is None else digest(init_params)}


HISTORY_KEYS = ("entropy", "loss", "utility", *VALID_KEYS.values())


def _history_template(cfg: TrainConfig):
    return {k: jnp.zeros((cfg.num_chunks,), jnp.float32) for k in HISTORY_KEYS}


def _padded_history(history, cfg: TrainConfig):
    return {k: jnp.zeros((cfg.num_chunks,), jnp.float32).at[: len(history[k])].set(jnp.asarray(history[k]))
            for k in HISTORY_KEYS}
