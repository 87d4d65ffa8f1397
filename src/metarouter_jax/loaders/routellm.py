"""RouteLLM evaluation data (lm-sys/RouteLLM, `routellm_gsm8k_mtbench/`).

Two models: gpt-4-1106-preview (strong) and mistralai/Mixtral-8x7B-Instruct-v0.1 (weak).

GSM8K (`gsm8k_responses.csv[.gz]`, 1,319 rows): columns `prompt`, one correctness column
per model (`True`/`False`) and `<model>_response`. Quality is 1.0 for `True`, 0.0 for
`False`; an empty cell or `nan` is unknown (NaN, masked, counted in `notes`); anything else
raises `DataError` naming the row and column. Family "gsm8k". Query ids `gsm8k-<row>` (row
positions 0-1318, there is no id column; a repeated prompt stays a separate row, counted in
`notes`). Embeddings: part `gsm8k` of `embeddings_minilm_l6.npz` (ids are row positions,
checked).

MT-Bench (`question.jsonl[.gz]`, `judgements.jsonl[.gz]`, 80 questions x 2 turns x 2
models): ONE QUERY PER QUESTION, as RouteLLM evaluates it: the router sees only the first
turn and the chosen model answers both turns, so quality is the mean over the two turns of
the GPT-4 judge score mapped from 1-10 to [0, 1] by (s - 1) / 9 (FastChat's -1, "judge output
not parsed", counts as unknown; other scores outside 1-10 raise). A question missing a turn's
judgement for a model gets NaN for that model (masked, counted in `notes`). Families are the
8 `category` values. Query ids `mt_bench-<question_id>`. A (question_id, model, turn)
judged twice keeps its first judgement (count in `notes`); a repeated question_id in
`question.jsonl` keeps its first line. There are no stored MT-Bench embeddings: the first
turn is embedded with `metarouter_jax.text.TextEmbedder` (the optional `text` extra), or
with an `embed_fn` you pass.

Cost is an ESTIMATE (the files have none): per-model list prices (`PRICES`, USD per 1M
tokens: gpt-4-1106-preview 10 in / 30 out, Mixtral-8x7B 0.6 / 0.6) x estimated tokens,
with tokens = ceil(1.3 x whitespace words) (`loaders.llmrouter.estimate_tokens`):

* GSM8K: input = the prompt, output = the model's real response (`<model>_response`).
* MT-Bench: input = turn 1 plus, for turn 2, the whole conversation so far (turn 1, the
  model's first answer, turn 2); output = the model's two answers. The answers are read
  from the judge prompts (`user_prompt`: turn-1 prompts hold "[The Start of Assistant's
  Answer]", turn-2 prompts the "### Assistant A:" conversation). An answer that cannot be
  found there is assumed to be `DEFAULT_ANSWER_TOKENS` long (count in `notes`).

Contamination: RouteLLM's lists (GSM8K rows 0, 1, 2, 18, 67, 147, 233, 269, 285, 364, 530,
932; MT-Bench question_ids 81, 88, 91, 92, 101, 104, 120, 122) overlap its router-training
data. `exclude_contaminated=True` keeps them in the data but leaves them out of every split.

Splits: no official split (RouteLLM evaluates on everything). A seeded random split,
stratified by family, default train/valid/test = 0.6/0.1/0.3.
"""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from metarouter_jax.data import DataError, RoutingData, data_root
from metarouter_jax.loaders.llmrouter import (estimate_tokens, find_file, load_npz_part, open_text, read_jsonl,
                                              reading)
from metarouter_jax.splits import select_models, stratified_split

