"""Is the known-preference router's reading of log10(lam) calibrated? The known router given a shifted lam.

    python experiments/known_shift.py [--data routerbench] [--bands 8] [--seeds 0 1 2] [--steps 2000]
        [--users 256] [--set KEY=VALUE ...] [--out DIR] [--name NAME]

The known router is the upper bound PR(n) divides by, and the policy the MetaRouter's posterior
averages. On RouterBench it loses to a single model, or to the prior-average decision, in some
log10(lam) bands (`lam_bands.py`). This script asks whether that is a misread preference or poor
query-level routing: for `evaluate`'s test users of each band (log10(lam) uniform in the band, test
split; with the same --users they are lam_bands.py's users, so shift 0 is its known router), it
routes every query with the known router given log10(lam) + shift for each `SHIFTS` (clipped to the
prior range), with the posterior-average decision over a window of +-w decades around the true value
(`WINDOWS`: a smoothed reading of lam), and with the prior-average decision (the MetaRouter's with
no answer). If some shift beats shift 0 in a band, the router reads lam there as if it were
elsewhere; if none does, the loss is in its routing of queries. Same routers as
`experiments/routerbench.py` (same configuration and seeds). Writes
experiments/results/known_shift_<data>.json (every seed) and .md (means over seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import metarouter_jax as mr
from metarouter_jax import adaptation, baselines, evaluation
from metarouter_jax.tasks import query_utility, utility_scale
from metarouter_jax.training import calibration_queries

from common import add_validation_options, experiment_parser, load_data, parse, setup, split_sizes, table, write_results

OUT = Path(__file__).resolve().parent / "results"
SHIFTS = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
WINDOWS = (0.25, 0.5, 1.0)


def known_router_readings(router, data, edges, users: int, seed: int, split: str = "test") -> dict:
    """Per band "lo-hi": mean normalised utility of the known router at each shift, of the
    window-averaged decision at each width, and of the prior-average decision, on the queries of
    `split` (the users are the same whichever split)."""
    arrays = router.arrays_for(data)
    split = data.split(split)
    queries = jnp.asarray(split[data.observed[split].any(-1)])
    allowed = arrays.observed[queries]
    calib = jnp.asarray(calibration_queries(data, router.config))
    graphdef, params, profiles = router.graphdef, router.params["known"], router.profiles
    feats = adaptation.query_features(graphdef, params, arrays.embeddings[queries])
    lo, hi = profiles.log10_lam_range
    grid = baselines.lam_grid(profiles)

    def latent(log10_lam):
        return adaptation.profile_latent(graphdef, params, profiles.features(profiles.linear_profile(log10_lam)))

    grid_latents = jax.vmap(latent)(grid)

    def route(z):
        scores = jax.vmap(adaptation.policy_scores, in_axes=(None, None, 0, None, None, None))(
            graphdef, params, feats, z, arrays.descriptors, None)
        return jnp.argmax(jnp.where(allowed, scores, -jnp.inf), -1)

    def one_user(key, band):
        profile, _ = evaluation.draw_user(profiles, key, band)
        log10_lam = profile["log10_lam"]
        scale = utility_scale(profiles, profile, arrays, calib)
        u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries) / scale

        def nu(choice):
            return evaluation.normalized_utility(u, allowed, choice)

        def window(width):
            weights = (jnp.abs(grid - log10_lam) <= width).astype(jnp.float32)
            return nu(route(weights @ grid_latents / weights.sum()))

        shifted = jax.vmap(lambda s: nu(route(latent(jnp.clip(log10_lam + s, lo, hi)))))(jnp.asarray(SHIFTS))
        return shifted, jax.vmap(window)(jnp.asarray(WINDOWS)), nu(route(grid_latents.mean(0)))

    # evaluate's test users for this seed, band by band: the users lam_bands.py reports on
    keys, bands = evaluation.user_keys(seed, users, edges)
    run = jax.jit(lambda ks, bs: jax.lax.map(lambda kb: one_user(*kb), (ks, bs), batch_size=16))
    shifted, windows, prior = (np.asarray(x) for x in run(keys, bands))
    out = {}
    for b, (a, c) in enumerate(zip(edges[:-1], edges[1:])):
        part = slice(b * users, (b + 1) * users)
        out[f"{a:.2f}-{c:.2f}"] = {"shift": dict(zip(map(str, SHIFTS), shifted[part].mean(0).tolist())),
                                   "window": dict(zip(map(str, WINDOWS), windows[part].mean(0).tolist())),
                                   "prior": float(prior[part].mean())}
    return out


def markdown(args, runs: dict) -> str:
    runs = list(runs.values())
    header = ["log10(lam)", *(f"shift {s:+g}" for s in SHIFTS), *(f"window ±{w:g}" for w in WINDOWS), "prior average",
              "best shift per seed"]
    rows = []
    for band in runs[0]["bands"]:
        per_seed = [run["bands"][band] for run in runs]
        # the best shift; among equals the smallest (0 when no shift changes anything)
        best = ", ".join(f"{max(SHIFTS, key=lambda s: (r['shift'][str(s)], -abs(s))):+g}" for r in per_seed)
        rows.append([band.replace("-", " to "),
                     *(f"{np.mean([r['shift'][str(s)] for r in per_seed]):.3f}" for s in SHIFTS),
                     *(f"{np.mean([r['window'][str(w)] for r in per_seed]):.3f}" for w in WINDOWS),
                     f"{np.mean([r['prior'] for r in per_seed]):.3f}", best])
    lines = [f"# The known router given a shifted log10(lam), on {args.data}", "",
             f"Seeds {args.seeds}, {args.users} users per band and seed (log10(lam) uniform in the band, {args.split} "
             "split), "
             f"{args.steps} meta-steps per router. Normalised utility, means over seeds: the known router given "
             "log10(lam) + shift, the posterior-average decision over a window of ± w decades around the true value, "
             "and the prior-average decision; then per seed the shift that scores best.", ""]
    return "\n".join(lines + table(header, rows)) + "\n"


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="known_shift_<data>, with _<split> for a split other "
                                                          "than test")
    parser.add_argument("--data", default="routerbench", help="routerbench (default), synthetic, or a dataset name")
    parser.add_argument("--bands", type=int, default=8, help="equal log10(lam) bands over the router's range")
    parser.add_argument("--split", default="test", help="route the queries of this split (default test; valid: "
                                                        "does the validation split see the same misreading?)")
    add_validation_options(parser)
    args, overrides = parse(parser)
    if args.bands < 1:
        parser.error(f"--bands must be >= 1, got {args.bands}")
    data, config = setup(args, overrides, args.data, load_data(args.data))   # as routerbench.py
    runs = {}
    for seed in args.seeds:
        start = time.time()
        router = mr.MetaRouter.fit(data, config, seed=seed)
        edges = np.linspace(*router.profiles.log10_lam_range, args.bands + 1)
        runs[str(seed)] = {"bands": known_router_readings(router, data, edges, args.users, seed, args.split),
                           "validation": router.best_valid_utility, "seconds": time.time() - start}
        print(f"seed {seed}: {runs[str(seed)]['seconds']:.0f} s", flush=True)
    stem = args.out / (args.name or f"known_shift_{args.data}" + ("" if args.split == "test" else f"_{args.split}"))
    write_results(stem.with_suffix(".json"), {"config": config.to_dict(), "data": args.data, "split": args.split,
                                              "split_sizes": split_sizes(data), "runs": runs})
    text = markdown(args, runs)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
