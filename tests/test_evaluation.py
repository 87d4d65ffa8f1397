"""Evaluation report: structure, flat baselines, the plug-ins, and the anchors of the metrics."""

import copy
import dataclasses
import json
import re

import jax
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.contexts import Contexts
from metarouter_jax.evaluation import (METHODS, PAIR_METHODS, REFERENCE_METHODS, asked_pairs, band_edges, band_labels,
                                       draw_user, normalized_utility, pair_accuracy, user_keys)
from metarouter_jax.streams import seed_key
from metarouter_jax.splits import select_models


@pytest.fixture(scope="module")
def report(trained_router, small_data):
    return mr.evaluate(trained_router, small_data, n_users=32, n_contexts=(0, 2, 8))


def test_report_has_every_method_strategy_and_n(report):
    assert set(report.results) == {"uniform", "informative"}
    for table in report.results.values():
        assert set(table) == set(METHODS)
        for method, by_n in table.items():
            assert sorted(by_n) == [0, 2, 8]
            metrics = {"normalized_utility", "preference_recovery", "quality", "cost"}
            pair = {"pair_accuracy", "pair_accuracy_unseen"}
            assert all(set(m) == metrics | (pair if method in PAIR_METHODS else set())
                       for m in by_n.values())


def test_held_out_pair_accuracy(report):
    for strategy, table in report.results.items():
        accuracy = {m: [table[m][n]["pair_accuracy"] for n in (0, 2, 8)] for m in PAIR_METHODS}
        assert all(0.0 <= a <= 1.0 for values in accuracy.values() for a in values), accuracy
        assert len(set(accuracy["known"])) == 1                           # the true profile: no contexts read
        # No contexts: the plug-ins all read the prior's centre, LinUCB knows nothing (ties: half).
        assert accuracy["bt_mle"][0] == accuracy["bt_posterior"][0] == accuracy["bt_marginal"][0]
        assert accuracy["linucb"][0] == pytest.approx(0.5)
        assert accuracy["known"][0] > 0.6 and accuracy["metarouter"][2] > accuracy["linucb"][2], (strategy, accuracy)
    assert "held-out pairs" in report.format() and "none of the n contexts asked" in report.format()


def test_unseen_pair_accuracy_leaves_out_the_pairs_the_contexts_asked(report):
    """With no contexts no held-out pair was asked: both accuracies agree. With 8 informative
    contexts some held-out pairs repeat one (so the two differ for some method), never with
    uniform pairs on ~240 queries x 10 model pairs often enough to move the known router's."""
    for strategy, table in report.results.items():
        for m in PAIR_METHODS:
            assert table[m][0]["pair_accuracy_unseen"] == pytest.approx(table[m][0]["pair_accuracy"], nan_ok=True)
            assert 0.0 <= table[m][8]["pair_accuracy_unseen"] <= 1.0 or m == "metarouter" and np.isnan(
                table[m][8]["pair_accuracy_unseen"])
    informative = report.results["informative"]
    moved = [m for m in PAIR_METHODS if np.isfinite(informative[m][8]["pair_accuracy_unseen"])
             and informative[m][8]["pair_accuracy_unseen"] != informative[m][8]["pair_accuracy"]]
    assert moved, "no method's accuracy moved when the asked held-out pairs were left out"
    # How many were asked: none with no contexts, more as the nested context sets grow, and more with
    # informative pairs (drawn near the user's indifference points) than with uniform ones.
    shares = {s: [report.held_out[s][n]["asked_share"] for n in (0, 2, 8)] for s in report.held_out}
    assert set(shares) == {"uniform", "informative"}
    for strategy, (none, two, eight) in shares.items():
        assert none == 0.0 and report.held_out[strategy][0]["users_with_unasked"] == 32
        assert none <= two <= eight < 1.0, (strategy, shares)
    assert shares["informative"][2] > shares["uniform"][2], shares
    assert "share of the held-out pairs a context asked" in report.format()


def test_asked_pairs_match_query_and_models_in_either_order():
    emb = jax.numpy.eye(3, 4)                                         # three distinct queries
    contexts = Contexts.empty(2, 4).replace(query_emb=emb[jax.numpy.asarray([0, 1])],
                                            model_a=jax.numpy.asarray([0, 2]), model_b=jax.numpy.asarray([1, 3]))
    pairs = Contexts.empty(4, 4).replace(query_emb=emb[jax.numpy.asarray([0, 0, 1, 2])],
                                         model_a=jax.numpy.asarray([1, 0, 2, 0]),
                                         model_b=jax.numpy.asarray([0, 2, 3, 1]))
    np.testing.assert_array_equal(asked_pairs(contexts, pairs),
                                  [[True, False, False, False],      # query 0, models {0, 1}: asked in either order
                                   [False, False, True, False]])     # query 1, models {2, 3}; query 2 never asked
    # Another query of the same embedding whose answers differ is another question: not asked.
    other = pairs.replace(outcome_a=pairs.outcome_a.at[0, 0].set(1.0))
    np.testing.assert_array_equal(asked_pairs(contexts, other)[:, 0], [False, False])
    swapped = contexts.replace(outcome_a=contexts.outcome_a.at[0].set(jax.numpy.asarray([1.0, 0.5])))
    both = pairs.replace(outcome_b=pairs.outcome_b.at[0].set(jax.numpy.asarray([1.0, 0.5])))  # pair 0 is (1, 0)
    assert bool(asked_pairs(swapped, both)[0, 0]) and not bool(asked_pairs(swapped, pairs)[0, 0])


