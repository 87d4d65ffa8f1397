"""Evaluation: normalised utility and preference recovery PR(n), against every baseline.

Test users are profiles drawn from the router's prior (or another `profiles`), simulated as
Bradley-Terry users (beta = 10, 5% label flips by default) giving feedback on queries of the
evaluation split. Each user's contexts are drawn once at the largest n and nested (the first
n are the n-context set), so the curve over n is not blurred by resampling. With the `active`
strategy they are asked one at a time, each at the median log10(lam) of the MetaRouter's
posterior after the answers so far, and every method reads those same contexts. Every query of
the split is routed by argmax among the pool's models observed for that query; a query with no
such model is left out (the report's n_queries counts the rest).

Per user: normalised utility NU = (U - U_random) / (U_oracle - U_random), with U the mean
(scale-normalised) utility of the routed answers. Reported: mean NU over users, PR(n) =
(NU(n) - NU_agnostic) / (NU_known - NU_agnostic) of those means, and the mean quality and
mean cost (USD) of the routed answers. Beside them, how well the n contexts identify the
preference: the mean absolute error (decades) of the posterior mean of log10(lam), under the
exact grid posterior and under the MetaRouter's atomic posterior, and the exact posterior's
standard deviation (`EvalReport.identification`). And how well each method predicts the user's
own answers: its accuracy on the labels of `HELD_OUT_PAIRS` further pairs drawn like the
contexts (`pair_accuracy`, for the methods of `PAIR_METHODS`; the MetaRouter's prediction is
its posterior predictive, the posterior with the pair added answered a against answered b),
and the same on the held-out pairs none of the n contexts asked (`pair_accuracy_unseen`: the
same query and models, with the same outcomes, in either order count as asked; a mean over the
users that have such a pair), since drawn pairs repeat: with informative pairs about a fifth of the held-out pairs
repeat one of the first six contexts, whose answer a method that memorises answers knows
(`EvalReport.held_out`: the share asked and the users left, per strategy and n).

Beside the Bradley-Terry plug-ins, the routing literature's baselines (`reference_routers`):
kNN and MLP predictors of quality and cost with the true profile (`knn_known`, `mlp_known`) or
the posterior-mean estimate (`knn_posterior`, `mlp_posterior`) plugged in, the MLP's Bayes
decision under the exact posterior (`mlp_bayes`, beside `bt_bayes`), LinUCB fed the same
answers (`linucb`) and a network trained on one user's answers alone (`scratch`);
`reference=False` leaves them out (`REFERENCE_METHODS`).

With `bands`, the users are drawn band by band (`n_users` in each equal or given log10(lam)
band, their other parameters from the prior) and each band gets its own report
(`EvalReport.by_band`): where on the preference range a router wins or loses. The pairs are
chosen as for any user (informative targets over the whole prior range): the band is the
test's, not something the asker knows. The overall report averages the bands' users, a
stratified draw from the prior when the bands are equal.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from metarouter_jax import adaptation, baselines, checkpoint, reference_routers
from metarouter_jax.contexts import (ACTIVE_STRATEGIES, PAIR_STRATEGIES, PairSource, sample_active_contexts,
                                     sample_contexts)
from metarouter_jax.data import RoutingData
from metarouter_jax.profiles import make_profiles
from metarouter_jax.streams import seed_key
from metarouter_jax.tasks import query_utility, utility_scale
from metarouter_jax.training import calibration_queries

DEFAULT_N_CONTEXTS = (0, 1, 2, 4, 6, 8, 16, 32)
ADAPTIVE = ("metarouter", "bt_posterior", "bt_mle", "bt_bayes", "bt_marginal",
            "knn_posterior", "mlp_posterior", "mlp_bayes", "linucb", "scratch")
FLAT = ("random", "best_fixed", "agnostic", "known", "knn_known", "mlp_known")
METHODS = ADAPTIVE + FLAT
METRICS = ("normalized_utility", "preference_recovery", "quality", "cost")
IDENTIFICATION = ("bt_posterior_error", "bt_posterior_sd", "metarouter_error")
PAIR_METHODS = ("metarouter", "bt_posterior", "bt_mle", "bt_bayes", "bt_marginal", "linucb", "scratch", "known")
# The routing literature's baselines (`reference_routers`), left out by `evaluate(..., reference=False)`.
REFERENCE_METHODS = ("knn_posterior", "mlp_posterior", "mlp_bayes", "linucb", "scratch", "knn_known", "mlp_known")
HELD_OUT_PAIRS = 16   # per user, drawn like its contexts (informative for `active`), labelled by the user


@dataclasses.dataclass
class EvalReport:
    """results[strategy][method][n] = {metric: value}; flat baselines repeat over n.

    identification[strategy][n] = {name: decades} for the names of `IDENTIFICATION`: the mean
    absolute error of the posterior mean of log10(lam) (exact grid posterior; the MetaRouter's
    atomic posterior, NaN without atoms) and the exact posterior's standard deviation.
    held_out[strategy][n] = {"asked_share": the share of the users' valid held-out pairs that one
    of their n contexts asked (`asked_pairs`; NaN where no user had a valid held-out pair),
    "users_with_unasked": how many users have a pair none asked, the users `pair_accuracy_unseen`
    averages over}.
    by_band: {"lo-hi": EvalReport} when evaluated by log10(lam) band, else empty."""

    results: dict
    settings: dict
    identification: dict = dataclasses.field(default_factory=dict)
    by_band: dict = dataclasses.field(default_factory=dict)
    held_out: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {s: _n_as_str(methods) for s, methods in self.results.items()}   # {method: {n: metrics}}

    def identification_json(self) -> dict:
        """`identification` with string keys for n (as `to_json`)."""
        return _n_as_str(self.identification)

    def held_out_json(self) -> dict:
        """`held_out` with string keys for n (as `to_json`)."""
        return _n_as_str(self.held_out)

    def banded_json(self) -> dict:
        """{all: to_json(), by_band: {band: its to_json()}, identification, held_out, bands: the
        edges}, for a report evaluated by log10(lam) band."""
        if not self.by_band:
            raise ValueError("this report was not evaluated by band: evaluate(..., bands=B)")
        return {"all": self.to_json(), "by_band": {b: r.to_json() for b, r in self.by_band.items()},
                "identification": self.identification_json(), "held_out": self.held_out_json(),
                "bands": self.settings["bands"]}

    def write_json(self, path) -> None:
        """Write `to_json()`, or `banded_json()` for a report by band, to `path` (its folder made if
        missing; atomically)."""
        checkpoint.write_json(path, self.banded_json() if self.by_band else self.to_json())

    def table(self, strategy: str, metric: str = "normalized_utility") -> str:
        """A text table: methods x n for one pair strategy and metric (the methods that have it)."""
        methods = {m: by_n for m, by_n in self.results[strategy].items() if metric in next(iter(by_n.values()))}
        ns = sorted(next(iter(methods.values())))
        head = f"{'method':<14}" + "".join(f"{'n=' + str(n):>8}" for n in ns)
        rows = [head, "-" * len(head)]
        for method, by_n in methods.items():
            rows.append(f"{method:<14}" + "".join(f"{by_n[n][metric]:>8.3f}" for n in ns))
        return "\n".join(rows)

    def format(self) -> str:
        out = []
        for strategy in self.results:
            s = self.settings
            out.append(f"pair strategy: {strategy}  (users={s['n_users']}, queries={s['n_queries']}, "
                       f"split={s['split']}, beta={s['beta']}, flip={s['flip']}, profile={s['profile']})")
            out.append("normalised utility")
            out.append(self.table(strategy, "normalized_utility"))
            out.append("preference recovery PR(n)")
            out.append(self.table(strategy, "preference_recovery"))
            out.append(f"accuracy on the user's labels of {HELD_OUT_PAIRS} held-out pairs drawn like the contexts")
            out.append(self.table(strategy, "pair_accuracy"))
            out.append("the same on the held-out pairs that none of the n contexts asked (same query and models)")
            out.append(self.table(strategy, "pair_accuracy_unseen"))
            if strategy in self.held_out:
                out.append("share of the held-out pairs a context asked (users with a pair none asked)")
                out.append("  ".join(f"n={n}: {v['asked_share']:.1%} ({v['users_with_unasked']})"
                                     for n, v in self.held_out[strategy].items()))
            if strategy in self.identification:
                out.append("error of the posterior mean of log10(lam), decades (exact posterior sd)")
                out.append("  ".join(f"n={n}: {v['bt_posterior_error']:.2f} ({v['bt_posterior_sd']:.2f})"
                                     for n, v in self.identification[strategy].items()))
            out.append("")
        for band, report in self.by_band.items():
            for strategy, methods in report.results.items():
                out.append(band_line(band, strategy, methods, lambda m: f"{m['normalized_utility']:.3f}"))
        return "\n".join(out)


def _n_as_str(by_strategy: dict) -> dict:
    """{key: {n: value}} with n as strings, the JSON form of `EvalReport`'s per-n tables."""
    return {s: {str(n): v for n, v in by_n.items()} for s, by_n in by_strategy.items()}