FOLDER = "routellm_gsm8k_mtbench"
EMBEDDINGS = "embeddings_minilm_l6.npz"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
MODELS = (STRONG, WEAK)
# USD per 1M tokens (input, output): OpenAI list price of gpt-4-1106-preview and a typical
# hosted price of Mixtral-8x7B-Instruct (the pair RouteLLM's paper prices).
PRICES: dict[str, tuple[float, float]] = {STRONG: (10.0, 30.0), WEAK: (0.6, 0.6)}
DEFAULT_ANSWER_TOKENS = 300
CONTAMINATED_GSM8K = (0, 1, 2, 18, 67, 147, 233, 269, 285, 364, 530, 932)
CONTAMINATED_MT_BENCH = (81, 88, 91, 92, 101, 104, 120, 122)
DEFAULT_FRACTIONS = {"train": 0.6, "valid": 0.1, "test": 0.3}
PARTS = ("gsm8k", "mt_bench", "both")

# FastChat judge prompts: single-turn ("single-v1", "single-math-v1") and multi-turn ones.
_TURN1_ANSWER = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
_TURN2_ANSWERS = re.compile(
    r"### Assistant A:\n(.*?)(?=\n\n### User:|\n\n<\|The End of Assistant A's Conversation)", re.S)


def _cost(model: str, tokens_in: float, tokens_out: float) -> float:
    price_in, price_out = PRICES[model]
    return (tokens_in * price_in + tokens_out * price_out) / 1e6


def _correct(value: str, path: Path, row: int, column: str) -> float:
    v = (value or "").strip()
    if v in ("True", "true", "1", "1.0"):
        return 1.0
    if v in ("False", "false", "0", "0.0"):
        return 0.0
    if v in ("", "nan", "NaN"):
        return np.nan
    raise DataError(f"{path}: row {row}, column {column!r}: expected True/False, got {value!r}")


def _load_gsm8k(folder: Path, models: Sequence[str]) -> dict:
    path = find_file(folder, "gsm8k_responses.csv")
    csv.field_size_limit(1 << 30)
    with reading(path), open_text(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        needed = ["prompt"] + [c for m in models for c in (m, f"{m}_response")]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing} (header: {header})")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no rows")
    quality = np.zeros((len(rows), len(models)), np.float32)
    cost = np.zeros_like(quality)
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            # row i is data line i + 2 of the file (line 1 is the header)
            raise DataError(f"{path}: row {i} (line {i + 2}) has a different number of fields than the header")
        tokens_in = estimate_tokens(row["prompt"])
        for k, m in enumerate(models):
            quality[i, k] = _correct(row[m], path, i, m)
            cost[i, k] = _cost(m, tokens_in, estimate_tokens(row[f"{m}_response"]))
    cost[np.isnan(quality)] = np.nan
    ids = [str(i) for i in range(len(rows))]
    prompts = [r["prompt"] for r in rows]
    notes = []
    if len(set(prompts)) < len(prompts):
        notes.append(f"{len(prompts) - len(set(prompts))} repeated GSM8K prompts kept as separate rows "
                     "(ids are row positions)")
    return {
        "ids": [f"gsm8k-{i}" for i in ids],
        "texts": prompts,
        "emb": lambda: load_npz_part(folder / EMBEDDINGS, "gsm8k", ids),
        "quality": quality,
        "cost": cost,
        "family": ["gsm8k"] * len(rows),
        "contaminated": np.isin(np.arange(len(rows)), CONTAMINATED_GSM8K),
        "notes": notes,
    }


def _turns(value, path: Path, qid) -> list[str]:
    turns = value
    if isinstance(turns, str):  # tolerate a stringified list
        try:
            turns = ast.literal_eval(turns)
        except (ValueError, SyntaxError):
            turns = [value]
    if not isinstance(turns, (list, tuple)) or not turns:
        raise DataError(f"{path}: question_id {qid}: 'turns' must be a non-empty list of strings")
    return [str(t) for t in turns]


