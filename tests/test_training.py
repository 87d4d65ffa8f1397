"""Meta-training: one compile, vmap over seeds and hyperparameters, a router that learns."""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax import adaptation
from metarouter_jax.config import Hparams
from metarouter_jax.profiles import make_atoms, make_profiles
from metarouter_jax.splits import select_models
from metarouter_jax.data import DataError
from metarouter_jax.training import (atom_log_score, average_params, band_means, check_data, entropy_weight, make_train,
                                     offers_choice, run_training)


def flat_params(tree) -> np.ndarray:
    """Every leaf of a parameter tree in one vector."""
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def tiny_trainer(small_data, tiny_config):
    """One trainer for the tests that run the tiny config: its jitted chunk compiles once."""
    return make_train(tiny_config, small_data)


def test_chunk_compiles_once(small_data, tiny_config):
    trainer = make_train(tiny_config, small_data)   # a fresh trainer counts its own traces
    run_training(trainer, jax.random.key(0), Hparams.create())
    assert trainer.trace_counter[0] == 1          # two chunks, one trace


def test_vmap_over_seeds_and_hparams_matches_chunked_single_runs(tiny_trainer):
    """One jitted whole run vmapped over (seed, hyperparameters) == each configuration run alone,
    chunk by chunk as `run_training` runs it (so vmapping, and chunking, change nothing)."""
    trainer = tiny_trainer
    keys = jax.random.split(jax.random.key(0), 2)
    hps = Hparams.create(learning_rate=jnp.array([1e-3, 3e-3]), entropy_start=jnp.array([0.1, 0.05]))
    states, history = jax.jit(jax.vmap(trainer.train))(keys, hps)
    assert history["valid_utility"].shape == (2, trainer.config.num_chunks)
    batched = [flat_params(jax.tree.map(lambda x: x[i], states.params)) for i in range(2)]
    assert np.abs(batched[0] - batched[1]).max() > 1e-2      # the two configurations really differ
    for i in range(2):
        single, single_history = run_training(trainer, keys[i], jax.tree.map(lambda x: x[i], hps))
        # The tolerances of the two checks this one replaced: vmapped vs single whole run, and
        # whole vs chunked run.
        np.testing.assert_allclose(batched[i], flat_params(single.params), atol=1e-5)
        np.testing.assert_allclose(batched[i], flat_params(single.params), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(history["valid_utility"][i], single_history["valid_utility"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("changes", [dict(inner_steps=2, gaussian_encoder=True, posterior_atoms=0),
                                     dict(inner_steps=1, first_order=True, context_family=True, loss="bandit"),
                                     dict(pool_dropout=0.3, profile="family_weights", likelihood="learned"),
                                     dict(label_flips=False, outcome_noise=False, random_counts=False,
                                          latent_noise=False, observe_quality=False, likelihood="learned")])
def test_variants_train_to_finite_values(small_data, tiny_config, changes):
    trainer = make_train(tiny_config.replace(**changes), small_data)
    state, history = run_training(trainer, jax.random.key(0), Hparams.create())
    assert all(np.isfinite(v).all() for v in history.values())
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.params))


def test_bad_config_is_named(small_data):
    with pytest.raises(ValueError, match="multiple of chunk_steps"):
        mr.TrainConfig(num_steps=30, chunk_steps=20)
    with pytest.raises(ValueError, match="latent_source"):
        mr.TrainConfig(latent_source="oracle")
    with pytest.raises(KeyError, match="unknown split"):
        make_train(mr.TrainConfig(valid_split="dev"), small_data)
    with pytest.raises(KeyError, match="unknown profile family"):
        make_train(mr.TrainConfig(profile="quadratic"), small_data)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Hparams.create(learning_rat=1e-3)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        mr.TrainConfig(posterior_atoms=1)
    with pytest.raises(ValueError, match="gaussian_encoder=False"):
        mr.TrainConfig(gaussian_encoder=True)                     # the default encoder is an atomic posterior
    with pytest.raises(ValueError, match="likelihood must be one of"):
        mr.TrainConfig(likelihood="exact")
    with pytest.raises(ValueError, match="with observe_quality=False set likelihood='learned'"):
        mr.TrainConfig(observe_quality=False)
    with pytest.raises(ValueError, match="unknown network parts"):
        mr.TrainConfig(frozen=("decoder",))
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        mr.TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="answer_weight must be a finite number >= 0"):
        mr.TrainConfig(answer_weight=-1.0)


