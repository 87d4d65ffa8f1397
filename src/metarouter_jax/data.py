"""`RoutingData`: one routing log (queries x models) with validation, splits and descriptors.

A routing log holds, for Q queries and K models, the quality of each model's answer
(in [0, 1], NaN where unknown) and its cost (USD per query, NaN where unknown), plus a
query embedding and a task-family id per query. Everything downstream (profiles,
contexts, training, evaluation) reads this one object; splits are index arrays into it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

DATA_ENV = "METAROUTER_DATA"


class DataError(ValueError):
    """Raised when routing data is malformed; the message names the problem."""


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Where the real datasets live: `path`, else $METAROUTER_DATA, else ../shared/data.

    The fallback is resolved beside the checkout (two levels above `src/metarouter_jax`).
    """
    if path is not None:
        return Path(path)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    checkout = Path(__file__).resolve().parents[2]
    return checkout.parent / "shared" / "data"


def pool_mask(model_names: Sequence[str], pool) -> np.ndarray:
    """[K] bool mask of the models `pool` names: None (every model), a [K] bool mask, model names
    (one name: one model) or indices. Refuses unknown names, indices out of range or not
    integers, and an empty pool."""
    k = len(model_names)
    if pool is None:
        return np.ones(k, bool)
    pool = np.asarray([pool] if isinstance(pool, str) else pool)
    if pool.dtype == bool:
        if pool.shape != (k,):
            raise ValueError(f"a pool mask needs one entry per model ({k}), got shape {pool.shape}")
        mask = pool
    elif pool.dtype.kind in "US":
        unknown = [p for p in pool.tolist() if p not in model_names]
        if unknown:
            raise KeyError(f"unknown model name(s) {unknown} in pool; known models: {list(model_names)}")
        mask = np.isin(np.asarray(model_names), pool)
    elif pool.size and pool.dtype.kind not in "iu":
        raise ValueError(f"a pool is model names, model indices or a bool mask, got {pool.tolist()}")
    else:
        if pool.size and (pool.min() < 0 or pool.max() >= k):
            raise ValueError(f"pool indices must be in [0, {k}), got {pool.tolist()}")
        mask = np.zeros(k, bool)
        mask[pool.astype(int)] = True
    if not mask.any():
        raise ValueError("the pool is empty: it must name at least one model")
    return mask


