"""Where on the preference range does each router beat the best fixed model? Users by log10(lam) band.

    python experiments/lam_bands.py [--data routerbench] [--bands 8] [--strategy informative]
        [--seeds 0 1 2] [--steps 2000] [--users 256] [--set KEY=VALUE ...] [--out DIR]

DESIGN.md section 9 asks that a router given the true preference beat the best fixed model in
hindsight before PR(n) is read. The headline tables average over the whole log10(lam) range;
this script splits it into `--bands` equal bands and evaluates each band's users on their own
(the test users drawn with each seed, their log10(lam) uniform within the band), so a known
router that loses to a single model shows where: for quality-seeking users (small lam, where
the best fixed model is the strongest one) or cost-seeking ones (large lam, the cheapest).
The routers are those of `experiments/routerbench.py` (or `synthetic.py` with --data synthetic):
same configuration, same seeds. Records, per band, the known router, the best fixed model in
hindsight, the agnostic router, and with `--strategy` pairs at n = 0, 6 and 32 the MetaRouter,
the exact Bayes decision `bt_bayes` (the known router routing by the exact posterior: what the
contexts allow) and the posterior-mean plug-in. Writes experiments/results/lam_bands_<data>.json (every
seed) and .md (n = 6: mean ± std, and the known router minus the best fixed model per seed);
lam_bands_<data>_<strategy>.json and .md for a strategy other than informative.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr

from common import cell, experiment_parser, load_data, parse, table, write_results

OUT = Path(__file__).resolve().parent / "results"
METHODS = ("known", "best_fixed", "agnostic", "metarouter", "bt_bayes", "bt_posterior")
NS = (0, 6, 32)


def main() -> None:
    parser = experiment_parser(__doc__, OUT)
    parser.add_argument("--data", default="routerbench", help="routerbench (default), synthetic, or a dataset name")
    parser.add_argument("--bands", type=int, default=8, help="equal log10(lam) bands over the router's range")
    parser.add_argument("--strategy", default="informative", choices=("uniform", "informative", "active"),
                        help="how the users' pairs are chosen (evaluate's pair strategies)")
    args, overrides = parse(parser)
    if args.bands < 1:
        parser.error(f"--bands must be >= 1, got {args.bands}")
    data = load_data(args.data)
    # RouterBench: the reference range of DESIGN.md section 9 (as experiments/routerbench.py).
    lam = {"log10_lam_range": (0.0, 4.0)} if args.data == "routerbench" else {}
    config = mr.TrainConfig(**{"num_steps": args.steps, **lam, **overrides})
    runs, edges = {}, None
    for seed in args.seeds:
        start = time.time()
        router = mr.MetaRouter.fit(data, config, seed=seed)
        lo, hi = router.profiles.log10_lam_range
        edges = np.linspace(lo, hi, args.bands + 1)
        bands = {}
        for a, b in zip(edges[:-1], edges[1:]):
            users = dataclasses.replace(router.profiles, log10_lam_range=(float(a), float(b)))
            report = mr.evaluate(router, data, n_users=args.users, seed=seed, n_contexts=NS,
                                 strategies=(args.strategy,), profiles=users).to_json()[args.strategy]
            bands[f"{a:.2f}-{b:.2f}"] = {m: {str(n): report[m][str(n)]["normalized_utility"] for n in NS}
                                         for m in METHODS}
        runs[str(seed)] = {"bands": bands, "validation": router.best_valid_utility, "seconds": time.time() - start}
        print(f"seed {seed}: {runs[str(seed)]['seconds']:.0f} s", flush=True)
    stem = args.out / (f"lam_bands_{args.data}" + ("" if args.strategy == "informative" else f"_{args.strategy}"))
    write_results(stem.with_suffix(".json"), {"config": config.to_dict(), "data": args.data, "strategy": args.strategy,
                                              "edges": edges.tolist(), "runs": runs})
    table = markdown(args, runs)
    stem.with_suffix(".md").write_text(table)
    print(table)


def band_table(runs: list[dict], methods, header: list[str]) -> list[str]:
    """One row per log10(lam) band: `methods` at n = 6, mean ± std over `runs` (one per seed), then
    the known router minus the best fixed model per seed. `header` names the columns."""
    rows = []
    for band in runs[0]["bands"]:
        values = {m: [run["bands"][band][m]["6"] for run in runs] for m in methods}
        gaps = ", ".join(f"{k - f:+.3f}" for k, f in zip(values["known"], values["best_fixed"]))
        rows.append([band.replace("-", " to "), *(cell(values[m]) for m in methods), gaps])
    return table(header, rows)


def markdown(args, runs: dict) -> str:
    lines = [f"# Normalised utility by log10(lam) band on {args.data}", "",
             f"Seeds {args.seeds}, {args.users} test users per band and seed (log10(lam) uniform in the band), "
             f"{args.steps} meta-steps per router; adaptive methods at n = 6 with {args.strategy} pairs; mean ± std "
             "over seeds, then the known router minus the best fixed model per seed.", ""]
    lines += band_table(list(runs.values()), METHODS, ["log10(lam)", *METHODS, "known - best_fixed per seed"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
