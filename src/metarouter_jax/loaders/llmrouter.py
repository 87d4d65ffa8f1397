"""LLMRouter 14-task format (ulab-uiuc/LLMRouter, `llmrouter_14task/`).

Files read (plain or `.gz`):

* `train.json`, `test.json`: one JSON array each of `{"question": str, "scores": {model:
  float}}` (train items also carry `cluster_id`, unused). There is no id field, so query ids
  are array positions: `"train-17"`, `"test-3"`. `scores` key order varies between items,
  so scores are indexed by model name, never by position. A model absent from an item's
  `scores` (or a `null` score) is unknown: the cell is NaN (masked) and counted in `notes`.
* `default_query_train.jsonl`, `default_query_test.jsonl`: `{task_name, query, ...}` per
  line; they give the task family. An item's family is the `task_name` of the line whose
  `query` equals its `question` exactly, in the same split's file. Six train questions are
  listed under two tasks (mmlu + openbook_qa or mmlu + arc_challenge); the line that comes
  *first in file order* wins (for the shipped data: mmlu). An item with no matching line
  raises `DataError`.
* `default_llm.json`: per-model `input_price` / `output_price`, USD per 1M tokens (the
  numeric fields; the free-text `feature` strings disagree for some models and are ignored).
* `embeddings_minilm_l6.npz`: parts `train`/`test` (`<part>_ids` are array positions,
  checked against the rows; `<part>_emb` float16 [N, 384] L2-normalised).

Quality: `scores` as stored, in [0, 1] (0/1 except commongen, fractional). A non-numeric
score or one outside [0, 1] raises `DataError` naming the file, item and model.

Cost is an ESTIMATE (the source has no per-query cost or token count):

    cost[q, k] = (in_tokens(q) * input_price[k] + out_tokens(family(q)) * output_price[k]) / 1e6

* `in_tokens` = ceil(1.3 x whitespace-separated words of the question) (`estimate_tokens`):
  a dependency-free word-piece estimate (English prose is about 1.3 BPE/WordPiece tokens
  per word), deterministic and identical on every machine.
* `out_tokens` is a per-family answer-length guess (`OUTPUT_TOKENS`): short answers for
  multiple choice and factoid QA, long for worked math and code. Override with
  `output_tokens={family: tokens}`. Families not in the table get `DEFAULT_OUTPUT_TOKENS`.

Because every model's price is the same for input and output here, the estimate only
rescales a per-query length by a per-model price: the cost *ranking* of models is exact,
the absolute USD and the per-query spread are approximate.

Splits: "train" (train.json), "test" (test.json) and "valid", held out of train (stratified
by family, `RoutingData.holdout`). 119 test questions also occur in train (all gpqa and
human_eval, 19 mbpp; 50 of them with different scores): they are kept as separate rows in
both splits, as upstream evaluates, and counted in `notes`; `test_twins="drop_train"` leaves
those questions' train rows out (every test question then unseen in training, every test
family kept), `"drop_test"` their test rows.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metarouter_jax.data import DataError, RoutingData, data_root
from metarouter_jax.splits import select_models

FOLDER = "llmrouter_14task"
EMBEDDINGS = "embeddings_minilm_l6.npz"
PARTS = ("train", "test")
TEST_TWINS = ("keep", "drop_train", "drop_test")   # what to do with the test questions that also occur in train
TOKENS_PER_WORD = 1.3
# Estimated answer length in tokens per task family (see module docstring): a letter or a
# short phrase for multiple choice / factoid QA, a sentence for commongen, a worked solution
# for math word problems and a function body for code.
OUTPUT_TOKENS: dict[str, float] = {
    "arc_challenge": 10,
    "commonsense_qa": 10,
    "openbook_qa": 10,
    "mmlu": 10,
    "gpqa": 20,
    "agentverse-logicgrid": 20,
    "natural_qa": 20,
    "trivia_qa": 20,
    "commongen": 40,
    "human_eval": 200,
    "mbpp": 200,
    "gsm8k": 250,
    "agentverse-mgsm": 250,
    "math": 300,
}
DEFAULT_OUTPUT_TOKENS = 100.0


def estimate_tokens(text: str) -> int:
    """Estimated token count of `text`: ceil(1.3 x whitespace-separated words); 0 if empty."""
    return int(math.ceil(TOKENS_PER_WORD * len(str(text).split())))


def find_file(folder: Path, name: str) -> Path:
    """`folder/name` or `folder/name.gz`, whichever exists; FileNotFoundError naming both."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{folder}: missing file {name!r} (or {name + '.gz'!r})")


# What reading a damaged file raises: a truncated or corrupt gzip or npz (zip) file, bad UTF-8.
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile, UnicodeDecodeError)


@contextlib.contextmanager
def reading(path: Path):
    """Turn a read error of a damaged file into a DataError naming it."""
    try:
        yield
    except READ_ERRORS as err:
        raise DataError(f"{path}: cannot be read, the file is truncated or corrupt "
                        f"({type(err).__name__}: {err})") from None


