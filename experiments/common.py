"""What the experiment scripts share: their common options and how they are read."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import metarouter_jax as mr
from metarouter_jax import checkpoint
from metarouter_jax.cli import apply_compile_cache, compile_cache_option, parse_overrides


def experiment_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """A parser with --seeds, --steps, --users, --set, --out and --no-compile-cache."""
    parser = argparse.ArgumentParser(description=doc, parents=[compile_cache_option()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="TrainConfig overrides, e.g. hidden=128 (as `metarouter train`)")
    parser.add_argument("--out", type=Path, default=out, help=f"results folder (default {out})")
    return parser


def parse(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """The arguments (the compilation cache set up as asked) and the TrainConfig overrides of --set."""
    args = parser.parse_args()
    print(f"compilation cache: {apply_compile_cache(args) or 'off'}", flush=True)
    try:
        overrides, hparams = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))   # exit status 2, as the metarouter command
    if hparams:
        parser.error(f"only TrainConfig fields can be set here, not {sorted(hparams)}")
    args.out.mkdir(parents=True, exist_ok=True)
    return args, overrides


def load_data(name: str):
    """The synthetic default (`synthetic`) or a dataset by name or path (`metarouter_jax.load_dataset`)."""
    return mr.synthetic_data(seed=0) if name == "synthetic" else mr.load_dataset(name)


def cell(values) -> str:
    """mean ± std of a metric over seeds, for a Markdown table."""
    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def write_results(path: Path, results) -> None:
    """Every seed's results as compact JSON (atomically). The metrics are float32 computations:
    each float is written as the shortest decimal of its float32 value, which reads back to the
    same float32, instead of the 17 digits of its float64 widening (half the file's size)."""
    checkpoint.write_json(path, _as_float32(results), indent=None)


def _as_float32(obj):
    if isinstance(obj, float):
        return float(str(np.float32(obj)))
    if isinstance(obj, dict):
        return {key: _as_float32(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_as_float32(value) for value in obj]
    return obj
