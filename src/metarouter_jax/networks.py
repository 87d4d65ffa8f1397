"""Networks: context encoder, pool-agnostic policy, utility head (Flax NNX).

Every module here is written for ONE user (and one query); callers vmap. Modules are split
once into (graphdef, params); training and adaptation use plain jax transformations over
the params pytree (`RouterNet.apply`-style helpers at the bottom).

* The encoder reads contexts in winner/loser order (the preferred answer first), which makes
  it exactly invariant to swapping (a, b, y) -> (b, a, 1 - y); masked pooling makes it
  invariant to context order, and with 0 valid contexts it returns the prior.
* The atomic-posterior encoder's per-context log-likelihood of each atom is, by default
  (`likelihood="bradley_terry"`), the Bradley-Terry form on that atom's own utilities of the
  two answers (the simulated users' model, with a learned rationality and flip rate) plus a
  learned correction; `likelihood="learned"` is the network alone.
* The policy scores each candidate model with ONE shared network over (query, latent,
  model descriptor), then a masked softmax over the pool: the pool can change freely.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metarouter_jax.config import LIKELIHOODS
from metarouter_jax.contexts import Contexts, label_log_likelihood

OUTCOME_DIM = 2  # (quality, standardised log10 cost)
TRADE_OFF_DIM = 3  # (dq, standardised log10 |dc|, sign of dc) of a context, winner minus loser
COUNT_SCALE = 4.17  # ~log(1 + 64): scales the context-count input to about [0, 1]


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Static sizes of the networks."""

    embed_dim: int
    descriptor_dim: int
    profile_feature_dim: int
    profile_target_dim: int
    query_dim: int = 16          # low-dimensional query pathway (DESIGN.md section 9: keep it small)
    hidden: int = 64
    latent_dim: int = 16
    gaussian: bool = False       # product-of-Gaussians encoder with a KL term
    observe_quality: bool = True  # contexts carry the answers' quality (real logs may not)
    profile_latent: bool = True  # the encoder infers profile features; one embedding serves both
    context_query: bool = True   # contexts show the encoder their query (off: outcomes and models only)
    posterior_atoms: int = 0     # > 0: an atomic posterior over this many prior profiles (Bayes decision)
    num_families: int = 0        # > 0: contexts show the encoder their query's task family (one-hot)
    family_quality: bool = False  # the policy sees each model's descriptor quality on the query's own family
    answer_readout: bool = False  # a linear readout of each answer's components onto its quality and log cost
    num_models: int = 0          # > 0: the policy adds a learned vector per model (model identity) for this many
    log_cost_mean: float = 0.0   # the data's log10-cost standardisation (contexts carry standardised costs)
    log_cost_std: float = 1.0
    likelihood: str = "learned"  # the atoms' per-context log-likelihoods: "learned", or "bradley_terry" (the
                                 # Bradley-Terry form on each atom's utilities plus a learned correction)
    beta_range: tuple[float, float] = (3.0, 30.0)  # the training users' rationality prior (initialises beta)

    def __post_init__(self):
        """Refuse a field of the wrong kind (e.g. read from a damaged router.json), naming it."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), field.type
            if kind == "int":
                low = 1 if field.name in _SIZES else 0
                ok, want = _is_int(value) and value >= low, f"an integer >= {low}"
            elif kind == "bool":
                ok, want = isinstance(value, (bool, np.bool_)), "true or false"
            elif kind == "float":
                ok, want = _is_number(value) and math.isfinite(value), "a finite number"
            elif field.name == "likelihood":
                ok, want = value in LIKELIHOODS, f"one of {LIKELIHOODS}"
            else:  # beta_range
                ok = (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_number, value))
                      and 0 < value[0] <= value[1] < math.inf)
                want = "two numbers 0 < lo <= hi"
            if not ok:
                raise ValueError(f"NetworkConfig.{field.name} must be {want}, got {value!r}")
        # A tuple, also where read from router.json (a list): the config is part of the router's
        # graph definition, which jit programs key their compilations on (hashable, equal to a fit's).
        object.__setattr__(self, "beta_range", tuple(self.beta_range))

    @property
    def encoder_dim(self) -> int:
        """Size of the encoder's output: the profile-feature space, or a free latent."""
        return self.profile_feature_dim if self.profile_latent else self.latent_dim


