"""Out of distribution, would one model chosen on the training families do better than routing?

    python experiments/ood_fixed.py [--data synthetic llmrouter] [--seeds 0 1 2] [--users 256]
        [--guard [--percentile 1] [--steps 2000] [--set KEY=VALUE ...]] [--out DIR] [--name NAME]

`generalisation.py --study ood` meta-trains on QA families and tests on code and math: every router,
the known-preference one included, scores far below the best single model in hindsight. This
asks what a user could have done without routing: for each of `evaluate`'s test users of that
study (the same seeds, users and log10(lam) range, the router's: the frontier range of the
training families), given their true profile, route every query of a test group to the one model
of the best mean utility on the training split (the QA families; "fixed from training"), beside
the best model on the test group's own queries (in hindsight, `evaluate`'s `best_fixed`, which
needs the answers of the new family). No router is trained: seconds per dataset. Compare the first
with the known router of generalisation_<data>.md, which is given the same profile.

With --guard it also meta-trains the routers of that study (`MetaRouter.fit` on the training
families, --seeds and --steps as generalisation.py) and asks whether a guard recovers the loss:
a query whose embedding is far from the training queries (mean cosine similarity to its 10
nearest training queries below the --percentile-th percentile of the validation queries') goes
to the fixed model, every other one to the known router. Reported for the known router, the
fixed model and the guarded router, on each test group and on the validation split (in
distribution: what the guard costs there), with the share of queries the guard sends away.

Writes experiments/results/ood_fixed.json (every seed) and .md (mean +- std over seeds), with
--guard ood_guard.json and .md; NAME.json and NAME.md with --name.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import metarouter_jax as mr
from metarouter_jax import adaptation, baselines, evaluation
from metarouter_jax.splits import ood_by_family
from metarouter_jax.tasks import RoutingArrays, query_utility
from metarouter_jax.training import resolve_profiles

from common import add_validation_options, cell, experiment_parser, load_data, parse, setup, table, write_results
from generalisation import SETUPS, family_queries

OUT = Path(__file__).resolve().parent / "results"
METHODS = ("fixed_from_training", "best_fixed")
GUARD_METHODS = ("known", "fixed_from_training", "guarded")
NEIGHBOURS = 10   # training queries a query's similarity is averaged over


def _fixed_from_training(profiles, profile, arrays, train, allowed):
    """[Q] the model of the best mean utility for `profile` on the `train` queries, per query of
    `allowed` [Q, K] (the best observed one where that model is unobserved)."""
    _, _, means = baselines.hindsight(_utilities(profiles, profile, arrays, train), arrays.observed[train])
    return baselines.best_fixed_choice(means, allowed)


def _utilities(profiles, profile, arrays, queries):
    """[Q, K] a profile's utility of every model's answer to `queries`."""
    return jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries)


@functools.partial(jax.jit, static_argnames="profiles")
def _fixed_users(profiles, arrays, keys, train, test):
    """[U, METHODS] each test user's normalised utility on `test` (the data enters as arguments:
    one compilation serves every seed)."""
    allowed = arrays.observed[test]

    def one_user(key):
        profile, _ = evaluation.draw_user(profiles, key)
        u = _utilities(profiles, profile, arrays, test)
        _, _, test_means = baselines.hindsight(u, allowed)
        return jnp.stack([evaluation.normalized_utility(u, allowed, choice) for choice in (
            _fixed_from_training(profiles, profile, arrays, train, allowed),
            baselines.best_fixed_choice(test_means, allowed))])

    return jax.vmap(one_user)(keys)


def fixed_choices(data, profiles, train_queries, test_queries, seed: int, users: int) -> dict[str, float]:
    """Per method of `METHODS`, the mean over `evaluate(seed=seed, n_users=users)`'s test users of
    their normalised utility on `test_queries`, given their true profile."""
    keys, _ = evaluation.user_keys(seed, users)
    per_user = np.asarray(_fixed_users(profiles, RoutingArrays.from_data(data), keys, jnp.asarray(train_queries),
                                       jnp.asarray(test_queries)))                       # [U, METHODS]
    return {m: float(per_user[:, i].mean()) for i, m in enumerate(METHODS)}


def similarity(embeddings, queries, train_queries) -> np.ndarray:
    """[Q] mean cosine similarity of each query to its `NEIGHBOURS` nearest training queries."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    sims = unit[queries] @ unit[train_queries].T
    return np.sort(sims, axis=1)[:, -NEIGHBOURS:].mean(1)