@dataclasses.dataclass(frozen=True, eq=False)
class RoutingData:
    """A routing log. Build it with `RoutingData.create`, which validates.

    Attributes:
      embeddings: [Q, D] float32 query embeddings.
      quality: [Q, K] float32 quality in [0, 1]; NaN where unknown.
      cost: [Q, K] float32 USD per query, >= 0; NaN where unknown.
      family: [Q] int32 task-family id, indexes `family_names`.
      model_names: K model names.
      family_names: F family names.
      query_ids: Q query ids (strings; may repeat when the source repeats them).
      splits: name -> int array of query indices (e.g. "train", "valid", "test", "calib").
      notes: human-readable remarks made while loading (masked cells, duplicates, ...).
    """

    embeddings: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    family: np.ndarray
    model_names: tuple[str, ...]
    family_names: tuple[str, ...]
    query_ids: tuple[str, ...]
    splits: Mapping[str, np.ndarray]
    notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        embeddings,
        quality,
        cost,
        family,
        *,
        model_names: Sequence[str],
        family_names: Sequence[str],
        query_ids: Sequence[str] | None = None,
        splits: Mapping[str, Sequence[int]] | None = None,
        notes: Sequence[str] = (),
    ) -> "RoutingData":
        """Validate and build. NaN entries stay NaN (masked downstream) and are reported in `notes`."""
        emb = np.asarray(embeddings, dtype=np.float32)
        qual = np.asarray(quality, dtype=np.float32)
        cst = np.asarray(cost, dtype=np.float32)
        fam = np.asarray(family)
        if emb.ndim != 2 or emb.shape[1] < 1:
            raise DataError(f"embeddings must be [Q, D] with D >= 1, got shape {emb.shape}")
        n_q = emb.shape[0]
        if n_q == 0:
            raise DataError("routing data has no queries")
        if qual.ndim != 2 or qual.shape[0] != n_q:
            raise DataError(f"quality must be [Q={n_q}, K], got shape {qual.shape}")
        n_k = qual.shape[1]
        if cst.shape != qual.shape:
            raise DataError(f"cost must have the shape of quality {qual.shape}, got {cst.shape}")
        if fam.shape != (n_q,):
            raise DataError(f"family must be [Q={n_q}], got shape {fam.shape}")
        if not np.issubdtype(fam.dtype, np.integer):
            raise DataError(f"family must hold integer ids, got dtype {fam.dtype}")
        if isinstance(model_names, str):
            raise DataError(f"model_names must be a sequence of names, got the string {model_names!r}")
        model_names = tuple(str(m) for m in model_names)
        family_names = tuple(str(f) for f in family_names)
        if len(model_names) != n_k:
            raise DataError(f"{len(model_names)} model names for {n_k} quality columns")
        if len(set(model_names)) != n_k:
            raise DataError(f"model names repeat: {sorted(m for m in model_names if model_names.count(m) > 1)}")
        if not all(m.strip() for m in model_names):   # a router names its models (pools, routing output)
            raise DataError(f"model names must be non-empty, got {[m for m in model_names if not m.strip()]!r} "
                            f"at index {[i for i, m in enumerate(model_names) if not m.strip()]}")
        if n_k < 2:
            raise DataError(f"routing needs at least 2 models, got {n_k}")
        if fam.min() < 0 or fam.max() >= len(family_names):
            raise DataError(f"family ids must be in [0, {len(family_names)}), got range [{fam.min()}, {fam.max()}]")
        if not np.all(np.isfinite(emb)):
            bad = np.unique(np.nonzero(~np.isfinite(emb))[0])
            raise DataError(f"embeddings hold NaN/inf in {bad.size} rows (first: {bad[:5].tolist()})")
        known_q = np.isfinite(qual)
        if np.any(qual[known_q] < 0) or np.any(qual[known_q] > 1):
            lo, hi = np.nanmin(qual), np.nanmax(qual)
            q, k = (int(i) for i in np.argwhere((qual < 0) | (qual > 1))[0])
            raise DataError(f"quality must lie in [0, 1] (rescale scores such as 1-10 ratings), got range "
                            f"[{lo:.4g}, {hi:.4g}]; first out of range: model {model_names[k]!r}, query {q} "
                            f"({qual[q, k]:.4g})")
        known_c = np.isfinite(cst)
        if np.any(cst[known_c] < 0):
            q, k = (int(i) for i in np.argwhere(cst < 0)[0])
            raise DataError(f"negative cost for model {model_names[k]!r}, query {q} ({cst[q, k]:.4g} USD; "
                            f"{int((cst < 0).sum())} negative cells)")
        if np.any(np.isinf(qual)) or np.any(np.isinf(cst)):
            raise DataError("quality and cost must be finite or NaN (unknown), not inf")
        if query_ids is None:
            query_ids = [str(i) for i in range(n_q)]
        query_ids = tuple(str(q) for q in query_ids)
        if len(query_ids) != n_q:
            raise DataError(f"{len(query_ids)} query ids for {n_q} queries")
        unobserved = ~(known_q & known_c)
        notes = list(notes)
        if unobserved.any():
            rows = np.unique(np.nonzero(unobserved)[0])
            notes.append(
                f"{int(unobserved.sum())} (query, model) cells in {rows.size} queries are unknown "
                "(NaN); they are masked, never zeroed"
            )
        full_rows = (~unobserved).sum(axis=1)
        if np.any(full_rows == 0):
            raise DataError(f"{int((full_rows == 0).sum())} queries have no observed model at all")
        split_arrays = {name: split_indices(name, idx, n_q)
                        for name, idx in (splits or {"all": np.arange(n_q)}).items()}
        return cls(emb, qual, cst, fam.astype(np.int32), model_names, family_names, query_ids,
                   split_arrays, tuple(notes))

    # ------------------------------------------------------------------ shapes & masks
    @property
    def num_queries(self) -> int:
        return self.embeddings.shape[0]

    @property
    def num_models(self) -> int:
        return self.quality.shape[1]

    @property
    def num_families(self) -> int:
        return len(self.family_names)

    @property
    def embed_dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def observed(self) -> np.ndarray:
        """[Q, K] bool: both quality and cost of that answer are known."""
        return np.isfinite(self.quality) & np.isfinite(self.cost)

    def log_cost_stats(self, split: str | None = None) -> tuple[float, float]:
        """(mean, std) of log10 cost (USD) over the observed cells of `split`'s queries (None: of
        every query): how routers standardise cost (`TrainConfig.cost_units`)."""
        idx = slice(None) if split is None else self.split(split)
        observed, cost = self.observed[idx], self.cost[idx]
        if not observed.any():
            raise DataError(f"split {split!r} has no observed cost: the log10-cost units cannot be measured on it")
        log_c = np.log10(np.maximum(cost[observed], 1e-12))
        return float(log_c.mean()), float(log_c.std() + 1e-6)

    def split(self, name: str) -> np.ndarray:
        """Query indices of a split; a clear error names the splits that exist."""
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; this data has {sorted(self.splits)}")
        return self.splits[name]

    def nonempty_split(self, name: str) -> np.ndarray:
        """`split(name)`, or a DataError if it holds no query (training samples from its splits)."""
        idx = self.split(name)
        if idx.size == 0:
            raise DataError(f"split {name!r} is empty: it holds none of the {self.num_queries} queries")
        return idx

    def model_index(self, names: str | Sequence[str]) -> np.ndarray:
        """Indices of models by name; unknown names raise with the known ones listed."""
        single = isinstance(names, str)
        names = [names] if single else list(names)
        lookup = {m: i for i, m in enumerate(self.model_names)}
        unknown = [n for n in names if n not in lookup]
        if unknown:
            raise KeyError(f"unknown model name(s) {unknown}; known models: {list(self.model_names)}")
        idx = np.array([lookup[n] for n in names], dtype=np.int32)
        return idx[0] if single else idx

    def pool_mask(self, pool: Sequence[str] | Sequence[int] | np.ndarray | None) -> np.ndarray:
        """[K] bool mask of routable models from names, indices or a mask (None = all)."""
        return pool_mask(self.model_names, pool)

    # ------------------------------------------------------------------ derived views
    def with_splits(self, **splits: Sequence[int]) -> "RoutingData":
        """A copy with these splits added or replaced (validated)."""
        new = {name: split_indices(name, idx, self.num_queries) for name, idx in splits.items()}
        return dataclasses.replace(self, splits={**self.splits, **new})

    def holdout(self, split: str, fraction: float, new: str, seed: int = 0,
                remainder: str | None = None) -> "RoutingData":
        """Move a random `fraction` of `split` into split `new` (stratified by family).

        The rest is stored under `remainder` (default: `split` itself, shrunk).
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        idx = self.nonempty_split(split)
        rng = np.random.default_rng(seed)
        out, keep = [], []
        for f in np.unique(self.family[idx]):
            members = rng.permutation(idx[self.family[idx] == f])
            n_out = int(round(fraction * members.size))
            out.append(members[:n_out])
            keep.append(members[n_out:])
        return self.with_splits(**{new: np.sort(np.concatenate(out)),
                                   (remainder or split): np.sort(np.concatenate(keep))})

    def resplit_validation(self, fraction: float, seed: int = 0) -> "RoutingData":
        """The "train" and "valid" splits merged, and `fraction` of them held out again as "valid"
        (stratified by family, `holdout` with `seed`); every other split unchanged.

        A larger validation split makes early stopping more reliable at the cost of training
        queries (README, "A larger validation split"). On data whose loader holds "valid" out of
        "train" (routerbench, llmrouter) it gives the loader's own `valid_fraction=fraction` with
        the same seed."""
        merged = np.union1d(self.nonempty_split("train"), self.splits.get("valid", np.zeros(0, np.int64)))
        return self.with_splits(train=merged).holdout("train", fraction, "valid", seed=seed)

    def model_summary(self, split: str | None = None) -> dict[str, np.ndarray]:
        """Per-model mean quality and mean cost (USD) over a split, ignoring unknown cells."""
        idx = np.arange(self.num_queries) if split is None else self.split(split)
        return {"quality": np.nanmean(self.quality[idx], axis=0),
                "cost": np.nanmean(self.cost[idx], axis=0)}

    def descriptors(self, split: str | None = None, centre=None) -> np.ndarray:
        """[K, 1 + F] model descriptors from a calibration split.

        Column 0: log10 of the model's mean cost, centred on the mean over models.
        Columns 1..F: the model's mean quality per task family, centred per family.
        `split` defaults to "calib" if the data has one, else "train", else every query.
        These use only what a new model would also have (a few calibrated answers), so the
        policy can score a model it never saw in training. Families absent from the split
        get 0 (no information).

        centre: [1 + F] values to subtract instead of the means over this data's models: a
        router's own (`descriptor_centre` of its training data), so that the models of a
        changed pool are described in the units the router was trained on. Otherwise adding
        or removing one model would shift every other model's descriptor.
        """
        raw, present = self._descriptor_columns(split)
        centre = self._column_means(raw) if centre is None else np.asarray(centre, np.float64)
        if centre.shape != (raw.shape[1],):
            raise ValueError(f"a descriptor centre needs {raw.shape[1]} values (log cost + {self.num_families} "
                             f"families), got shape {centre.shape}")
        return np.where(present, raw - centre, 0.0).astype(np.float32)

    def descriptor_centre(self, split: str | None = None) -> np.ndarray:
        """[1 + F] what `descriptors(split)` subtracts: each column's mean over the models (0 for absent families)."""
        raw, present = self._descriptor_columns(split)
        return np.where(present, self._column_means(raw), 0.0).astype(np.float64)

    @staticmethod
    def _column_means(raw: np.ndarray) -> np.ndarray:
        # Column by column, as contiguous arrays: numpy then sums in the same order as it always
        # has, so the descriptors (and every result trained on them) stay bit-identical.
        return np.array([np.ascontiguousarray(col).mean() for col in raw.T], dtype=raw.dtype)

    def _descriptor_columns(self, split: str | None):
        """Uncentred descriptor columns [K, 1 + F] and which hold information [1 + F]."""
        if split is None:
            split = next((s for s in ("calib", "train") if s in self.splits), None)
        idx = np.arange(self.num_queries) if split is None else self.split(split)
        unanswered = [m for m, seen in zip(self.model_names, self.observed[idx].any(0)) if not seen]
        if unanswered:
            raise DataError(f"models {unanswered} have no answer (quality and cost) on split {split!r} "
                            f"({idx.size} queries), from which every model's descriptor is measured: give them "
                            "answers there, or leave them out (splits.select_models)")
        qual, cst, fam = self.quality[idx], self.cost[idx], self.family[idx]
        cols = [np.log10(np.maximum(np.nanmean(cst, axis=0), 1e-12))]
        present = [True]
        for f in range(self.num_families):
            rows = qual[fam == f]
            present.append(bool(rows.shape[0]) and not np.all(np.isnan(rows)))
            cols.append(np.nan_to_num(np.nanmean(rows, axis=0), nan=np.nanmean(rows)) if present[-1]
                        else np.zeros(self.num_models, cols[0].dtype))
        return np.stack(cols, axis=1), np.asarray(present)

    def pareto_frontier(self, split: str | None = None) -> np.ndarray:
        """Indices of models on the mean cost-quality Pareto frontier, cheapest first (of models
        of equal mean cost only the best can be on it)."""
        s = self.model_summary(split)
        order = np.lexsort((-s["quality"], s["cost"]))   # by cost; at equal cost the best first
        frontier, best = [], -np.inf
        for k in order:
            if s["quality"][k] > best + 1e-9:
                frontier.append(int(k))
                best = s["quality"][k]
        return np.array(frontier, dtype=np.int32)


def split_indices(name: str, idx, num_queries: int) -> np.ndarray:
    """A split as int64 query indices, from indices or a boolean mask over all queries.

    A float array is refused rather than truncated, a mask of another length rather than read
    as indices 0/1.
    """
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (num_queries,):
            raise DataError(f"split {name!r}: a boolean mask must have shape ({num_queries},), got {idx.shape}")
        return np.flatnonzero(idx).astype(np.int64)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"split {name!r} must hold integer query indices or a boolean mask, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= num_queries)):
        raise DataError(f"split {name!r} must be 1-D indices in [0, {num_queries})")
    return idx


def random_split(n: int, fractions: Mapping[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Split range(n) at random into named parts with the given fractions (summing to 1)."""
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total}")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + [int(round(f * n)) for f in fractions.values()])
    bounds[-1] = n
    return {name: np.sort(perm[bounds[i]:bounds[i + 1]]) for i, name in enumerate(fractions)}