def _load_mt_bench(folder: Path, models: Sequence[str]) -> dict:
    q_path = find_file(folder, "question.jsonl")
    j_path = find_file(folder, "judgements.jsonl")
    questions: dict[int, dict] = {}
    notes = []
    dup_q = 0
    for line_no, rec in enumerate(read_jsonl(q_path), start=1):
        for key in ("question_id", "category", "turns"):
            if key not in rec:
                raise DataError(f"{q_path}: record {line_no} has no key {key!r}")
        qid = int(rec["question_id"])
        if qid in questions:
            dup_q += 1
            continue
        questions[qid] = {"category": str(rec["category"]), "turns": _turns(rec["turns"], q_path, qid)}
    if dup_q:
        notes.append(f"{dup_q} repeated question_id lines in question.jsonl; the first of each kept")

    judged: dict[tuple[int, str, int], dict] = {}
    dup_j = other_models = 0
    for line_no, rec in enumerate(read_jsonl(j_path), start=1):
        for key in ("question_id", "model", "score", "turn"):
            if key not in rec:
                raise DataError(f"{j_path}: record {line_no} has no key {key!r}")
        key = (int(rec["question_id"]), str(rec["model"]), int(rec["turn"]))
        if key[1] not in models:
            other_models += 1
            continue
        if key in judged:
            dup_j += 1
            continue
        try:
            score = float(rec["score"])
        except (TypeError, ValueError):
            raise DataError(f"{j_path}: record {line_no}: non-numeric score {rec['score']!r}") from None
        # FastChat writes -1 when the judge output could not be parsed: treat as unknown.
        if score == -1:
            score = np.nan
        elif not 1.0 <= score <= 10.0:
            raise DataError(f"{j_path}: record {line_no}: score {score} outside the judge scale 1-10")
        judged[key] = {"score": score, "prompt": str(rec.get("user_prompt", ""))}
    if dup_j:
        notes.append(f"{dup_j} repeated (question_id, model, turn) judgements; the first of each kept")
    if other_models:
        notes.append(f"{other_models} judgements of models other than {list(models)} ignored")

    qids = sorted(questions)
    quality = np.full((len(qids), len(models)), np.nan, np.float32)
    cost = np.full_like(quality, np.nan)
    missing_answers = 0
    for i, qid in enumerate(qids):
        turns = questions[qid]["turns"]
        for k, m in enumerate(models):
            t1, t2 = judged.get((qid, m, 1)), judged.get((qid, m, 2))
            if t1 is not None and t2 is not None:
                quality[i, k] = np.mean([(t1["score"] - 1.0) / 9.0, (t2["score"] - 1.0) / 9.0])
            # answer lengths: both answers from the turn-2 conversation, else turn 1's from its prompt
            answers = _TURN2_ANSWERS.findall(t2["prompt"]) if t2 is not None else []
            if len(answers) < 2:
                a1 = _TURN1_ANSWER.findall(t1["prompt"]) if t1 is not None else []
                answers = (a1[:1] or [None]) + [None]
            out = [estimate_tokens(a) if a is not None else DEFAULT_ANSWER_TOKENS for a in answers[:2]]
            missing_answers += sum(a is None for a in answers[:2])
            first_in = estimate_tokens(turns[0])
            tokens_in = first_in + (first_in + out[0] + estimate_tokens(turns[1]) if len(turns) > 1 else 0)
            tokens_out = out[0] + (out[1] if len(turns) > 1 else 0)
            cost[i, k] = _cost(m, tokens_in, tokens_out)
    cost[np.isnan(quality)] = np.nan
    unknown = int(np.isnan(quality).sum())
    if unknown:
        notes.append(f"{unknown} MT-Bench (question, model) pairs lack a judgement for a turn; masked as NaN")
    if missing_answers:
        notes.append(f"{missing_answers} MT-Bench answers not found in the judge prompts; "
                     f"{DEFAULT_ANSWER_TOKENS} output tokens assumed for each")
    texts = [questions[q]["turns"][0] for q in qids]
    return {
        "ids": [f"mt_bench-{q}" for q in qids],
        "texts": texts,
        "emb": None,
        "quality": quality,
        "cost": cost,
        "family": [questions[q]["category"] for q in qids],
        "contaminated": np.isin(np.array(qids), CONTAMINATED_MT_BENCH),
        "notes": notes,
    }


