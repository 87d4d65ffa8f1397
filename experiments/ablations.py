"""Ablations: what noise injection, the entropy term, inner refinement and the encoder's pooling do.

    python experiments/ablations.py [--data synthetic] [--variants full no_noise ...]
        [--seeds 0 1 2] [--steps 2000] [--users 256] [--set KEY=VALUE ...] [--out DIR] [--name NAME]
        [--no-reference]

Each variant changes one thing against the default MetaRouter (`full`), DESIGN.md section 8:

- `no_noise`: no noise injection at all (no label flips, no outcome, latent or query noise, every
  training user with the full context count);
- `no_entropy`: no entropy term (entropy weight 0 throughout, instead of 0.1 annealed to 0.01);
- `inner_steps_3`: three meta-SGD refinement steps on the latent (the default has none);
- `learned_likelihood`: the atomic posterior with a learned per-context likelihood alone,
  instead of the Bradley-Terry head plus a learned correction;
- `mean_pooling`: a point-estimate encoder (masked mean pooling, no atomic posterior);
- `gaussian`: a point-estimate encoder with a product of Gaussians and a KL term.

Every variant trains its three routers (known, MetaRouter, agnostic) with the same seeds and is
evaluated on the same users (uniform and informative pairs, beta = 10, 5% label flips). Writes
experiments/results/ablations_<data>.json (every seed) and ablations_<data>.md (mean +- std).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr

from common import add_reference_option, add_validation_options, cell, experiment_parser, load_data, parse, setup, split_sizes, write_results

OUT = Path(__file__).resolve().parent / "results"
NS = (0, 2, 6, 16)
STRATEGIES = ("uniform", "informative")
# name: (TrainConfig changes, Hparams changes)
VARIANTS = {
    "full": ({}, {}),
    "no_noise": ({"label_flips": False, "outcome_noise": False, "latent_noise": False, "random_counts": False},
                 {"query_noise": 0.0}),
    "no_entropy": ({}, {"entropy_start": 0.0, "entropy_end": 0.0}),
    "inner_steps_3": ({"inner_steps": 3}, {}),
    "learned_likelihood": ({"likelihood": "learned"}, {}),
    "mean_pooling": ({"posterior_atoms": 0}, {}),
    "gaussian": ({"posterior_atoms": 0, "gaussian_encoder": True}, {}),
}


def markdown(name: str, results: dict, args) -> str:
    lines = [f"# Ablations on {name}", "", f"Seeds {args.seeds}, {args.users} test users per seed, {args.steps} "
             "meta-steps per router; NU: normalised utility of the MetaRouter, mean ± std over seeds; "
             "known: the known-preference router trained alongside (an upper bound)."]
    for strategy in STRATEGIES:
        lines += [f"\n{strategy} pairs\n", "| variant | " + " | ".join(f"NU n={n}" for n in NS)
                  + " | PR(6) | known | best held-out validation | training s |", "|---|" + "---|" * (len(NS) + 4)]
        for variant, result in results["variants"].items():
            runs = list(result["runs"].values())
            cells = [cell([r[strategy]["metarouter"][str(n)]["normalized_utility"] for r in runs]) for n in NS]
            cells.append(cell([r[strategy]["metarouter"]["6"]["preference_recovery"] for r in runs]))
            cells.append(cell([r[strategy]["known"]["0"]["normalized_utility"] for r in runs]))
            cells.append(cell([r["validation"]["metarouter"] for r in runs]))
            cells.append(f"{np.mean([r['seconds'] for r in runs]):.0f}")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="ablations_<data>")
    parser.add_argument("--data", default="synthetic", help="synthetic (default) or a dataset name, e.g. routerbench")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_validation_options(parser)
    add_reference_option(parser)
    args, overrides = parse(parser)
    # RouterBench as experiments/routerbench.py; otherwise the data's splits and frontier range.
    data, base = setup(args, overrides, args.data, load_data(args.data))
    results = {"data": args.data, "split_sizes": split_sizes(data), "variants": {}}
    for variant in args.variants:
        changes, hp_changes = VARIANTS[variant]
        config = base.replace(**changes)
        hparams = mr.Hparams.create(**hp_changes)
        runs = {}
        for seed in args.seeds:
            start = time.time()
            router = mr.MetaRouter.fit(data, config, hparams, seed=seed)
            seconds = time.time() - start
            report = mr.evaluate(router, data, n_users=args.users, seed=seed, n_contexts=NS, strategies=STRATEGIES,
                                 reference=args.reference)
            runs[str(seed)] = {**report.to_json(), "validation": router.best_valid_utility, "seconds": seconds}
            print(f"{variant}, seed {seed}: trained in {seconds:.0f} s\n{report.table('uniform')}", flush=True)
        results["variants"][variant] = {"config": config.to_dict(), "hparams": hparams.to_json(), "runs": runs}
    stem = args.out / (args.name or f"ablations_{args.data}")
    write_results(stem.with_suffix(".json"), results)
    table = markdown(args.data, results, args)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