_SIZES = ("embed_dim", "descriptor_dim", "hidden", "latent_dim")  # NetworkConfig's fields that cannot be 0


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return _is_int(x) or isinstance(x, (float, np.floating))


class Dense(nnx.Module):
    """y = x W^T + b with the kernel stored [out, in] (as torch stores it; `nnx.Linear` stores [in, out]).

    The same function and the same initial values as `nnx.Linear` (lecun-normal drawn on
    [in, out], then transposed; the same keys consumed), in the layout XLA's CPU backend
    prefers for the weight gradient: for a kernel stored [in, out] the gradient's dot reaches
    XLA as a transposed product, which it rewrites into a dot its fast matmul library rejects
    (it then runs as XLA's own, slower dot after a transpose). Stored [out, in], the gradient
    is a plain dot of the transposed output gradient and the inputs, and the meta-step's large
    dots go to the library (benchmarks/README.md, "Why the MFU is low on CPU").
    """

    def __init__(self, din: int, dout: int, *, use_bias: bool = True,
                 kernel_init=nnx.initializers.lecun_normal(), rngs: nnx.Rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (din, dout), jnp.float32).T)  # [out, in]
        self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32)) if use_bias else None
        if use_bias:
            rngs.params()  # nnx.Linear draws a key for its (zero) bias: keep the same key sequence

    def __call__(self, x):
        y = jax.lax.dot_general(x, self.kernel[...], (((x.ndim - 1,), (1,)), ((), ())))
        return y if self.bias is None else y + self.bias[...]

    def weighted_sum(self, x, weights):
        """sum_n weights[n] * self(x[n]) for x [N, in], weights [N], computed as the layer of the
        weighted sum of the inputs (the layer is affine): one row through the layer instead of N."""
        y = self(weights @ x)
        return y if self.bias is None else y + (weights.sum() - 1.0) * self.bias[...]


def _dense(din, dout, rngs, bias=True):
    return Dense(din, dout, use_bias=bias, rngs=rngs)


