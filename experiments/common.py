"""What the experiment scripts share: their common options and how they are read."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import jax
import numpy as np

import metarouter_jax as mr
from metarouter_jax import checkpoint
from metarouter_jax.cli import apply_compile_cache, compile_cache_option, parse_overrides, valid_fraction_arg
from metarouter_jax.evaluation import HELD_OUT_PAIRS
from metarouter_jax.machine import cpu_info
from metarouter_jax.recipes import RECIPES, beneath, recipe_for


def experiment_parser(doc: str, out: Path, name: str | None = None, names: str = "NAME.json, NAME.md",
                      default_name: str = "") -> argparse.ArgumentParser:
    """A parser with --seeds, --steps, --users, --set, --out, --name and --no-compile-cache.
    --name defaults to `name` (None: the script derives it, as `default_name` says); `names`
    says which files it names."""
    parser = argparse.ArgumentParser(description=doc, parents=[compile_cache_option()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="TrainConfig overrides, e.g. hidden=128 (as `metarouter train`)")
    parser.add_argument("--out", type=Path, default=out, help=f"results folder (default {out})")
    parser.add_argument("--name", default=name,
                        help=f"result file names: {names} (default {name if name is not None else default_name})")
    return parser


def parse(parser: argparse.ArgumentParser, hparams: bool = False):
    """The arguments (the compilation cache set up as asked) and the TrainConfig overrides of --set;
    with `hparams`, also the Hparams overrides of --set (a third value), which are refused otherwise."""
    args = parser.parse_args()
    print(f"compilation cache: {apply_compile_cache(args) or 'off'}", flush=True)
    try:
        overrides, hparam_overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))   # exit status 2, as the metarouter command
    if hparam_overrides and not hparams:
        parser.error(f"only TrainConfig fields can be set here, not {sorted(hparam_overrides)}")
    args.out.mkdir(parents=True, exist_ok=True)
    return (args, overrides, hparam_overrides) if hparams else (args, overrides)


def add_reference_option(parser: argparse.ArgumentParser) -> None:
    """--no-reference: evaluate without the routing literature's baselines
    (`evaluate(..., reference=False)`), for scripts whose tables do not read them."""
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="evaluate without the routing literature's baselines (their fits are most of a small "
                             "router's evaluation time, their figures half a result file)")


def add_validation_options(parser: argparse.ArgumentParser) -> None:
    """--valid-fraction and --valid-subset (shares in (0, 1), as the metarouter command's), for
    scripts that load their data with `setup` or `validation_data`."""
    recipes = ", ".join(f"{name} {recipe.valid_fraction}" for name, recipe in RECIPES.items())
    parser.add_argument("--valid-fraction", type=valid_fraction_arg,
                        help="hold out this share of the train and valid queries for early stopping instead of "
                             f"the data's own validation split (default: {recipes}; on other data its own split; "
                             "RouterBench's own is 0.1 of train, 222 queries); the test split stays the same")
    parser.add_argument("--valid-subset", type=valid_fraction_arg,
                        help="validate on this stratified share of the validation split only (the rest goes "
                             "unused): fewer validation queries with the same training queries")
    parser.add_argument("--valid-subset-seed", type=int, default=0, help="seed of the --valid-subset draw")


def setup(args: argparse.Namespace, overrides: dict, dataset: str, data) -> tuple:
    """`data` with the validation split the experiments use on `dataset`, and the TrainConfig
    they train with: --steps, the dataset's recipe (`metarouter_jax.recipes`, as `metarouter
    train` applies it; RouterBench: 20% held out, the parameter average, log10(lam) in [0, 4]),
    then --set. An explicit --valid-fraction wins over the recipe's, as --set wins over its fields
    (so `--valid-fraction 0.1 --set ema_decay=0` trains on RouterBench as before the recipe)."""
    fraction, fields = beneath(recipe_for(dataset), args.valid_fraction, overrides)
    return validation_data(args, data, fraction), mr.TrainConfig(**{"num_steps": args.steps, **fields})


def validation_data(args: argparse.Namespace, data, valid_fraction: float | None):
    """`data` (loaded with seed 0, as the scripts load it) with the validation split: `resplit_
    validation(F, seed=0)` for a share F (`setup`'s: --valid-fraction or the recipe's; on
    RouterBench and LLMRouter the loader's own `valid_fraction=F`; None: the data's own split),
    then a share of "valid" for --valid-subset (drawn with --valid-subset-seed)."""
    if valid_fraction is not None:
        data = data.resplit_validation(valid_fraction, seed=0)
    if args.valid_subset is not None:
        data = data.holdout("valid", 1.0 - args.valid_subset, "valid_unused", seed=args.valid_subset_seed)
    return data


def validation_record(router) -> dict:
    """A router's validation scores for a result file: "validation" (held-out utility) and
    "validation_worst_band", each router name -> the score of the parameters it kept."""
    return {"validation": router.best_valid_utility,
            "validation_worst_band": {name: scores["worst_band"] for name, scores in router.validation.items()}}


def split_sizes(data) -> dict[str, int]:
    """Query counts of the train, valid and test splits, for a result file."""
    return {name: int(data.split(name).size) for name in ("train", "valid", "test")}


def load_data(name: str):
    """The synthetic default (`synthetic`) or a dataset by name or path (`metarouter_jax.load_dataset`)."""
    return mr.synthetic_data(seed=0) if name == "synthetic" else mr.load_dataset(name)


CURVE_NS = (0, 1, 2, 4, 6, 8, 16, 32)
CURVE_METHODS = ("metarouter", "bt_bayes", "bt_posterior", "bt_marginal", "bt_mle", "known", "agnostic", "best_fixed")
# The routing literature's baselines (metarouter_jax.reference_routers) beside the MetaRouter.
LITERATURE_METHODS = ("metarouter", "bt_bayes", "mlp_bayes", "bt_posterior", "mlp_posterior", "knn_posterior", "linucb",
                      "scratch", "known", "mlp_known", "knn_known", "best_fixed")
PAIR_TABLE_METHODS = ("metarouter", "bt_bayes", "bt_posterior", "bt_mle", "linucb", "scratch", "known")


def literature_tables(runs, strategy: str) -> list[str]:
    """The literature baselines' normalised utility and every method's accuracy on held-out
    pairs, `curve_table`s over `runs` for one strategy (result files written before commit
    65b6b17 have neither)."""
    return [f"\nthe routing literature's baselines, normalized utility, {strategy} pairs\n",
            *curve_table(runs, strategy, "normalized_utility", LITERATURE_METHODS),
            f"\naccuracy on {HELD_OUT_PAIRS} held-out pairs, {strategy} pairs\n",
            *curve_table(runs, strategy, "pair_accuracy", PAIR_TABLE_METHODS),
            *([f"\nthe same on the held-out pairs none of the n contexts asked, {strategy} pairs\n",
               *curve_table(runs, strategy, "pair_accuracy_unseen", PAIR_TABLE_METHODS)]
              if "pair_accuracy_unseen" in runs[0][strategy]["known"]["0"] else [])]


def cell(values) -> str:
    """mean ± std of a metric over seeds, for a Markdown table."""
    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def curve_table(runs, strategy: str, metric: str, methods=CURVE_METHODS, ns=CURVE_NS) -> list[str]:
    """One row per method, mean ± std over `runs` (one evaluation report per seed) at every n."""
    rows = [[m] + [cell([run[strategy][m][str(n)][metric] for run in runs]) for n in ns] for m in methods]
    return table(["method"] + [f"n={n}" for n in ns], rows)


def identification_table(runs, strategy: str, ns=CURVE_NS) -> list[str]:
    """How well n answers identify log10(lam), mean ± std over `runs` (each with the
    `EvalReport.identification_json()` of its seed under "identification"): the mean absolute
    error (decades) of the posterior mean under the exact grid posterior and under the
    MetaRouter's atomic posterior, and the exact posterior's standard deviation."""
    rows = [[label] + [cell([run["identification"][strategy][str(n)][key] for run in runs]) for n in ns]
            for key, label in (("bt_posterior_error", "exact posterior: error"),
                               ("metarouter_error", "MetaRouter atoms: error"),
                               ("bt_posterior_sd", "exact posterior: sd"))]
    return table(["log10(lam), decades"] + [f"n={n}" for n in ns], rows)


def held_out_table(runs, strategies, ns=CURVE_NS) -> list[str]:
    """How often the held-out pairs repeat a context, mean ± std over `runs` (each with the
    `EvalReport.held_out_json()` of its seed under "held_out"): per strategy, the share of the
    held-out pairs one of the n contexts asked, and the number of users with a pair none asked
    (those `pair_accuracy_unseen` averages over)."""
    def share(values):    # null (no valid held-out pair, e.g. a one-model pool) reads as NaN, as in `cell`
        values = np.asarray(values, float)
        return f"{values.mean():.1%} ± {values.std():.1%}"

    def users(values):    # a count per seed: the one count, or the range over seeds
        return f"{min(values):,}" + (f"-{max(values):,}" if max(values) > min(values) else "")

    rows = [[f"{strategy}: {label}"] + [show([run["held_out"][strategy][str(n)][key] for run in runs]) for n in ns]
            for strategy in strategies
            for key, label, show in (("asked_share", "share asked", share),
                                     ("users_with_unasked", "users with one unasked", users))]
    return table(["held-out pairs"] + [f"n={n}" for n in ns], rows)


def write_results(path: Path, results: dict) -> None:
    """Every seed's results as compact JSON (atomically), with their `provenance()` first. The
    metrics are float32 computations: each float is written as the shortest decimal of its
    float32 value, which reads back to the same float32, instead of the 17 digits of its float64
    widening (half the file's size)."""
    checkpoint.write_json(path, {"provenance": provenance(), **_as_float32(results)}, indent=None)


def provenance() -> dict:
    """Where a result file came from: the commit and whether the code differed from it (changes
    under experiments/results/, which a run writes itself, do not count), the command, the date,
    and the software and machine. Without git (an unpacked copy) commit and changes are None."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)experiments/results")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": None if changes is None else bool(changes),
            "command": " ".join(["python", os.path.relpath(sys.argv[0], root), *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "metarouter_jax": mr.__version__,
            "jax": jax.__version__, "python": platform.python_version(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(), "cpu": cpu_info()}


def _as_float32(obj):
    if isinstance(obj, float):
        return float(str(np.float32(obj)))
    if isinstance(obj, dict):
        return {key: _as_float32(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_as_float32(value) for value in obj]
    return obj
