"""Settings measured to work on a dataset, applied beneath what a user sets.

A recipe is what the README's results on that dataset were trained with, where the library's
defaults were not enough. `metarouter train` and `metarouter sweep` apply the recipe of the
dataset they are given by name (`--recipe none` turns it off), and the experiment scripts do too;
an explicit `--valid-fraction` and explicit `key=value` settings win over it. In Python nothing
is applied by itself: `recipe_for(name)` returns the recipe, `beneath` puts it under what a
caller set, and the caller passes the share to `RoutingData.resplit_validation` and the fields
to `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import os
from types import MappingProxyType
from typing import Mapping

from metarouter_jax.loaders.registry import ALIASES


@dataclasses.dataclass(frozen=True)
class Recipe:
    """valid_fraction: the share of the train and valid queries to hold out for early stopping
    (`RoutingData.resplit_validation`), or None for the data's own validation split.
    config: TrainConfig fields. why: one line, printed where the recipe is applied."""

    valid_fraction: float | None
    config: Mapping[str, object]
    why: str

    def describe(self) -> str:
        """Its settings as `metarouter train` takes them, e.g. "--valid-fraction 0.2 ema_decay=0.99"."""
        def text(value) -> str:
            if isinstance(value, tuple):
                return "[" + ",".join(text(v) for v in value) + "]"    # JSON, as key=value settings are read
            return f"{value:g}" if isinstance(value, float) else str(value)

        parts = [] if self.valid_fraction is None else [f"--valid-fraction {self.valid_fraction:g}"]
        return " ".join(parts + [f"{key}={text(value)}" for key, value in self.config.items()])


RECIPES: Mapping[str, Recipe] = MappingProxyType({
    # README, "A larger validation split": with RouterBench's own 10% split (222 queries) early
    # stopping kept routers that lose 0.07-0.21 to the best fixed model at the low end of the
    # range on four or five of eight seeds; with 20% (443 queries) and the parameter average none
    # lost more than 0.031, and the known router was above the best fixed model on every seed.
    # log10(lam) in [0, 4]: the reference range of DESIGN.md section 9.
    # README, "The supervised answer loss (`answer_weight`)": the supervised loss on the policy's
    # answer components (answer_weight=1) raised the known router's and the MetaRouter's test
    # utility on every seed (validation: on two of three), in the low preference bands, on unseen
    # models and at pool sizes 2-11; weight 3 was level on validation, 0.3 too little to matter.
    # On eight seeds both routers gained on seven; seed 5 lost at the quality-seeking end, and its
    # validation utility said so (added 2026-12-01; older result files record answer_weight 0 or
    # no such field).
    "routerbench_0shot": Recipe(
        valid_fraction=0.2,
        config=MappingProxyType({"log10_lam_range": (0.0, 4.0), "ema_decay": 0.99, "answer_weight": 1.0}),
        why="its own validation split (222 queries) is too small for reliable early stopping, and its "
            "per-query labels need the supervised answer loss"),
})


def beneath(recipe: Recipe | None, valid_fraction: float | None, overrides: Mapping) -> tuple[float | None, dict]:
    """(validation share, TrainConfig overrides) with `recipe` beneath what was set explicitly:
    `valid_fraction` (None: not set) wins over the recipe's, each field of `overrides` over its."""
    if recipe is None:
        return valid_fraction, dict(overrides)
    return recipe.valid_fraction if valid_fraction is None else valid_fraction, {**recipe.config, **overrides}


def recipe_for(name: str | os.PathLike) -> Recipe | None:
    """The recipe of a dataset given by name or alias (`load_dataset`'s), or None: for datasets
    without one, and for paths, whose contents the recipes were not measured on."""
    key = str(name)
    return RECIPES.get(ALIASES.get(key, key))