def band_line(band: str, strategy: str, methods: dict, cell) -> str:
    """One band's line of a report by band: `cell(metrics)` of the known router, the best fixed
    model, the agnostic router and the MetaRouter, the adaptive one at the largest n."""
    ns = sorted(next(iter(methods.values())))
    return (f"log10(lam) {band}, {strategy}: "
            + ", ".join(f"{m} {cell(methods[m][ns[-1] if m in ADAPTIVE else ns[0]])}"
                        for m in ("known", "best_fixed", "agnostic", "metarouter"))
            + f" (adaptive at n={ns[-1]})")


def evaluate(router, data: RoutingData, split: str = "test", n_contexts=DEFAULT_N_CONTEXTS, n_users: int = 256,
             seed: int = 0, strategies=PAIR_STRATEGIES, pool=None, beta: float = 10.0, flip: float = 0.05,
             profiles=None, user_batch: int = 16, bands=None, reference: bool = True) -> EvalReport:
    """Evaluate a fitted `MetaRouter` (with its known/agnostic companions) on `data[split]`.

    `n_contexts` is a number of contexts or a sequence of them, `strategies` a pair strategy or
    a sequence of them, `profiles` the test users' profile family (an object or a registered name,
    default the router's), `beta` > 0 and `flip` in [0, 0.5) their Bradley-Terry rationality and
    label-flip rate. `seed` draws the test users, from a stream of their own
    (`streams.STREAMS["test_users"]`), apart from the keys the routers of a `fit(seed=...)`
    trained with; a larger `n_users` extends the same draw (the first 256 of 1,024 users are the
    256). `data` may hold another set of models than the router was trained on (a changed pool);
    `pool` then names or indexes `data`'s models. `bands` (an int, or increasing log10(lam) edges
    inside the test profiles' range) evaluates `n_users` users in each band and reports each
    band on its own (`by_band`). `reference=False` leaves out the routing literature's baselines
    (`REFERENCE_METHODS`: their predictor fits and per-user training are most of the evaluation's
    compilation on a small router); the other methods' figures are the same either way.

    The routers' arrays and the data are arguments of the compiled program: a later call that
    agrees on the network, the profile families, `n_contexts`, `beta`, `flip`, `reference`,
    `user_batch` and the arrays' shapes (another seed's router, other test users) does not compile."""
    for name in ("known", "agnostic"):
        if name not in router.params:
            raise ValueError(f"evaluation needs the {name!r} companion router: fit with companions=True")
    if not isinstance(reference, (bool, np.bool_)):
        raise TypeError(f"reference must be True or False (the routing literature's baselines), got {reference!r}")
    strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
    if not strategies:
        raise ValueError(f"strategies is empty: give at least one of {PAIR_STRATEGIES + ACTIVE_STRATEGIES}")
    unknown = [s for s in strategies if s not in PAIR_STRATEGIES + ACTIVE_STRATEGIES]
    if unknown:
        raise ValueError(f"unknown pair strategies {unknown}; known: {PAIR_STRATEGIES + ACTIVE_STRATEGIES}")
    if "active" in strategies and router.atoms is None:
        raise ValueError("the 'active' pair strategy asks at the median of the MetaRouter's posterior: it needs "
                         "an atomic-posterior router (posterior_atoms > 0), this one has posterior_atoms=0")
    counts = np.atleast_1d(n_contexts)  # a string becomes a one-string array: refused as not integers
    if counts.size == 0:
        raise ValueError("n_contexts is empty: give at least one number of contexts")
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
        raise TypeError(f"n_contexts must be an int or a sequence of ints, got {n_contexts!r}")
    n_contexts = tuple(counts.tolist())
    if min(n_contexts) < 0:
        raise ValueError(f"numbers of contexts must be >= 0, got {n_contexts}")
    if not isinstance(user_batch, (int, np.integer)) or user_batch < 1:
        raise ValueError(f"user_batch (users evaluated side by side) must be an integer >= 1, got {user_batch!r}")
    if not isinstance(n_users, (int, np.integer)) or isinstance(n_users, (bool, np.bool_)):
        raise TypeError(f"n_users must be an integer (users per band with bands), got {n_users!r}")
    if int(n_users) < 1:
        raise ValueError(f"n_users must be >= 1 (the metrics are means over users), got {n_users}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta (the test users' rationality) must be a finite number > 0, got {beta}")
    if not 0.0 <= flip < 0.5:  # at 1/2 a label says nothing of the user's preference
        raise ValueError(f"flip (the test users' label-flip probability) must be in [0, 0.5), got {flip}")
    if data.split(router.config.train_split).size == 0:
        raise ValueError(f"split {router.config.train_split!r} of the data is empty: the test users' utility scales "
                         "are measured on the router's training split, as in training")
    if isinstance(profiles, str):  # a registered family over the router's log10(lam) range
        profiles = make_profiles(profiles, data, log10_lam_range=router.profiles.log10_lam_range)
    if data.model_names != router.model_names:  # another model set: described in the router's units
        router = router.with_models(data)
    profiles = profiles or router.profiles
    edges = band_edges(bands, profiles.log10_lam_range)
    arrays = router.arrays_for(data)
    pool_mask = router.pool_mask(pool)
    pool_names = [m for m, keep in zip(router.model_names, pool_mask) if keep]
    split_queries = data.split(split)
    routable = split_queries[(data.observed[split_queries] & pool_mask).any(-1)]
    if routable.size == 0:
        raise ValueError(f"no query of split {split!r} ({split_queries.size} queries) has a model of the pool "
                         f"{pool_names} observed: nothing to evaluate")
    queries = jnp.asarray(routable)
    calib = jnp.asarray(calibration_queries(data, router.config))  # the scales users were trained with
    grid = baselines.lam_grid(router.profiles)
    # bt_marginal knows only the training users' noise prior, as the MetaRouter does.
    flip_max = float(router.hparams.flip_max) if router.config.label_flips else 0.0
    if reference:
        predictors, principal = reference_fits(router, data, arrays, routable, seed, pool_mask)
        predictors = tuple((p.quality, p.cost) for p in predictors)
    else:
        predictors, principal = (), None
    program = _Program(graphdef=router.graphdef, router_profiles=router.profiles, profiles=profiles,
                       inner_steps=router.config.inner_steps, first_order=router.config.first_order,
                       n_contexts=n_contexts, beta=float(beta), flip=float(flip), reference=bool(reference),
                       user_batch=int(user_batch))
    env = {"params": router.params, "arrays": arrays, "queries": queries, "source": PairSource.build(arrays, routable),
           "calib": calib, "pool_mask": jnp.asarray(pool_mask), "grid": grid,
           "grid_scales": baselines.grid_scales(router.profiles, arrays, calib, grid),
           "noise": baselines.noise_quadrature(router.config.beta_range, flip_max), "atoms": router.atoms,
           "family": arrays.family[queries] if router.net_config.family_quality else None,   # read by that policy only
           "predictors": predictors, "principal": principal}
    adaptive_methods, flat_methods, pair_methods = (
        tuple(m for m in methods if reference or m not in REFERENCE_METHODS) for methods in (ADAPTIVE, FLAT, PAIR_METHODS))
    n_queries = int(queries.shape[0])
    keys, user_bands = user_keys(seed, n_users, edges)
    per_user = {}
    for strategy in strategies:   # one compiled program serves both up-front strategies (a traced switch)
        per_user[strategy] = _users(program, env, keys, user_bands, jnp.asarray(strategy == "informative"),
                                    active=strategy == "active")
        # per user: adaptive [U, n, ADAPTIVE, 3], flat [U, FLAT, 3], identification [U, n, 3]
    settings = {"split": split, "n_users": n_users * (1 if edges is None else len(edges) - 1), "n_queries": n_queries,
                "seed": seed, "beta": beta, "flip": flip, "profile": profiles.name,
                "n_contexts": sorted(set(n_contexts)), "pool": pool_names, "reference": reference}
    if edges is not None:
        settings["bands"] = edges.tolist()
    methods = (adaptive_methods, flat_methods, pair_methods)
    report = _report(per_user, slice(None), n_contexts, settings, methods)
    if edges is not None:
        common = {k: v for k, v in settings.items() if k != "bands"} | {"n_users": n_users}
        for b, label in enumerate(band_labels(edges)):
            report.by_band[label] = _report(per_user, slice(b * n_users, (b + 1) * n_users), n_contexts,
                                            {**common, "log10_lam_band": edges[b:b + 2].tolist()}, methods)
    return report