def open_text(path: Path):
    """UTF-8 text of a plain or `.gz` file; a leading byte-order mark (Excel, Notepad) is skipped."""
    return gzip.open(path, "rt", encoding="utf-8-sig", newline="") if path.suffix == ".gz" \
        else open(path, encoding="utf-8-sig", newline="")


def read_json(path: Path):
    try:
        with reading(path), open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-blank line; errors name the file and the 1-based line."""
    rows = []
    with reading(path), open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {line_no} is not valid JSON ({err})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {line_no} is not a JSON object")
            rows.append(obj)
    return rows


def load_npz_part(npz_path: Path, part: str | None, ids: Sequence[str]) -> np.ndarray:
    """[N, D] float32 embeddings of `part` (or the plain `ids`/`emb` arrays when part is None).

    Stored ids must equal `ids` in order (rows are aligned by position).
    """
    if not npz_path.exists():
        raise FileNotFoundError(f"embeddings file not found: {npz_path}")
    key_ids, key_emb = ("ids", "emb") if part is None else (f"{part}_ids", f"{part}_emb")
    with reading(npz_path), np.load(npz_path) as npz:
        for key in (key_ids, key_emb):
            if key not in npz.files:
                raise DataError(f"{npz_path}: missing array {key!r} (arrays: {sorted(npz.files)})")
        stored = [str(s) for s in npz[key_ids]]
        emb = np.asarray(npz[key_emb], np.float32)
    ids = [str(i) for i in ids]
    if len(stored) != len(ids) or emb.shape[0] != len(ids):
        raise DataError(f"{npz_path}: array {key_emb!r} has {emb.shape[0]} rows and {key_ids!r} "
                        f"{len(stored)} ids, but the data has {len(ids)} rows")
    if stored != ids:
        first = next(i for i, (a, b) in enumerate(zip(stored, ids)) if a != b)
        raise DataError(f"{npz_path}: {key_ids!r} differ from the data at row {first} "
                        f"({stored[first]!r} vs {ids[first]!r})")
    return emb


def _prices(path: Path, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    table = read_json(path)
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected an object keyed by model name")
    unpriced = [m for m in models if m not in table]
    if unpriced:
        raise DataError(f"{path}: no prices for scored model(s) {unpriced}")
    price_in, price_out = [], []
    for m in models:
        for key, out in (("input_price", price_in), ("output_price", price_out)):
            if key not in table[m]:
                raise DataError(f"{path}: model {m!r} has no key {key!r}")
            try:
                value = float(table[m][key])
            except (TypeError, ValueError):
                raise DataError(f"{path}: non-numeric {key!r} {table[m][key]!r} for model {m!r}") from None
            if not np.isfinite(value) or value < 0:
                raise DataError(f"{path}: negative or non-finite {key!r} {value} for model {m!r}")
            out.append(value)
    return np.array(price_in), np.array(price_out)


def _task_of_query(path: Path) -> dict[str, str]:
    """query text -> task_name of its first line in file order."""
    lookup: dict[str, str] = {}
    for i, row in enumerate(read_jsonl(path)):
        for key in ("query", "task_name"):
            if key not in row:
                raise DataError(f"{path}: record {i} has no key {key!r}")
        lookup.setdefault(str(row["query"]), str(row["task_name"]))
    return lookup


def _read_items(path: Path) -> list[dict]:
    items = read_json(path)
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of items, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {i} is not an object")
        for key in ("question", "scores"):
            if key not in item:
                raise DataError(f"{path}: item {i} has no key {key!r}")
        if not isinstance(item["scores"], dict):
            raise DataError(f"{path}: item {i}: 'scores' must be an object {{model: score}}")
    return items


def _score(value, path: Path, i: int, model: str) -> float:
    if value is None:
        return np.nan
    if isinstance(value, bool):
        return float(value)
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: item {i}: non-numeric score {value!r} for model {model!r}") from None
    if np.isfinite(s) and not 0.0 <= s <= 1.0:
        raise DataError(f"{path}: item {i}: score {s} for model {model!r} is outside [0, 1]")
    return s


def load_llmrouter(
    path: str | Path | None = None,
    *,
    valid_fraction: float = 0.1,
    seed: int = 0,
    output_tokens: Mapping[str, float] | None = None,
    models: Sequence[str] | None = None,
    test_twins: str = "keep",
) -> RoutingData:
    """Load the LLMRouter 14-task log (see the module docstring for format and choices).

    Args:
      path: the dataset folder; default `<data root>/llmrouter_14task`.
      valid_fraction: share of train held out as "valid" (stratified by family); 0 disables.
      seed: for the held-out draw.
      output_tokens: {family: estimated answer tokens}, overriding `OUTPUT_TOKENS` entries.
      models: keep only these models (in this order); unknown names raise KeyError.
      test_twins: the test questions that also occur in train: "keep" both rows (as upstream),
        "drop_train" (their train rows left out: no test question seen in training, the
        dataset name "llmrouter_unseen") or "drop_test" (their test rows left out).

    Returns:
      RoutingData with Q = 6,108 queries (5,608 train.json + 500 test.json) for the shipped
      data, K = 9 models (sorted names), D = 384; cost in USD per query (estimated); splits
      "train", "valid" (if asked), "test".
    """
    if test_twins not in TEST_TWINS:
        raise ValueError(f"test_twins must be one of {TEST_TWINS}, got {test_twins!r}")
    folder = Path(path) if path is not None else data_root() / FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"LLMRouter data folder not found: {folder}")
    out_table = {**OUTPUT_TOKENS, **(dict(output_tokens) if output_tokens else {})}

    parts = {}
    for part in PARTS:
        items_path = find_file(folder, f"{part}.json")
        parts[part] = (items_path, _read_items(items_path),
                       _task_of_query(find_file(folder, f"default_query_{part}.jsonl")))
    model_names = sorted({m for _, items, _ in parts.values() for it in items for m in it["scores"]})
    if len(model_names) < 2:
        raise DataError(f"{folder}: fewer than 2 scored models ({model_names})")
    price_in, price_out = _prices(find_file(folder, "default_llm.json"), model_names)

    emb_list, qual_list, in_tok, fam_names_rows, ids, split_of, questions = [], [], [], [], [], [], []
    for part, (items_path, items, task_of) in parts.items():
        for i, item in enumerate(items):
            question = str(item["question"])
            if question not in task_of:
                raise DataError(f"{items_path}: item {i}: question not found in default_query_{part} "
                                f"(no task family): {question[:80]!r}")
            scores = item["scores"]
            row = [_score(scores.get(m), items_path, i, m) for m in model_names]
            qual_list.append(row)
            in_tok.append(estimate_tokens(question))
            fam_names_rows.append(task_of[question])
            ids.append(f"{part}-{i}")
            split_of.append(part)
            questions.append(question)
        emb_list.append(load_npz_part(folder / EMBEDDINGS, part, [str(i) for i in range(len(items))]))
    if emb_list[0].shape[1:] != emb_list[1].shape[1:]:
        raise DataError(f"{folder / EMBEDDINGS}: embedding widths differ: {parts['train'][0].name} has embeddings "
                        f"of shape {emb_list[0].shape}, {parts['test'][0].name} of shape {emb_list[1].shape}")

    quality = np.array(qual_list, np.float32)
    family_names = sorted(set(fam_names_rows))
    family = np.array([family_names.index(f) for f in fam_names_rows], np.int32)
    out_tok = np.array([float(out_table.get(f, DEFAULT_OUTPUT_TOKENS)) for f in fam_names_rows])
    cost = ((np.array(in_tok, float)[:, None] * price_in[None, :]
             + out_tok[:, None] * price_out[None, :]) / 1e6).astype(np.float32)
    cost[np.isnan(quality)] = np.nan  # an unscored answer has no meaningful cost either

    split_of = np.array(split_of)
    in_part = {part: {q for q, p in zip(questions, split_of) if p == part} for part in PARTS}
    # a row whose question also occurs in the other part (train <-> test)
    twin = np.array([q in in_part["train" if p == "test" else "test"] for q, p in zip(questions, split_of)], bool)
    overlap = int((twin & (split_of == "test")).sum())
    notes = ["cost is an estimate: (ceil(1.3 x words) input tokens x input_price + per-family "
             "output-token guess x output_price) / 1e6, prices from default_llm.json"]
    embeddings = np.concatenate(emb_list)
    if overlap and test_twins == "keep":
        notes.append(f"{overlap} test questions also occur in train; kept as separate rows in both splits "
                     "(test_twins='drop_train', the dataset 'llmrouter_unseen', leaves their train rows out)")
    elif overlap:
        drop_part = "train" if test_twins == "drop_train" else "test"
        dropped = twin & (split_of == drop_part)
        keep = ~dropped
        notes.append(f"{int(dropped.sum())} {drop_part} rows whose question also occurs in "
                     f"{'test' if drop_part == 'train' else 'train'} left out (test_twins={test_twins!r})")
        embeddings, quality, cost, family, split_of = (x[keep] for x in (embeddings, quality, cost, family, split_of))
        ids = [i for i, k in zip(ids, keep) if k]
    splits = {p: np.nonzero(split_of == p)[0] for p in PARTS}
    missing_cells = int(np.isnan(quality).sum())
    if missing_cells:
        notes.append(f"{missing_cells} (item, model) scores absent, null or NaN in the source; masked")
    for part, (_, items, _) in parts.items():
        texts = [it["question"] for it in items]
        dup = len(texts) - len(set(texts))
        if dup:
            notes.append(f"{dup} repeated question texts within {part}; kept as separate rows (ids are positions)")
    data = RoutingData.create(embeddings, quality, cost, family, model_names=model_names,
                              family_names=family_names, query_ids=ids, splits=splits, notes=notes)
    if models is not None:
        data = select_models(data, models)
    if valid_fraction > 0:
        data = data.holdout("train", valid_fraction, "valid", seed=seed)
    return data
