"""RouterBench 0-shot: MetaRouter vs baselines, mean and spread over meta-training seeds.

    python experiments/routerbench.py [--seeds 0 1 2] [--steps 2000] [--users 1024] [--set KEY=VALUE ...] [--out DIR]
                                      [--name NAME] [--valid-fraction F] [--valid-subset F]

Meta-trains on the train split (20% of it held out, stratified by family, for early stopping
and model selection, which keeps the parameter average: metarouter_jax.recipes), evaluates users on the
test split, all three pair strategies, linear profiles with log10(lam) in [0, 4] (the reference
range of DESIGN.md section 9). Each seed
draws its own test users, as the other experiments do, so the spread over seeds includes the
user draw; 1,024 of them by default, because on these 0/1 logs one draw of 256 users moved the
best fixed model in hindsight by 0.03 (README, RouterBench section). Writes
experiments/results/NAME.json (every seed) and NAME.md (mean +- std); NAME is routerbench
unless given, e.g. `--set family_quality=true --name routerbench_family_quality`.
"""

from __future__ import annotations

import time
from pathlib import Path

import metarouter_jax as mr

from common import (CURVE_NS as NS, add_validation_options, curve_table, experiment_parser, held_out_table,
                    identification_table, literature_tables, parse, setup, split_sizes, validation_record, write_results)

OUT = Path(__file__).resolve().parent / "results"
STRATEGIES = ("uniform", "informative", "active")  # active: asked one at a time at the posterior median


def main() -> None:
    parser = experiment_parser(__doc__, OUT, name="routerbench")
    parser.add_argument("--data", default=None, help="RouterBench folder (default: $METAROUTER_DATA/routerbench_0shot)")
    add_validation_options(parser)
    parser.set_defaults(users=1024)
    args, overrides = parse(parser)
    out = args.out
    data, config = setup(args, overrides, "routerbench", mr.load_routerbench(args.data))
    runs = {}
    for seed in args.seeds:
        start = time.time()
        router = mr.MetaRouter.fit(data, config, seed=seed)
        report = mr.evaluate(router, data, split="test", n_users=args.users, seed=seed, n_contexts=NS, strategies=STRATEGIES)
        runs[seed] = report.to_json()
        runs[seed].update(validation_record(router))
        runs[seed]["identification"] = report.identification_json()
        runs[seed]["held_out"] = report.held_out_json()
        print(f"seed {seed}: {time.time() - start:.0f} s", flush=True)
        print(report.format(), flush=True)
    write_results(out / f"{args.name}.json", {"config": config.to_dict(), "split_sizes": split_sizes(data), "runs": runs})

    changed = f", TrainConfig overrides {overrides}" if overrides else ""
    lines = [f"RouterBench 0-shot, test split, {args.users} users drawn with each seed, seeds {args.seeds}{changed}, mean +- std over seeds"]
    for strategy in STRATEGIES:
        for metric in ("normalized_utility", "preference_recovery"):
            lines.append(f"\n{metric.replace('_', ' ')}, {strategy} pairs\n")
            lines += curve_table([runs[s] for s in args.seeds], strategy, metric)
        lines.append(f"\nidentification of the preference, {strategy} pairs\n")
        lines += identification_table([runs[s] for s in args.seeds], strategy)
        lines += literature_tables([runs[s] for s in args.seeds], strategy)
    lines.append("\nheld-out pairs that a context asked (pair_accuracy_unseen leaves them out)\n")
    lines += held_out_table([runs[s] for s in args.seeds], STRATEGIES)
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