class ContextEncoder(nnx.Module):
    """Contexts -> inferred preference (mean, log-variance) and a learned utility head v(x, d, o, z).

    With `profile_latent` the output lives in the profile-feature space (trained towards the
    true features of the sampled profile, so its regression optimum is their posterior mean)
    and reaches the policy through the same `ProfileEmbedding` as the known profile does.
    """

    def __init__(self, cfg: NetworkConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d_in = cfg.query_dim + 2 * (cfg.descriptor_dim + OUTCOME_DIM) + TRADE_OFF_DIM + cfg.num_families
        self.query = _dense(cfg.embed_dim, cfg.query_dim, rngs)
        self.layer1 = _dense(d_in, cfg.hidden, rngs)
        self.layer2 = _dense(cfg.hidden, cfg.hidden, rngs)
        n_out = 2 * cfg.encoder_dim if cfg.gaussian else cfg.hidden
        self.per_context = _dense(cfg.hidden, n_out, rngs)
        self.head1 = _dense(cfg.hidden + 1, cfg.hidden, rngs)
        self.head2 = _dense(cfg.hidden, cfg.encoder_dim, rngs)
        # Utility head for the inner refinement and the pairwise auxiliary loss.
        self.util1 = _dense(cfg.query_dim + cfg.descriptor_dim + OUTCOME_DIM + cfg.encoder_dim, cfg.hidden, rngs)
        self.util2 = _dense(cfg.hidden, 1, rngs)
        # Atomic posterior: each context adds learned log-likelihoods of G fixed prior profiles,
        # summed like independent evidence (a product of likelihoods) onto learned prior logits.
        if cfg.posterior_atoms:
            if cfg.likelihood == "bradley_terry":  # the learned part is a correction, starting at none
                self.atom_logits = Dense(cfg.hidden, cfg.posterior_atoms, kernel_init=nnx.initializers.zeros, rngs=rngs)
                self.flip_logit = nnx.Param(jnp.asarray(jnp.log(0.1 / 0.9), jnp.float32))  # flip rate 0.05
                # rationality: starts at the geometric mean of the training users' prior range
                self.log_beta = nnx.Param(jnp.asarray(0.5 * sum(map(math.log, cfg.beta_range)), jnp.float32))
            else:
                self.atom_logits = _dense(cfg.hidden, cfg.posterior_atoms, rngs)
            self.prior_logits = nnx.Param(jnp.zeros((cfg.posterior_atoms,), jnp.float32))
        step_dim = cfg.posterior_atoms or cfg.encoder_dim
        self.log_step = nnx.Param(jnp.full((step_dim,), -2.0, jnp.float32))  # meta-SGD inner step sizes

    def _outcome(self, outcome):
        return outcome if self.cfg.observe_quality else outcome * jnp.array([0.0, 1.0])

    def _trade_off(self, winner, loser):
        """[N, 3] what a linear user's choice tests: the quality gain dq, the standardised log10 of
        the USD cost gap |dc| and its sign (the switch point is log10(dq / dc) for a trade-off)."""
        mean, std = self.cfg.log_cost_mean, self.cfg.log_cost_std
        x_w, x_l = winner[:, 1] * std + mean, loser[:, 1] * std + mean          # log10 USD
        gap = jnp.abs(x_w - x_l)
        log_dc = jnp.maximum(x_w, x_l) + jnp.log10(jnp.maximum(1.0 - 10.0 ** (-gap), 1e-6))
        dq = winner[:, 0] - loser[:, 0] if self.cfg.observe_quality else jnp.zeros_like(gap)
        return jnp.stack([dq, (log_dc - mean) / std, jnp.sign(x_w - x_l)], -1)

    def _per_context(self, contexts: Contexts, descriptors):
        """[N, H] features of each context, read in winner/loser order (swap-invariant)."""
        y = contexts.label[:, None] > 0.5
        win = lambda a, b: jnp.where(y, a, b)  # noqa: E731
        d_a, d_b = descriptors[contexts.model_a], descriptors[contexts.model_b]
        o_a, o_b = self._outcome(contexts.outcome_a), self._outcome(contexts.outcome_b)
        query = self.query(contexts.query_emb)
        if not self.cfg.context_query:  # on real logs the query identity invites memorising labels
            query = jnp.zeros_like(query)
        family = jax.nn.one_hot(contexts.family, self.cfg.num_families)  # unknown (-1): all zeros
        feats = jnp.concatenate([query, win(d_a, d_b), win(d_b, d_a), win(o_a, o_b), win(o_b, o_a),
                                 self._trade_off(win(o_a, o_b), win(o_b, o_a)), family], -1)  # [N, F]
        return jax.nn.gelu(self.layer2(jax.nn.gelu(self.layer1(feats))))

    def posterior_logits(self, contexts: Contexts, descriptors, atoms, clean: Contexts | None = None):
        """[G] unnormalised log-posterior over the atoms: prior + sum of per-context log-likelihoods
        (+ the Bradley-Terry log-likelihood of every atom with `likelihood="bradley_terry"`).

        clean: the same contexts before training's outcome noise, if any: the Bradley-Terry term
        reads them (the noise regularises the learned part; an exact formula needs none, and on
        noisy outcomes it would disagree with labels drawn from the clean ones).
        Exactly the prior with 0 valid contexts; invariant to context order and to swaps."""
        feats = self._per_context(contexts, descriptors)                                    # [N, H]
        # the sum over valid contexts of each one's (affine) atom log-likelihoods
        logits = self.prior_logits[...] + self.atom_logits.weighted_sum(feats, contexts.mask.astype(feats.dtype))
        if self.cfg.likelihood == "bradley_terry":
            logits = logits + self.bradley_terry_log_likelihood(contexts if clean is None else clean, atoms)
        return logits

    def bradley_terry_log_likelihood(self, contexts: Contexts, atoms):
        """[G] log P(labels | atom) of Bradley-Terry users with the atom's utility and a learned
        rationality beta and flip rate. 0 with no valid contexts."""
        mean, std = self.cfg.log_cost_mean, self.cfg.log_cost_std
        cost = lambda o: 10.0 ** (o[:, 1] * std + mean)  # noqa: E731  (standardised log10 -> USD)
        u_a = atoms.utilities(contexts.outcome_a[:, 0], cost(contexts.outcome_a), contexts.family)   # [G, N]
        u_b = atoms.utilities(contexts.outcome_b[:, 0], cost(contexts.outcome_b), contexts.family)
        flip = 0.5 * jax.nn.sigmoid(self.flip_logit[...])
        return label_log_likelihood(u_a - u_b, contexts.label, contexts.mask, jnp.exp(self.log_beta[...]), flip)

    def __call__(self, contexts: Contexts, descriptors):
        """contexts: one user's ([N, ...]); descriptors: [K, Dd]. Returns (mean [Z], logvar [Z])."""
        feats = self._per_context(contexts, descriptors)                                    # [N, H]
        mask = contexts.mask.astype(feats.dtype)
        n = mask.sum()
        if self.cfg.gaussian:
            mu_i, logvar_i = jnp.split(self.per_context(feats), 2, axis=-1)                # [N, Z] each
            prec_i = jnp.exp(-jnp.clip(logvar_i, -6.0, 6.0)) * mask[:, None]
            precision = 1.0 + prec_i.sum(0)           # N(0, I) prior times each context's Gaussian
            mean = (prec_i * mu_i).sum(0) / precision
            return mean, -jnp.log(precision)
        pooled = self.per_context.weighted_sum(feats, mask / jnp.maximum(n, 1.0))           # masked mean [H]
        count = jnp.log1p(n)[None] / COUNT_SCALE  # how much evidence; independent of the capacity
        z = self.head2(jax.nn.gelu(self.head1(jnp.concatenate([pooled, count]))))
        return z, jnp.zeros_like(z)

    def utility(self, query_emb, descriptor, outcome, latent):
        """v_psi: scalar learned utility of one answer (query [D], descriptor [Dd], outcome [2]).

        It reads the query whatever `context_query` says (that flag governs the per-context
        features the posterior is computed from): it serves the auxiliary pair loss and the
        inner refinement steps (`inner_steps` > 0, where the refined latent therefore depends on
        the contexts' queries)."""
        x = jnp.concatenate([self.query(query_emb), descriptor, self._outcome(outcome), latent], -1)
        return self.util2(jax.nn.gelu(self.util1(x)))[0]


class Policy(nnx.Module):
    """score_k = <w(z), psi(h(x), d_k)>: the user's weights over R learned utility components.

    psi, one shared network over (query features, model descriptor), describes each candidate
    answer by R components (R = latent_dim), the same for every user; the latent only weighs
    them (w is linear in z). A linear user's utility q - lam * c is such a form with R = 2,
    and because scores are linear in w, a posterior mixture of users is exactly one weight
    vector: sum_g p_g <w_g, psi> = <sum_g p_g w_g, psi> (the Bayes decision, DESIGN.md 9).

    With `family_quality`, psi also reads one number per (query, model): the model's descriptor
    quality on the query's own task family. The descriptors hold one quality column per family,
    and a column of a family the router never trained on is an input it never learned to read;
    this feature is the same input for every family, so calibration answers on a new family
    reach the policy (measured by experiments/ood_calibrated.py).
    """

    def __init__(self, cfg: NetworkConfig, rngs: nnx.Rngs):
        self.query = _dense(cfg.embed_dim, cfg.query_dim, rngs)
        # The first layer on concat(h, d) is split by input, so the per-query and per-model
        # parts are computed once and broadcast (same function, less work).
        self.in_query = _dense(cfg.query_dim, cfg.hidden, rngs)
        self.in_model = _dense(cfg.descriptor_dim, cfg.hidden, rngs, bias=False)
        self.hidden = _dense(cfg.hidden, cfg.hidden, rngs)
        self.components = _dense(cfg.hidden, cfg.latent_dim, rngs, bias=False)
        self.weights = _dense(cfg.latent_dim, cfg.latent_dim, rngs)  # latent -> routing weights
        # Last, so that routers without it draw every other initial weight as before.
        self.in_family = _dense(1, cfg.hidden, rngs, bias=False) if cfg.family_quality else None
        # Trained by TrainConfig.answer_weight's supervised loss only; routing never reads it.
        self.readout = _dense(cfg.latent_dim, 2, rngs) if cfg.answer_readout else None
        # TrainConfig.model_identity: one free vector per model of the training set, added to its
        # descriptor's part of the first layer (zero at the start: the descriptor alone).
        self.in_identity = nnx.Param(jnp.zeros((cfg.num_models, cfg.hidden))) if cfg.num_models else None

    def query_features(self, query_emb):
        """[..., D] -> [..., H]: the query pathway, computable once per query."""
        return self.in_query(jax.nn.gelu(self.query(query_emb)))

    def answer_components(self, query_features, descriptors, family=None):
        """query_features [H], descriptors [K, Dd] -> [K, R] components of each candidate answer.

        family: the query's task-family id (scalar int; -1 or None: unknown), read only with
        `family_quality`.
        """
        h = query_features[None, :] + self.in_model(descriptors)
        if self.in_identity is not None:
            if descriptors.shape[0] != self.in_identity.shape[0]:
                raise ValueError(f"this policy learned a vector for each of its {self.in_identity.shape[0]} models "
                                 f"(model_identity), got descriptors of {descriptors.shape[0]}")
            h = h + self.in_identity[...]
        if self.in_family is not None:
            h = h + self.in_family(own_family_quality(descriptors, family)[:, None])
        return self.components(jax.nn.gelu(self.hidden(jax.nn.gelu(h))))

    def routing_weights(self, latent):
        """[Z] latent -> [R] routing weights (affine: mixtures of latents mix the weights)."""
        return self.weights(latent)

    def __call__(self, query_features, routing_weights, descriptors, family=None):
        """query_features [H], routing weights [R], descriptors [K, Dd] -> scores [K]."""
        return self.answer_components(query_features, descriptors, family) @ routing_weights


def own_family_quality(descriptors, family):
    """[K] each model's descriptor quality on one query's task family (descriptors [K, 1 + F]).

    Descriptor columns are centred over the models, so an unknown family (-1 or None) and a
    family absent from the calibration split both read 0: no model stands out.
    """
    descriptors = jnp.asarray(descriptors)
    if family is None:
        return jnp.zeros(descriptors.shape[:1], descriptors.dtype)
    family = jnp.asarray(family)
    column = descriptors[:, 1 + jnp.clip(family, 0, descriptors.shape[1] - 2)]
    return jnp.where(family >= 0, column, 0.0)


class ProfileEmbedding(nnx.Module):
    """Known-preference router input: profile features -> latent."""

    def __init__(self, cfg: NetworkConfig, rngs: nnx.Rngs):
        self.layer1 = _dense(cfg.profile_feature_dim, cfg.hidden, rngs)
        self.layer2 = _dense(cfg.hidden, cfg.latent_dim, rngs)

    def __call__(self, features):
        return self.layer2(jax.nn.gelu(self.layer1(features)))


class RouterNet(nnx.Module):
    """Everything one router learns: encoder (with utility head), policy, profile heads."""

    def __init__(self, cfg: NetworkConfig, rngs: nnx.Rngs):
        self.encoder = ContextEncoder(cfg, rngs)
        self.policy = Policy(cfg, rngs)
        self.profile_embedding = ProfileEmbedding(cfg, rngs)
        self.profile_head = _dense(cfg.encoder_dim, cfg.profile_target_dim, rngs)

    def policy_latent(self, inferred):
        """The routing weights [R] for the encoder's output."""
        latent = self.profile_embedding(inferred) if self.encoder.cfg.profile_latent else inferred
        return self.policy.routing_weights(latent)

    def known_latent(self, features):
        """The routing weights [R] of a known profile (its features)."""
        return self.policy.routing_weights(self.profile_embedding(features))

    def prior_latent(self):
        """The routing weights [R] of a router that sees no preference at all."""
        return self.policy.routing_weights(jnp.zeros((self.encoder.cfg.latent_dim,)))


def init_router_net(cfg: NetworkConfig, key) -> tuple[nnx.GraphDef, nnx.State]:
    """Build a RouterNet from a PRNG key and split it into (graphdef, params).

    Traceable in `key`, so a training function that calls it can be vmapped over seeds.
    """
    return nnx.split(RouterNet(cfg, nnx.Rngs(params=key)))


def router_graphdef(cfg: NetworkConfig) -> nnx.GraphDef:
    """The RouterNet structure alone, traced abstractly (no parameters are computed)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: RouterNet(cfg, nnx.Rngs(params=0))))
    return graphdef
