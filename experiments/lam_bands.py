"""Where on the preference range does each router beat the best fixed model? Users by log10(lam) band.

    python experiments/lam_bands.py [--data routerbench] [--bands 8] [--strategy informative]
        [--seeds 0 1 2] [--steps 2000] [--users 512] [--set KEY=VALUE ...] [--out DIR] [--name NAME]
        [--valid-fraction F] [--valid-subset F] [--valid-subset-seed S]

DESIGN.md section 9 asks that a router given the true preference beat the best fixed model in
hindsight before PR(n) is read. The headline tables average over the whole log10(lam) range;
this script splits it into `--bands` equal bands and evaluates each band's users on their own
(`evaluate(..., bands=...)`: the test users drawn with each seed, `--users` per band, their
log10(lam) uniform within the band; their pairs chosen as for any user), so a known router that
loses to a single model shows where: for quality-seeking users (small lam, where the best fixed
model is the strongest one) or cost-seeking ones (large lam, the cheapest). The routers are
those of `experiments/routerbench.py` (or `synthetic.py` with --data synthetic): same
configuration, same seeds. Records, per band, the known router, the best fixed model in
hindsight, the agnostic router, and with `--strategy` pairs at n = 0, 6 and 32 the MetaRouter,
the exact Bayes decision `bt_bayes` (the known router routing by the exact posterior: what the
contexts allow), the posterior-mean plug-in, how well the answers identify log10(lam) (mean
absolute error of the exact and the MetaRouter's posterior means, the exact posterior's sd),
and the share of the test split's trade-off pairs (a dearer, better answer against a cheaper
one on the same query) whose switch point log10(dq / dc) lies in the band: only those pairs'
answers depend on where in the band a user's lam is. Writes
experiments/results/lam_bands_<data>.json (every seed) and .md (n = 6: mean ± std, and the known
router minus the best fixed model per seed; then each method's cost-quality curve over the bands
scored by RouterBench's AIQ, `metarouter_jax.curves`); lam_bands_<data>_<strategy>.json and .md
for a strategy other than informative; NAME.json and .md with --name (e.g. for a --set variant);
and NAME_curves.png, the first seed's cost-quality curves at n = 6.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr

from common import (add_validation_options, cell, experiment_parser, load_data, parse, setup, split_sizes, table,
                    validation_record, write_results)
from metarouter_jax import curves
from metarouter_jax.evaluation import band_labels
from metarouter_jax.inspect_data import switch_points

OUT = Path(__file__).resolve().parent / "results"
METHODS = ("known", "best_fixed", "agnostic", "metarouter", "bt_bayes", "bt_posterior")
NS = (0, 6, 32)
AIQ_METHODS = ("known", "mlp_known", "knn_known", "best_fixed", "agnostic", "metarouter", "bt_bayes", "mlp_bayes",
               "bt_posterior", "mlp_posterior", "knn_posterior", "linucb", "scratch", "random")
CURVE_METHODS = ("known", "mlp_known", "best_fixed", "agnostic", "metarouter", "mlp_bayes", "scratch")


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="lam_bands_<data>, with _<strategy> for a strategy "
                                                          "other than informative")
    parser.add_argument("--data", default="routerbench", help="routerbench (default), synthetic, or a dataset name")
    parser.add_argument("--bands", type=int, default=8, help="equal log10(lam) bands over the router's range")
    parser.add_argument("--strategy", default="informative", choices=("uniform", "informative", "active"),
                        help="how the users' pairs are chosen (evaluate's pair strategies)")
    add_validation_options(parser)
    parser.set_defaults(users=512)   # per band: 4,096 users a seed with the default 8 bands
    args, overrides = parse(parser)
    if args.bands < 1:
        parser.error(f"--bands must be >= 1, got {args.bands}")
    name = args.name or f"lam_bands_{args.data}" + ("" if args.strategy == "informative" else f"_{args.strategy}")
    data, config = setup(args, overrides, args.data, load_data(args.data))   # as experiments/routerbench.py
    runs, edges = {}, None
    switch = switch_points(data, "test")   # the data's, the same for every seed
    for seed in args.seeds:
        start = time.time()
        router = mr.MetaRouter.fit(data, config, seed=seed)
        trained = time.time()
        report = mr.evaluate(router, data, n_users=args.users, seed=seed, n_contexts=NS, strategies=(args.strategy,),
                             bands=args.bands)
        edges = np.asarray(report.settings["bands"])
        bands = {}
        for band, by_band in report.by_band.items():
            results = by_band.to_json()[args.strategy]
            bands[band] = {**{m: {str(n): results[m][str(n)]["normalized_utility"] for n in NS} for m in METHODS},
                           "identification": by_band.identification_json()[args.strategy]}
        aiq = curves.aiq_table(report)[args.strategy]
        runs[str(seed)] = {"bands": bands, **validation_record(router), "seconds": time.time() - start,
                           "evaluation_seconds": time.time() - trained,
                           "aiq": {str(n): by_method for n, by_method in aiq.items()},
                           "cost_quality": {str(n): {m: [p.tolist() for p in points] for m, points in
                                                     curves.cost_quality_points(report, args.strategy, n).items()}
                                            for n in NS}}
        if seed == args.seeds[0]:
            curves.plot_cost_quality(report, args.strategy, 6, args.out / f"{name}_curves.png", methods=CURVE_METHODS)
        print(f"seed {seed}: {runs[str(seed)]['seconds']:.0f} s ({time.time() - trained:.0f} s evaluating)",
              flush=True)
    stem = args.out / name
    shares = tradeoff_shares(switch, edges)     # the data's, the same for every seed
    write_results(stem.with_suffix(".json"), {"config": config.to_dict(), "data": args.data, "strategy": args.strategy,
                                              "split_sizes": split_sizes(data),
                                              "edges": edges.tolist(), "tradeoff_share": shares, "runs": runs})
    table = markdown(args, runs, shares)
    stem.with_suffix(".md").write_text(table)
    print(table)


def tradeoff_shares(switch, edges) -> dict[str, float]:
    """{band label (as evaluate's): the share of the trade-off pairs (switch points `switch`) that
    switch in it}."""
    return {label: float(np.mean((switch >= a) & (switch < b))) if switch.size else 0.0
            for label, a, b in zip(band_labels(edges), edges[:-1], edges[1:])}


IDENTIFICATION_HEADER = ["exact posterior: log10(lam) error (sd), n=6", "the same, n=32",
                         "trade-off pairs switching in the band"]


def band_table(runs: list[dict], shares: dict, methods, header: list[str]) -> list[str]:
    """One row per log10(lam) band: `methods` at n = 6, mean ± std over `runs` (one per seed); the
    mean absolute error of the exact posterior mean of log10(lam) at n = 6 and 32 (with the
    posterior sd), means over seeds, and the share of trade-off pairs switching in the band
    (`shares[band]`); then the known router minus the best fixed model per seed. `header` names
    the columns before the identification ones (`IDENTIFICATION_HEADER`) and the last."""
    rows = []
    for band in runs[0]["bands"]:
        values = {m: [run["bands"][band][m]["6"] for run in runs] for m in methods}
        identified = [np.mean([[run["bands"][band]["identification"][n][k] for k in ("bt_posterior_error",
                                                                                 "bt_posterior_sd")] for run in runs], 0)
                      for n in ("6", "32")]
        gaps = ", ".join(f"{k - f:+.3f}" for k, f in zip(values["known"], values["best_fixed"]))
        rows.append([band.replace("-", " to "), *(cell(values[m]) for m in methods),
                     *(f"{e:.2f} ({sd:.2f})" for e, sd in identified), f"{shares[band]:.1%}", gaps])
    return table([*header[:-1], *IDENTIFICATION_HEADER, header[-1]], rows)


def fixed_gaps(runs: list[dict], method: str) -> np.ndarray:
    """`method` at n = 6 minus the best fixed model in hindsight, per seed (one run each) and band:
    [seeds, bands]."""
    return np.array([[run["bands"][band][method]["6"] - run["bands"][band]["best_fixed"]["6"] for band in run["bands"]]
                     for run in runs])


def comparison_table(base: list[dict], variant: list[dict], labels: tuple[str, str]) -> list[str]:
    """Two runs of this script (`base` and `variant`, one report per seed, the same seeds and users)
    band by band: the best fixed model, then the known router and the MetaRouter at n = 6 minus it
    (mean ± std over seeds, and the worst seed's for the known router) for each run; a last row
    averages over the bands."""
    def row(label, fixed, known_base, known_variant, meta_base, meta_variant):
        spread = lambda g: f"{g.mean():+.3f} ± {g.std():.3f}"  # noqa: E731
        return [label, fixed, spread(known_base), spread(known_variant), f"{known_base.min():+.3f}",
                f"{known_variant.min():+.3f}", spread(meta_base), spread(meta_variant)]

    bands = list(base[0]["bands"])
    columns = [fixed_gaps(runs, m) for m in ("known", "metarouter") for runs in (base, variant)]   # each [seeds, bands]
    rows = [row(band.replace("-", " to "), cell([run["bands"][band]["best_fixed"]["6"] for run in base]),
                *(c[:, b] for c in columns)) for b, band in enumerate(bands)]
    rows.append(row("all bands", "", *(c.mean(1) for c in columns)))   # per seed, the mean over bands
    a, b = labels
    header = ["log10(lam)", "best fixed in hindsight", f"known minus best fixed: {a}", f"... {b}",
              f"worst seed: {a}", f"... {b}", f"MetaRouter n=6 minus best fixed: {a}", f"... {b}"]
    return table(header, rows)


def summary_table(results: list[dict]) -> list[str]:
    """Several runs of this script (whole result files, the same seeds) one row each, over the whole
    range: the training settings that tell them apart (`ema_decay`, `valid_criterion`), the known
    router and the MetaRouter at n = 6 minus the best fixed model averaged over the bands (mean ±
    std over seeds, the known router's worst seed, and its lowest band of any seed), and the
    validation scores of the kept parameters, means over seeds (the worst band's where recorded);
    first the size of the validation split where some file records it, and after the two settings
    any other TrainConfig field the files differ in (e.g. family_quality), where there is one."""
    def validation(runs, key):
        scores = [run.get(key) for run in runs]
        if any(s is None for s in scores):
            return "not recorded"
        return ", ".join(f"{np.mean([s[m] for s in scores]):.3f}" for m in ("known", "metarouter"))

    with_sizes = any("split_sizes" in r for r in results)   # a column only where some file records them
    shown = {"ema_decay", "valid_criterion"}
    # A field a file lacks was added to TrainConfig after it was made: it trained with the default
    # of then (config.LEGACY_VALUES where today's differs, else today's).
    defaults = mr.TrainConfig.from_dict({}).to_json()   # from_dict fills a missing field as LEGACY_VALUES
    configs = [{**defaults, **r["config"]} for r in results]
    fields = sorted({key for c in configs for key in c} - shown)
    others = [key for key in fields if len({repr(c.get(key)) for c in configs}) > 1]
    rows = []
    for result, config in zip(results, configs):
        runs = list(result["runs"].values())
        known, meta = fixed_gaps(runs, "known"), fixed_gaps(runs, "metarouter")
        sizes = [str(result["split_sizes"]["valid"])] if "split_sizes" in result else ["not recorded"]
        rows.append([*(sizes if with_sizes else []), f"{config.get('ema_decay', 0.0):g}",
                     config.get("valid_criterion", "utility"),
                     *([", ".join(f"{key}={config.get(key)}" for key in others)] if others else []),
                     f"{known.mean(1).mean():+.3f} ± {known.mean(1).std():.3f}", f"{known.mean(1).min():+.3f}",
                     f"{known.min():+.3f}", f"{meta.mean(1).mean():+.3f} ± {meta.mean(1).std():.3f}",
                     validation(runs, "validation"), validation(runs, "validation_worst_band")])
    header = [*(["validation queries"] if with_sizes else []), "ema_decay", "kept by (valid_criterion)",
              *(["other settings"] if others else []), "known minus best fixed", "its worst seed", "its lowest (seed, band)", "MetaRouter n=6 minus best fixed",
              "validation utility: known, MetaRouter", "validation worst band: known, MetaRouter"]
    return table(header, rows)


def markdown(args, runs: dict, shares: dict) -> str:
    lines = [f"# Normalised utility by log10(lam) band on {args.data}", "",
             f"Seeds {args.seeds}, {args.users} test users per band and seed (log10(lam) uniform in the band), "
             f"{args.steps} meta-steps per router; adaptive methods at n = 6 with {args.strategy} pairs; mean ± std "
             "over seeds; the mean absolute error (decades) of the exact posterior mean of log10(lam) and the "
             "posterior's sd, means over seeds, and the share of the test split's trade-off pairs whose switch "
             "point is in the band; then the known router minus the best fixed model per seed.", ""]
    lines += band_table(list(runs.values()), shares, METHODS, ["log10(lam)", *METHODS, "known - best_fixed per seed"])
    lines += ["", "AIQ of the cost-quality curve over the bands (mean quality under the non-decreasing hull of "
              "the bands' (cost, quality) points, over the cost range of all methods; per USD and per decade of "
              "cost), mean ± std over seeds:", ""]
    lines += aiq_table(list(runs.values()))
    return "\n".join(lines) + "\n"


def aiq_table(runs: list[dict]) -> list[str]:
    """One row per method (`AIQ_METHODS` those recorded): its AIQ per USD and per decade of cost at
    each n, mean ± std over `runs` (one per seed, each with its "aiq")."""
    ns = list(runs[0]["aiq"])
    rows = [[m, *(cell([run["aiq"][n][m][axis] for run in runs]) for axis in ("linear", "log_cost") for n in ns)]
            for m in AIQ_METHODS if m in runs[0]["aiq"][ns[0]]]
    return table(["method", *(f"{axis} n={n}" for axis in ("per USD", "per decade") for n in ns)], rows)


if __name__ == "__main__":
    main()
