"""The `metarouter` command line: train, eval, route, data info.

    metarouter train --data synthetic --out runs/synthetic num_steps=2000 hidden=64 lr=3e-3
    metarouter eval runs/synthetic/router --json runs/synthetic/eval.json
    metarouter route runs/llmrouter/router --feedback feedback.jsonl "Write a function that ..."
    metarouter data info routerbench_0shot --plot frontier.png
    metarouter sweep --seeds 0 1 --grid lr=1e-3,3e-3 entropy_start=0.05,0.1 num_steps=2000
    metarouter sweep --data routerbench_0shot --seeds 0 1 --grid answer_weight=0,1   # a program per weight

Config overrides are `field=value` pairs for `TrainConfig` fields and `Hparams` fields.
Compiled programs are kept in a persistent cache (~/.cache/metarouter_jax/xla; see
`metarouter_jax.compile_cache`), so a rerun loads them instead of compiling: `--no-compile-cache`
or METAROUTER_COMPILE_CACHE=off turns that off, METAROUTER_COMPILE_CACHE=DIR moves it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

from metarouter_jax.checkpoint import CheckpointError, check_save_target, read_json_object, write_json
from metarouter_jax.config import VALID_LABELS, Hparams, TrainConfig, expected_type
from metarouter_jax.data import DataError
from metarouter_jax.figures import png_path
from metarouter_jax.recipes import RECIPES, beneath, recipe_for

ALIASES = {"lr": "learning_rate", "steps": "num_steps", "tasks": "tasks_per_step"}


def setting_kind(pair: str) -> tuple[str, str, str]:
    """("config" or "hparam", field name, raw value) of a `key=value` pair; aliases resolved,
    an unknown key raises ValueError listing the known ones."""
    if "=" not in pair:
        raise ValueError(f"override {pair!r} is not of the form key=value")
    key, raw = pair.split("=", 1)
    key = ALIASES.get(key, key)
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    hparam_fields = {f.name for f in dataclasses.fields(Hparams)}
    if key in config_fields:
        return "config", key, raw
    if key in hparam_fields:
        return "hparam", key, raw
    known = sorted(config_fields | hparam_fields | set(ALIASES))
    raise ValueError(f"unknown setting {key!r}; known: {', '.join(known)}")


def parse_overrides(pairs: list[str]) -> tuple[dict, dict]:
    """Split `key=value` pairs into TrainConfig and Hparams overrides.

    Values are parsed as JSON when possible (lists become tuples) and must have the field's
    type: `hidden=abc` or `hidden=16.5` raises ValueError("hidden=abc: expected an integer"), which
    `main` prints as an error with exit status 2.
    """
    types = {f.name: f.type for cls in (TrainConfig, Hparams) for f in dataclasses.fields(cls)}
    config, hparams = {}, {}
    for pair in pairs:
        kind, key, raw = setting_kind(pair)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if types[key] == "str":
            value = value if isinstance(value, str) else raw   # profile=linear, train_split=2024
        else:
            value = tuple(value) if isinstance(value, list) else value
            expected = expected_type(types[key], value)
            if expected:
                raise ValueError(f"{pair}: expected {expected}")
        (config if kind == "config" else hparams)[key] = value
    return config, hparams


class Progress:
    """A tqdm bar per router with the running loss and validation utility."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bars = enabled, {}

    def __call__(self, name, chunk, num_chunks, metrics):
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        if name not in self.bars:
            self.bars[name] = tqdm(total=num_chunks, desc=f"train {name:<10}", unit="chunk", leave=True)
        bar = self.bars[name]
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", utility=f"{metrics['utility']:.3f}",
                        valid=f"{metrics['valid_utility']:.3f}", worst_band=f"{metrics['valid_worst_band']:+.3f}")
        bar.update(1)
        if chunk + 1 == num_chunks:
            bar.close()


def load_data(name_or_path: str, seed: int = 0):
    from metarouter_jax.loaders import load_dataset

    return load_dataset(name_or_path, seed=seed)


def print_notes(data, name: str) -> None:
    """The loader's notes on `data` (`RoutingData.notes`: columns or models not read, cells
    masked, queries left out of the splits), one line each: `data info` is not the only place to
    learn that a model is missing."""
    for note in data.notes:
        print(f"note on {name}: {note}")