def _hashable(value):
    """`value`, or where it cannot be hashed (a user's profile family holding a list, say) a key
    of its identity: such a value compiles a program per object, as every call did before."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("object", id(value))


@dataclasses.dataclass(frozen=True, eq=False)
class _Program:
    """What `evaluate`'s compiled program depends on beside the shapes of its arrays (`_users`'
    static argument). The routers' parameters and the data enter as arguments, so calls that
    agree on these (each seed of an experiment, a router evaluated again, another split of the
    same size) share one compilation, in jit's cache and in the persistent compilation cache;
    closed over as constants, they made every call compile its own program (4.3 of 5.0 s on the
    README's small router)."""

    graphdef: nnx.GraphDef     # the routers' network (one structure for the three)
    router_profiles: object    # the router's profile family: the known router's inputs, the plug-ins' profiles
    profiles: object           # the test users' profile family
    inner_steps: int
    first_order: bool
    n_contexts: tuple          # the numbers of contexts reported
    beta: float                # the test users' rationality and label-flip rate
    flip: float
    reference: bool            # with the routing literature's baselines
    user_batch: int            # users evaluated side by side

    def _key(self) -> tuple:
        return tuple(_hashable(getattr(self, f.name)) for f in dataclasses.fields(self))

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return type(other) is _Program and self._key() == other._key()


@functools.partial(jax.jit, static_argnames=("program", "active"))
def _users(program: _Program, env: dict, keys, bands, informative, active: bool = False):
    """Every test user's figures: (adaptive [U, n, ADAPTIVE, 3], flat [U, FLAT, 3], identification
    [U, n, 3], pair accuracy [U, n, 2, PAIR_METHODS]: on every held-out pair, on those no context
    asked, and the number of those and of all valid held-out pairs [U, n, 2]), users drawn from `keys` [U] (and `bands` [U, 2] or None), their pairs informative
    where `informative` (a traced bool) or asked one at a time (`active`). `env` holds the
    arrays `evaluate` prepared (see there)."""
    graphdef, router_profiles, profiles = program.graphdef, program.router_profiles, program.profiles
    inner_steps, first_order, reference = program.inner_steps, program.first_order, program.reference
    n_contexts, beta, flip = program.n_contexts, program.beta, program.flip
    params, arrays, atoms, queries, source = (env[k] for k in ("params", "arrays", "atoms", "queries", "source"))
    calib, pool_mask, grid, grid_scales, family = (env[k] for k in ("calib", "pool_mask", "grid", "grid_scales",
                                                                    "family"))
    predictors, principal = env["predictors"], env["principal"]
    allowed = arrays.observed[queries] & pool_mask                                   # [Q, K]
    capacity = max(max(n_contexts), 1)

    def known_latent(profile_):
        """The known router's routing weights for a profile of the router's family."""
        return adaptation.profile_latent(graphdef, params["known"], router_profiles.features(profile_))

    def as_router_profile(profile_):
        """A test user (of `profiles`) as the router's family holds them: its log10(lam), and of
        the router's other parameters those the user has (the rest at the family's linear-user
        values: a budget router reads a linear user at the loosest cap of its prior)."""
        base = router_profiles.linear_profile(profile_["log10_lam"])
        return {name: profile_.get(name, value) for name, value in base.items()}

    grid_latents = jax.vmap(lambda lam: known_latent(router_profiles.linear_profile(lam)))(grid)   # [G, R]

    def bayes_log10_lam(weights):
        """The lam whose plug-in profile is the Bayes decision on predicted utilities under grid
        posterior `weights`: lam enters the utility linearly, and each user's utility is divided by
        their scale (the metric's normalisation), so the posterior mean of lam under weights / scale."""
        w = weights / grid_scales
        return jnp.log10(w @ 10.0 ** grid / w.sum())
    noise_betas, noise_flips = env["noise"]
    emb = arrays.embeddings[queries]
    feats = {name: adaptation.query_features(graphdef, params[name], emb) for name in ("metarouter", "known", "agnostic")}
    if reference:
        query_principal = principal(emb)                                             # [Q, F]
    num_models = arrays.observed.shape[1]

    def masked_argmax(scores):
        """[Q] each query's allowed model of the highest score [Q, K]."""
        return jnp.argmax(jnp.where(allowed, scores, -jnp.inf), -1)

    def predicted_choice(prediction, utility_of, profile_):
        quality, cost = prediction   # a predictor's [Q, K] estimates
        return masked_argmax(jax.vmap(utility_of, in_axes=(None, 0, 0, 0))(
            profile_, quality, cost, arrays.family[queries]))

    def route(name, z):
        axes = (None, None, 0, None, None, adaptation.family_axis(family))
        return masked_argmax(jax.vmap(adaptation.policy_scores, in_axes=axes)(
            graphdef, params[name], feats[name], z, arrays.descriptors, family))

    # The same for every user: random routing's quality and cost, the agnostic router's choices.
    mean_allowed = lambda x: jnp.mean((x * allowed).sum(-1) / allowed.sum(-1))  # noqa: E731
    rand = jnp.stack([jnp.zeros(()), mean_allowed(arrays.quality[queries]), mean_allowed(arrays.cost[queries])])
    agnostic = route("agnostic", adaptation.prior_latent(graphdef, params["agnostic"]))

    def one_user(key, band, informative, active=False):
        profile, key_ctx = draw_user(profiles, key, band)
        key_reference = jax.random.fold_in(key, 2)   # LinUCB's tie-breaks, the per-user network's initialisation
        true_lam = profile["log10_lam"]
        scale = utility_scale(profiles, profile, arrays, calib)
        u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries) / scale
        if active:
            def next_target(ctx):
                weights = adaptation.posterior_weights(graphdef, params["metarouter"], ctx, arrays.descriptors,
                                                       atoms, inner_steps,
                                                       first_order)
                return adaptation.posterior_median_log10_lam(weights, atoms)

            ctx_full = sample_active_contexts(key_ctx, profiles, profile, arrays, source, pool_mask,
                                              capacity=capacity, scale=scale, beta=beta, flip=flip,
                                              next_target=next_target)
        else:
            ctx_full = sample_contexts(key_ctx, profiles, profile, arrays, source, pool_mask, count=capacity,
                                       capacity=capacity, scale=scale, beta=beta, flip=flip, informative=informative,
                                       target_range=router_profiles.log10_lam_range)
        held = sample_contexts(jax.random.fold_in(key, 3), profiles, profile, arrays, source, pool_mask,
                               count=HELD_OUT_PAIRS, capacity=HELD_OUT_PAIRS, scale=scale, beta=beta, flip=flip,
                               informative=True if active else informative,
                               target_range=router_profiles.log10_lam_range)
        held_principal = principal(held.query_emb) if reference else None
        asked = asked_pairs(ctx_full, held)                                          # [capacity, H]

        def held_gap(family_, profile_):
            """[H] a profile's utility of answer a minus answer b on each held-out pair."""
            utility = lambda o: family_.utility(profile_, o[:, 0], arrays.usd_cost(o), held.family)  # noqa: E731
            return utility(held.outcome_a) - utility(held.outcome_b)

        # The same at every n: the exact posterior's per-grid-point predictions, the true profile's gap.
        grid_predictions = jax.nn.sigmoid(beta * baselines.grid_gaps(held, arrays, grid, grid_scales))  # [G, H]
        known_gap = held_gap(profiles, profile)

        if atoms is not None:
            encoder = nnx.merge(graphdef, params["metarouter"]).encoder
            singles = jax.tree.map(lambda x: x[:, None], held)                 # H one-pair context sets

            def pair_ll(y):
                """[H, G] each atom's log-likelihood of each held-out pair answered y (1: a)."""
                labelled = singles.replace(label=jnp.full((HELD_OUT_PAIRS, 1), y),
                                           mask=jnp.ones((HELD_OUT_PAIRS, 1), bool))
                return jax.vmap(lambda c: encoder.posterior_logits(c, arrays.descriptors, atoms)
                                - encoder.prior_logits[...])(labelled)

            held_ll = (pair_ll(1.0), pair_ll(0.0))

        def metarouter_pair_logits(atom_weights):
            """The atomic posterior's predictive log-odds of "a preferred" for each held-out pair:
            the posterior with the pair added labelled a, against it labelled b."""
            log_w = jnp.log(jnp.maximum(atom_weights, 1e-30))
            return (jax.nn.logsumexp(log_w + held_ll[0], -1) - jax.nn.logsumexp(log_w + held_ll[1], -1))

        u_random, u_oracle, model_means = baselines.hindsight(u, allowed)

        def outcome(choice):
            take = lambda x: jnp.take_along_axis(x, choice[:, None], 1)[:, 0].mean()  # noqa: E731
            return jnp.stack([defined_rescale(take(u), u_random, u_oracle), take(arrays.quality[queries]),
                              take(arrays.cost[queries])])

        def known_choice(profile_):
            return route("known", known_latent(profile_))

        def at_n(n):
            ctx = ctx_full.replace(mask=ctx_full.mask & (jnp.arange(capacity) < n))  # drawn pairs left out stay out
            if atoms is None:
                z = adaptation.adapt(graphdef, params["metarouter"], ctx, arrays.descriptors,
                                     inner_steps, first_order)
                metarouter_lam, atom_weights = jnp.nan, None
            else:  # what `adapt` returns, with the atom posterior beside it
                z, atom_weights = adaptation.atomic_latent(graphdef, params["metarouter"], ctx, arrays.descriptors,
                                                           atoms, inner_steps,
                                                           first_order)
                metarouter_lam = atom_weights @ atoms.log10_lam
            mle, post, weights = baselines.bt_estimates(ctx, arrays, grid, grid_scales, beta, flip)
            marginal = baselines.marginal_posterior_mean(ctx, arrays, grid, grid_scales, noise_betas, noise_flips)
            post_profile = router_profiles.linear_profile(post)
            routed = [outcome(route("metarouter", z)),
                      outcome(known_choice(post_profile)),
                      outcome(known_choice(router_profiles.linear_profile(mle))),
                      outcome(route("known", weights @ grid_latents)),
                      outcome(known_choice(router_profiles.linear_profile(marginal)))]
            # Held-out answers: each method's logit of "a preferred" (> 0: it predicts a).
            logits = [
                metarouter_pair_logits(atom_weights) if atoms is not None else jnp.full(HELD_OUT_PAIRS, jnp.nan),
                held_gap(router_profiles, post_profile), held_gap(router_profiles, router_profiles.linear_profile(mle)),
                jax.scipy.special.logit(jnp.clip(weights @ grid_predictions, 1e-6, 1 - 1e-6)),
                held_gap(router_profiles, router_profiles.linear_profile(marginal))]
            if reference:
                ctx_principal = principal(ctx.query_emb)
                linucb_fitted = reference_routers.linucb_fit(ctx, ctx_principal, num_models)
                linucb = reference_routers.linucb_scores(linucb_fitted, query_principal, key_reference)
                scratch_params = reference_routers.scratch_fit(ctx, ctx_principal, arrays.descriptors, key_reference)
                scratch = reference_routers.scratch_scores(scratch_params, query_principal, arrays.descriptors)
                routed += [*(outcome(predicted_choice(p, router_profiles.utility, post_profile)) for p in predictors),
                           outcome(predicted_choice(predictors[1], router_profiles.utility,
                                                    router_profiles.linear_profile(bayes_log10_lam(weights)))),
                           outcome(masked_argmax(linucb)), outcome(masked_argmax(scratch))]
                held_values = reference_routers.linucb_means(linucb_fitted[0], held_principal)    # [H, K]
                pairs = jnp.arange(HELD_OUT_PAIRS)
                logits += [held_values[pairs, held.model_a] - held_values[pairs, held.model_b],
                           reference_routers.scratch_pair_logits(scratch_params, held_principal, arrays.descriptors,
                                                                 held)]
            identified = jnp.stack([jnp.abs(post - true_lam), jnp.sqrt(weights @ (grid - post) ** 2),
                                    jnp.abs(metarouter_lam - true_lam)])
            # [adaptive methods, 3], [3], [2, pair methods]: on every held-out pair; on those no context
            # asked, and how many of those there are (a method's own NaN stays NaN, as above)
            logits = jnp.stack(logits + [known_gap])
            unseen = held.replace(mask=held.mask & ~(asked & ctx.mask[:, None]).any(0))
            accuracy = jnp.stack([pair_accuracy(logits, held), pair_accuracy(logits, unseen)])
            return jnp.stack(routed), identified, accuracy, jnp.stack([unseen.mask.sum(), held.mask.sum()])

        # [n, ADAPTIVE, 3], [n, 3], [n, 2, P], [n, 2]
        adaptive, identified, accuracy, unasked = jax.lax.map(at_n, jnp.asarray(n_contexts))
        # Best fixed model in hindsight; where it is unobserved, the best observed one.
        fixed = baselines.best_fixed_choice(model_means, allowed)
        random_row = rand.at[0].set(defined_rescale(u_random, u_random, u_oracle))   # 0, or NaN if undefined
        flat = jnp.stack([random_row, outcome(fixed), outcome(agnostic), outcome(known_choice(as_router_profile(profile))),
                          *(outcome(predicted_choice(p, profiles.utility, profile)) for p in predictors)])  # [FLAT, 3]
        return adaptive, flat, identified, accuracy, unasked

    return jax.lax.map(lambda kb: one_user(*kb, informative, active=active), (keys, bands),
                       batch_size=program.user_batch)


