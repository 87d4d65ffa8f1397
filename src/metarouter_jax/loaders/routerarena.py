"""RouterArena cached-answer format (RouteWorks/RouterArena, `routerarena_2model/`).

Files read (plain or `.gz`):

* one `<model>.jsonl` per model (every `*.jsonl[.gz]` in the folder; the file name is the
  model name): one record per query with `global_index` (str, the query id),
  `question` and `evaluation_result: {score, inference_cost, ...}`. The files are joined on
  `global_index`; if the id sets differ, `DataError` names an index missing from a file.
  Rows follow the first file's order (files sorted by name).
* `embeddings_minilm_l6.npz`: arrays `ids` (= `global_index`) and `emb` (float16 [N, 384]);
  matched by id (not by position), every query must have one. `ids` and `emb` must have the
  same length, else `DataError`.

Quality: `evaluation_result.score`. Mostly 0/1; METEOR (translation, NarrativeQA) is
fractional and can be slightly negative (one value, -0.033, in the shipped data) or, in
principle, above 1: such scores are clipped to [0, 1] and counted in `notes`. A `null`
score is unknown (NaN, masked); a non-numeric one raises `DataError`.

Cost: `evaluation_result.inference_cost`, real USD per query (token usage x the model's
price). A negative cost raises `DataError` naming the model and the `global_index`.

Families: the dataset prefix of `global_index`, `<Dataset>[-<variant>][_<subset>]_<n>` ->
`<Dataset>`: the text before the first `_`, then before the first `-`. So the MMLUPro,
OpenTDB, QANTA, Ethics and MMLU subjects collapse into their dataset, the 7 `SuperGLUE-*`
subsets into SuperGLUE and the 8 `WMT19-xx-en` pairs into WMT19: 23 families.

Duplicates: a `global_index` repeated within one file keeps its first record; the count
goes to `notes`.

Splits: there is no official split. A seeded random split, stratified by family
(`metarouter_jax.splits.stratified_split`), default train/valid/test = 0.6/0.1/0.3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metarouter_jax.data import DataError, RoutingData, data_root
from metarouter_jax.loaders.llmrouter import read_jsonl, reading
from metarouter_jax.splits import select_models, stratified_split

FOLDER = "routerarena_2model"
EMBEDDINGS = "embeddings_minilm_l6.npz"
DEFAULT_FRACTIONS = {"train": 0.6, "valid": 0.1, "test": 0.3}


def family_of(global_index: str) -> str:
    """Dataset name of a RouterArena `global_index`, e.g. 'SuperGLUE-Wic_12' -> 'SuperGLUE'."""
    return global_index.split("_", 1)[0].split("-", 1)[0]


def _model_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _number(value, path: Path, key: str, gid: str) -> float:
    if value is None:
        return np.nan
    if isinstance(value, bool):
        raise DataError(f"{path}: non-numeric {key} {value!r} at global_index {gid!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: non-numeric {key} {value!r} at global_index {gid!r}") from None


def _read_model(path: Path) -> tuple[list[str], dict[str, tuple[str, float, float]], int]:
    """ids in file order, id -> (question, score, cost), count of repeated ids dropped."""
    order, records, dup = [], {}, 0
    for line_no, rec in enumerate(read_jsonl(path), start=1):
        if "global_index" not in rec:
            raise DataError(f"{path}: record {line_no} has no key 'global_index'")
        gid = str(rec["global_index"])
        if "evaluation_result" not in rec or not isinstance(rec["evaluation_result"], dict):
            raise DataError(f"{path}: record {gid!r} has no object 'evaluation_result'")
        ev = rec["evaluation_result"]
        for key in ("score", "inference_cost"):
            if key not in ev:
                raise DataError(f"{path}: record {gid!r} has no key 'evaluation_result.{key}'")
        if gid in records:
            dup += 1
            continue
        score = _number(ev["score"], path, "evaluation_result.score", gid)
        cost = _number(ev["inference_cost"], path, "evaluation_result.inference_cost", gid)
        if np.isinf(score) or np.isinf(cost):
            raise DataError(f"{path}: infinite score or cost at global_index {gid!r}")
        if cost < 0:
            raise DataError(f"{path}: negative inference_cost {cost} for model {_model_name(path)!r} "
                            f"at global_index {gid!r}")
        order.append(gid)
        records[gid] = (str(rec.get("question", "")), score, cost)
    if not order:
        raise DataError(f"{path}: no records")
    return order, records, dup


def load_routerarena(
    path: str | Path | None = None,
    *,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    models: Sequence[str] | None = None,
) -> RoutingData:
    """Load the RouterArena 2-model log (see the module docstring for format and choices).

    Args:
      path: the dataset folder; default `<data root>/routerarena_2model`.
      fractions: split name -> fraction, default {"train": .6, "valid": .1, "test": .3}.
      seed: for the split.
      models: keep only these models (in this order); unknown names raise KeyError.

    Returns:
      RoutingData with Q = 809 queries for the shipped data, K = 2 models (sorted file
      names), D = 384; quality in [0, 1]; cost in USD per query (real).
    """
    folder = Path(path) if path is not None else data_root() / FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"RouterArena data folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    if len(files) < 2:
        raise DataError(f"{folder}: need one <model>.jsonl[.gz] per model, found {[p.name for p in files]}")
    model_names = [_model_name(p) for p in files]
    if len(set(model_names)) != len(model_names):
        raise DataError(f"{folder}: a model has both a .jsonl and a .jsonl.gz file: {[p.name for p in files]}")

    per_model = [_read_model(p) for p in files]
    ids = per_model[0][0]
    id_set = set(ids)
    for p, (order, _, _) in zip(files[1:], per_model[1:]):
        extra = [g for g in order if g not in id_set]
        if extra:
            raise DataError(f"{p}: global_index {extra[0]!r} is not in {files[0].name} "
                            f"({len(extra)} such indices)")
        if len(order) != len(ids):
            other = set(order)
            absent = [g for g in ids if g not in other]
            raise DataError(f"{p}: global_index {absent[0]!r} of {files[0].name} is missing "
                            f"({len(absent)} such indices)")

    quality = np.array([[rec[g][1] for (_, rec, _) in per_model] for g in ids], np.float64)
    cost = np.array([[rec[g][2] for (_, rec, _) in per_model] for g in ids], np.float32)
    notes = []
    out_of_range = np.isfinite(quality) & ((quality < 0) | (quality > 1))
    if out_of_range.any():
        cells = [f"{model_names[k]} {ids[q]} ({quality[q, k]:.3g})" for q, k in zip(*np.nonzero(out_of_range))]
        notes.append(f"{len(cells)} scores outside [0, 1] clipped (METEOR can be slightly negative): "
                     + ", ".join(cells[:5]) + (" ..." if len(cells) > 5 else ""))
        quality = np.clip(quality, 0.0, 1.0)
    for name, (_, _, dup) in zip(model_names, per_model):
        if dup:
            notes.append(f"{dup} repeated global_index records in {name}'s file; the first of each kept")
    missing = int(np.isnan(quality).sum())
    if missing:
        notes.append(f"{missing} (query, model) scores are null in the source; masked as NaN")

    emb = _embeddings(folder / EMBEDDINGS, ids)

    fam_rows = [family_of(g) for g in ids]
    family_names = sorted(set(fam_rows))
    family = np.array([family_names.index(f) for f in fam_rows], np.int32)
    splits = stratified_split(family, DEFAULT_FRACTIONS if fractions is None else fractions, seed)
    data = RoutingData.create(emb, quality.astype(np.float32), cost, family, model_names=model_names,
                              family_names=family_names, query_ids=ids, splits=splits, notes=notes)
    return data if models is None else select_models(data, models)


def _embeddings(npz_path: Path, ids: Sequence[str]) -> np.ndarray:
    """[Q, D] float32 rows of `npz_path` (`ids`/`emb` arrays) for `ids`, matched by id."""
    if not npz_path.exists():
        raise FileNotFoundError(f"embeddings file not found: {npz_path}")
    with reading(npz_path), np.load(npz_path) as npz:
        for key in ("ids", "emb"):
            if key not in npz.files:
                raise DataError(f"{npz_path}: missing array {key!r} (arrays: {sorted(npz.files)})")
        stored = [str(g) for g in npz["ids"]]
        emb = np.asarray(npz["emb"], np.float32)
    if emb.shape[0] != len(stored):  # rows are matched to ids by position within the npz
        raise DataError(f"{npz_path}: array 'emb' has {emb.shape[0]} rows and 'ids' {len(stored)} ids; "
                        "they must be equal")
    row_of: dict[str, int] = {}
    for i, g in enumerate(stored):
        row_of.setdefault(g, i)
    absent = [g for g in ids if g not in row_of]
    if absent:
        raise DataError(f"{npz_path}: no embedding for global_index {absent[0]!r} "
                        f"({len(absent)} such indices)")
    return emb[[row_of[g] for g in ids]]
