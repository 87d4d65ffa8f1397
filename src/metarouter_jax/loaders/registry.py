"""One entry point for every dataset: `load_dataset(name_or_path, **kw) -> RoutingData`.

Names (`DATASETS`, plus short aliases): "synthetic", "routerbench_0shot" ("routerbench"),
"llmrouter_14task" ("llmrouter"), "routerarena_2model" ("routerarena"),
"routellm_gsm8k_mtbench" ("routellm"). A named real dataset is read from
`<data root>/<name>` unless `path=` is given. Variants (`VARIANTS`) are a dataset loaded with
settings of its loader: "llmrouter_unseen" is LLMRouter without the train rows of the 119 test
questions that also occur in train (`load_llmrouter(test_twins="drop_train")`).

A path to a folder is recognised by its files, checked in this order:
`train.json[.gz]` -> LLMRouter; `gsm8k_responses.csv[.gz]` or `judgements.jsonl[.gz]` ->
RouteLLM; any `*.csv[.gz]` -> RouterBench; two or more `*.jsonl[.gz]` -> RouterArena.
A path to a single `.csv`, `.csv.gz` or `.pkl` file is read as RouterBench.

`models=` (a subset of model names to keep) works for every dataset; the remaining keyword
arguments go to the loader (e.g. `seed`, `valid_fraction`, `part`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from metarouter_jax.data import RoutingData
from metarouter_jax.loaders.llmrouter import load_llmrouter
from metarouter_jax.loaders.routellm import load_routellm
from metarouter_jax.loaders.routerarena import load_routerarena
from metarouter_jax.loaders.routerbench import load_routerbench
from metarouter_jax.splits import select_models

DATASETS = ("synthetic", "routerbench_0shot", "llmrouter_14task", "routerarena_2model", "routellm_gsm8k_mtbench")
ALIASES = {"routerbench": "routerbench_0shot", "llmrouter": "llmrouter_14task",
           "routerarena": "routerarena_2model", "routellm": "routellm_gsm8k_mtbench"}
# name -> (dataset, its loader's settings)
VARIANTS = {"llmrouter_unseen": ("llmrouter_14task", {"test_twins": "drop_train"})}


def _synthetic(**kw) -> RoutingData:
    from metarouter_jax.synthetic import synthetic_data

    return synthetic_data(**kw)


# loader, and whether it takes `models=` itself
_LOADERS: dict[str, tuple[Callable[..., RoutingData], bool]] = {
    "synthetic": (_synthetic, False),
    "routerbench_0shot": (load_routerbench, False),
    "llmrouter_14task": (load_llmrouter, True),
    "routerarena_2model": (load_routerarena, True),
    "routellm_gsm8k_mtbench": (load_routellm, True),
}


def _has(folder: Path, *names: str) -> bool:
    return any((folder / n).exists() or (folder / f"{n}.gz").exists() for n in names)


def detect_format(path: str | os.PathLike) -> str:
    """The dataset name whose format the file or folder at `path` has (see module docstring)."""
    path = Path(path)
    if path.is_file():
        if path.name.endswith((".csv", ".csv.gz", ".pkl")):
            return "routerbench_0shot"
        raise ValueError(f"{path}: unrecognised file; a single file must be a RouterBench .csv, .csv.gz or .pkl")
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    names = [p.name for p in path.iterdir()]
    if _has(path, "train.json"):
        return "llmrouter_14task"
    if _has(path, "gsm8k_responses.csv", "judgements.jsonl"):
        return "routellm_gsm8k_mtbench"
    if any(n.endswith((".csv", ".csv.gz")) for n in names):
        return "routerbench_0shot"
    if sum(n.endswith((".jsonl", ".jsonl.gz")) for n in names) >= 2:
        return "routerarena_2model"
    raise ValueError(f"{path}: no known routing-data files (expected train.json[.gz] (LLMRouter), "
                     "gsm8k_responses.csv[.gz] or judgements.jsonl[.gz] (RouteLLM), *.csv[.gz] "
                     "(RouterBench) or one <model>.jsonl[.gz] per model (RouterArena))")


def load_dataset(name_or_path: str | os.PathLike, **kw) -> RoutingData:
    """Load a dataset by name (`DATASETS` or an alias) or by the path of its folder/file.

    Keyword arguments go to the loader; `models=` (names to keep) works for all of them.
    Unknown names raise ValueError listing the known ones.
    """
    key = str(name_or_path)
    if isinstance(name_or_path, str) and key in VARIANTS:
        name, settings = VARIANTS[key]
        kw = {**settings, **kw}
    elif isinstance(name_or_path, str) and (key in _LOADERS or key in ALIASES):
        name = ALIASES.get(key, key)
    elif Path(key).exists():
        name = detect_format(key)
        kw["path"] = Path(key)
    else:
        raise ValueError(f"unknown dataset {key!r}: not a known name and no such path; known names: "
                         f"{list(DATASETS)} (aliases: {sorted(ALIASES)}; variants: {sorted(VARIANTS)})")
    loader, takes_models = _LOADERS[name]
    models = kw.pop("models", None)
    if takes_models:
        return loader(models=models, **kw)
    data = loader(**kw)
    return data if models is None else select_models(data, models)