def reference_fits(router, data: RoutingData, arrays, queries, seed: int, pool_mask):
    """The routing literature's baselines fitted for `evaluate` (`reference_routers`): the kNN
    and MLP predictors of quality and cost on `queries`, fitted on the training split of the
    router's config with its validation split choosing k and stopping the MLP (the training
    split where that is empty), and the principal-feature map of the training queries. Refused
    (before any fit) where they could only guess: a pool model (`pool_mask` [K]) with no answer
    on those splits, or fewer training queries than principal features."""
    train_q = data.split(router.config.train_split)
    valid_q = data.split(router.config.valid_split) if router.config.valid_split in data.splits else train_q
    valid_q = valid_q if valid_q.size else train_q
    host = [np.asarray(x) for x in (arrays.embeddings, arrays.quality, arrays.cost, arrays.observed)]  # once
    unanswered = [m for m, seen, keep in zip(data.model_names, host[3][np.union1d(train_q, valid_q)].any(0),
                                             np.asarray(pool_mask)) if keep and not seen]
    if unanswered:
        raise ValueError(f"models {unanswered} have no answer on the training and validation splits, on which the "
                         "routing literature's baselines learn each model's quality and cost: evaluate with "
                         "reference=False (metarouter eval --no-reference), or leave them out of the pool")
    if train_q.size <= reference_routers.NUM_FEATURES:
        raise ValueError(f"the routing literature's baselines need more than {reference_routers.NUM_FEATURES} "
                         f"training queries (split {router.config.train_split!r} holds {train_q.size}): evaluate "
                         "with reference=False (metarouter eval --no-reference)")
    train, valid = ([x[q] for x in host] for q in (train_q, valid_q))
    emb = host[0][np.asarray(queries)]
    predictors = (reference_routers.fit_knn(train, valid, emb),
                  reference_routers.fit_mlp(seed_key(seed, "reference_mlp"), train, valid, emb))
    return predictors, reference_routers.principal_features(train[0])