@functools.partial(jax.jit, static_argnames=("graphdef", "profiles"))
def _guarded_users(graphdef, profiles, params, arrays, keys, queries, train, far):
    """[U, GUARD_METHODS] each test user's normalised utility on `queries` routed by the known
    router (`params`), by the fixed model and by the guard (the fixed model where `far` [Q])."""
    allowed = arrays.observed[queries]
    feats = adaptation.query_features(graphdef, params, arrays.embeddings[queries])

    def one_user(key):
        profile, _ = evaluation.draw_user(profiles, key)
        fixed = _fixed_from_training(profiles, profile, arrays, train, allowed)
        z = adaptation.profile_latent(graphdef, params, profiles.features(profile))
        scores = jax.vmap(adaptation.policy_scores, in_axes=(None, None, 0, None, None, None))(
            graphdef, params, feats, z, arrays.descriptors, None)
        known = jnp.argmax(jnp.where(allowed, scores, -jnp.inf), -1)
        u = _utilities(profiles, profile, arrays, queries)
        return jnp.stack([evaluation.normalized_utility(u, allowed, c) for c in (known, fixed,
                                                                                 jnp.where(far, fixed, known))])

    return jax.vmap(one_user)(keys)


def guarded_choices(router, data, query_sets: dict[str, np.ndarray], seed: int, users: int,
                    percentile: float) -> dict[str, dict[str, float]]:
    """Per query set: each of `GUARD_METHODS`' mean normalised utility over `evaluate`'s test users
    (true profile), and the share of the set's queries the guard sends to the fixed model."""
    arrays = router.arrays_for(data)
    train = data.split(router.config.train_split)
    threshold = np.percentile(similarity(data.embeddings, data.split("valid"), train), percentile)
    keys, _ = evaluation.user_keys(seed, users)
    out = {}
    for name, queries in query_sets.items():
        queries = queries[data.observed[queries].any(-1)]                       # evaluate's routable queries
        far = similarity(data.embeddings, queries, train) < threshold
        per_user = np.asarray(_guarded_users(router.graphdef, router.profiles, router.params["known"], arrays, keys,
                                             jnp.asarray(queries), jnp.asarray(train), jnp.asarray(far)))
        out[name] = {**{m: float(per_user[:, i].mean()) for i, m in enumerate(GUARD_METHODS)},
                     "far_share": float(far.mean())}
    return out


def guard_markdown(results: dict, args) -> str:
    lines = ["# Out of distribution: a guard that sends far queries to one model chosen on the training families",
             "", f"Seeds {list(args.seeds)}, {args.steps} meta-steps per router, {args.users} test users each, "
             "given their true profile; normalised utility, mean ± std over seeds. A query is far when its mean "
             f"cosine similarity to its {NEIGHBOURS} nearest training queries is below percentile {args.percentile:g} "
             "of the validation queries'; the guarded router sends it to the fixed model, the rest to the known "
             "router. Far share: the share of the queries sent to the fixed model.", ""]
    rows = []
    for data_name, result in results.items():
        for name in result["query_sets"]:
            runs = [run[name] for run in result["runs"].values()]
            rows.append([data_name, name, *(cell([r[m] for r in runs]) for m in GUARD_METHODS),
                         f"{np.mean([r['far_share'] for r in runs]):.2f}"])
    return "\n".join(lines + table(["data", "queries", *GUARD_METHODS, "far share"], rows)) + "\n"


