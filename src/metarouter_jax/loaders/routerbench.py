"""RouterBench format: `sample_id, prompt, eval_name`, one 0/1 column per model, `<model>|total_cost`.

Accepted inputs:
* a folder of `<part>_{train,test}.csv[.gz]` files (e.g. `routerbench_0shot/`): the file
  names give the train/test split. A folder that mixes such files with files whose names
  have no `_train` / `_test` suffix raises `DataError` naming the latter (their rows would
  be in no split); a folder where no name has the suffix gets the random split below;
* one `.csv` / `.csv.gz` file given directly: a seeded random 70/30 train/test split of its
  rows, whatever its name (`mbpp_test.csv.gz` too; a note says the suffix was not used);
* the official pickled pandas DataFrame (`.pkl`; needs pandas, which is imported lazily;
  a file that cannot be unpickled raises `DataError`).

Text files are read as UTF-8; a leading byte-order mark (Excel's "CSV UTF-8") is skipped.

Embeddings come from a `embeddings_minilm_l6*.npz` beside the data (format in
`shared/data/README.md`: `<part>_ids` / `<part>_emb`, rows aligned with file rows) or, when
there is none, from `metarouter_jax.text.TextEmbedder` (the optional `text` extra). A part
whose embedding rows or ids do not match its data rows in number raises `DataError`.

Rows: kept in file order. Unknown scores (NaN) are masked. A query with fewer than two
observed models cannot give a pairwise comparison or a routing choice, so it is kept in the
data but left out of every split (RouterBench 0-shot has 14 such ARC rows: one half of a
`sample_id` split into two rows); the count is reported in `RoutingData.notes`. A row with
no observed model at all cannot be held by `RoutingData` (it refuses such rows), so it is
dropped; `notes` gives how many and the first one's `sample_id`, row and file.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path
from typing import Iterable

import numpy as np

from metarouter_jax.data import DataError, RoutingData, data_root, random_split
from metarouter_jax.loaders.llmrouter import open_text, reading

COST_SUFFIX = "|total_cost"
REQUIRED = ("sample_id", "prompt", "eval_name")
NOT_SCORES = ("oracle_model_to_route_to", "Unnamed: 0")  # upstream columns that are not a model's scores
QUESTION_EMBEDDINGS = "embeddings_minilm_l6_question.npz"
FULL_EMBEDDINGS = "embeddings_minilm_l6.npz"
SINGLE_FILE_SPLIT = {"train": 0.7, "test": 0.3}  # rows of a file given alone, or of unsplit files
NAMED_SPLITS = ("train", "test")  # `<part>_train` / `<part>_test` in a folder


def _named_split(part: str) -> str | None:
    return next((s for s in NAMED_SPLITS if part.endswith(f"_{s}")), None)


def _read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    with reading(path), open_text(path) as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file, no header")
        rows = list(reader)
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise DataError(f"{path}: row {i + 2} has a different number of fields than the header")
    return rows


def _read_pickle(path: Path) -> list[dict[str, object]]:
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading the pickled RouterBench DataFrame needs pandas: pip install pandas") from err
    try:
        frame = pd.read_pickle(path)
    except OSError:  # cannot open it at all (permissions, ...): not a problem of the data
        raise
    except Exception as err:  # unpickling damaged or foreign bytes can raise almost anything
        raise DataError(f"{path}: cannot be read as a pickled pandas DataFrame, the file is truncated, corrupt "
                        f"or not a pickle ({type(err).__name__}: {err})") from err
    if not hasattr(frame, "to_dict"):
        raise DataError(f"{path}: expected a pickled pandas DataFrame, got {type(frame).__name__}")
    return frame.to_dict("records")


def question_text(prompt: str) -> str:
    """The question alone: parse the prompt list, join with newlines, keep the last blank-line block.

    ARC and winogrande prompts start with the same five solved exemplars; the real question
    is after the last blank line (this is how the question-only embeddings were made).
    """
    return full_text(prompt).split("\n\n")[-1]


def full_text(prompt: str) -> str:
    """The prompt as sent: a Python-literal list of strings joined with newlines."""
    try:
        parts = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        return prompt
    return "\n".join(parts) if isinstance(parts, (list, tuple)) else str(parts)


def _parse_table(rows: list[dict], source: str) -> tuple[dict, list[str]]:
    if not rows:
        raise DataError(f"{source}: no rows")
    columns = list(rows[0].keys())
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}")
    cost_cols = [c for c in columns if isinstance(c, str) and c.endswith(COST_SUFFIX)]
    models = [c[: -len(COST_SUFFIX)] for c in cost_cols]
    if not models:
        raise DataError(f"{source}: no '<model>{COST_SUFFIX}' columns")
    absent = [m for m in models if m not in columns]
    if absent:
        raise DataError(f"{source}: score column(s) missing for priced model(s) {absent}")
    models = sorted(models)

    def number(value, column, i):
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            return np.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{source}: non-numeric value {value!r} in column {column!r}, row {i}") from None

    quality = np.array([[number(r[m], m, i) for m in models] for i, r in enumerate(rows)], np.float32)
    cost = np.array([[number(r[m + COST_SUFFIX], m + COST_SUFFIX, i) for m in models]
                     for i, r in enumerate(rows)], np.float32)
    unread = [c for c in columns if isinstance(c, str) and "|" not in c and c not in (*REQUIRED, *NOT_SCORES, *models)]
    table = {
        "unread": unread,  # e.g. a model's scores without its price: it cannot be routed
        "sample_id": [str(r["sample_id"]) for r in rows],
        "prompt": [str(r["prompt"]) for r in rows],
        "eval_name": [str(r["eval_name"]) for r in rows],
        "quality": quality,
        "cost": cost,
    }
    return table, models


def _load_embeddings(npz_path: Path, part: str, ids: list[str]) -> np.ndarray:
    with reading(npz_path), np.load(npz_path) as npz:
        key_ids, key_emb = (f"{part}_ids", f"{part}_emb") if f"{part}_emb" in npz else ("ids", "emb")
        if key_emb not in npz or key_ids not in npz:
            raise DataError(f"{npz_path}: no embeddings for part {part!r} (keys: {sorted(npz.files)})")
        stored_ids = [str(s) for s in npz[key_ids]]
        emb = np.asarray(npz[key_emb], np.float32)
    if len(stored_ids) != len(ids) or emb.shape[0] != len(ids):
        raise DataError(f"{npz_path}: part {part!r}: array {key_emb!r} has {emb.shape[0]} rows and {key_ids!r} "
                        f"{len(stored_ids)} ids, but the data file has {len(ids)} rows")
    if stored_ids != ids:
        raise DataError(f"{npz_path}: ids of part {part!r} do not match the rows of the data file")
    return emb


def _embed(texts: Iterable[str]) -> np.ndarray:
    from metarouter_jax.text import TextEmbedder  # optional extra, imported lazily

    return TextEmbedder().embed(list(texts))


def load_routerbench(
    path: str | Path | None = None,
    *,
    embeddings: str = "question",
    valid_fraction: float = 0.1,
    seed: int = 0,
) -> RoutingData:
    """Load a RouterBench-format log.

    Args:
      path: folder, CSV(.gz) or pickle; default `<data root>/routerbench_0shot`.
      embeddings: "question" (the question-only npz, the one to route on for 0-shot data),
        "full" (the whole prompt), or "compute" (embed with the text extra).
      valid_fraction: share of the train split held out (stratified by family) as "valid"
        for early stopping and model selection; 0 disables it.
      seed: for the held-out draw (and for the 70/30 train/test split of a single file).

    Returns:
      RoutingData with splits "train", "valid" (if asked), "test".
    """
    path = Path(path) if path is not None else data_root() / "routerbench_0shot"
    if not path.exists():
        raise FileNotFoundError(f"RouterBench data not found at {path}")
    if embeddings not in ("question", "full", "compute"):
        raise ValueError(f"embeddings must be 'question', 'full' or 'compute', got {embeddings!r}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
        if not files:
            raise DataError(f"{path}: no .csv or .csv.gz files")
        parts = [(p.name.split(".csv")[0], p) for p in files]
        unsplit = [p.name for part, p in parts if _named_split(part) is None]
        if unsplit and len(unsplit) < len(parts):
            raise DataError(f"{path}: {unsplit} have no '_train'/'_test' name suffix while the other files do, so "
                            "their rows would be in no split; rename them '<part>_train.csv' / '<part>_test.csv' "
                            "or move them out of the folder")
        split_of_part = {part: _named_split(part) or "all" for part, _ in parts}
        npz_dir = path
    else:
        parts = [(path.name.split(".")[0], path)]
        split_of_part = {parts[0][0]: "all"}  # one file: the random split, whatever its name says
        npz_dir = path.parent
    npz_path = npz_dir / (QUESTION_EMBEDDINGS if embeddings == "question" else FULL_EMBEDDINGS)

    tables, split_of_row, source_of_row, models = [], [], [], None
    for part, file in parts:
        rows = _read_pickle(file) if file.suffix == ".pkl" else _read_csv(file)
        table, part_models = _parse_table(rows, str(file))
        if models is not None and part_models != models:
            raise DataError(f"{file}: model columns differ from the other files")
        models = part_models
        if embeddings != "compute" and npz_path.exists():
            table["emb"] = _load_embeddings(npz_path, part, table["sample_id"])
        else:
            text = question_text if embeddings == "question" else full_text
            table["emb"] = _embed(text(p) for p in table["prompt"])
        tables.append(table)
        split_of_row += [split_of_part[part]] * len(table["sample_id"])
        source_of_row += [(file.name, i) for i in range(len(table["sample_id"]))]

    other = next((i for i, t in enumerate(tables) if t["emb"].shape[1:] != tables[0]["emb"].shape[1:]), None)
    if other is not None:
        raise DataError(f"embedding widths differ: {parts[0][1]} has embeddings of shape {tables[0]['emb'].shape}, "
                        f"{parts[other][1]} of shape {tables[other]['emb'].shape}")
    cat = lambda key: np.concatenate([t[key] for t in tables])  # noqa: E731
    emb, quality, cost = cat("emb"), cat("quality"), cat("cost")
    ids = np.array(sum((t["sample_id"] for t in tables), []), object)
    eval_names = np.array(sum((t["eval_name"] for t in tables), []), object)
    split_of_row = np.array(split_of_row)

    notes = []
    observed = (np.isfinite(quality) & np.isfinite(cost)).sum(axis=1)
    if not observed.any():
        raise DataError(f"{path}: no row has an observed model (a score and a cost both known)")
    if (observed == 0).any():  # RoutingData refuses such rows: drop them, say so
        first = int(np.argmax(observed == 0))
        name, row = source_of_row[first]
        notes.append(f"{int((observed == 0).sum())} rows with no observed model dropped; first: sample_id "
                     f"{ids[first]!r}, row {row} of {name}")
        keep = observed > 0
        emb, quality, cost, observed = emb[keep], quality[keep], cost[keep], observed[keep]
        ids, eval_names, split_of_row = ids[keep], eval_names[keep], split_of_row[keep]
    ids = ids.tolist()
    family_names = sorted(set(eval_names))
    family = np.array([family_names.index(e) for e in eval_names], np.int32)

    usable = observed >= 2
    if np.all(split_of_row == "all"):  # a new array: "train" written into the '<U3' of "all" is "tra"
        test = random_split(len(ids), SINGLE_FILE_SPLIT, seed)["test"]
        split_of_row = np.where(np.isin(np.arange(len(ids)), test), "test", "train")
        named = _named_split(parts[0][0])
        if len(parts) == 1 and named is not None:
            notes.append(f"one file given: train/test is a seeded random 70/30 split of its rows; the "
                         f"'_{named}' in its name is not used")
    splits = {name: np.nonzero((split_of_row == name) & usable)[0] for name in ("train", "test")}
    if (~usable).any():
        notes.append(f"{int((~usable).sum())} rows with fewer than 2 observed models left out of the splits")
    unread = sorted({c for t in tables for c in t["unread"]})
    if unread:
        notes.append(f"column(s) {unread} not read: a model's scores are read only with its '<model>{COST_SUFFIX}' "
                     "column")
    dup = len(ids) - len(set(ids))
    if dup:
        notes.append(f"{dup} repeated sample_id rows kept as separate queries (aligned with embeddings by position)")
    data = RoutingData.create(emb, quality, cost, family, model_names=models,
                              family_names=family_names, query_ids=ids, splits=splits, notes=notes)
    if valid_fraction > 0:
        data = data.holdout("train", valid_fraction, "valid", seed=seed)
    return data