def test_without_the_reference_baselines(report, trained_router, small_data):
    """reference=False leaves out the literature's baselines, and only them: every other figure is
    the one the full evaluation reports. Two compiled programs round differently, which can flip
    an argmax between near-equal utilities: a figure may move by a routed query or two (of 32 users
    x ~240 queries), most are equal to rounding."""
    lean = mr.evaluate(trained_router, small_data, n_users=32, n_contexts=(0, 2, 8), reference=False)
    assert lean.settings["reference"] is False and report.settings["reference"] is True
    equal = []
    for strategy, table in lean.results.items():
        assert set(table) == set(METHODS) - set(REFERENCE_METHODS)
        for method, by_n in table.items():
            for n, metrics in by_n.items():
                full = report.results[strategy][method][n]
                assert metrics == pytest.approx(full, abs=5e-3), (strategy, method, n)
                equal += [metrics[k] == pytest.approx(full[k], rel=1e-5, abs=1e-6) for k in metrics]
    assert np.mean(equal) > 0.9, np.mean(equal)
    for strategy, by_n in lean.identification.items():
        for n, errors in by_n.items():
            assert errors == pytest.approx(report.identification[strategy][n], rel=1e-5), (strategy, n)
    assert "linucb" not in lean.format() and "linucb" in report.format()