def check_out(out: Path, option: str = "--out") -> None:
    """Raise unless `out` is a folder or can become one (no file at it or above it)."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{option} {out}: is a file" if path == out else f"{option} {out}: {path} is a file")
            return


def check_run_out(out: Path, router: str) -> None:
    """Raise unless a run can end by saving `out/router` and writing `out/config.json`: checked
    before anything trains. A file or a folder of other files at `out/router` is refused as
    saving refuses it (`checkpoint.check_save_target`); a previous router is replaced."""
    check_out(out)
    check_save_target(out / router)
    config_file = out / "config.json"
    if config_file.is_dir():
        raise ValueError(f"--out {out}: {config_file} is a directory, not a file")


SWEEP_OUTPUTS = ("sweep.csv", "sweep.md", "sweep.png", "config.json", "best_router")   # what `sweep` writes


def clear_sweep_outputs(out: Path) -> None:
    """Remove what an earlier run left at the names `sweep` writes in `out`, before a new sweep
    writes its first file there: a sweep that fails part-way then leaves its own tables, not
    beside an earlier sweep's best router and config.json. (`check_run_out` has made sure that
    best_router, if there, is a saved router or an empty folder.)"""
    for name in SWEEP_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def checked_config(overrides: dict) -> TrainConfig:
    """TrainConfig(**overrides), with its profile family looked up before any data is loaded."""
    from metarouter_jax.profiles import check_profile_family

    config = TrainConfig(**overrides)
    check_profile_family(config.profile)
    return config


def cmd_train(args) -> int:
    import metarouter_jax as mr
    from metarouter_jax.parallel import TASK_AXIS, resolve_mesh

    # Everything is checked before anything is written; config.json is written last, beside the
    # router it describes, so a failed or refused run leaves no config.json that disagrees with it.
    config_over, hparam_over = parse_overrides(args.overrides)
    settings = with_recipe(args, config_over)
    config = checked_config(settings.overrides)
    hparams = Hparams.create(**hparam_over)
    out = Path(args.out)
    check_run_out(out, "router")
    data = resplit(load_data(args.data, args.seed), settings.valid_fraction, args.seed)
    print(f"data: {args.data}: {data.num_queries} queries, {data.num_models} models, "
          f"splits {{{', '.join(f'{k}: {len(v)}' for k, v in data.splits.items())}}}")
    if not args.quiet:
        print_notes(data, args.data)
    mesh = resolve_mesh("auto", TASK_AXIS, config.tasks_per_step)   # fit's default, said here
    if mesh is not None:
        print(f"each meta-step's {config.tasks_per_step} tasks split across {mesh.size} "
              f"{mesh.devices.flat[0].platform} devices")
    start = time.time()
    router = mr.MetaRouter.fit(data, config, hparams, seed=args.seed, progress=Progress(not args.quiet),
                               checkpoint_dir=out / "checkpoints", save_every=args.save_every, keep=args.keep,
                               mesh=mesh)
    router.save(out / "router")
    write_json(out / "config.json", {"data": args.data, "data_seed": args.seed, "seed": args.seed,
                                     "valid_fraction": settings.valid_fraction, "recipe": settings.recipe,
                                     "config": config.to_dict(), "hparams": hparams.to_json()})
    print(f"trained in {time.time() - start:.0f} s; router saved to {out / 'router'}")
    for name, scores in router.validation.items():
        print(f"  {name:<10} {VALID_LABELS['utility']} {scores['utility']:.3f}, {VALID_LABELS['worst_band']} "
              f"{scores.get('worst_band', float('nan')):+.3f} (kept parameters)")
    return 0


def recorded_run(checkpoint) -> dict:
    """The config.json `train` or `sweep` wrote beside the router folder `checkpoint`, or {}."""
    cfg_file = Path(checkpoint).parent / "config.json"
    return read_json_object(cfg_file, ValueError) if cfg_file.exists() else {}


class Settings(NamedTuple):
    """What a training command trains with once the dataset's recipe is applied."""

    overrides: dict                 # TrainConfig fields: the recipe's beneath the command line's
    valid_fraction: float | None    # the validation share (None: the data's own split)
    recipe: str | None              # the dataset whose recipe applied, or None