def markdown(results: dict, seeds, users: int) -> str:
    lines = ["# Out of distribution: one model chosen on the training families", "",
             f"Seeds {list(seeds)}, {users} test users each (`evaluate`'s users of `generalisation.py --study ood`), "
             "given their true profile; normalised utility on each test group's queries, mean ± std over seeds. "
             "Fixed from training: the model of the best mean utility on the training families' queries; best "
             "fixed: the best on the test group's own queries (in hindsight).", ""]
    rows = []
    for data_name, result in results.items():
        for group, runs in result["groups"].items():
            rows.append([data_name, f"{group} ({', '.join(result['test_families'][group])}; "
                                    f"{result['test_queries'][group]} queries)",
                         *(cell([run[m] for run in runs.values()]) for m in METHODS)])
    return "\n".join(lines + table(["data", "test group", *METHODS], rows)) + "\n"


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="ood_fixed")
    parser.add_argument("--data", nargs="+", default=["synthetic", "llmrouter"], choices=sorted(SETUPS),
                        help="datasets (generalisation.py's ood setups)")
    parser.add_argument("--guard", action="store_true",
                        help="also train the routers and route far queries to the fixed model (see above)")
    parser.add_argument("--percentile", type=float, default=1.0,
                        help="with --guard: the validation queries' similarity percentile below which a query is far")
    add_validation_options(parser)
    args, overrides = parse(parser)
    if overrides and not args.guard:
        parser.error(f"nothing is trained here without --guard: --set {overrides} has no effect")
    if not 0.0 <= args.percentile <= 100.0:
        parser.error(f"--percentile must be in [0, 100], got {args.percentile}")
    if args.guard:
        guard(args, overrides)
        return
    results = {}
    for data_name in args.data:
        start = time.time()
        setup = SETUPS[data_name]
        data = load_data(data_name)
        split = ood_by_family(data, setup["train"], [f for fams in setup["test"].values() for f in fams])
        profiles = resolve_profiles(mr.TrainConfig(), split)       # the router's range, as generalisation.py trains
        groups = {}
        for group, fams in setup["test"].items():
            queries = family_queries(split, "test", fams)
            queries = queries[split.observed[queries].any(-1)]      # evaluate's routable queries
            groups[group] = {str(seed): fixed_choices(split, profiles, split.split("train"), queries, seed, args.users)
                             for seed in args.seeds}
        results[data_name] = {"train_families": setup["train"], "test_families": setup["test"],
                              "log10_lam_range": list(profiles.log10_lam_range),
                              "test_queries": {g: int(family_queries(split, "test", f).size)
                                               for g, f in setup["test"].items()},
                              "groups": groups, "seconds": time.time() - start}
        print(f"{data_name}: {results[data_name]['seconds']:.0f} s", flush=True)
    stem = args.out / (args.name or "ood_fixed")
    write_results(stem.with_suffix(".json"), {"data": args.data, "seeds": args.seeds, "users": args.users,
                                              "results": results})
    text = markdown(results, args.seeds, args.users)
    stem.with_suffix(".md").write_text(text)
    print(text)


def guard(args, overrides) -> None:
    results = {}
    for data_name in args.data:
        study = SETUPS[data_name]
        data, config = setup(args, overrides, data_name, load_data(data_name))   # as generalisation.py
        split = ood_by_family(data, study["train"], [f for fams in study["test"].values() for f in fams])
        query_sets = {"valid (training families)": split.split("valid"),
                      **{group: family_queries(split, "test", fams) for group, fams in study["test"].items()}}
        runs = {}
        for seed in args.seeds:
            start = time.time()
            router = mr.MetaRouter.fit(split, config, seed=seed, companions=False)
            runs[str(seed)] = {**guarded_choices(router, split, query_sets, seed, args.users, args.percentile),
                               "seconds": time.time() - start}
            print(f"{data_name}, seed {seed}: {runs[str(seed)]['seconds']:.0f} s", flush=True)
        results[data_name] = {"config": config.to_dict(), "train_families": study["train"],
                              "query_sets": {k: int(v.size) for k, v in query_sets.items()}, "runs": runs}
    stem = args.out / (args.name or "ood_guard")
    write_results(stem.with_suffix(".json"), {"data": args.data, "seeds": args.seeds, "users": args.users,
                                              "percentile": args.percentile, "results": results})
    text = guard_markdown(results, args)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
