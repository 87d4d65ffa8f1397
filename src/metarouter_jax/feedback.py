"""Real users' feedback from JSONL files: one pairwise judgement per line.

    {"query": "Write a function that ...", "model_a": "gpt-4", "model_b": "mixtral",
     "preferred": "a", "quality_a": 1.0, "cost_a": 0.0031, "quality_b": 0.0, "cost_b": 0.0002}

`preferred` is "a"/"b" (or a model name, or true/false for "a preferred"). The outcomes
(quality in [0, 1], cost in USD) are what the user saw; where a line omits them, the model's
mean quality and cost from the router's calibration data stand in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metarouter_jax.contexts import Contexts, check_capacity

REQUIRED_KEYS = ("query", "model_a", "model_b", "preferred")
OUTCOME_KEYS = ("quality_a", "cost_a", "quality_b", "cost_b")


def read_feedback(path: str | Path) -> list[dict]:
    """Parse and validate a feedback JSONL file; errors name the line and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feedback file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason}: byte {err.object[err.start]:#04x} at offset "
                         f"{err.start})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        except ValueError as err:  # an integer of more than 4300 digits
            raise ValueError(f"{path}:{number}: {err}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: a feedback line must be a JSON object, got {type(record).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise ValueError(f"{path}:{number}: missing key(s) {missing}")
        query = record["query"]
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"{path}:{number}: query must be a non-empty string, got {query!r}")
        if record["model_a"] == record["model_b"]:
            raise ValueError(f"{path}:{number}: model_a and model_b are both {record['model_a']!r}: a feedback "
                             "compares two distinct models")
        pref = record["preferred"]
        if pref in ("a", "A", True, 1):
            record["prefers_a"] = True
        elif pref in ("b", "B", False, 0):
            record["prefers_a"] = False
        elif pref in (record["model_a"], record["model_b"]):
            record["prefers_a"] = pref == record["model_a"]
        else:
            raise ValueError(f"{path}:{number}: 'preferred' must be 'a', 'b' or one of the two models, got {pref!r}")
        for key in OUTCOME_KEYS:
            if key in record:
                _check_outcome(f"{path}:{number}", key, record[key])
        record["line"] = number
        records.append(record)
    return records


def _check_outcome(where: str, key: str, value) -> None:
    """An outcome the user saw: a finite number, quality in [0, 1], cost >= 0 USD."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {key} must be a number, got {value!r}"
                         + (" (omit the key to use the model's mean)" if value is None else ""))
    try:
        float(value)
    except OverflowError:  # a JSON integer beyond float range
        raise ValueError(f"{where}: {key} is an integer of {len(str(abs(value)))} digits, too large for a "
                         "number") from None
    if not np.isfinite(value):
        raise ValueError(f"{where}: {key} is {value}: the outcome of that answer must be known")
    if key.startswith("quality") and not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {key} must be in [0, 1] (quality is normalised), got {value}")
    if key.startswith("cost") and value < 0:
        raise ValueError(f"{where}: {key} must be >= 0 (USD), got {value}")


def contexts_from_jsonl(router, path: str | Path, embedder, capacity: int | None = None) -> Contexts:
    """Contexts for `router` from a feedback file, embedding the query texts with `embedder`."""
    records = read_feedback(path)
    if capacity is None:
        capacity = max(router.config.max_contexts, len(records))
    check_capacity(capacity)  # before the router reads 0 as "its default"
    names = list(router.model_names)
    for r in records:
        for key in ("model_a", "model_b"):
            if r[key] not in names:
                raise KeyError(f"{path}:{r['line']}: unknown model {r[key]!r}; the router knows {names}")
    means = router.model_means
    fill = lambda r, key, which, col: float(r.get(f"{key}_{which}", means[col][names.index(r[f'model_{which}'])]))  # noqa: E731
    emb = router.embed_texts([r["query"] for r in records], embedder) if records else np.zeros((0, router.info.embed_dim))
    return router.contexts_from_outcomes(
        query_emb=emb,
        model_a=[names.index(r["model_a"]) for r in records],
        model_b=[names.index(r["model_b"]) for r in records],
        prefers_a=[r["prefers_a"] for r in records],
        quality_a=[fill(r, "quality", "a", "quality") for r in records],
        cost_a=[fill(r, "cost", "a", "cost") for r in records],
        quality_b=[fill(r, "quality", "b", "quality") for r in records],
        cost_b=[fill(r, "cost", "b", "cost") for r in records],
        capacity=capacity,
    )