def with_recipe(args, config_over: dict) -> Settings:
    """The settings of `args` and the TrainConfig overrides `config_over` with the recipe of the
    dataset `args.data` names beneath them (`recipes.recipe_for`; none with `--recipe none`);
    says what it applies."""
    recipe = recipe_for(args.data) if args.recipe == "auto" else None
    if recipe is not None:
        print(f"recipe for {args.data}: {recipe.describe()} ({recipe.why}); explicit settings win, "
              "--recipe none uses the library's defaults")
    valid_fraction, overrides = beneath(recipe, args.valid_fraction, config_over)
    return Settings(overrides, valid_fraction, None if recipe is None else str(args.data))


def resplit(data, valid_fraction: float | None, seed: int):
    """`data` with `valid_fraction` of its train and valid queries held out as "valid"
    (`RoutingData.resplit_validation`); None: as loaded."""
    return data if valid_fraction is None else data.resplit_validation(valid_fraction, seed)


def valid_fraction_arg(text: str) -> float:
    """An argparse type: a share strictly between 0 and 1 (also the experiment scripts')."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def int_at_least(least: int):
    """An argparse type: an integer >= `least`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be >= {least}, got {text}")
        return value
    return parse


def eval_data_source(args, checkpoint) -> tuple[str, int, float | None]:
    """(dataset, data seed, validation share) for `metarouter eval` of the router `checkpoint`.

    The dataset is --data, else the one config.json beside the router records. Its seed is
    --data-seed, else the recorded one when the dataset is the recorded one (that seed drew the
    synthetic data and the train/valid/test split: another seed would test on training queries),
    else --seed. The validation share is the training run's `--valid-fraction` when the dataset is
    the recorded one (its train split holds the queries the users' utility scales were calibrated
    on), else None (the data's own split).
    """
    recorded = recorded_run(checkpoint)
    name = args.data if args.data is not None else recorded.get("data", "synthetic")
    same = name == recorded.get("data")
    fraction = recorded.get("valid_fraction") if same else None
    if args.data_seed is not None:
        return name, args.data_seed, fraction
    if same:  # `sweep` records data_seed (its seeds train); `train` one seed for both
        seed = recorded.get("data_seed", recorded.get("seed"))
        if seed is not None:
            return name, int(seed), fraction
    return name, args.seed, fraction


def check_file_target(target, option: str) -> None:
    """Refuse, before a long evaluation, an output file `target` of `option` that cannot be written:
    a folder there, a file above it, or no write access to the folder it would be written in
    (the nearest one that exists: the others are made)."""
    if target:
        folder = Path(target).parent
        check_out(folder, option)
        if Path(target).is_dir():
            raise ValueError(f"{option} {target}: is a directory")
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {target}: cannot write in {existing}")


def eval_data(args, checkpoint):
    """(dataset name, data seed, the data as `metarouter eval` evaluates the router `checkpoint` on)."""
    data_name, data_seed, valid_fraction = eval_data_source(args, checkpoint)
    data = resplit(load_data(data_name, data_seed), valid_fraction, data_seed)
    print_notes(data, data_name)
    return data_name, data_seed, data


def evaluate_as_asked(args, router, data):
    """`evaluate` of `router` on `data` with `metarouter eval`'s options."""
    import metarouter_jax as mr

    return mr.evaluate(router, data, split=args.split, n_users=args.users, seed=args.seed,
                       n_contexts=tuple(args.n_contexts), strategies=tuple(args.strategies), profiles=args.profile,
                       pool=args.pool, bands=args.bands, reference=args.reference)


