"""Evaluation protocols as pure functions over `RoutingData`.

* `in_distribution`: disjoint random train/valid/test queries, stratified by task family.
* `ood_by_family`: train on some families, test on others (out-of-distribution tasks).
* `model_pools`: which models are routable in training and at test time, and which test
  models the router never saw (the meta-learning setting: new models at test time).
* `select_models`: keep a subset of the models (columns).

Query-split functions return a new `RoutingData` (via `with_splits`) whose splits are exactly
the new ones; the queries they draw from are those in *some* split of the input, so rows a
loader deliberately left out of every split (contaminated rows, rows with fewer than two
observed models) stay out. Nothing is mutated.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from metarouter_jax.data import RoutingData

DEFAULT_FRACTIONS = {"train": 0.6, "valid": 0.1, "test": 0.3}
_AUTO_NAN_NOTE = "are unknown (NaN); they are masked, never zeroed"


def stratified_split(
    family: np.ndarray,
    fractions: Mapping[str, float],
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Split `indices` (default: all) into named disjoint parts, stratified by `family`.

    Within each family the members are shuffled and part s gets floor(f_s x n) of them; the
    few left over (fewer than the number of parts) go to parts drawn with probability equal
    to their fractional remainders (systematic sampling), so the expected size of every
    part in every family is exactly f_s x n, no part deviates by more than one query per
    family, and tiny families are not all pushed into the first part.

    Args:
      family: [Q] int family ids.
      fractions: part name -> fraction (>= 0, summing to 1). Zero-fraction parts are omitted.
      seed: RNG seed; the result is a pure function of the inputs.
      indices: the query indices to split.

    Returns:
      part name -> sorted int64 index array.
    """
    if not all(np.isfinite(float(v)) and float(v) >= 0 for v in fractions.values()):   # NaN > 0 is False:
        raise ValueError(f"split fractions must be finite numbers >= 0, got {dict(fractions)}")   # a NaN part vanished
    names = [n for n in fractions if fractions[n] > 0]
    frac = np.array([float(fractions[n]) for n in names])
    if not names or abs(frac.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)} (sum {frac.sum():.6g})")
    family = np.asarray(family)
    idx = np.arange(family.shape[0]) if indices is None else np.unique(np.asarray(indices, np.int64))
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in np.unique(family[idx]):
        members = rng.permutation(idx[family[idx] == f])
        n = members.size
        quota = frac * n
        counts = np.floor(quota + 1e-9).astype(np.int64)
        left = n - int(counts.sum())
        if left > 0:
            rest = np.clip(quota - counts, 0.0, None)
            rest = rest * left / rest.sum()
            edges = np.cumsum(rest)
            points = rng.random() + np.arange(left)
            chosen = np.minimum(np.searchsorted(edges, points, side="right"), len(names) - 1)
            np.add.at(counts, chosen, 1)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for j, name in enumerate(names):
            out[name].append(members[bounds[j]:bounds[j + 1]])
    return {n: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
            for n, parts in out.items()}


def _pool(data: RoutingData) -> np.ndarray:
    """Queries in any current split (all queries if there are no splits)."""
    if not data.splits:
        return np.arange(data.num_queries)
    return np.unique(np.concatenate([np.asarray(v, np.int64) for v in data.splits.values()]))


def _replace_splits(data: RoutingData, splits: Mapping[str, np.ndarray]) -> RoutingData:
    return dataclasses.replace(data, splits={}).with_splits(**splits)


