"""The experiment scripts' shared options (experiments/common.py): the validation split's size."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.recipes import recipe_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import common  # noqa: E402


def parsed(*argv):
    parser = argparse.ArgumentParser(prog="script")
    common.add_validation_options(parser)
    return parser.parse_args(list(argv))


def split_with(data, *argv):
    args = parsed(*argv)
    return common.validation_data(args, data, args.valid_fraction)


def test_valid_fraction_resplits_and_valid_subset_shrinks_the_validation_split():
    data = mr.synthetic_data(seed=0)
    assert split_with(data) is data                        # the data's own split
    smaller = split_with(data, "--valid-fraction", "0.2", "--valid-subset", "0.25")
    larger = data.resplit_validation(0.2, seed=0)
    valid, kept = larger.split("valid"), smaller.split("valid")
    assert abs(kept.size - 0.25 * valid.size) <= len(np.unique(data.family))      # stratified rounding
    assert set(kept) <= set(valid) and not set(kept) & set(smaller.split("valid_unused"))
    for name in ("train", "test"):                                                  # nothing else moves
        np.testing.assert_array_equal(smaller.split(name), larger.split(name))
    assert common.split_sizes(smaller) == {"train": larger.split("train").size, "valid": kept.size,
                                           "test": data.split("test").size}
    other = split_with(data, "--valid-fraction", "0.2", "--valid-subset", "0.25", "--valid-subset-seed", "1")
    assert other.split("valid").size == kept.size and not np.array_equal(other.split("valid"), kept)   # another draw


@pytest.mark.parametrize("argv", [("--valid-fraction", "1.0"), ("--valid-subset", "0")])
def test_out_of_range_shares_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parsed(*argv)                                       # by the parser, before any data is loaded
    assert exit_.value.code == 2 and "must be in (0, 1)" in capsys.readouterr().err


def test_setup_applies_the_dataset_recipe_beneath_the_options():
    data = mr.synthetic_data(seed=0)
    args = parsed()
    args.steps = 200
    same, config = common.setup(args, {}, "synthetic", data)     # no recipe: the data's own split, the defaults
    assert same is data and config == mr.TrainConfig(num_steps=200)
    recipe = recipe_for("routerbench")
    for name in ("routerbench", "routerbench_0shot"):             # the registry's alias too
        args = parsed()
        args.steps = 200
        resplit, config = common.setup(args, {}, name, data)
        np.testing.assert_array_equal(resplit.split("valid"),
                                      data.resplit_validation(recipe.valid_fraction, seed=0).split("valid"))
        assert config == mr.TrainConfig(num_steps=200, **recipe.config)
    args = parsed("--valid-fraction", "0.1")                      # an explicit share and --set win
    args.steps = 200
    resplit, config = common.setup(args, {"ema_decay": 0.0}, "routerbench", data)
    np.testing.assert_array_equal(resplit.split("valid"), data.resplit_validation(0.1, seed=0).split("valid"))
    assert config.ema_decay == 0.0 and config.log10_lam_range == recipe.config["log10_lam_range"]