def cmd_eval(args) -> int:
    if len(args.checkpoint) > 1:
        return eval_several(args)
    import metarouter_jax as mr
    from metarouter_jax import curves

    if args.curves and args.bands is None:
        raise ValueError("--curves needs --bands B: the cost-quality curve runs through the bands' points")
    check_file_target(args.json, "--json")   # the outputs, before the router and data are loaded
    check_file_target(args.curves, "--curves")
    if args.curves:
        png_path(args.curves)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--curves needs matplotlib: pip install 'metarouter_jax[plot]'") from None
    router = mr.MetaRouter.load(args.checkpoint[0])
    _, _, data = eval_data(args, args.checkpoint[0])
    start = time.time()
    report = evaluate_as_asked(args, router, data)
    if args.pool:
        print(f"pool: {', '.join(report.settings['pool'])}")
    print(report.format())
    aiq = curves.aiq_table(report) if report.by_band else {}
    if aiq:
        print(curves.format_aiq(report, aiq))
    print(f"evaluated in {time.time() - start:.0f} s")
    if args.curves:
        strategy, n = next(iter(report.results)), max(report.settings["n_contexts"])
        print(f"wrote {curves.plot_cost_quality(report, strategy, n, args.curves)} "
              f"(cost-quality curves, {strategy}, n={n})")
    if args.json:
        if aiq:
            write_json(args.json, report.banded_json() | curves.aiq_json(report, aiq))
        else:
            report.write_json(args.json)
        print(f"wrote {args.json}")
    return 0


def eval_several(args) -> int:
    """`metarouter eval A B C ...`: each router on its own training data (as `eval A` would load
    it) with the same test-user seed and settings, then every metric's mean ± std over them."""
    import metarouter_jax as mr
    from metarouter_jax.evaluation import band_line, format_summary, summarize

    if len(set(args.checkpoint)) != len(args.checkpoint):
        raise ValueError(f"a router is given twice: {args.checkpoint}")
    if args.curves:
        raise ValueError("--curves draws one router's cost-quality curves: give one checkpoint")
    check_file_target(args.json, "--json")
    routers = [mr.MetaRouter.load(path) for path in args.checkpoint]   # every one readable before any evaluates
    reports, start = [], time.time()
    for path, router in zip(args.checkpoint, routers):
        data_name, data_seed, data = eval_data(args, path)
        begin = time.time()
        reports.append(evaluate_as_asked(args, router, data))
        print(f"{path}: {data_name} (data seed {data_seed}), evaluated in {time.time() - begin:.0f} s")
    summary = summarize(reports)
    bands = [tuple(r.by_band) for r in reports]
    by_band = {}
    if bands[0] and all(b == bands[0] for b in bands):
        by_band = {band: summarize([r.by_band[band] for r in reports]) for band in bands[0]}
    elif bands[0]:
        print("no summary by band: the routers' log10(lam) ranges differ, so do their bands (each report has its own)")
    s = reports[0].settings
    for strategy in summary:
        print(f"\npair strategy: {strategy}; mean ± std over {len(reports)} routers (users={s['n_users']} each, "
              f"test-user seed {args.seed}, split={s['split']})")
        for metric, title in (("normalized_utility", "normalised utility"),
                              ("preference_recovery", "preference recovery PR(n)")):
            print(title)
            print(format_summary(summary, strategy, metric))
    for band, band_summary in by_band.items():   # as `eval --bands` prints them, mean ± std
        for strategy, methods in band_summary.items():
            nu = "normalized_utility"
            print(band_line(band, strategy, methods, lambda m: f"{m[nu]['mean']:.3f} ± {m[nu]['std']:.3f}"))
    print(f"evaluated {len(reports)} routers in {time.time() - start:.0f} s")
    if args.json:
        write_json(args.json, {"checkpoints": list(args.checkpoint), "summary": summary,
                               **({"summary_by_band": by_band} if by_band else {}),
                               "reports": [r.banded_json() if r.by_band else r.to_json() for r in reports]})
        print(f"wrote {args.json}")
    return 0


def cmd_data_info(args) -> int:
    from metarouter_jax.inspect_data import dataset_info, format_info, plot_frontier

    data = load_data(args.name)
    print(format_info(dataset_info(data)))
    recipe = recipe_for(args.name)
    if recipe is not None:   # what `train` and `sweep` will apply to it
        print(f"\nrecipe (metarouter train/sweep apply it; --recipe none does not): {recipe.describe()}: {recipe.why}")
    if args.plot:
        print(f"wrote {plot_frontier(data, args.plot)}")
    return 0


def cmd_route(args) -> int:
    import metarouter_jax as mr
    from metarouter_jax.feedback import contexts_from_jsonl

    router = mr.MetaRouter.load(args.checkpoint)
    router.check_texts(args.queries, family=args.family)   # before loading the embedder
    if args.family is not None and not router.net_config.family_quality:
        print("note: --family has no effect: the router was trained without family_quality", file=sys.stderr)
    embedder = mr.TextEmbedder()
    contexts = contexts_from_jsonl(router, args.feedback, embedder)
    latent = router.adapt(contexts)
    choices = router.route_text(latent, args.queries, embedder=embedder, family=args.family)
    for query, model in zip(args.queries, choices):
        print(f"{model}\t{query}")
    return 0


