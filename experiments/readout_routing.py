"""Do the policy's answer components hold what the MLP predictor knows? Routing by their readout.

    python experiments/readout_routing.py [--data synthetic] [--seeds 0 1 2] [--steps 2000]
        [--users 256] [--set KEY=VALUE ...] [--name NAME] [--out DIR]

Given the user's true lam, the MLP predictor of each model's quality and cost (`mlp_known` in
`evaluate`) routes better than the known-preference router on both datasets, and neither a wider
query pathway, a free vector per model nor three times the meta-steps closed that gap on the
synthetic default (README). With `answer_weight` > 0 the policy carries a linear readout of each
answer's components onto its quality and log cost. This script routes `evaluate`'s test users
(test split, the same users as `evaluate(seed=s)`) three ways, each given the true profile: the
known router (its scores, components weighted by the profile's routing weights), the readout's
plug-in (the profile's utility of the readout's predicted quality and cost: the components as a
predictor, without the weights), and the MLP predictor's plug-in (as `mlp_known`). If the readout
routes like the MLP, the components hold the predictor's information and the known router loses
it in how it weighs them; if not, the components themselves predict worse. `answer_weight`
defaults to 1.0 here (a readout needs it); --set also takes the training noise (Hparams, e.g.
query_noise=0). Writes experiments/results/readout_routing_<data>.json (or NAME.json; every
seed) and .md (means over seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import metarouter_jax as mr
from metarouter_jax import adaptation, evaluation
from metarouter_jax.tasks import query_utility, utility_scale
from metarouter_jax.training import calibration_queries

from common import add_validation_options, experiment_parser, load_data, parse, setup, split_sizes, table, write_results

OUT = Path(__file__).resolve().parent / "results"
WAYS = ("known", "readout", "mlp_known")


def readout_routing(router, data, users: int, seed: int) -> dict:
    """Mean normalised utility over `evaluate`'s `users` test users of seed `seed` for each of
    `WAYS`, and the readout's and the MLP's error on the test and the training answers (quality
    cross-entropy, log10-cost RMSE): a predictor that fits the training answers much better than
    the test ones overfits them."""
    arrays = router.arrays_for(data)
    graphdef, params, profiles = router.graphdef, router.params["known"], router.profiles
    policy = nnx.merge(graphdef, params).policy

    def answered(split: str) -> np.ndarray:
        idx = data.split(split)
        return idx[data.observed[idx].any(-1)]

    # Both splits' queries at once: the MLP is fitted once and predicts them all.
    test_idx, train_idx = answered("test"), answered(router.config.train_split)
    every = jnp.asarray(np.concatenate([test_idx, train_idx]))
    all_feats = adaptation.query_features(graphdef, params, arrays.embeddings[every])
    readout = policy.readout(adaptation.answer_components(graphdef, params, all_feats, arrays.descriptors))
    mlp = evaluation.reference_fits(router, data, arrays, np.asarray(every), seed, np.ones(data.num_models, bool))[0][1]
    predicted_all = {"readout": (jax.nn.sigmoid(readout[..., 0]), arrays.usd_cost(readout)),
                     "mlp": (mlp.quality, mlp.cost)}

    def predictions(part: slice):
        """The queries of `part` of `every` and the readout's and MLP's (quality, cost) [Q, K] for them."""
        return every[part], {name: (q[part], c[part]) for name, (q, c) in predicted_all.items()}

    def errors(queries, predicted):
        obs = arrays.observed[queries]
        q, c = arrays.quality[queries], arrays.cost[queries]
        out = {}
        for name, (quality, cost) in predicted.items():
            p = jnp.clip(quality, 1e-6, 1 - 1e-6)
            ce = -(q * jnp.log(p) + (1 - q) * jnp.log(1 - p))
            sq = (jnp.log10(jnp.maximum(cost, 1e-12)) - jnp.log10(jnp.maximum(jnp.where(obs, c, 1.0), 1e-12))) ** 2
            out[name] = {"quality_cross_entropy": float(jnp.where(obs, ce, 0).sum() / obs.sum()),
                         "log10_cost_rmse": float(jnp.sqrt(jnp.where(obs, sq, 0).sum() / obs.sum()))}
        return out

    test_part = slice(0, test_idx.size)
    queries, predicted = predictions(test_part)
    feats = all_feats[test_part]
    allowed, family = arrays.observed[queries], arrays.family[queries]
    calib = jnp.asarray(calibration_queries(data, router.config))

    def masked_argmax(scores):
        return jnp.argmax(jnp.where(allowed, scores, -jnp.inf), -1)

    def plug_in(profile, quality, cost):
        return masked_argmax(jax.vmap(profiles.utility, in_axes=(None, 0, 0, 0))(profile, quality, cost, family))

    def one_user(key):
        profile, _ = evaluation.draw_user(profiles, key)
        scale = utility_scale(profiles, profile, arrays, calib)
        u = jax.vmap(query_utility, in_axes=(None, None, None, 0))(profiles, profile, arrays, queries) / scale
        weights = adaptation.profile_latent(graphdef, params, profiles.features(profile))
        known = masked_argmax(jax.vmap(adaptation.policy_scores, in_axes=(None, None, 0, None, None, None))(
            graphdef, params, feats, weights, arrays.descriptors, None))
        choices = (known, plug_in(profile, *predicted["readout"]), plug_in(profile, *predicted["mlp"]))
        return jnp.stack([evaluation.normalized_utility(u, allowed, c) for c in choices])

    keys, _ = evaluation.user_keys(seed, users)
    nu = np.asarray(jax.jit(lambda ks: jax.lax.map(one_user, ks, batch_size=16))(keys)).mean(0)
    return {"normalized_utility": dict(zip(WAYS, map(float, nu))), "test_error": errors(queries, predicted),
            "train_error": errors(*predictions(slice(test_idx.size, None)))}


def markdown(args, runs: dict, settings: dict) -> str:
    runs = list(runs.values())
    mean = lambda f: f"{np.mean([f(r) for r in runs]):.3f} ± {np.std([f(r) for r in runs]):.3f}"  # noqa: E731
    rows = [[way, mean(lambda r, w=way: r["normalized_utility"][w])] for way in WAYS]
    errors = [[name, *(mean(lambda r, n=name, s=split, m=metric: r[s][n][m])
                       for split in ("test_error", "train_error") for metric in ("quality_cross_entropy",
                                                                                 "log10_cost_rmse"))]
              for name in ("readout", "mlp")]
    lines = [f"# Routing by the policy's readout, on {args.data}", "",
             f"Seeds {args.seeds}, {args.users} test users per seed (evaluate's), {args.steps} meta-steps per router"
             + "".join(f", {k}={v}" for k, v in settings.items())
             + ", each user's true profile given. Normalised utility of the known router, of the readout's plug-in "
             "and of the MLP predictor's plug-in (mean ± std over seeds):", ""]
    lines += table(["routing", "normalised utility"], rows)
    lines += ["", "Their error on the observed answers of the test split and of the training split (quality "
              "cross-entropy, RMSE of log10 cost):", ""]
    lines += table(["predictor", "test: quality cross-entropy", "test: log10 cost RMSE",
                    "train: quality cross-entropy", "train: log10 cost RMSE"], errors)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="readout_routing_<data>")
    parser.add_argument("--data", default="synthetic", help="synthetic (default), routerbench, or a dataset name")
    add_validation_options(parser)
    args, overrides, hparam_overrides = parse(parser, hparams=True)
    hparams = mr.Hparams.create(**hparam_overrides)
    overrides.setdefault("answer_weight", 1.0)
    if overrides["answer_weight"] <= 0:
        parser.error("the readout is trained by the answer loss: answer_weight must be > 0")
    data, config = setup(args, overrides, args.data, load_data(args.data))
    runs = {}
    for seed in args.seeds:
        start = time.time()
        router = mr.MetaRouter.fit(data, config, hparams, seed=seed)
        runs[str(seed)] = {**readout_routing(router, data, args.users, seed), "seconds": time.time() - start}
        print(f"seed {seed}: {runs[str(seed)]['normalized_utility']} ({runs[str(seed)]['seconds']:.0f} s)", flush=True)
    stem = args.out / (args.name or f"readout_routing_{args.data}")
    write_results(stem.with_suffix(".json"), {"config": config.to_dict(), "hparams": hparams.to_json(), "data": args.data,
                                              "split_sizes": split_sizes(data), "runs": runs})
    text = markdown(args, runs, {**overrides, **hparam_overrides})
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
