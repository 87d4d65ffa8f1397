"""Generalisation: out-of-distribution task families, models unseen in training, pool sizes.

    python experiments/generalisation.py [--data synthetic] [--study ood pool sizes]
        [--seeds 0 1 2] [--steps 2000] [--users 256] [--set KEY=VALUE ...] [--out DIR] [--name NAME]
        [--no-reference]

Three studies (DESIGN.md section 8), each over meta-training seeds, users drawn with the
seed, uniform and informative pairs, beta = 10 and 5% label flips:

- `ood`: meta-train on one group of task families (QA), evaluate users on the queries of
  other groups (code; math), which neither the routers nor the model descriptors saw. Beside
  it, on the same queries (those of the data's own test split), the router trained on every
  family of the data's training split: what leaving the families out costs.
- `pool`: meta-train without some models (`--unseen`), evaluate on the test queries with
  every model routable; the unseen ones are described only by their descriptors, computed
  from the calibration (training) split in the router's units. Beside it, on the same users,
  the router trained with every model ("seen") and the held-out-model router with descriptors
  centred on the test pool's own mean (`with_models(data, centring="data")`, "own centring")
  instead of the router's training centre.
- `sizes`: the router trained with every model, evaluated on random pools of 2..K models
  (one pool per size and seed, always the same pools for every method).

Writes experiments/results/generalisation_<data>.json (every seed, every table) and .md
(mean +- std over seeds), and generalisation_<data>_sizes.png where matplotlib is installed;
NAME.json, NAME.md and NAME_sizes.png with --name (e.g. for a --set variant).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

import metarouter_jax as mr
from metarouter_jax.splits import ood_by_family, select_models

from common import add_reference_option, add_validation_options, cell, experiment_parser, load_data, parse, setup, split_sizes, write_results

OUT = Path(__file__).resolve().parent / "results"
NS = (0, 2, 6, 16)
STRATEGIES = ("uniform", "informative")
SHOWN = ("metarouter", "bt_bayes", "bt_posterior", "known", "agnostic", "best_fixed")
STUDIES = ("ood", "pool", "sizes")

# Per dataset: the families trained on and the groups tested on (ood), the models held out
# of training (pool).
SETUPS = {
    "synthetic": {"train": ["qa", "chat"], "test": {"code": ["code"], "math": ["math"]},
                  "unseen": ["mathstral-13b"]},
    "routerbench": {"train": ["arc-challenge", "winogrande"], "test": {"code": ["mbpp"]},
                    "unseen": ["claude-instant-v1", "mistralai/mixtral-8x7b-chat"]},
    "llmrouter": {"train": ["arc_challenge", "commonsense_qa", "openbook_qa", "mmlu", "natural_qa", "trivia_qa",
                            "gpqa"],
                  "test": {"code": ["human_eval", "mbpp"], "math": ["gsm8k", "math", "agentverse-mgsm"]},
                  "unseen": ["gemma-2-9b-it", "llama-3.3-nemotron-super-49b-v1"]},
}
SETUPS["llmrouter_unseen"] = SETUPS["llmrouter"]   # without the train rows of test questions (loaders.VARIANTS)


def evaluate(router, data, seed, users, split="test", pool=None, reference=True) -> dict:
    report = mr.evaluate(router, data, split=split, n_users=users, seed=seed, n_contexts=NS, strategies=STRATEGIES,
                         pool=pool, reference=reference)
    print(report.format(), flush=True)
    return report.to_json()


def family_queries(data, split: str, families) -> np.ndarray:
    """The queries of `split` that belong to one of `families` (names)."""
    idx = data.split(split)
    return idx[np.isin(data.family[idx], [data.family_names.index(f) for f in families])]


def ood_study(data, setup, config, seeds, users, full_fit, reference=True) -> dict:
    """Train on the training families, test on each group of other families. Beside it, on the
    same queries (the data's own test split, restricted to the group), the router trained on
    every family of the data's training split: what leaving the families out costs."""
    groups = setup["test"]
    split = ood_by_family(data, setup["train"], [f for fams in groups.values() for f in fams])
    tests = {f"test_{g}": family_queries(split, "test", fams) for g, fams in groups.items()}
    same = {f"same_{g}": family_queries(data, "test", fams) for g, fams in groups.items()}  # unseen by both
    split = split.with_splits(**tests, **same)
    every_family = data.with_splits(**same)
    evaluate_ = functools.partial(evaluate, reference=reference)
    runs = {}
    for seed in seeds:
        start = time.time()
        router = mr.MetaRouter.fit(split, config, seed=seed)
        full = full_fit(seed)
        runs[str(seed)] = {g: evaluate_(router, split, seed, users, split=f"test_{g}") for g in groups}
        for g in groups:
            runs[str(seed)][f"{g}_same_queries"] = evaluate_(router, split, seed, users, split=f"same_{g}")
            runs[str(seed)][f"{g}_in_distribution"] = evaluate_(full, every_family, seed, users, split=f"same_{g}")
        runs[str(seed)]["validation"] = router.best_valid_utility
        print(f"ood, seed {seed}: {time.time() - start:.0f} s", flush=True)
    return {"train_families": setup["train"], "test_families": groups,
            "test_queries": {g: int(tests[f"test_{g}"].size) for g in groups},
            "same_queries": {g: int(same[f"same_{g}"].size) for g in groups}, "runs": runs}


def pool_and_sizes(data, setup, config, seeds, users, studies, full_fit, reference=True) -> dict:
    """The pool study (routers trained with and without the unseen models) and the pool sizes
    (`reference=False`: without the routing literature's baselines, as in `ood_study`)."""
    unseen = setup["unseen"]
    evaluate_ = functools.partial(evaluate, reference=reference)
    seen_only = select_models(data, [m for m in data.model_names if m not in unseen])
    out = {}
    if "pool" in studies:
        out["pool"] = {"unseen": unseen, "runs": {}}
    if "sizes" in studies:
        out["sizes"] = {"pools": {}, "runs": {}}
    for seed in seeds:
        start = time.time()
        full = full_fit(seed)
        if "pool" in studies:
            held_out = mr.MetaRouter.fit(seen_only, config, seed=seed)
            own_centring = held_out.with_models(data, centring="data")
            out["pool"]["runs"][str(seed)] = {
                "seen": evaluate_(full, data, seed, users),
                "unseen": evaluate_(held_out, data, seed, users),
                "unseen_own_centring": evaluate_(own_centring, data, seed, users),
                "unseen_only_pool": evaluate_(held_out, data, seed, users, pool=[*unseen, *seen_only.model_names[:1]]),
                "validation": {"seen": full.best_valid_utility, "unseen": held_out.best_valid_utility}}
        if "sizes" in studies:
            rng = np.random.default_rng(seed)
            runs, pools = {}, {}
            for size in range(2, data.num_models + 1):
                pool = sorted(rng.choice(data.num_models, size, replace=False).tolist())
                pools[str(size)] = [data.model_names[k] for k in pool]
                runs[str(size)] = evaluate_(full, data, seed, users, pool=pool)
            out["sizes"]["runs"][str(seed)] = runs
            out["sizes"]["pools"][str(seed)] = pools
        print(f"pool/sizes, seed {seed}: {time.time() - start:.0f} s", flush=True)
    return out


def _table(tables: list[dict], strategy: str, title: str) -> list[str]:
    """Methods x n of mean +- std normalised utility, and PR(6), over the seeds' reports."""
    lines = [f"\n{title}, {strategy} pairs\n", "| method | " + " | ".join(f"NU n={n}" for n in NS) + " | PR(6) |",
             "|---|" + "---|" * (len(NS) + 1)]
    for method in SHOWN:
        cells = [cell([t[strategy][method][str(n)]["normalized_utility"] for t in tables]) for n in NS]
        cells.append(cell([t[strategy][method]["6"]["preference_recovery"] for t in tables]))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(name: str, results: dict, seeds, users, steps) -> str:
    lines = [f"# Generalisation on {name}", "", f"Seeds {list(seeds)}, {users} test users per seed, {steps} "
             "meta-steps per router; NU: normalised utility, mean ± std over seeds."]
    if "ood" in results:
        ood = results["ood"]
        lines += ["", f"## Out-of-distribution families: trained on {', '.join(ood['train_families'])}"]
        for group, fams in ood["test_families"].items():
            for strategy in STRATEGIES:
                lines += _table([run[group] for run in ood["runs"].values()], strategy,
                                f"test on {group} ({', '.join(fams)}; {ood['test_queries'][group]} queries)")
            for strategy in STRATEGIES:
                for variant, who in (("same_queries", "the same router"),
                                     ("in_distribution", "the router trained on every family")):
                    lines += _table([run[f"{group}_{variant}"] for run in ood["runs"].values()], strategy,
                                    f"{who}, on the {ood['same_queries'][group]} {group} queries of the data's "
                                    "test split")
    if "pool" in results:
        pool = results["pool"]
        lines += ["", f"## Models unseen in training: {', '.join(pool['unseen'])} (all models routable at test)"]
        for variant, title in (("seen", "router trained with every model"),
                               ("unseen", "router trained without the unseen models"),
                               ("unseen_own_centring", "the same, descriptors centred on the test pool's own mean"),
                               ("unseen_only_pool", "the same, pool = the unseen models and one seen model")):
            for strategy in STRATEGIES:
                lines += _table([run[variant] for run in pool["runs"].values()], strategy, title)
    if "sizes" in results:
        sizes = results["sizes"]
        runs = list(sizes["runs"].values())
        lines += ["", "## Pool sizes (router trained with every model; random pools, one per size and seed)", ""]
        for strategy in STRATEGIES:
            lines += [f"\nnormalised utility at n = 6 and PR(6), {strategy} pairs\n",
                      "| pool size | " + " | ".join(SHOWN) + " | MetaRouter PR(6) |",
                      "|---|" + "---|" * (len(SHOWN) + 1)]
            for size in runs[0]:
                cells = [cell([r[size][strategy][m]["6"]["normalized_utility"] for r in runs]) for m in SHOWN]
                cells.append(cell([r[size][strategy]["metarouter"]["6"]["preference_recovery"] for r in runs]))
                lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sizes(results: dict, path: Path) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'metarouter_jax[plot]')")
        return None
    runs = list(results["sizes"]["runs"].values())
    sizes = [int(s) for s in runs[0]]
    fig = Figure(figsize=(9, 3.6))
    for ax, strategy in zip(fig.subplots(1, 2, sharey=True), STRATEGIES):
        for method in SHOWN:
            vals = np.array([[r[str(s)][strategy][method]["6"]["normalized_utility"] for s in sizes] for r in runs])
            ax.errorbar(sizes, vals.mean(0), yerr=vals.std(0), label=method, marker="o", ms=3, capsize=2)
        ax.set(title=f"{strategy} pairs, n = 6", xlabel="models in the pool", xticks=sizes)
    fig.axes[0].set_ylabel("normalised utility")
    fig.axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = experiment_parser(__doc__, OUT, default_name="generalisation_<data>")
    parser.add_argument("--data", default="synthetic", choices=sorted(SETUPS))
    parser.add_argument("--study", nargs="+", default=list(STUDIES), choices=STUDIES)
    parser.add_argument("--unseen", nargs="+", default=None, help="models held out of training (pool study)")
    add_reference_option(parser)
    add_validation_options(parser)
    args, overrides = parse(parser)
    study = dict(SETUPS[args.data], **({"unseen": args.unseen} if args.unseen else {}))
    data = load_data(args.data)
    missing = [m for m in study["unseen"] if m not in data.model_names]
    if missing:
        parser.error(f"--unseen: unknown model(s) {missing}; known: {list(data.model_names)}")
    # RouterBench as experiments/routerbench.py; otherwise the data's splits and Pareto-frontier
    # range (TrainConfig's default).
    data, config = setup(args, overrides, args.data, data)
    start = time.time()
    results = {"config": config.to_dict(), "data": args.data, "split_sizes": split_sizes(data)}
    fits = {}

    def full_fit(seed):  # the router trained on the data's own splits, every model: one per seed
        if seed not in fits:
            fits[seed] = mr.MetaRouter.fit(data, config, seed=seed)
        return fits[seed]

    if "ood" in args.study:
        results["ood"] = ood_study(data, study, config, args.seeds, args.users, full_fit, args.reference)
    if {"pool", "sizes"} & set(args.study):
        results.update(pool_and_sizes(data, study, config, args.seeds, args.users, args.study, full_fit,
                                      args.reference))
    results["seconds"] = time.time() - start
    stem = args.out / (args.name or f"generalisation_{args.data}")
    write_results(stem.with_suffix(".json"), results)
    table = markdown(args.data, results, args.seeds, args.users, args.steps)
    stem.with_suffix(".md").write_text(table)
    print(table)
    if "sizes" in results:
        png = plot_sizes(results, stem.parent / f"{stem.name}_sizes.png")
        if png:
            print(f"wrote {png}")
    print(f"wrote {stem}.json and {stem}.md in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