def test_a_validation_split_without_a_choice_is_refused(small_data):
    """Where every answered model of every validation query has the same quality and cost, every
    routing scores alike: normalised utility is 0/0 there, so training refuses the data."""
    valid = small_data.split("valid")
    quality, cost = small_data.quality.copy(), small_data.cost.copy()
    quality[valid], cost[valid] = quality[valid, :1], cost[valid, :1]
    cost[valid[0], 1] = np.nan                       # an unanswered model offers no choice either
    alike = dataclasses.replace(small_data, quality=quality, cost=cost)
    with pytest.raises(DataError, match=f"the validation split 'valid' offers no choice: on each of its {valid.size}"):
        make_train(mr.TrainConfig(), alike)
    cost[valid[0], 2] *= 2                           # one query where a dearer model answers alike: a choice
    check_data(mr.TrainConfig(), dataclasses.replace(small_data, quality=quality, cost=cost))
    assert offers_choice(small_data, np.arange(small_data.num_queries)).mean() > 0.9


def test_answer_loss_trains_a_readout_of_quality_and_cost(small_data, tiny_config):
    """answer_weight > 0 adds a readout to the policy (none without it) that learns each answer's
    quality and log cost from its components: its loss falls, and so does the policy's."""
    plain = make_train(tiny_config, small_data)
    assert plain.graphdef != make_train(tiny_config.replace(answer_weight=1.0), small_data).graphdef
    trainer = make_train(tiny_config.replace(answer_weight=1.0, latent_source="profile", num_steps=100,
                                             chunk_steps=50), small_data)
    queries = jnp.asarray(small_data.split("train")[:256])

    def answer_loss(params):
        feats = adaptation.query_features(trainer.graphdef, params, trainer.arrays.embeddings[queries])
        components = adaptation.answer_components(trainer.graphdef, params, feats, trainer.arrays.descriptors)
        return float(trainer.answer_loss(params, components, queries))

    start = trainer.jit_init(jax.random.key(0), Hparams.create())
    state, _ = run_training(trainer, jax.random.key(0), Hparams.create())
    assert answer_loss(state.params) < 0.8 * answer_loss(start.params)


def test_model_identity_learns_a_vector_per_model_and_routes_only_its_models(small_data, tiny_config, tmp_path):
    """model_identity adds to the policy a free vector per model (none without it), zero at the
    start and learned by training; the router then refuses another model set by name, and its
    vectors survive a save and load."""
    config = tiny_config.replace(model_identity=True)
    assert make_train(tiny_config, small_data).net_config.num_models == 0
    router = mr.MetaRouter.fit(small_data, config, seed=0, companions=False)
    identity = np.asarray(router.params["metarouter"]["policy"]["in_identity"][...])
    assert identity.shape == (small_data.num_models, config.hidden)
    assert np.abs(identity).max() > 0                         # learned (the known router's, kept frozen)
    queries = small_data.embeddings[small_data.split("test")[:32]]
    z = np.zeros((1, router.net_config.latent_dim), np.float32)
    router.save(tmp_path / "r")
    loaded = mr.MetaRouter.load(tmp_path / "r")
    assert loaded.net_config.num_models == small_data.num_models
    np.testing.assert_array_equal(loaded.route(z, queries), router.route(z, queries))
    fewer = select_models(small_data, small_data.model_names[1:])
    with pytest.raises(ValueError, match="learned a vector for each of its own models .model_identity=True."):
        router.with_models(fewer)
    assert router.with_models(small_data).model_names == router.model_names     # its own set: as before