def test_pair_accuracy_counts_ties_half_and_skips_masked_pairs():
    pairs = Contexts.empty(4, 2).replace(label=jax.numpy.asarray([1.0, 0.0, 1.0, 1.0]),
                                         mask=jax.numpy.asarray([True, True, True, False]))
    logits = jax.numpy.asarray([[2.0, -1.0, 0.0, -5.0],      # right, right, a tie; the masked pair not read
                                [-1.0, -1.0, -1.0, 3.0],
                                [np.nan, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(pair_accuracy(logits, pairs), [2.5 / 3, 1 / 3, np.nan])


def test_metric_anchors(report):
    for table in report.results.values():
        for n in (0, 2, 8):
            assert table["random"][n]["normalized_utility"] == 0.0
            assert table["known"][n]["preference_recovery"] == pytest.approx(1.0)
            assert table["agnostic"][n]["preference_recovery"] == pytest.approx(0.0)
            # Flat baselines repeat over n, but for the held-out pairs that n contexts left unasked.
            assert ({k: v for k, v in table["known"][n].items() if k != "pair_accuracy_unseen"}
                    == {k: v for k, v in table["known"][0].items() if k != "pair_accuracy_unseen"})
        # With no contexts both plug-ins fall back to the prior's centre: the same routing.
        assert table["bt_mle"][0] == table["bt_posterior"][0] == table["bt_marginal"][0]
        assert 0.0 < table["best_fixed"][0]["normalized_utility"] < 1.0
    # The Bayes decision with no contexts depends on the prior alone, not on the pair strategy
    # (its held-out pairs do: they are drawn like the contexts).
    routed = [{k: v for k, v in report.results[s]["bt_bayes"][0].items() if not k.startswith("pair_accuracy")}
              for s in ("uniform", "informative")]
    assert routed[0] == routed[1]


def test_json_schema(report, tmp_path):
    report.write_json(tmp_path / "r.json")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert set(loaded["uniform"]["metarouter"]["8"]) == {"normalized_utility", "preference_recovery", "quality", "cost",
                                                         "pair_accuracy", "pair_accuracy_unseen"}
    assert set(loaded["uniform"]["agnostic"]["8"]) == {"normalized_utility", "preference_recovery", "quality", "cost"}
    assert "pair strategy: informative" in report.format()


def test_bad_evaluation_requests(trained_router, small_data):
    with pytest.raises(ValueError, match="pair strategies"):
        mr.evaluate(trained_router, small_data, strategies=("bisect",))
    with pytest.raises(ValueError, match=re.escape("unknown pair strategies ['bisect']")):  # one, not 6 letters
        mr.evaluate(trained_router, small_data, strategies="bisect")
    for n_contexts in ("12", (0, 1.5), [[0, 1]]):
        with pytest.raises(TypeError, match="n_contexts must be an int or a sequence of ints"):
            mr.evaluate(trained_router, small_data, n_contexts=n_contexts)
    with pytest.raises(ValueError, match="n_contexts is empty"):
        mr.evaluate(trained_router, small_data, n_contexts=())
    with pytest.raises(ValueError, match="strategies is empty"):             # was an empty report
        mr.evaluate(trained_router, small_data, strategies=[])
    with pytest.raises(TypeError, match="n_users must be an integer"):
        mr.evaluate(trained_router, small_data, n_users=2.5)
    with pytest.raises(ValueError, match="numbers of contexts must be >= 0"):
        mr.evaluate(trained_router, small_data, n_contexts=-1)
    for beta in (-5.0, 0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="beta .* must be a finite number > 0"):
            mr.evaluate(trained_router, small_data, beta=beta)
    for flip in (-0.1, 0.5, 3.0, float("nan")):
        with pytest.raises(ValueError, match=r"flip .* must be in \[0, 0.5\)"):
            mr.evaluate(trained_router, small_data, flip=flip)
    with pytest.raises(KeyError, match="unknown profile family 'nope'"):
        mr.evaluate(trained_router, small_data, profiles="nope")
    for user_batch in (0, 2.5):
        with pytest.raises(ValueError, match="user_batch .* must be an integer >= 1"):
            mr.evaluate(trained_router, small_data, user_batch=user_batch)
    point = copy.copy(trained_router)
    point.atoms = None  # as a point-estimate encoder (posterior_atoms=0) has
    with pytest.raises(ValueError, match="atomic-posterior"):
        mr.evaluate(point, small_data, strategies=("active",))
    with pytest.raises(KeyError, match="unknown split"):
        mr.evaluate(trained_router, small_data, split="holdout")
    with pytest.raises(TypeError, match="reference must be True or False"):
        mr.evaluate(trained_router, small_data, reference="no")
    splits = dict(small_data.splits)
    no_train = dataclasses.replace(small_data, splits={**splits, "train": splits["train"][:0]})
    with pytest.raises(ValueError, match="split 'train' of the data is empty: the test users' utility scales"):
        mr.evaluate(trained_router, no_train, reference=False)
    few = dataclasses.replace(small_data, splits={**splits, "train": splits["train"][:8]})
    with pytest.raises(ValueError, match=r"need more than 8 training queries \(split 'train' holds 8\)"):
        mr.evaluate(trained_router, few)

    def unanswer(quality, cost):   # model 0 answered no training or validation query
        fit_splits = np.concatenate([splits["train"], splits["valid"]])
        quality[fit_splits, 0], cost[fit_splits, 0] = np.nan, np.nan

    unanswered = _with_outcomes(small_data, unanswer)
    name = small_data.model_names[0]
    with pytest.raises(ValueError, match=rf"models \['{name}'\] have no answer on the training and validation"):
        mr.evaluate(trained_router, unanswered)
    solo = mr.MetaRouter(trained_router.config, trained_router.hparams, trained_router.net_config,
                         trained_router.profiles, {"metarouter": trained_router.params["metarouter"]},
                         trained_router.info)
    with pytest.raises(ValueError, match="companion"):
        mr.evaluate(solo, small_data)


def test_a_single_strategy_count_or_profile_name(trained_router, small_data):
    """One pair strategy, one number of contexts and a profile family's name need no tuple or object."""
    report = mr.evaluate(trained_router, small_data, n_users=1, n_contexts=2, strategies="uniform", profiles="budget",
                         reference=False)
    assert list(report.results) == ["uniform"] and list(report.results["uniform"]["metarouter"]) == [2]
    assert report.settings["profile"] == "budget" != trained_router.profiles.name


def test_a_richer_familys_router_on_linear_users(small_data, tiny_config):
    """A budget router evaluated on linear users: its known router reads each user as the budget
    family holds a linear user (the loosest cap), not a profile without a cap (a KeyError before)."""
    from metarouter_jax.config import Hparams
    from metarouter_jax.networks import init_router_net
    from metarouter_jax.router import DataInfo
    from metarouter_jax.training import make_train

    config = tiny_config.replace(profile="budget")
    trainer = make_train(config, small_data)
    _, params = init_router_net(trainer.net_config, jax.random.key(0))     # untrained: only the plumbing counts
    info = DataInfo.from_data(small_data, trainer.arrays, config.train_split, trainer.atoms)
    router = mr.MetaRouter(config, Hparams.create(), trainer.net_config, trainer.profiles,
                           {name: params for name in ("metarouter", "known", "agnostic")}, info)
    report = mr.evaluate(router, small_data, n_users=2, n_contexts=0, strategies="uniform", profiles="linear",
                         reference=False)
    assert report.settings["profile"] == "linear"
    assert np.isfinite(report.results["uniform"]["known"][0]["normalized_utility"])


@pytest.mark.parametrize("family", ["budget", "family_weights"])
def test_banded_users_draw_their_other_parameters_apart_from_lam(small_data, family):
    """In a band, log10(lam) is redrawn inside it; a family's other parameters (a cap, family
    weights) must not move with it (they did: the band's key was the one their draw used), and a
    user's log10(lam) is the same whichever family it is drawn from."""
    profiles = mr.make_profiles(family, small_data, log10_lam_range=(0.0, 4.0))
    linear = mr.make_profiles("linear", small_data, log10_lam_range=(0.0, 4.0))
    keys, bands = user_keys(0, 400, np.array([0.0, 2.0, 4.0]))
    drawn = jax.vmap(lambda k, b: draw_user(profiles, k, b)[0])(keys, bands)
    lam = np.asarray(drawn["log10_lam"])
    other = np.asarray(drawn["log10_cap"] if family == "budget" else drawn["log_weights"][:, 0])
    for band in range(2):
        users = slice(400 * band, 400 * (band + 1))
        assert np.all((lam[users] >= 2.0 * band) & (lam[users] < 2.0 * (band + 1)))
        assert abs(np.corrcoef(lam[users], other[users])[0, 1]) < 0.15   # 400 independent pairs: |r| ~ 0.05
    np.testing.assert_array_equal(lam, np.asarray(jax.vmap(lambda k, b: draw_user(linear, k, b)[0])(keys, bands)["log10_lam"]))


def test_active_strategy(trained_router, small_data, report):
    """Asked one at a time: the same users and flat baselines, the prior at n = 0, and the
    questions it asks are at least as telling as an up-front design on this router."""
    active = mr.evaluate(trained_router, small_data, n_users=32, n_contexts=(0, 2, 8), strategies=("active",))
    table, informative = active.results["active"], report.results["informative"]
    assert set(table) == set(METHODS)
    for method in ("known", "agnostic", "best_fixed", "random"):  # two compiled programs: equal to rounding
        assert table[method][0] == pytest.approx(informative[method][0], rel=1e-5, abs=1e-6)
    for method in ("metarouter", "bt_bayes"):  # no feedback yet: routing by the prior alone
        assert table[method][0]["normalized_utility"] == pytest.approx(informative[method][0]["normalized_utility"])
    assert table["metarouter"][8]["normalized_utility"] > table["metarouter"][0]["normalized_utility"]
    assert "pair strategy: active" in active.format()


def test_identification_of_the_preference(report, trained_router):
    """With no contexts the posterior is the prior: its mean is the range's centre (mean error a
    quarter of the range for uniform users) and its sd the range's; answers then narrow it."""
    lo, hi = trained_router.profiles.log10_lam_range
    for strategy, by_n in report.identification.items():
        assert sorted(by_n) == [0, 2, 8]
        assert by_n[0]["bt_posterior_sd"] == pytest.approx((hi - lo) / np.sqrt(12), rel=0.02)
        assert by_n[0]["bt_posterior_error"] == pytest.approx((hi - lo) / 4, rel=0.2)
        assert by_n[0]["metarouter_error"] == pytest.approx(by_n[0]["bt_posterior_error"], rel=0.1)
        assert by_n[8]["bt_posterior_sd"] < by_n[0]["bt_posterior_sd"]
    informative = report.identification["informative"]
    assert informative[8]["bt_posterior_error"] < 0.7 * informative[0]["bt_posterior_error"]
    assert informative[8]["metarouter_error"] < 0.7 * informative[0]["metarouter_error"]
    assert "error of the posterior mean of log10(lam)" in report.format()
    assert set(json.loads(json.dumps(report.identification_json()))["uniform"]) == {"0", "2", "8"}


def test_evaluation_by_preference_band(trained_router, small_data, tmp_path):
    """`bands` draws n_users users in each log10(lam) band and reports each band on its own."""
    lo, hi = trained_router.profiles.log10_lam_range
    width = (hi - lo) / 4
    report = mr.evaluate(trained_router, small_data, n_users=32, n_contexts=(0, 4), strategies="uniform", bands=4,
                         reference=False)
    edges = np.linspace(lo, hi, 5)
    assert list(report.by_band) == [f"{a:.2f}-{b:.2f}" for a, b in zip(edges[:-1], edges[1:])]
    assert report.settings["n_users"] == 128 and report.settings["bands"] == pytest.approx(edges.tolist())
    centre = 0.5 * (lo + hi)
    for i, band in enumerate(report.by_band.values()):
        assert band.settings["n_users"] == 32 and band.settings["log10_lam_band"] == pytest.approx(edges[i:i + 2])
        # With no contexts the posterior mean is the centre: the error is the band's users' distance from
        # it, 1.5 band widths on average for an outer band and 0.5 for an inner one, if they are in the band.
        expected = abs(centre - (edges[i] + 0.5 * width))
        assert band.identification["uniform"][0]["bt_posterior_error"] == pytest.approx(expected, abs=0.15 * width)
        assert band.results["uniform"]["known"][0]["preference_recovery"] == pytest.approx(1.0)
    # The overall report is the mean over every band's users (as many in each).
    for method, n in (("known", 0), ("metarouter", 4), ("bt_bayes", 4)):
        by_band = [b.results["uniform"][method][n]["normalized_utility"] for b in report.by_band.values()]
        assert report.results["uniform"][method][n]["normalized_utility"] == pytest.approx(np.mean(by_band), abs=1e-5)
    assert "log10(lam) 0.00-" in report.format() or f"log10(lam) {lo:.2f}-" in report.format()
    report.write_json(tmp_path / "bands.json")            # a banded report writes every band
    written = json.loads((tmp_path / "bands.json").read_text())
    assert written["all"] == json.loads(json.dumps(report.to_json())) and list(written["by_band"]) == list(report.by_band)
    assert written["bands"] == pytest.approx(edges.tolist()) and set(written["identification"]) == {"uniform"}
    with pytest.raises(ValueError, match="not evaluated by band"):
        next(iter(report.by_band.values())).banded_json()
    # Given edges work as well (labels as precise as it takes to tell them apart); bad ones are
    # refused by name, before anything is compiled.
    assert band_labels(band_edges(edges[1:4], (lo, hi))) == list(report.by_band)[1:3]
    assert band_labels(band_edges([lo, lo + 1e-3, lo + 2e-3], (lo, hi))) == [
        f"{lo:.3f}-{lo + 1e-3:.3f}", f"{lo + 1e-3:.3f}-{lo + 2e-3:.3f}"]
    for bands, match in ((0, "bands must be >= 1"), ([1.0, 0.5], "increasing"), ([[lo, hi]], "increasing"),
                         ([lo - 1.0, hi], "leave the test users' log10.lam. range")):
        with pytest.raises(ValueError, match=match):
            mr.evaluate(trained_router, small_data, n_users=2, n_contexts=0, strategies="uniform", bands=bands)


def test_scripts_meet_evaluates_users_and_metric(trained_router, small_data):
    """`user_keys`, `draw_user` and `normalized_utility` are evaluate's own: a script that routes
    those users by itself (as experiments/known_shift.py does) reproduces evaluate's figures."""
    from metarouter_jax import adaptation
    from metarouter_jax.tasks import query_utility, utility_scale
    from metarouter_jax.training import calibration_queries

    router, profiles = trained_router, trained_router.profiles
    report = mr.evaluate(router, small_data, n_users=6, n_contexts=0, strategies="uniform", bands=2, seed=3,
                         reference=False)
    edges = np.asarray(report.settings["bands"])
    keys, bands = user_keys(3, 6, edges)
    assert keys.shape == (12,) and bands.shape == (12, 2)
    more, _ = user_keys(3, 9, edges)                      # a larger draw extends every band's users
    np.testing.assert_array_equal(jax.random.key_data(more[9:15]), jax.random.key_data(keys[6:]))
    arrays = router.arrays_for(small_data)
    split = small_data.split("test")
    queries = jax.numpy.asarray(split[small_data.observed[split].any(-1)])
    allowed = arrays.observed[queries]
    calib = jax.numpy.asarray(calibration_queries(small_data, router.config))
    params = router.params["known"]
    feats = adaptation.query_features(router.graphdef, params, arrays.embeddings[queries])

    def known_nu(key, band):
        profile, _ = draw_user(profiles, key, band)
        u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries)
        u = u / utility_scale(profiles, profile, arrays, calib)
        z = adaptation.profile_latent(router.graphdef, params, profiles.features(profile))
        scores = jax.vmap(adaptation.policy_scores, in_axes=(None, None, 0, None, None, None))(
            router.graphdef, params, feats, z, arrays.descriptors, None)
        oracle = jax.numpy.argmax(jax.numpy.where(allowed, u, -jax.numpy.inf), -1)
        return (normalized_utility(u, allowed, jax.numpy.argmax(jax.numpy.where(allowed, scores, -jax.numpy.inf), -1)),
                normalized_utility(u, allowed, oracle), profile["log10_lam"])

    nu, oracle_nu, lams = (np.asarray(x) for x in jax.vmap(known_nu)(keys, bands))
    np.testing.assert_allclose(oracle_nu, 1.0, atol=1e-5)              # the per-query oracle scores 1
    for b, band in enumerate(report.by_band.values()):
        assert np.all((lams[6 * b:6 * b + 6] >= edges[b]) & (lams[6 * b:6 * b + 6] < edges[b + 1]))
        assert band.results["uniform"]["known"][0]["normalized_utility"] == pytest.approx(nu[6 * b:6 * b + 6].mean(),
                                                                                          abs=1e-5)


def test_queries_the_pool_cannot_answer_are_left_out(trained_router, small_data):
    """A test query with no pool model observed has no routing, oracle or random answer: it is left
    out (not a NaN in every metric); a pool that answers no test query is refused by name."""
    quality, cost = small_data.quality.copy(), small_data.cost.copy()
    test = small_data.split("test")
    quality[test[:3], :2], cost[test[:3], :2] = np.nan, np.nan       # three test queries lack models 0 and 1
    data = mr.RoutingData.create(small_data.embeddings, quality, cost, small_data.family,
                                 model_names=small_data.model_names, family_names=small_data.family_names,
                                 splits=small_data.splits)
    report = mr.evaluate(trained_router, data, n_users=4, n_contexts=(0, 2), strategies=("uniform",), pool=[0, 1])
    assert report.settings["n_queries"] == test.size - 3
    values = [v for by_n in report.results["uniform"].values() for m in by_n.values() for v in m.values()]
    assert np.all(np.isfinite(values))
    quality[test, :2], cost[test, :2] = np.nan, np.nan
    data = mr.RoutingData.create(small_data.embeddings, quality, cost, small_data.family,
                                 model_names=small_data.model_names, family_names=small_data.family_names,
                                 splits=small_data.splits)
    names = list(small_data.model_names[:2])
    with pytest.raises(ValueError, match=rf"no query of split 'test'.*pool {re.escape(str(names))}"):
        mr.evaluate(trained_router, data, n_users=4, n_contexts=(0,), pool=[0, 1])
    with pytest.raises(ValueError, match="n_users must be >= 1"):
        mr.evaluate(trained_router, small_data, n_users=0, n_contexts=(0,))


def _with_test_outcomes(small_data, edit):
    return _with_outcomes(small_data, lambda quality, cost: edit(quality, cost, small_data.split("test")))


def _with_outcomes(small_data, edit):
    quality, cost = small_data.quality.copy(), small_data.cost.copy()
    edit(quality, cost)
    return mr.RoutingData.create(small_data.embeddings, quality, cost, small_data.family,
                                 model_names=small_data.model_names, family_names=small_data.family_names,
                                 splits=small_data.splits)


def test_metrics_on_a_pool_where_one_model_dominates(trained_router, small_data):
    """Pool {0, 1} where model 0 is better AND cheaper on every test query: for every user it is the
    per-query oracle, so the best fixed model's normalised utility is exactly 1, and the reported
    quality and cost are those of the answers routed to (random: the mean of the two)."""
    def edit(quality, cost, test):
        quality[test, 0], cost[test, 0] = 1.0, 1e-4
        quality[test, 1], cost[test, 1] = 0.0, 1e-2
    data = _with_test_outcomes(small_data, edit)
    table = mr.evaluate(trained_router, data, n_users=4, n_contexts=(0, 2), strategies=("uniform",),
                        pool=[0, 1]).results["uniform"]
    fixed, rand = table["best_fixed"][0], table["random"][0]
    assert fixed["normalized_utility"] == pytest.approx(1.0, abs=1e-4)
    assert (fixed["quality"], fixed["cost"]) == (pytest.approx(1.0), pytest.approx(1e-4, rel=1e-4))
    assert (rand["quality"], rand["cost"]) == (pytest.approx(0.5), pytest.approx(0.5 * (1e-4 + 1e-2), rel=1e-4))
    for method, by_n in table.items():
        for m in by_n.values():
            assert m["normalized_utility"] <= 1.0 + 1e-4, (method, m)   # no one beats the per-query oracle


def test_every_method_routes_inside_a_one_model_pool(trained_router, small_data):
    """With a pool of one model every method must answer every query with it: each method's quality
    and cost are that model's means over the test queries. Normalised utility is undefined there
    (random routing is the oracle): NaN, not the 1.9 that 0/0 gave."""
    test = small_data.split("test")
    k = small_data.model_names.index("mathstral-13b")
    table = mr.evaluate(trained_router, small_data, n_users=4, n_contexts=(0, 2), strategies=("uniform",),
                        pool=[k]).results["uniform"]
    quality, cost = small_data.quality[test, k].mean(), small_data.cost[test, k].mean()
    for method, by_n in table.items():
        for n, m in by_n.items():
            assert (m["quality"], m["cost"]) == (pytest.approx(quality, rel=1e-4), pytest.approx(cost, rel=1e-4)), \
                (method, n)
            assert np.isnan(m["normalized_utility"]), (method, n)


def test_evaluation_on_another_model_set(trained_router, small_data):
    """Data holding other models than the router's (here one removed): the pool names the data's
    models, the models the router knows keep the descriptors it was trained with, and every
    method routes inside the pool. Families must match, since descriptors are per family."""
    names = small_data.model_names
    fewer = select_models(small_data, names[1:])
    np.testing.assert_allclose(trained_router.arrays_for(fewer).descriptors, trained_router.info.descriptors[1:],
                               atol=1e-6)
    old = copy.copy(trained_router)  # saved before descriptor_centre existed: the data's own centring
    old.info = dataclasses.replace(trained_router.info, descriptor_centre=())
    np.testing.assert_array_equal(old.arrays_for(fewer).descriptors, fewer.descriptors("train"))

    report = mr.evaluate(trained_router, fewer, n_users=4, n_contexts=(0, 2), strategies=("uniform",),
                         pool=[names[2]])
    assert report.settings["pool"] == [names[2]]
    test, k = fewer.split("test"), fewer.model_names.index(names[2])
    for method, by_n in report.results["uniform"].items():
        for m in by_n.values():
            assert m["cost"] == pytest.approx(fewer.cost[test, k].mean(), rel=1e-4), method
    with pytest.raises(KeyError, match=re.escape(names[0])):   # removed: not in the data's pool
        mr.evaluate(trained_router, fewer, n_users=4, n_contexts=(0,), pool=[names[0]])
    renamed = dataclasses.replace(fewer, family_names=tuple(f + "_v2" for f in fewer.family_names))
    with pytest.raises(ValueError, match="task family"):
        mr.evaluate(trained_router, renamed, n_users=4, n_contexts=(0,))


def test_with_models_routes_adapts_and_saves_another_model_set(trained_router, small_data, tmp_path):
    """with_models: the same networks for another model set. Indices and pools are the new set's,
    the models that stay keep their descriptors, and the new set survives a save and load."""
    names = small_data.model_names
    same = trained_router.with_models(small_data)
    np.testing.assert_array_equal(same.info.descriptors, trained_router.info.descriptors)
    fewer = select_models(small_data, names[1:])
    router = trained_router.with_models(fewer)
    assert router.model_names == names[1:]
    np.testing.assert_allclose(router.info.descriptors, trained_router.info.descriptors[1:], atol=1e-6)
    rng = np.random.default_rng(0)
    query = rng.choice(fewer.split("test"), 8)
    a = rng.integers(0, 4, 8)
    prefers = rng.random(8) < 0.5
    ctx = router.contexts_from_feedback(fewer, query, a, (a + 1) % 4, prefers, capacity=8)
    # In the router's units (Contexts.from_feedback(fewer, ...) measures them on fewer's 4 models)
    # and its models: the same judgements through the original router land on indices + 1.
    by_hand = router.contexts_from_outcomes(fewer.embeddings[query], a, (a + 1) % 4, prefers, fewer.quality[query, a],
                                            fewer.cost[query, a], fewer.quality[query, (a + 1) % 4],
                                            fewer.cost[query, (a + 1) % 4], capacity=8, family=fewer.family[query])
    for x, y in zip(jax.tree.leaves(ctx), jax.tree.leaves(by_hand)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    original = trained_router.contexts_from_feedback(fewer, query, a, (a + 1) % 4, prefers, capacity=8)
    np.testing.assert_array_equal(np.asarray(original.model_a)[:8], a + 1)
    np.testing.assert_array_equal(np.asarray(original.outcome_b), np.asarray(ctx.outcome_b))
    with pytest.raises(ValueError, match=re.escape(f"models this router does not route: ['{names[0]}']")):
        router.contexts_from_feedback(small_data, query, np.zeros(8, int), np.ones(8, int), prefers)
    latent = router.adapt(ctx)
    queries = fewer.embeddings[fewer.split("test")]
    choice = router.route(latent, queries, pool=[names[2], names[3]])
    assert set(np.unique(choice).tolist()) <= {1, 2}                   # names[2], names[3] in the new set
    router.save(tmp_path / "r")
    loaded = mr.MetaRouter.load(tmp_path / "r")
    assert loaded.model_names == names[1:]
    np.testing.assert_array_equal(loaded.route(latent, queries, pool=[names[2], names[3]]), choice)
    own = trained_router.with_models(fewer, centring="data")          # centred on the 4 models' own mean
    np.testing.assert_array_equal(own.info.descriptors, fewer.descriptors("train"))
    with pytest.raises(ValueError, match="centring must be"):
        trained_router.with_models(fewer, centring="mean")
    narrow = mr.synthetic_data(seed=0, num_queries=200, embed_dim=16)     # the router reads 32-d embeddings
    with pytest.raises(ValueError, match="16-d, the router was trained on 32-d"):
        trained_router.with_models(narrow)
    with pytest.raises(ValueError, match="16-d, the router was trained on 32-d"):
        mr.evaluate(trained_router, narrow, n_users=4, n_contexts=(0,))
    with pytest.raises(ValueError, match="outside"):                  # 4 models now: index 4 is out
        router.adapt(mr.Contexts.from_feedback(small_data, query, np.full(8, 4), np.zeros(8, int),
                                               np.ones(8, bool), capacity=8))


def test_each_plug_in_reports_its_own_estimate(report):
    """The MLE, posterior-mean and noise-marginal plug-ins coincide only with no contexts: with 8,
    each row is its own estimator's (not a copy of another's)."""
    for table in report.results.values():
        rows = [tuple(table[m][8].values()) for m in ("bt_mle", "bt_posterior", "bt_marginal", "bt_bayes")]
        assert len(set(rows)) == len(rows), rows


def test_bt_marginal_is_told_the_training_flip_prior(trained_router, small_data, monkeypatch):
    """bt_marginal averages over the MetaRouter's training noise prior: beta_range and flip_max."""
    from metarouter_jax import evaluation
    seen = []
    real = evaluation.baselines.noise_quadrature
    monkeypatch.setattr(evaluation.baselines, "noise_quadrature", lambda *a, **k: seen.append(a) or real(*a, **k))
    mr.evaluate(trained_router, small_data, n_users=1, n_contexts=(0,), strategies=("uniform",), reference=False)
    assert trained_router.config.label_flips
    (beta_range, flip_max), = seen
    assert tuple(beta_range) == tuple(trained_router.config.beta_range)
    assert flip_max == pytest.approx(float(trained_router.hparams.flip_max)) and flip_max > 0


def test_more_test_users_extend_the_same_draw():
    """`evaluate`'s docstring promises that the first n of a larger n_users are the n users."""
    (few, no_bands), (many, _) = user_keys(0, 256), user_keys(0, 1024)
    assert no_bands is None and (jax.random.key_data(few) == jax.random.key_data(many[:256])).all()
    assert (jax.random.key_data(few) == jax.random.key_data(jax.random.split(seed_key(0, "test_users"), 256))).all()


def test_every_use_of_a_seed_has_its_own_stream():
    """Each router of `fit(seed=s)` and the test users of `evaluate(seed=s)` draw from distinct keys."""
    from metarouter_jax.router import LATENT_SOURCE
    from metarouter_jax.streams import STREAMS

    assert set(LATENT_SOURCE) < set(STREAMS) and len(set(STREAMS.values())) == len(STREAMS)
    keys = {name: jax.random.key_data(seed_key(3, name)).tolist() for name in STREAMS}
    assert len({str(k) for k in keys.values()}) == len(STREAMS)
    with pytest.raises(ValueError, match="unknown random stream 'users'"):
        seed_key(3, "users")


def test_routers_of_one_network_share_the_compiled_evaluation(trained_router, small_data):
    """The routers' arrays enter evaluate's program as arguments, not as constants: another
    router of the same network (another seed's) with other test users runs the program already
    compiled, and its figures are its own. A router read back from router.json (its config's
    tuples were lists there) has the network of the fitted one, so it shares the program too."""
    from metarouter_jax.evaluation import _users

    kw = dict(n_users=4, n_contexts=(0, 3), strategies="informative", reference=False)
    first = mr.evaluate(trained_router, small_data, **kw)
    compiled = _users._cache_size()
    other = copy.copy(trained_router)
    other.params = jax.tree.map(lambda x: x * 1.5 if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x,
                                trained_router.params)
    second = mr.evaluate(other, small_data, seed=1, **kw)
    assert _users._cache_size() == compiled
    assert second.results["informative"]["metarouter"] != first.results["informative"]["metarouter"]
    assert mr.evaluate(trained_router, small_data, **kw).results == first.results   # nothing of `other` stayed
    net = trained_router.net_config
    read = dataclasses.replace(net, beta_range=list(net.beta_range))   # as router.json gives it
    assert read == net and hash(read) == hash(net)

    @dataclasses.dataclass(frozen=True)
    class Listed(type(trained_router.profiles)):   # a user's family that cannot be hashed (a list field)
        notes: list = dataclasses.field(default_factory=list)

    family = Listed(log10_lam_range=trained_router.profiles.log10_lam_range)
    with pytest.raises(TypeError):
        hash(family)
    assert mr.evaluate(trained_router, small_data, profiles=family, **kw).results == first.results


def test_summarize_reports_over_routers(report):
    from metarouter_jax.evaluation import format_summary, summarize

    shifted = copy.deepcopy(report)
    for by_n in shifted.results["informative"].values():
        for metrics in by_n.values():
            metrics["normalized_utility"] += 0.1
    summary = summarize([report, shifted])
    cell = summary["informative"]["metarouter"][2]["normalized_utility"]
    base = report.results["informative"]["metarouter"][2]["normalized_utility"]
    assert cell["mean"] == pytest.approx(base + 0.05) and cell["std"] == pytest.approx(0.05)
    assert cell["min"] == pytest.approx(base) and cell["max"] == pytest.approx(base + 0.1)
    assert summary["uniform"]["metarouter"][2]["normalized_utility"]["std"] == 0.0       # untouched strategy
    table = format_summary(summary, "informative")
    assert f"{base + 0.05:.3f} ± 0.050" in table and "n=8" in table
    fewer = copy.deepcopy(report)
    del fewer.results["informative"]["linucb"]
    with pytest.raises(ValueError, match="the reports differ in strategies, methods"):
        summarize([report, fewer])
    with pytest.raises(ValueError, match="at least one evaluation report"):
        summarize([])
    other_split = copy.deepcopy(report)
    other_split.settings["split"] = "valid"
    with pytest.raises(ValueError, match="made with different 'split'"):
        summarize([report, other_split])
    other_seed = copy.deepcopy(report)
    other_seed.settings["seed"] += 1                       # other test users of the same setting: fine
    summarize([report, other_seed])
    with pytest.raises(TypeError, match="summarize takes EvalReports"):
        summarize([report, report.to_json()])


def test_unseen_accuracy_averages_the_users_that_have_an_unasked_pair():
    """A user every one of whose held-out pairs a context asked has no unseen accuracy (NaN): the
    mean leaves that user out rather than counting 0, and is NaN only where no user has one."""
    from metarouter_jax.evaluation import _report

    users, methods = 3, (("metarouter",), ("agnostic", "known"), ("metarouter", "known"))
    accuracy = np.zeros((users, 2, 2, 2), np.float32)                  # [U, n, (all, unseen), pair methods]
    accuracy[:, :, 0] = [[[0.5, 0.9]] * 2, [[0.7, 0.9]] * 2, [[0.6, 0.9]] * 2]
    accuracy[:, 0, 1] = [[np.nan, np.nan], [1.0, 0.8], [0.5, 0.6]]    # n=1: user 0 has no unasked pair
    accuracy[:, 1, 1] = np.nan                                           # n=2: no user has one
    flat = np.tile(np.asarray([[0.1, 0.5, 1.0], [0.9, 0.6, 2.0]], np.float32), (users, 1, 1))
    unasked = np.asarray([[0, 0], [3, 0], [5, 0]])                   # [U, n] the users' unasked held-out pairs
    held = np.asarray([[4, 4], [4, 4], [8, 8]])                      # [U, n] their valid held-out pairs
    per_user = {"informative": (np.zeros((users, 2, 1, 3), np.float32), flat, np.zeros((users, 2, 3), np.float32),
                                accuracy, np.stack([unasked, held], -1))}
    report = _report(per_user, slice(None), (1, 2), {}, methods)
    assert report.held_out["informative"] == {1: {"asked_share": pytest.approx(1 - 8 / 16), "users_with_unasked": 2},
                                              2: {"asked_share": 1.0, "users_with_unasked": 0}}
    table = report.results["informative"]
    assert table["metarouter"][1]["pair_accuracy"] == pytest.approx(0.6)
    assert table["metarouter"][1]["pair_accuracy_unseen"] == pytest.approx(0.75)
    assert table["known"][1]["pair_accuracy_unseen"] == pytest.approx(0.7)
    accuracy[2, 0, 1, 0] = np.nan                                      # a method's own NaN for a user who has pairs
    table = _report(per_user, slice(None), (1, 2), {}, methods).results["informative"]
    assert np.isnan(table["metarouter"][1]["pair_accuracy_unseen"]), "not averaged over the other users alone"
    assert table["known"][1]["pair_accuracy_unseen"] == pytest.approx(0.7)
    assert np.isnan(table["metarouter"][2]["pair_accuracy_unseen"])
    assert table["known"][2]["pair_accuracy"] == pytest.approx(0.9)