def pair_accuracy(logits, pairs):
    """[M] share of the valid pairs' labels each method's logits [M, H] of "a preferred" predict
    (a logit of exactly 0, a tie, counts half; NaN logits give NaN)."""
    hit = jnp.where(logits == 0, 0.5, ((logits > 0) == (pairs.label > 0.5)).astype(jnp.float32))
    hit = jnp.where(jnp.isnan(logits), jnp.nan, hit)
    mask = pairs.mask.astype(jnp.float32)
    return (hit * mask).sum(-1) / mask.sum()   # NaN where no pair was valid


def asked_pairs(contexts, pairs):
    """[N, H] bool: context i (of `contexts`, one user's, capacity N, its mask ignored) asks the
    user about pair h (of `pairs`, capacity H) already: the same query embedding and the same two
    models with the same outcomes, in either order (two queries of one embedding whose answers
    differ are different questions). Held-out pairs drawn like informative contexts repeat them
    often, which flatters a method that remembers answers (`pair_accuracy_unseen` leaves them out)."""
    same_query = jnp.all(contexts.query_emb[:, None, :] == pairs.query_emb[None, :, :], -1)

    def same(model, outcome, other_model, other_outcome):   # [N, H]
        return ((model[:, None] == other_model) & jnp.all(outcome[:, None, :] == other_outcome[None], -1))

    c, p = contexts, pairs
    in_order = same(c.model_a, c.outcome_a, p.model_a, p.outcome_a) & same(c.model_b, c.outcome_b, p.model_b, p.outcome_b)
    swapped = same(c.model_a, c.outcome_a, p.model_b, p.outcome_b) & same(c.model_b, c.outcome_b, p.model_a, p.outcome_a)
    return same_query & (in_order | swapped)