def test_parameter_average_is_the_mean_of_the_iterates_then_an_ema():
    decay, iterates = 0.75, np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    average = {"w": jnp.zeros(3)}   # the starting value carries no weight
    for count, p in enumerate(iterates, 1):
        average = average_params(average, {"w": jnp.asarray(p)}, decay, count)
        if count <= 4:              # 1 / (1 - decay): the plain mean so far
            expected = iterates[:count].mean(0)
        else:                       # then an exponential moving average
            expected = decay * expected + (1 - decay) * p
        np.testing.assert_allclose(average["w"], expected, rtol=1e-5, atol=1e-6)


def test_validation_scores_and_keeps_the_parameter_average(small_data, tiny_config):
    """With ema_decay the state carries the average of every meta-step's parameters (from a warm
    start here), the chunk's validation utility is the average's, and early stopping keeps it."""
    decay = 0.9
    trainer = make_train(tiny_config.replace(ema_decay=decay), small_data)
    hp, key = Hparams.create(), jax.random.key(3)
    key_init, key_valid = jax.random.split(key)
    warm = trainer.jit_init(jax.random.key(99), hp).params        # not the run's own initialisation
    start = trainer.jit_init(key_init, hp).start_from(warm)
    state, history = run_training(trainer, key, hp, init_params=warm)

    step = jax.jit(trainer.meta_step)   # the same steps one by one, averaged here
    manual, expected = start, start.params
    for count in range(1, trainer.config.num_steps + 1):
        manual, _ = step(manual, hp)
        expected = average_params(expected, manual.params, decay, count)   # count 1: the first iterate
    np.testing.assert_allclose(flat_params(state.params), flat_params(manual.params), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(flat_params(state.average), flat_params(expected), rtol=1e-4, atol=1e-6)
    assert np.abs(flat_params(state.average) - flat_params(state.params)).max() > 1e-3   # it is not the last iterate

    valid = trainer.jit_validation_users(trainer.data_args(), key_valid, hp)
    score = jax.jit(trainer.validation_score)
    assert float(score(state.average, *valid)["valid_utility"]) == pytest.approx(history["valid_utility"][-1], abs=1e-6)
    assert float(state.best_score) == history["valid_utility"].max()
    assert float(score(state.best_params, *valid)["valid_utility"]) == pytest.approx(float(state.best_score), abs=1e-6)


@pytest.mark.parametrize("max_contexts", [7, 8])
def test_validation_users_cover_every_count_with_both_strategies(small_data, tiny_config, max_contexts):
    """With an odd max_contexts (an even number of counts) index % 2 tied each count to one pair
    strategy (uniform users had only even counts: with max_contexts=1, never a context)."""
    trainer = make_train(tiny_config.replace(max_contexts=max_contexts, valid_users=4 * (max_contexts + 1)), small_data)
    users, contexts = trainer.jit_validation_users(trainer.data_args(), jax.random.key(0), Hparams.create())
    seen = set(zip(np.asarray(users.count).tolist(), np.asarray(users.informative).tolist()))
    assert seen == {(n, informative) for n in range(max_contexts + 1) for informative in (False, True)}
    np.testing.assert_array_equal(np.asarray(contexts.mask).sum(-1), users.count)


def test_band_means_rank_the_users_into_equal_bands():
    lam = jnp.array([3.0, 0.0, 2.0, 1.0, 5.0])          # ranks 3 0 2 1 4 -> bands (rank * 2 // 5) 1 0 0 0 1
    values = jnp.array([10.0, 1.0, 2.0, 3.0, 20.0])
    np.testing.assert_allclose(band_means(lam, values, 2), [2.0, 15.0])
    np.testing.assert_allclose(band_means(lam, values, 1), [values.mean()], rtol=1e-6)
    np.testing.assert_allclose(band_means(lam, values, 5), [1.0, 3.0, 2.0, 10.0, 20.0])   # one user each, by lam


def test_worst_band_criterion_changes_only_what_is_kept(small_data, tiny_config):
    """Both validation scores are recorded every chunk whatever the criterion; valid_criterion
    picks the one early stopping keeps the best of, and nothing else about the run changes."""
    hp, key = Hparams.create(), jax.random.key(5)
    by_criterion = {}
    for criterion in ("utility", "worst_band"):
        trainer = make_train(tiny_config.replace(valid_criterion=criterion, valid_bands=3), small_data)
        by_criterion[criterion] = (trainer, *run_training(trainer, key, hp))
    (_, mean_state, mean_history), (trainer, worst_state, worst_history) = by_criterion.values()
    for name in ("valid_utility", "valid_worst_band", "loss"):
        np.testing.assert_allclose(worst_history[name], mean_history[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat_params(worst_state.params), flat_params(mean_state.params), rtol=1e-5, atol=1e-6)
    assert float(worst_state.best_score) == worst_history["valid_worst_band"].max()
    assert float(mean_state.best_score) == mean_history["valid_utility"].max()
    # The kept parameters score the best worst-band margin.
    valid = trainer.jit_validation_users(trainer.data_args(), jax.random.split(key)[1], hp)
    kept = jax.jit(trainer.validation_score)(worst_state.best_params, *valid)
    assert float(kept["valid_worst_band"]) == pytest.approx(float(worst_state.best_score), abs=1e-6)


def test_frozen_parts_do_not_move(small_data, tiny_config):
    trainer = make_train(tiny_config.replace(frozen=("policy", "profile_embedding")), small_data)
    hp = Hparams.create()
    start = trainer.jit_init(jax.random.key(0), hp)
    end, _ = run_training(trainer, jax.random.key(0), hp, init_params=start.params)
    for part in ("policy", "profile_embedding", "encoder"):
        moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(start.params[part]),
                                                                jax.tree.leaves(end.params[part])))
        assert (moved == 0.0) == (part != "encoder"), (part, moved)
    # No gradient reaches them either (no backward pass through them, none in the clipping norm):
    # Adam's first moment of a frozen part stays exactly 0.
    adam = next(s for s in jax.tree.leaves(end.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu"))
    for part in ("policy", "profile_embedding", "encoder"):
        moment = max(float(jnp.abs(m).max()) for m in jax.tree.leaves(adam.mu[part]))
        assert (moment == 0.0) == (part != "encoder"), (part, moment)


def test_atomic_posterior_score_prefers_mass_near_the_truth(small_data):
    profiles = make_profiles("linear", log10_lam_range=(0.0, 4.0))
    atoms = make_atoms(profiles, 16)
    np.testing.assert_allclose(np.sort(np.asarray(atoms.features[:, 0])), np.linspace(-1, 1, 33)[1::2], atol=1e-6)
    truth = profiles.targets(profiles.linear_profile(1.1))
    nearest = int(jnp.argmin(jnp.abs(atoms.targets[:, 0] - truth[0])))
    peaked = jnp.full(16, 0.01 / 15).at[nearest].set(0.99)
    wrong = jnp.full(16, 0.01 / 15).at[(nearest + 8) % 16].set(0.99)
    flat = jnp.full(16, 1 / 16)
    scores = [float(atom_log_score(w, atoms, truth)) for w in (peaked, flat, wrong)]
    assert scores[0] < scores[1] < scores[2]
    family = make_profiles("family_weights", small_data)
    assert make_atoms(family, 8).targets.shape == (8, 1 + small_data.num_families)


def test_trained_router_beats_random_by_a_clear_margin(trained_router, small_data):
    report = mr.evaluate(trained_router, small_data, n_users=64, n_contexts=(0, 8), strategies=("informative",),
                         reference=False)
    table = report.results["informative"]
    assert table["metarouter"][8]["normalized_utility"] > 0.3           # random is 0 by definition
    assert table["known"][0]["normalized_utility"] > table["random"][0]["normalized_utility"] + 0.3
    assert table["known"][0]["normalized_utility"] >= table["agnostic"][0]["normalized_utility"]


def test_family_weight_utility_counts_an_unknown_family_at_weight_one():
    family = make_profiles("family_weights", num_families=3)
    profile = {"log10_lam": jnp.asarray(1.0), "log_weights": jnp.array([0.5, -0.5, 1.0])}
    u = family.utility(profile, jnp.ones(4), jnp.full(4, 0.01), jnp.array([0, 1, 2, -1]))
    np.testing.assert_allclose(u, np.exp([0.5, -0.5, 1.0, 0.0]) - 0.1, rtol=1e-6)


def test_diverged_parameters_are_never_kept_as_best(tiny_trainer):
    """NaN parameters would still route (argmax picks the first model) and score finitely: the
    score is NaN instead, and the best parameters stay the last finite ones (here the initial)."""
    trainer = tiny_trainer
    state, history = run_training(trainer, jax.random.key(0), Hparams.create(learning_rate=1e30))
    assert np.isnan(history["loss"]).all() and np.isnan(history["valid_utility"]).all()
    assert state.best_score == -np.inf
    initial = trainer.jit_init(jax.random.split(jax.random.key(0))[0], Hparams.create())
    jax.tree.map(np.testing.assert_array_equal, state.best_params, initial.params)


def test_routing_loss_rewards_entropy(tiny_trainer):
    """loss = -E[utility] - alpha * entropy: on utilities that are all 0, uniform scores over the
    allowed models give loss = -alpha log(#allowed) (the entropy bonus lowers the loss)."""
    allowed = jnp.array([[True, True, True, False, True], [True, True, False, False, False]])
    loss, expected, entropy = tiny_trainer.routing_loss(jnp.zeros((2, 5)), jnp.zeros((2, 5)), allowed, 0.5,
                                                        jax.random.key(0))
    mean_entropy = (np.log(4.0) + np.log(2.0)) / 2
    np.testing.assert_allclose([float(entropy), float(loss)], [mean_entropy, -0.5 * mean_entropy], rtol=1e-5)
    np.testing.assert_allclose(expected, 0.0, atol=1e-7)


def test_entropy_weight_anneals_from_start_to_end(tiny_trainer, monkeypatch):
    """alpha(progress) = entropy_start * (entropy_end / entropy_start) ** progress: the start value at
    the first step, the end value at the last (the routing loss is spied to report its alpha)."""
    monkeypatch.setattr(type(tiny_trainer), "routing_loss",
                        lambda self, scores, u, allowed, alpha, key: (jnp.zeros(()), jnp.zeros(u.shape[0]), alpha))
    trainer = dataclasses.replace(tiny_trainer)  # a fresh object: nothing jitted with the real loss is reused
    hp = Hparams.create(entropy_start=0.2, entropy_end=0.002)
    params = trainer.init(jax.random.key(0), hp).params
    alpha = jax.jit(lambda p: jax.vmap(lambda pr: trainer.task_loss(params, jax.random.key(1), hp, pr)[1]["entropy"])(p))
    np.testing.assert_allclose(alpha(jnp.array([0.0, 0.5, 1.0])), [0.2, 0.02, 0.002], rtol=1e-5)


@pytest.mark.parametrize("start, end, expected", [(0.0, 0.0, [0.0, 0.0, 0.0]), (0.1, 0.0, [0.1, 0.05, 0.0]),
                                                  (0.0, 0.02, [0.0, 0.01, 0.02])])
def test_entropy_weight_through_zero_is_linear_and_finite(start, end, expected):
    """No geometric path leads to or from 0 (0 * (0 / 0) ** p was NaN, and an entropy weight of
    0, the ablation without the entropy term, made every loss NaN): linear there instead."""
    weight = jax.vmap(lambda p: entropy_weight(Hparams.create(entropy_start=start, entropy_end=end), p))
    np.testing.assert_allclose(weight(jnp.array([0.0, 0.5, 1.0])), expected, atol=1e-7)


def test_training_without_the_entropy_term_stays_finite(tiny_trainer):
    hp = Hparams.create(entropy_start=0.0, entropy_end=0.0)
    state = tiny_trainer.init(jax.random.key(0), hp)
    state = state.replace(step=jnp.asarray(tiny_trainer.config.num_steps // 2, jnp.int32))  # NaN showed after step 0
    state, metrics = jax.jit(tiny_trainer.meta_step)(state, hp)
    assert np.isfinite(float(metrics["loss"])) and all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_noise_levels_reach_the_meta_loss(tiny_trainer):
    """Each noise-injection level (outcome, latent, query) changes the meta-loss of the same user and
    key (the encoder's learned likelihood correction, zero at initialisation, made non-zero as after
    training: only it reads the noisy outcomes)."""
    params = tiny_trainer.init(jax.random.key(0), Hparams.create()).params
    kernel = params["encoder"]["atom_logits"]["kernel"]
    kernel[...] = 0.1 * jax.random.normal(jax.random.key(4), kernel[...].shape)
    loss = jax.jit(lambda hp: tiny_trainer.task_loss(params, jax.random.key(1), hp, 0.5)[0])
    quiet = dict(outcome_noise=0.0, latent_noise=0.0, query_noise=0.0)
    base = float(loss(Hparams.create(**quiet)))
    for name in quiet:
        noisy = float(loss(Hparams.create(**{**quiet, name: 0.5})))
        assert abs(noisy - base) > 1e-6, name


def test_training_users_noise_spans_its_prior(tiny_trainer):
    """Training users' label-flip rates are U[0, flip_max] and their rationality log-uniform over
    beta_range (not every user at the extreme)."""
    hp = Hparams.create(flip_max=0.2)
    users = jax.jit(jax.vmap(lambda k: tiny_trainer.sample_user(k, hp, 0.0)))(jax.random.split(jax.random.key(0), 4000))
    flip, beta = np.asarray(users.flip), np.asarray(users.beta)
    lo, hi = tiny_trainer.config.beta_range
    assert 0.0 <= flip.min() < 0.01 and 0.19 < flip.max() <= 0.2 and abs(flip.mean() - 0.1) < 0.005
    assert lo <= beta.min() and beta.max() <= hi
    assert abs(np.log(beta).mean() - 0.5 * (np.log(lo) + np.log(hi))) < 0.03


def test_early_stopping_score_is_the_routed_normalised_utility(trained_router):
    """The validation score that picks the kept parameters is the normalised utility of argmax
    routing (1 = oracle, 0 = random): clearly positive for a router that learned, at most 1."""
    for name in ("known", "metarouter"):
        best = trained_router.best_valid_utility[name]
        assert 0.3 < best <= 1.0, (name, best)


def test_router_validation_reads_the_kept_chunk(trained_router):
    """`validation` gives both scores at the chunk whose parameters were kept: the first best by
    the criterion, NaN chunks skipped; a router saved before the worst band was recorded has only
    the utility, and one whose every chunk diverged has NaN."""
    history = {"valid_utility": np.array([0.2, np.nan, 0.5, 0.4, 0.5]),
               "valid_worst_band": np.array([-0.1, np.nan, -0.3, 0.0, -0.2])}
    router = copy.copy(trained_router)
    router.history = {"metarouter": history}
    assert router.validation == {"metarouter": {"utility": 0.5, "worst_band": -0.3}}          # chunk 2
    router.config = trained_router.config.replace(valid_criterion="worst_band")
    assert router.validation == {"metarouter": {"utility": 0.4, "worst_band": 0.0}}           # chunk 3
    router.config = trained_router.config
    router.history = {"metarouter": {"valid_utility": history["valid_utility"]}}
    assert router.validation == {"metarouter": {"utility": 0.5}} and router.best_valid_utility == {"metarouter": 0.5}
    router.history = {"metarouter": {k: np.full(3, np.nan) for k in history}}
    assert all(np.isnan(v) for v in router.validation["metarouter"].values())


@pytest.mark.parametrize("loss", ["full", "bandit"])
def test_queries_no_pool_model_can_answer_teach_nothing(small_data, tiny_config, loss):
    """Random pools on a log with missing cells leave some queries no model: their centring was
    0 / 0, which made the task losses NaN."""
    rng = np.random.default_rng(0)
    quality, cost = small_data.quality.copy(), small_data.cost.copy()
    for i in np.nonzero(rng.random(small_data.num_queries) < 0.5)[0]:   # 3 of 5 models missing on half the queries
        drop = rng.choice(small_data.num_models, 3, replace=False)
        quality[i, drop] = cost[i, drop] = np.nan
    data = dataclasses.replace(small_data, quality=quality, cost=cost)
    trainer = make_train(tiny_config.replace(pool_dropout=0.6, latent_source="profile", loss=loss), data)
    hparams = Hparams.create()
    params = trainer.init(jax.random.key(0), hparams).params
    keys = jax.random.split(jax.random.key(5), 16)
    losses, metrics = jax.jit(jax.vmap(trainer.task_loss, in_axes=(None, 0, None, None)))(params, keys, hparams, 0.0)
    assert np.isfinite(np.asarray(losses)).all() and np.isfinite(np.asarray(metrics["utility"])).all()


def test_bandit_loss_is_an_unbiased_reinforce_estimate(small_data, tiny_config):
    """The bandit loss samples one arm per query and centres its reward on the batch mean, itself
    included: its expected gradient is (1 - 1/B) times that of the full expected utility (each
    reward's own share of the baseline shrinks it; the others' shares have zero mean)."""
    rng = np.random.default_rng(0)
    scores = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    allowed = jnp.asarray(rng.random((6, 5)) < 0.7).at[:, 0].set(True).at[5].set(False)   # query 5: no model
    grads = {}
    for loss in ("full", "bandit"):
        trainer = make_train(tiny_config.replace(loss=loss), small_data)
        grad = jax.grad(lambda s, key: trainer.routing_loss(s, u, allowed, 0.0, key)[0])
        grads[loss] = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(scores, jax.random.split(jax.random.key(0), 20_000))
    full = np.asarray(grads["full"][0])
    assert np.abs(np.asarray(grads["full"]) - full).max() == 0.0        # the full loss draws nothing
    bandit = np.asarray(grads["bandit"])
    assert (bandit[:, ~np.asarray(allowed)] == 0).all()                 # no gradient to a model the query lacks
    stderr = bandit.std(0) / np.sqrt(bandit.shape[0])
    np.testing.assert_array_less(np.abs(bandit.mean(0) - (1 - 1 / 6) * full), 5 * stderr + 1e-6)
    assert np.abs(full).max() > 20 * stderr.max()                       # the check can tell them apart


def test_budget_plug_in_profile_is_a_cap_the_known_router_was_trained_on():
    profiles = make_profiles("budget", log10_lam_range=(0.0, 3.0))
    cap_input = float(profiles.features(profiles.linear_profile(1.0))[-1])
    assert cap_input == 1.0                     # the loosest cap of the prior (training inputs span [-1, 1])
    trained = jax.vmap(profiles.features)(jax.vmap(profiles.sample)(jax.random.split(jax.random.key(0), 256)))
    assert float(trained[:, -1].min()) >= -1.0 and float(trained[:, -1].max()) <= 1.0


def test_cost_units_are_measured_on_the_training_queries(small_data, tiny_config):
    """The held-out and test queries' costs do not shape a router's log10-cost units (they did
    before cost_units existed: every query's costs, "all", which old configs still train with)."""
    cost = small_data.cost.copy()
    cost[small_data.split("test")] *= 100.0
    dear_tests = dataclasses.replace(small_data, cost=cost)
    train_units = small_data.log_cost_stats("train")
    for data in (small_data, dear_tests):
        trainer = make_train(tiny_config, data)
        assert (trainer.net_config.log_cost_mean, trainer.net_config.log_cost_std) == pytest.approx(train_units)
        assert (float(trainer.arrays.log_cost_mean), float(trainer.arrays.log_cost_std)) == pytest.approx(train_units)
    legacy = make_train(tiny_config.replace(cost_units="all"), dear_tests)
    assert legacy.net_config.log_cost_mean == pytest.approx(dear_tests.log_cost_stats()[0])
    assert dear_tests.log_cost_stats()[0] > train_units[0] + 0.3                       # the test costs moved it
    with pytest.raises(ValueError, match="cost_units must be one of"):
        tiny_config.replace(cost_units="test")
