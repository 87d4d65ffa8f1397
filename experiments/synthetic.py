"""Synthetic default: MetaRouter vs baselines for linear and family-weight users, over seeds.

    python experiments/synthetic.py [--seeds 0 1 2] [--steps 2000] [--users 256] [--set KEY=VALUE ...] [--out DIR]
        [--name NAME]

Trains one router per profile family and seed (the known-preference router, the MetaRouter
warm-started from it, and the agnostic companion), evaluates the three pair strategies on 256 test
users (drawn with the same seed) and writes experiments/results/synthetic_<profile>.json (every
seed) and synthetic.md (mean +- std over seeds); NAME_<profile>.json and NAME.md with --name
(e.g. for a --set variant).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr

from common import (CURVE_NS as NS, curve_table, experiment_parser, held_out_table, identification_table,
                    literature_tables, parse, write_results)

OUT = Path(__file__).resolve().parent / "results"
STRATEGIES = ("uniform", "informative", "active")  # active: asked one at a time at the posterior median


def markdown(runs: dict, strategy: str, metric: str) -> str:
    return "\n".join([f"\n{metric.replace('_', ' ')}, {strategy} pairs\n",
                      *curve_table(runs.values(), strategy, metric)])


def main() -> None:
    parser = experiment_parser(__doc__, OUT, name="synthetic", names="NAME_<profile>.json, NAME.md")
    parser.add_argument("--profiles", nargs="+", default=["linear", "family_weights"])
    args, overrides = parse(parser)
    out = args.out
    data = mr.synthetic_data(seed=0)
    summary = [f"Synthetic default, {args.users} test users, seeds {args.seeds}, mean +- std over seeds"]
    for profile in args.profiles:
        config = mr.TrainConfig(**{"num_steps": args.steps, "profile": profile, **overrides})
        runs, seconds = {}, []
        for seed in args.seeds:
            start = time.time()
            router = mr.MetaRouter.fit(data, config, seed=seed)
            seconds.append(time.time() - start)
            report = mr.evaluate(router, data, n_users=args.users, seed=seed, n_contexts=NS, strategies=STRATEGIES)
            runs[str(seed)] = report.to_json()
            runs[str(seed)]["validation"] = router.best_valid_utility
            runs[str(seed)]["identification"] = report.identification_json()
            runs[str(seed)]["held_out"] = report.held_out_json()
            print(f"{profile}, seed {seed}: trained in {seconds[-1]:.0f} s\n{report.format()}", flush=True)
        write_results(out / f"{args.name}_{profile}.json", {"config": config.to_dict(), "runs": runs})
        summary.append(f"\n### {profile} users (training {np.mean(seconds):.0f} s per seed, {args.steps} steps)\n")
        for strategy in STRATEGIES:
            for metric in ("normalized_utility", "preference_recovery"):
                summary.append(markdown(runs, strategy, metric))
            summary += [f"\nidentification of the preference, {strategy} pairs\n",
                        *identification_table(runs.values(), strategy), *literature_tables(list(runs.values()), strategy)]
        summary += ["\nheld-out pairs that a context asked (pair_accuracy_unseen leaves them out)\n",
                    *held_out_table(runs.values(), STRATEGIES)]
    (out / f"{args.name}.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