def _text_embedder() -> Callable[[list[str]], np.ndarray]:
    try:
        from metarouter_jax.text import TextEmbedder  # optional extra, imported lazily
    except ImportError as err:
        raise ImportError("MT-Bench has no stored embeddings; computing them needs the `text` extra: "
                          "pip install 'metarouter_jax[text]' (or pass embed_fn=...)") from err
    return TextEmbedder().embed


def load_routellm(
    path: str | Path | None = None,
    *,
    part: str = "gsm8k",
    exclude_contaminated: bool = False,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    models: Sequence[str] | None = None,
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
) -> RoutingData:
    """Load RouteLLM's GSM8K and/or MT-Bench data (see the module docstring for choices).

    Args:
      path: the dataset folder; default `<data root>/routellm_gsm8k_mtbench`.
      part: "gsm8k" (1,319 queries), "mt_bench" (80) or "both" (1,399; GSM8K rows first).
      exclude_contaminated: leave RouteLLM's contaminated rows out of every split.
      fractions: split name -> fraction, default {"train": .6, "valid": .1, "test": .3}.
      seed: for the split.
      models: keep only these models (in this order); unknown names raise KeyError.
      embed_fn: texts -> [N, 384] float32, used for MT-Bench (default: `TextEmbedder().embed`).

    Returns:
      RoutingData, K = 2 models (gpt-4-1106-preview, Mixtral-8x7B-Instruct), D = 384;
      quality in [0, 1]; cost in USD per query (estimated).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    folder = Path(path) if path is not None else data_root() / FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"RouteLLM data folder not found: {folder}")
    pieces = []
    if part in ("gsm8k", "both"):
        pieces.append(_load_gsm8k(folder, MODELS))
    if part in ("mt_bench", "both"):
        pieces.append(_load_mt_bench(folder, MODELS))
    embs = []
    for piece in pieces:
        if piece["emb"] is not None:
            embs.append(piece["emb"]())
        else:
            embed = embed_fn if embed_fn is not None else _text_embedder()
            emb = np.asarray(embed(list(piece["texts"])), np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(piece["texts"]):
                raise DataError(f"embed_fn returned shape {emb.shape} for {len(piece['texts'])} texts")
            embs.append(emb)
    dims = {e.shape[1] for e in embs}
    if len(dims) > 1:
        raise DataError(f"embedding widths differ between parts: {sorted(dims)}")

    fam_rows = sum((p["family"] for p in pieces), [])
    family_names = sorted(set(fam_rows))
    family = np.array([family_names.index(f) for f in fam_rows], np.int32)
    contaminated = np.concatenate([p["contaminated"] for p in pieces])
    keep = np.nonzero(~contaminated)[0] if exclude_contaminated else None
    splits = stratified_split(family, DEFAULT_FRACTIONS if fractions is None else fractions, seed, keep)
    notes = ["cost is an estimate: list prices per 1M tokens (gpt-4-1106-preview $10 in/$30 out, "
             "Mixtral-8x7B $0.6/$0.6) x ceil(1.3 x words) tokens of prompts and real responses"]
    notes += sum((p["notes"] for p in pieces), [])
    if exclude_contaminated:
        notes.append(f"{int(contaminated.sum())} contaminated rows (RouteLLM's lists) left out of every split")
    data = RoutingData.create(np.concatenate(embs), np.concatenate([p["quality"] for p in pieces]),
                              np.concatenate([p["cost"] for p in pieces]), family,
                              model_names=MODELS, family_names=family_names,
                              query_ids=sum((p["ids"] for p in pieces), []), splits=splits, notes=notes)
    return data if models is None else select_models(data, models)