def user_keys(seed: int, n_users: int, edges=None):
    """The keys of `evaluate`'s test users for `seed`, and each user's band.

    Returns (keys [U], bands [U, 2] (lo, hi) or None): `n_users` users, or `n_users` in each band
    of `edges` (band by band). Each band has its own stream, so a larger `n_users` extends every
    band's draw. `draw_user` turns a key (and band) into the user: a script that draws users
    this way meets the users `evaluate` reports on.
    """
    base = seed_key(seed, "test_users")
    if edges is None:
        return jax.random.split(base, n_users), None   # None, an empty pytree: lax.map hands on band=None
    edges = np.asarray(edges, np.float32)
    keys = jnp.concatenate([jax.random.split(jax.random.fold_in(base, b), n_users) for b in range(len(edges) - 1)])
    bands = jnp.repeat(jnp.stack([edges[:-1], edges[1:]], -1), n_users, axis=0)
    return keys, bands


def draw_user(profiles, key, band=None):
    """One test user from `user_keys`' key: (profile, key for its contexts). The profile is drawn
    from `profiles`; with a band (lo, hi), its log10(lam) is uniform in [lo, hi) instead, and the
    rest of the profile (a budget family's cap, family weights) is drawn independently of it."""
    key_profile, key_contexts = jax.random.split(key)
    if band is None:
        return profiles.sample(key_profile), key_contexts
    # fold_in(k, 1) equals split(k)[1], the key a family's sample draws its second parameter
    # from: the rest of the profile takes fold_in(k, 2), or it would move with log10(lam).
    profile = profiles.sample(jax.random.fold_in(key_profile, 2))
    lo, hi = band
    profile["log10_lam"] = lo + (hi - lo) * jax.random.uniform(jax.random.fold_in(key_profile, 1))
    return profile, key_contexts