def in_distribution(
    data: RoutingData,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> RoutingData:
    """Disjoint random query splits, stratified by family (default train/valid/test 0.6/0.1/0.3).

    Draws from the queries in any current split; the result's splits are exactly `fractions`'
    names (zero-fraction parts omitted).
    """
    fractions = DEFAULT_FRACTIONS if fractions is None else fractions
    return _replace_splits(data, stratified_split(data.family, fractions, seed, _pool(data)))


def _family_ids(data: RoutingData, names: str | Sequence[str], arg: str) -> np.ndarray:
    names = [names] if isinstance(names, str) else list(names)
    lookup = {f: i for i, f in enumerate(data.family_names)}
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise KeyError(f"unknown family name(s) {unknown} in {arg}; known families: {list(data.family_names)}")
    if not names:
        raise ValueError(f"{arg} is empty")
    return np.array(sorted({lookup[n] for n in names}), np.int64)


def ood_by_family(
    data: RoutingData,
    train_families: str | Sequence[str],
    test_families: str | Sequence[str],
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> RoutingData:
    """Train (and valid) on `train_families`, test on the disjoint `test_families`.

    "valid" is a stratified `valid_fraction` of the train-family queries (omitted when 0).
    Families in neither list are left out of every split. Unknown family names raise
    KeyError listing the known ones; a family in both lists raises ValueError.
    """
    train_ids = _family_ids(data, train_families, "train_families")
    test_ids = _family_ids(data, test_families, "test_families")
    both = sorted(set(train_ids.tolist()) & set(test_ids.tolist()))
    if both:
        raise ValueError(f"families in both train and test: {[data.family_names[f] for f in both]}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    pool = _pool(data)
    train_pool = pool[np.isin(data.family[pool], train_ids)]
    test_pool = pool[np.isin(data.family[pool], test_ids)]
    for name, idx in (("train", train_pool), ("test", test_pool)):
        if idx.size == 0:
            raise ValueError(f"no queries of the {name} families in the data's splits")
    splits = stratified_split(data.family, {"train": 1.0 - valid_fraction, "valid": valid_fraction},
                              seed, train_pool)
    splits["test"] = test_pool
    return _replace_splits(data, splits)


class PoolSplit(NamedTuple):
    """Routable model pools: [K] bool masks, and the test models absent from training."""

    train_mask: np.ndarray
    test_mask: np.ndarray
    unseen: tuple[str, ...]


def model_pools(
    data: RoutingData,
    train_models: Sequence[str] | Sequence[int] | np.ndarray,
    test_models: Sequence[str] | Sequence[int] | np.ndarray,
) -> PoolSplit:
    """Model pools for training and testing (names, indices or [K] bool masks).

    Pools may overlap (a test pool usually holds the training models plus new ones).
    Unknown names raise KeyError listing the known models; an empty pool raises ValueError.

    Returns:
      PoolSplit(train_mask [K] bool, test_mask [K] bool, unseen: names of test-pool models
      not in the train pool, in model order).
    """
    if isinstance(train_models, str) or isinstance(test_models, str):
        raise TypeError("pass model pools as sequences of names, not a single string")
    for arg, pool in (("train_models", train_models), ("test_models", test_models)):
        if len(pool) == 0 or (isinstance(pool, np.ndarray) and pool.dtype == bool and not pool.any()):
            raise ValueError(f"{arg}: the pool is empty")
    train_mask = data.pool_mask(train_models).copy()
    test_mask = data.pool_mask(test_models).copy()
    unseen = tuple(data.model_names[k] for k in np.nonzero(test_mask & ~train_mask)[0])
    return PoolSplit(train_mask, test_mask, unseen)


def select_models(data: RoutingData, models: Sequence[str]) -> RoutingData:
    """Keep only `models` (in the given order): quality/cost columns and names.

    Unknown names raise KeyError listing the known models; repeats raise ValueError;
    fewer than 2 models raise ValueError (nothing to route between). Queries with no
    observed answer among the kept models are dropped from every split (count in `notes`).
    """
    if isinstance(models, str):
        raise TypeError("models must be a sequence of names, not a single string")
    models = list(models)
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ValueError(f"model name(s) repeated in the selection: {repeated}")
    cols = np.atleast_1d(data.model_index(models))
    if cols.size < 2:
        raise ValueError(f"routing needs at least 2 models, selection has {cols.size}: {models}")
    quality, cost = data.quality[:, cols], data.cost[:, cols]
    observed = np.isfinite(quality) & np.isfinite(cost)
    notes = [n for n in data.notes if _AUTO_NAN_NOTE not in n]
    if (~observed).any():
        rows = np.unique(np.nonzero(~observed)[0])
        notes.append(f"{int((~observed).sum())} (query, model) cells in {rows.size} queries "
                     f"{_AUTO_NAN_NOTE}")
    empty = ~observed.any(axis=1)
    splits = dict(data.splits)
    if empty.any():
        dropped = np.nonzero(empty)[0]
        splits = {k: np.setdiff1d(v, dropped) for k, v in splits.items()}
        notes.append(f"{dropped.size} queries with no observed answer among the selected models "
                     "left out of every split")
    return dataclasses.replace(data, quality=quality, cost=cost,
                               model_names=tuple(data.model_names[k] for k in cols),
                               splits=splits, notes=tuple(notes))
