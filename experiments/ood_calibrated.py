"""Out-of-distribution task families with a few calibration answers on each new family.

    python experiments/ood_calibrated.py [--data synthetic] [--calib-queries 32]
        [--seeds 0 1 2] [--steps 2000] [--users 256] [--set KEY=VALUE ...] [--out DIR] [--name NAME]

`experiments/generalisation.py --study ood` showed that routers meta-trained on QA families do
not transfer to code or math: the model descriptors hold quality per task family, and a column
of a family the router never trained on is an input the policy never learned to read. Here
every model answers `--calib-queries` queries of each new family (a calibration split, as a new
model would be calibrated, DESIGN.md section 2); those queries leave the test set. Per seed:

- `descriptors`: the router trained on the QA families, descriptors from the calibration split;
- `family_quality`: the same with `TrainConfig.family_quality`, the policy reading each model's
  calibration quality on the query's own family (one input for every family);
- `in_distribution` and `in_distribution_family_quality`: routers trained on every family of
  the data's own splits, without and with the feature, on the data's test split: what the
  feature does where nothing is out of distribution.

Writes experiments/results/ood_calibrated_<data>.json (every seed, every table) and .md
(mean +- std over seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr
from metarouter_jax.splits import ood_by_family

from common import add_validation_options, cell, experiment_parser, load_data, parse, setup, write_results
from generalisation import SETUPS, STRATEGIES, _table, evaluate, family_queries

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = {"descriptors": "router trained on the QA families, descriptors with the calibration answers",
            "family_quality": "the same with the policy reading each model's quality on the query's own family"}
REFERENCE = {"in_distribution": "router trained on every family (the data's own splits), descriptors only",
             "in_distribution_family_quality": "the same with the own-family quality feature"}


def calibrated_split(data, setup, calib_queries: int, seed: int = 0):
    """The OOD split with `calib_queries` queries of each test family moved into a "calib" split
    (beside every training query) and out of the test groups. The same queries for every seed."""
    groups = setup["test"]
    split = ood_by_family(data, setup["train"], [f for fams in groups.values() for f in fams])
    rng = np.random.default_rng(seed)
    held = []
    for fams in groups.values():
        for fam in fams:
            members = family_queries(split, "test", [fam])
            if members.size <= calib_queries:
                raise ValueError(f"family {fam!r} has {members.size} queries: too few to keep {calib_queries} "
                                 "for calibration and test on the rest")
            held.append(rng.choice(members, calib_queries, replace=False))
    held = np.sort(np.concatenate(held))
    tests = {f"test_{g}": np.setdiff1d(family_queries(split, "test", fams), held) for g, fams in groups.items()}
    return split.with_splits(calib=np.concatenate([split.split("train"), held]), **tests)


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="ood_calibrated_<data>")
    parser.add_argument("--data", default="synthetic", choices=sorted(SETUPS))
    parser.add_argument("--calib-queries", type=int, default=32,
                        help="calibration queries per new family (every model's answer to each)")
    add_validation_options(parser)
    args, overrides = parse(parser)
    study = SETUPS[args.data]
    data, config = setup(args, overrides, args.data, load_data(args.data))   # as generalisation.py
    split = calibrated_split(data, study, args.calib_queries)
    groups = list(study["test"])
    configs = {"descriptors": config.replace(descriptor_split="calib"),
               "family_quality": config.replace(descriptor_split="calib", family_quality=True)}
    start = time.time()
    runs = {}
    for seed in args.seeds:
        begin = time.time()
        run = runs[str(seed)] = {}
        for variant, cfg in configs.items():
            router = mr.MetaRouter.fit(split, cfg, seed=seed)
            run[variant] = {g: evaluate(router, split, seed, args.users, split=f"test_{g}") for g in groups}
            run[variant]["validation"] = router.best_valid_utility
        for variant, cfg in (("in_distribution", config), ("in_distribution_family_quality",
                                                            config.replace(family_quality=True))):
            router = mr.MetaRouter.fit(data, cfg, seed=seed)
            run[variant] = evaluate(router, data, seed, args.users)
            run[variant]["validation"] = router.best_valid_utility
        print(f"seed {seed}: {time.time() - begin:.0f} s", flush=True)
    results = {"config": config.to_dict(), "data": args.data, "calib_queries": args.calib_queries,
               "train_families": study["train"], "test_families": study["test"],
               "test_queries": {g: int(split.split(f"test_{g}").size) for g in groups},
               "in_distribution_test_queries": int(data.split("test").size),
               "runs": runs, "seconds": time.time() - start}
    stem = args.out / (args.name or f"ood_calibrated_{args.data}")
    write_results(stem.with_suffix(".json"), results)
    table = markdown(results, args.seeds, args.users, args.steps)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md in {results['seconds']:.0f} s")


def markdown(results: dict, seeds, users, steps) -> str:
    runs = list(results["runs"].values())
    lines = [f"# Out-of-distribution families with calibration answers on {results['data']}", "",
             f"Trained on {', '.join(results['train_families'])}; {results['calib_queries']} calibration queries "
             f"per new family. Seeds {list(seeds)}, {users} test users per seed, {steps} meta-steps per router; "
             "NU: normalised utility, mean ± std over seeds."]
    lines += summary(results)
    for group, fams in results["test_families"].items():
        lines += ["", f"## Test on {group} ({', '.join(fams)}; {results['test_queries'][group]} queries)"]
        for variant, title in VARIANTS.items():
            for strategy in STRATEGIES:
                lines += _table([run[variant][group] for run in runs], strategy, title)
    lines += ["", f"## In distribution (every family, the data's test split: "
              f"{results['in_distribution_test_queries']} queries)"]
    for variant, title in REFERENCE.items():
        for strategy in STRATEGIES:
            lines += _table([run[variant] for run in runs], strategy, title)
    return "\n".join(lines) + "\n"


def summary(results: dict) -> list[str]:
    """One row per test group, router and pair strategy: normalised utility at n = 6."""
    runs = list(results["runs"].values())
    methods = ("metarouter", "bt_posterior", "known", "agnostic", "best_fixed")
    lines = ["", "## Summary: normalised utility at n = 6", "",
             "| test on | router | pairs | MetaRouter | posterior-mean plug-in | known | agnostic | best fixed |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(group, variant, lambda run, g=group, v=variant: run[v][g]) for group in results["test_families"]
            for variant in VARIANTS]
    rows += [("every family", variant, lambda run, v=variant: run[v]) for variant in REFERENCE]
    for group, variant, report in rows:
        for strategy in STRATEGIES:
            cells = [cell([report(run)[strategy][m]["6"]["normalized_utility"] for run in runs]) for m in methods]
            lines.append(f"| {group} | {variant} | {strategy} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