def normalized_utility(utility, allowed, choice):
    """Normalised utility of routing query q to model `choice[q]`: the mean utility of the routed
    answers on the scale where uniform random routing among each query's allowed models scores 0
    and the per-query oracle 1 (`baselines.hindsight`). utility [Q, K], allowed [Q, K] bool,
    choice [Q] int. NaN where it is undefined (`defined_rescale`)."""
    u_random, u_oracle, _ = baselines.hindsight(utility, allowed)
    return defined_rescale(jnp.take_along_axis(utility, choice[:, None], 1)[:, 0].mean(), u_random, u_oracle)


def defined_rescale(mean_utility, u_random, u_oracle):
    """`baselines.rescale`, NaN where the scale does not exist: where the per-query oracle is no
    better than random routing (a pool of one model, or allowed models of equal utility on every
    query), every choice scores the same and 0/0 would read as noise (1.9 for a one-model pool)."""
    return jnp.where(u_oracle - u_random > 1e-6, baselines.rescale(mean_utility, u_random, u_oracle), jnp.nan)


def band_labels(edges) -> list[str]:
    """"lo-hi" per band, with two decimals or as many more as keep the labels distinct."""
    for decimals in range(2, 10):
        labels = [f"{lo:.{decimals}f}-{hi:.{decimals}f}" for lo, hi in zip(edges[:-1], edges[1:])]
        if len(set(labels)) == len(labels):
            break
    return labels