def cmd_sweep(args) -> int:
    """seeds x grid as one vmapped program; tables, a plot and the best router under --out."""
    import math

    import jax

    from metarouter_jax import sweep
    from metarouter_jax.router import check_trains_metarouter

    # --seeds and --grid take several values, so key=value settings after them land in their lists.
    seeds, settings = [], args.overrides + args.grid
    for item in args.seeds:
        if "=" in item:
            settings.append(item)
        elif item.lstrip("-").isdigit():
            seeds.append(int(item))
        else:
            raise ValueError(f"--seeds takes integers, got {item!r}")
    config_over, grid, static = {}, {}, {}
    for item in settings:
        kind, name, raw_values = setting_kind(item)   # checks the key, resolves aliases
        if kind == "config":
            if "," in raw_values and not raw_values.lstrip().startswith("["):   # a static axis: a program per value
                static[name] = static.get(name, []) + [parse_overrides([f"{name}={raw}"])[0][name]
                                                       for raw in raw_values.split(",")]
            else:
                config_over.update(parse_overrides([item])[0])
            continue
        values = []
        for raw in raw_values.split(","):
            try:
                values.append(float(raw))
            except ValueError:
                raise ValueError(f"{name}={raw!r}: hyperparameter values must be numbers") from None
        grid[name] = grid.get(name, []) + values
    both = sorted(set(static) & set(config_over))
    if both:
        raise ValueError(f"{', '.join(both)}: given both one value and several (a static axis); give one of them")
    settings = with_recipe(args, config_over)
    config = checked_config(settings.overrides)
    parts = sweep.static_grid_configs(config, static)   # bad static values fail here, before the data is loaded
    for _, part_config in parts:                         # the sweep saves its best MetaRouter
        check_trains_metarouter(part_config, "metarouter sweep")
    Hparams.grid(**grid)   # bad values (NaN, negative) fail here, before the data is loaded
    out = Path(args.out)
    check_run_out(out, "best_router")
    data = resplit(load_data(args.data, args.data_seed), settings.valid_fraction, args.data_seed)
    size = len(seeds) * math.prod(len(v) for v in grid.values())
    programs = f" ({size} in each of {len(parts)} programs: {', '.join(static)})" if static else ""
    print(f"data: {args.data}: {data.num_queries} queries, {data.num_models} models; sweep: {size * len(parts)} "
          f"configurations{programs} x {config.num_steps} steps on {jax.device_count()} device(s)")
    if not args.quiet:
        print_notes(data, args.data)

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_chunks, desc="sweep", unit="chunk")

    score = config.valid_key   # what the sweep ranks the configurations by

    def on_part(index, num_parts, values):
        if bar is not None and values:   # each static combination is a program of its own
            bar.reset()
            bar.set_description(f"sweep {index + 1}/{num_parts} " + " ".join(f"{k}={v}" for k, v in values.items()))

    cleared = False   # an earlier run's outputs are removed before this sweep writes its first file

    def write_tables(results):
        nonlocal cleared
        if not cleared:
            clear_sweep_outputs(out)
            cleared = True
        return sweep.write_tables(results, out)

    def on_result(done):
        if len(parts) > 1 and len(done) < len(parts):   # tables of the programs so far, in case a later one fails
            write_tables(done)

    def on_chunk(index, num_chunks, metrics):
        if bar is not None:
            bar.total = num_chunks   # a warm start sweeps the known routers first
            bar.set_postfix({f"{score}_max": f"{metrics[score].max():.3f}", f"{score}_mean": f"{metrics[score].mean():.3f}"})
            bar.update(1)

    start = time.time()
    try:
        results = sweep.run_sweeps(data, config, static, grid, seeds, on_chunk=on_chunk,   # every device JAX sees
                                   on_part=on_part, on_result=on_result)
    finally:
        if bar is not None:
            bar.close()
    print(f"swept in {time.time() - start:.0f} s")
    paths = write_tables(results)
    if not args.no_plot:
        try:
            paths.append(sweep.plot_sweep(results, out / "sweep.png"))
        except ImportError:
            print("sweep.png skipped: matplotlib is not installed (pip install 'metarouter_jax[plot]')")
    print(sweep.format_markdown(results), end="")
    result, best = sweep.best_of(results)   # the best configuration's sweep, its number in the tables
    row = sweep.table_rows(results)[best]
    router = sweep.best_router(result, data, companions=args.companions,
                               on_chunk=Progress(not args.quiet) if args.companions else None)
    router.save(out / "best_router")
    write_json(out / "config.json",
               {"data": args.data, "data_seed": args.data_seed, "valid_fraction": settings.valid_fraction,
                "recipe": settings.recipe,
                "seed": int(result.seeds[result.best_index]),
                "config": result.config.to_dict(), "hparams": router.hparams.to_json(), "seeds": seeds, "grid": grid,
                "static_grid": static, "best": row})
    print(f"best: configuration {best} {result.configs[result.best_index]}: best "
          f"{VALID_LABELS[config.valid_criterion]} {result.best_utility[result.best_index]:.3f}; "
          f"router saved to {out / 'best_router'}")
    missing = [name for name in ("known", "agnostic") if name not in router.params]
    if missing:
        print(f"  (no {'/'.join(missing)} companion: rerun with --companions for `metarouter eval`)")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def compile_cache_option() -> argparse.ArgumentParser:
    """A parent parser with `--no-compile-cache`, for every command and the experiment scripts."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile everything afresh (default: a persistent compilation cache, "
                             "see metarouter_jax.compile_cache)")
    return parser


def apply_compile_cache(args):
    """Turn the persistent compilation cache on, or off with --no-compile-cache; its folder or None."""
    from metarouter_jax.compile_cache import disable_compilation_cache, enable_compilation_cache

    if args.no_compile_cache:
        disable_compilation_cache()
        return None
    return enable_compilation_cache()


VALID_HELP = ("hold out this share of the train and valid queries for early stopping instead of the data's own "
              "validation split (RouterBench's: 222 queries, too few to be reliable; see the README); "
              "`metarouter eval` reads it from OUT/config.json")
RECIPE_HELP = ("auto (default): a dataset given by name trains with its recipe, the settings the README's results on "
               "it used, beneath --valid-fraction and key=value settings ("
               + "; ".join(f"{name}: {recipe.describe()}" for name, recipe in RECIPES.items())
               + "); none: the library's defaults")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarouter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = compile_cache_option()
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", parents=[common],
                           help="meta-train a router (and its known/agnostic companions)")
    train.add_argument("--data", default="synthetic", help="synthetic, a dataset name, or a path")
    train.add_argument("--out", default="runs/default", help="output folder (router, config.json, checkpoints)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save-every", type=int_at_least(0), default=500,
                       help="checkpoint every N steps (0: only at the end)")
    train.add_argument("--keep", type=int_at_least(1), default=3, help="checkpoints to keep (at least 1)")
    train.add_argument("--valid-fraction", type=valid_fraction_arg, default=None, metavar="F", help=VALID_HELP)
    train.add_argument("--recipe", choices=("auto", "none"), default="auto", help=RECIPE_HELP)
    train.add_argument("--quiet", action="store_true", help="no progress bar, no loader notes")
    train.add_argument("overrides", nargs="*", help="key=value settings, e.g. num_steps=2000 lr=3e-3")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", parents=[common], help="evaluate a saved router against the baselines")
    ev.add_argument("checkpoint", nargs="+",
                    help="a router folder written by `metarouter train` (OUT/router); several (routers of "
                         "several training seeds, say): each is evaluated on its own training data with the "
                         "same test users, then every figure's mean ± std over them")
    ev.add_argument("--data", default=None, help="dataset (default: the one in OUT/config.json)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--users", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0,
                    help="seed of the test users (profiles, contexts). The data is loaded with --data-seed, "
                         "else the seed OUT/config.json records for it (it drew the synthetic data and the "
                         "train/test split), else this one")
    ev.add_argument("--data-seed", type=int, default=None,
                    help="seed to load the data with (default: the training run's, from OUT/config.json)")
    ev.add_argument("--n-contexts", type=int, nargs="+", default=[0, 1, 2, 4, 6, 8, 16, 32])
    ev.add_argument("--strategies", nargs="+", default=["uniform", "informative"],
                    help="pair strategies: uniform, informative, active (asked one at a time)")
    ev.add_argument("--profile", default=None, help="test-user profile family (default: the training one)")
    ev.add_argument("--pool", nargs="+", default=None, metavar="MODEL",
                    help="the routable models (names of the data's models; default: all). The data may hold "
                         "models the router never saw: they are described by their descriptors")
    ev.add_argument("--bands", type=int, default=None, metavar="B",
                    help="evaluate --users users in each of B equal log10(lam) bands and report each band "
                         "(where on the preference range a router wins or loses)")
    ev.add_argument("--no-reference", dest="reference", action="store_false",
                    help="leave out the routing literature's baselines (kNN/MLP predictors, LinUCB, per-user "
                         "training): most of the evaluation's time on a small router")
    ev.add_argument("--json", default=None, help="write {strategy: {method: {n: metrics}}} here; with --bands, "
                                                 "{all: that, by_band: {band: that}, identification, held_out, bands, "
                                                 "aiq: {strategy: {n: {method: {linear, log_cost}}}}, aiq_cost_range}")
    ev.add_argument("--curves", default=None, metavar="PNG",
                    help="with --bands: plot each method's cost-quality curve over the bands (first strategy, "
                         "largest n) with its hull and AIQ to this PNG (needs matplotlib)")
    ev.set_defaults(func=cmd_eval)

    route = sub.add_parser("route", parents=[common],
                           help="adapt to a user's feedback (JSONL) and route raw text queries")
    route.add_argument("checkpoint")
    route.add_argument("--feedback", required=True, help="JSONL: {query, model_a, model_b, preferred} per line")
    route.add_argument("--family", default=None,
                       help="the queries' task family, for a router trained with family_quality (default: unknown)")
    route.add_argument("queries", nargs="+")
    route.set_defaults(func=cmd_route)

    sw = sub.add_parser("sweep", parents=[common],
                        help="train seeds x a hyperparameter grid as one program; keep the best router")
    sw.add_argument("--data", default="synthetic", help="synthetic, a dataset name, or a path")
    sw.add_argument("--out", default="runs/sweep", help="output folder (sweep.csv/.md/.png, best_router)")
    sw.add_argument("--seeds", nargs="+", default=["0"], help="training seeds (each runs the whole grid)")
    sw.add_argument("--data-seed", type=int, default=0, help="seed of the dataset (synthetic data, splits)")
    sw.add_argument("--valid-fraction", type=valid_fraction_arg, default=None, metavar="F", help=VALID_HELP)
    sw.add_argument("--recipe", choices=("auto", "none"), default="auto", help=RECIPE_HELP)
    sw.add_argument("--grid", nargs="*", default=[], metavar="NAME=V1,V2",
                    help="axes: hyperparameters, e.g. learning_rate=1e-3,3e-3 entropy_start=0.05,0.1, vary in "
                         "one program; TrainConfig fields, e.g. answer_weight=0,1 or hidden=32,64, run a "
                         "program per value (combination); all configurations are ranked together")
    sw.add_argument("--companions", action="store_true",
                    help="also train the known/agnostic companions of the best configuration (for eval)")
    sw.add_argument("--no-plot", action="store_true", help="skip sweep.png (no matplotlib needed)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar, no loader notes")
    sw.add_argument("overrides", nargs="*", help="key=value TrainConfig settings, e.g. num_steps=2000")
    sw.set_defaults(func=cmd_sweep)

    data = sub.add_parser("data", help="inspect routing data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", parents=[common],
                               help="queries per split/family, model quality/cost, Pareto frontier")
    info.add_argument("name", help="synthetic, a dataset name, or a path")
    info.add_argument("--plot", default=None, help="write the cost-quality frontier to this PNG")
    info.set_defaults(func=cmd_data_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_compile_cache(args)
    try:
        return args.func(args)
    except (CheckpointError, DataError, ImportError, KeyError, OSError, ValueError) as err:
        # str() of a KeyError is the repr of its message, quotes and all; an ImportError is an
        # optional extra's (matplotlib, the text embedder), its message says how to install it
        print(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
