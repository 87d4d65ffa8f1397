"""Out of distribution, would one model chosen on the training families do better than routing?

    python experiments/ood_fixed.py [--data synthetic llmrouter] [--seeds 0 1 2] [--users 256]
        [--out DIR] [--name NAME]

`generalisation.py --study ood` meta-trains on QA families and tests on code and math: every router,
the known-preference one included, scores far below the best single model in hindsight. This
asks what a user could have done without routing: for each of `evaluate`'s test users of that
study (the same seeds, users and log10(lam) range, the router's: the frontier range of the
training families), given their true profile, route every query of a test group to the one model
of the best mean utility on the training split (the QA families; "fixed from training"), beside
the best model on the test group's own queries (in hindsight, `evaluate`'s `best_fixed`, which
needs the answers of the new family). No router is trained: seconds per dataset. Compare the first
with the known router of generalisation_<data>.md, which is given the same profile.

Writes experiments/results/ood_fixed.json (every seed) and .md (mean +- std over seeds); NAME.json
and NAME.md with --name.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import metarouter_jax as mr
from metarouter_jax import baselines, evaluation
from metarouter_jax.splits import ood_by_family
from metarouter_jax.tasks import RoutingArrays, query_utility
from metarouter_jax.training import resolve_profiles

from common import cell, experiment_parser, load_data, parse, table, write_results
from generalisation import SETUPS, family_queries

OUT = Path(__file__).resolve().parent / "results"
METHODS = ("fixed_from_training", "best_fixed")


def fixed_choices(data, profiles, train_queries, test_queries, seed: int, users: int) -> dict[str, list[float]]:
    """Per method of `METHODS`, each of `evaluate(seed=seed, n_users=users)`'s test users'
    normalised utility on `test_queries`, given their true profile."""
    arrays = RoutingArrays.from_data(data)
    train, test = jnp.asarray(train_queries), jnp.asarray(test_queries)
    allowed = arrays.observed[test]

    def utilities(profile, queries):
        return jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries)

    def one_user(key):
        profile, _ = evaluation.draw_user(profiles, key)
        u = utilities(profile, test)
        _, _, train_means = baselines.hindsight(utilities(profile, train), arrays.observed[train])
        _, _, test_means = baselines.hindsight(u, allowed)
        return jnp.stack([evaluation.normalized_utility(u, allowed, baselines.best_fixed_choice(means, allowed))
                          for means in (train_means, test_means)])

    keys, _ = evaluation.user_keys(seed, users)
    per_user = np.asarray(jax.jit(jax.vmap(one_user))(keys))                       # [U, METHODS]
    return {m: float(per_user[:, i].mean()) for i, m in enumerate(METHODS)}


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
    args, overrides = parse(parser)
    if overrides:
        parser.error(f"nothing is trained here: --set {overrides} has no effect")
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


if __name__ == "__main__":
    main()