def band_edges(bands, log10_lam_range) -> np.ndarray | None:
    """[B + 1] log10(lam) band edges: None for no bands, B equal bands over `log10_lam_range` for
    an int B, or the given increasing edges (inside the range)."""
    if bands is None:
        return None
    lo, hi = (float(x) for x in log10_lam_range)
    if isinstance(bands, (int, np.integer)) and not isinstance(bands, bool):
        if bands < 1:
            raise ValueError(f"bands must be >= 1 (a number of equal log10(lam) bands), got {bands}")
        return np.linspace(lo, hi, int(bands) + 1)
    edges = np.asarray(bands, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bands must be an int or at least two finite, increasing log10(lam) edges, got {bands!r}")
    if edges[0] < lo - 1e-6 or edges[-1] > hi + 1e-6:
        raise ValueError(f"band edges {edges.tolist()} leave the test users' log10(lam) range [{lo}, {hi}]: "
                         "widen the profiles' range to test users outside it")
    return edges


# The settings the reports of one summary must share (not the seed: other test users of the same
# setting; not the band edges, which follow each router's log10(lam) range, as the users drawn
# without bands follow its profile family's).
SUMMARY_SETTINGS = ("split", "n_users", "beta", "flip", "profile", "pool", "reference")


def summarize(reports) -> dict:
    """Mean and spread over several evaluations of one setting (routers of several training
    seeds, say): {strategy: {method: {n: {metric: {"mean", "std", "min", "max"}}}}} over the
    `results` of `reports` (std over reports, ddof 0, as the README's tables). Refused unless
    every report has the same strategies, methods, numbers of contexts and metrics, and was made
    with the same settings (`SUMMARY_SETTINGS`: split, users, test-user model, pool); the seed
    of the test users may differ."""
    reports = list(reports)
    if not reports:
        raise ValueError("summarize needs at least one evaluation report")
    if not all(isinstance(r, EvalReport) for r in reports):
        raise TypeError(f"summarize takes EvalReports (evaluate's), got {sorted({type(r).__name__ for r in reports})}")
    for key in SUMMARY_SETTINGS:
        values = [r.settings.get(key) for r in reports]
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"the reports were made with different {key!r} ({values[:4]}): a summary averages "
                             "evaluations of one setting; evaluate every router with the same settings")
    shape = [{s: {m: {n: sorted(v) for n, v in by_n.items()} for m, by_n in t.items()} for s, t in r.results.items()}
             for r in reports]
    if any(x != shape[0] for x in shape[1:]):
        raise ValueError("the reports differ in strategies, methods, numbers of contexts or metrics: evaluate "
                         "every router with the same settings")
    summary = {}
    for strategy, table in reports[0].results.items():
        summary[strategy] = {}
        for method, by_n in table.items():
            summary[strategy][method] = {}
            for n, metrics in by_n.items():
                values = {k: np.asarray([r.results[strategy][method][n][k] for r in reports], np.float64)
                          for k in metrics}
                summary[strategy][method][n] = {k: {"mean": float(v.mean()), "std": float(v.std()),
                                                    "min": float(v.min()), "max": float(v.max())}
                                                for k, v in values.items()}
    return summary


def format_summary(summary: dict, strategy: str, metric: str = "normalized_utility") -> str:
    """A text table of `summarize`'s mean ± std: methods x n for one strategy and metric."""
    methods = {m: by_n for m, by_n in summary[strategy].items() if metric in next(iter(by_n.values()))}
    ns = sorted(next(iter(methods.values())))
    head = f"{'method':<14}" + "".join(f"{'n=' + str(n):>16}" for n in ns)
    rows = [head, "-" * len(head)]
    for method, by_n in methods.items():
        cells = (f"{by_n[n][metric]['mean']:.3f} ± {by_n[n][metric]['std']:.3f}" for n in ns)
        rows.append(f"{method:<14}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(rows)


def _report(per_user: dict, users: slice, n_contexts, settings: dict, methods) -> EvalReport:
    """The report of the users `users` of every strategy's per-user outcomes, whose rows are the
    methods of `methods` = (adaptive, flat, pair-accuracy method names)."""
    adaptive_methods, flat_methods, pair_methods = methods
    results, identification, held_out = {}, {}, {}
    for strategy, (adaptive, flat, identified, accuracy, counts) in per_user.items():
        adaptive, flat = np.asarray(adaptive[users].mean(0)), np.asarray(flat[users].mean(0))  # [n, A, 3], [F, 3]
        accuracy = np.asarray(accuracy[users])                                     # [U, n, 2, PAIR_METHODS]
        # A user whose every held-out pair a context asked has no unseen accuracy: the mean is over
        # the users with an unasked pair (the same users for every method), NaN where none has one.
        unasked, held = np.moveaxis(np.asarray(counts[users]), -1, 0)                       # [U, n] each
        has = unasked > 0
        unseen = (np.where(has[..., None], accuracy[:, :, 1], 0).sum(0)
                  / np.where(has.any(0), has.sum(0), np.nan)[:, None])                      # [n, PAIR_METHODS]
        accuracy = accuracy[:, :, 0].mean(0)
        nu_agnostic, nu_known = flat[flat_methods.index("agnostic"), 0], flat[flat_methods.index("known"), 0]

        def metrics(row):
            pr = (row[0] - nu_agnostic) / (nu_known - nu_agnostic) if abs(nu_known - nu_agnostic) > 1e-9 else float("nan")
            return {"normalized_utility": float(row[0]), "preference_recovery": float(pr),
                    "quality": float(row[1]), "cost": float(row[2])}

        table = {m: {n: metrics(adaptive[i, j]) for i, n in enumerate(n_contexts)}
                 for j, m in enumerate(adaptive_methods)}
        table.update({m: {n: metrics(flat[j]) for n in n_contexts} for j, m in enumerate(flat_methods)})
        for j, m in enumerate(pair_methods):
            for i, n in enumerate(n_contexts):
                table[m][n]["pair_accuracy"] = float(accuracy[i, j])
                table[m][n]["pair_accuracy_unseen"] = float(unseen[i, j])
        results[strategy] = table
        errors = np.asarray(identified[users].mean(0))                                     # [n, 3]
        identification[strategy] = {n: dict(zip(IDENTIFICATION, map(float, errors[i]))) for i, n in enumerate(n_contexts)}
        total = held.sum(0)                                                                 # [n]
        asked = np.where(total > 0, 1.0 - unasked.sum(0) / np.maximum(total, 1), np.nan)
        held_out[strategy] = {n: {"asked_share": float(asked[i]), "users_with_unasked": int(has[:, i].sum())}
                              for i, n in enumerate(n_contexts)}
    return EvalReport(results, settings, identification, held_out=held_out)
