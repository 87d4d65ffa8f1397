"""Describe a `RoutingData`: counts per split and family, per-model quality and cost, frontier.

`dataset_info(data)` returns plain Python (JSON-serialisable) values; `format_info(info)`
renders them as text tables; `plot_frontier(data, path)` draws mean cost vs mean quality
per model (needs matplotlib, the optional `plot` extra).

    python -m metarouter_jax.inspect_data llmrouter        # prints the tables
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from metarouter_jax.contexts import tradeoff_pairs
from metarouter_jax.data import RoutingData
from metarouter_jax.figures import new_figure, save_png

SWITCH_QUANTILES = (1, 10, 50, 90, 99)


def _float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def dataset_info(data: RoutingData) -> dict:
    """Summary of a routing log.

    Returns a dict with:
      num_queries, num_models, num_families, embed_dim: ints.
      models, families: name lists.
      queries_per_family: {family: count over all queries}.
      unassigned_queries: number of queries in no split.
      splits: {split: {"queries": n, "per_family": {family: n},
               "models": {model: {"quality": mean in [0, 1], "cost": mean USD per query,
                                  "observed": answered cells}},
               "pareto_frontier": [model names, cheapest first],
               "oracle_quality": mean of the per-query best known quality,
               "tradeoffs": {"pairs": count of trade-off pairs (a better, dearer answer against a
                             cheaper one on the same query; `contexts.tradeoff_pairs`),
                             "switch_quantiles": {"1%", "10%", "50%", "90%", "99%": log10(dq / dc)}
                             (None without pairs)}}}.
               A pairwise answer tells about a linear user's log10(lam) only through such pairs,
               at their switch points: outside the quantiles' range, answers barely tell users apart.
      missing_cells: {"quality": NaN count, "cost": NaN count, "per_model": {model: unobserved}}.
      notes: the loader's notes.
    Means ignore unknown cells; a model with no observed cell in a split has None.
    """
    fam_counts = np.bincount(data.family, minlength=data.num_families)
    splits = {}
    for name, idx in data.splits.items():
        idx = np.asarray(idx)
        counts = np.bincount(data.family[idx], minlength=data.num_families)
        models = {}
        if idx.size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns/rows -> None
                summary = data.model_summary(name)
                best = np.nanmax(data.quality[idx], axis=1)
            observed = data.observed[idx].sum(axis=0)
            for k, m in enumerate(data.model_names):
                models[m] = {"quality": _float(summary["quality"][k]), "cost": _float(summary["cost"][k]),
                             "observed": int(observed[k])}
            frontier = [data.model_names[k] for k in data.pareto_frontier(name)
                        if np.isfinite(summary["quality"][k]) and np.isfinite(summary["cost"][k])]
            oracle = _float(np.nanmean(best)) if np.isfinite(best).any() else None
            switch = switch_points(data, name)
        else:
            frontier, oracle, switch = [], None, np.zeros(0)
        splits[name] = {
            "queries": int(idx.size),
            "per_family": {f: int(c) for f, c in zip(data.family_names, counts) if c},
            "models": models,
            "pareto_frontier": frontier,
            "oracle_quality": oracle,
            "tradeoffs": {"pairs": int(switch.size), "switch_quantiles": None if not switch.size else
                          {f"{q}%": float(np.percentile(switch, q)) for q in SWITCH_QUANTILES}},
        }
    in_split = np.zeros(data.num_queries, bool)
    for idx in data.splits.values():
        in_split[np.asarray(idx)] = True
    unobserved = (~data.observed).sum(axis=0)
    return {
        "num_queries": data.num_queries,
        "num_models": data.num_models,
        "num_families": data.num_families,
        "embed_dim": data.embed_dim,
        "models": list(data.model_names),
        "families": list(data.family_names),
        "queries_per_family": {f: int(c) for f, c in zip(data.family_names, fam_counts)},
        "unassigned_queries": int((~in_split).sum()),
        "splits": splits,
        "missing_cells": {
            "quality": int(np.isnan(data.quality).sum()),
            "cost": int(np.isnan(data.cost).sum()),
            "per_model": {m: int(n) for m, n in zip(data.model_names, unobserved)},
        },
        "notes": list(data.notes),
    }


def switch_points(data: RoutingData, split: str) -> np.ndarray:
    """[P] the switch points log10(dq / dc) of a split's trade-off pairs, ascending
    (`contexts.tradeoff_pairs`): the log10(lam) values at which pairwise answers on it flip."""
    idx = np.asarray(data.split(split))
    observed = data.observed[idx]
    return tradeoff_pairs(np.where(observed, data.quality[idx], 0.0), np.where(observed, data.cost[idx], 0.0),
                          observed)[3]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_info(info: dict) -> str:
    """Readable text tables of a `dataset_info` dict."""
    split_names = list(info["splits"])
    out = [f"{info['num_queries']} queries, {info['num_models']} models, {info['num_families']} families, "
           f"embedding dim {info['embed_dim']}; {info['unassigned_queries']} queries in no split"]
    out += ["", "Queries per family and split:"]
    rows = [[f, str(info["queries_per_family"][f])]
            + [str(info["splits"][s]["per_family"].get(f, 0)) for s in split_names] for f in info["families"]]
    rows.append(["total", str(info["num_queries"])] + [str(info["splits"][s]["queries"]) for s in split_names])
    out += _table(["family", "all", *split_names], rows)
    for s in split_names:
        split = info["splits"][s]
        if not split["queries"]:
            continue
        frontier = set(split["pareto_frontier"])
        out += ["", f"Split {s!r}: {split['queries']} queries; oracle quality "
                    f"{_fmt(split['oracle_quality'], '.3f')}; * = on the cost-quality Pareto frontier"]
        rows = [[("* " if m in frontier else "  ") + m, _fmt(v["quality"], ".3f"), _fmt(v["cost"], ".3e"),
                 str(v["observed"])] for m, v in split["models"].items()]
        out += _table(["model", "mean quality", "mean cost USD", "observed"], rows)
        tradeoffs = split["tradeoffs"]
        if tradeoffs["pairs"]:
            quantiles = tradeoffs["switch_quantiles"]
            out.append(f"{tradeoffs['pairs']:,} trade-off pairs (a better, dearer answer against a cheaper one); their "
                       f"switch points log10(dq / dc), where a linear user's answer flips, at quantiles "
                       f"{' / '.join(quantiles)}: {' / '.join(f'{v:.2f}' for v in quantiles.values())}")
        else:
            out.append("no trade-off pairs: pairwise answers cannot tell linear users' lam apart")
    miss = info["missing_cells"]
    out += ["", f"Missing cells: quality {miss['quality']}, cost {miss['cost']}"
                + ("" if not any(miss["per_model"].values()) else
                   "; unobserved per model: " + ", ".join(f"{m} {n}" for m, n in miss["per_model"].items() if n))]
    if info["notes"]:
        out += ["", "Notes:", *(f"- {n}" for n in info["notes"])]
    return "\n".join(out)


def plot_frontier(data: RoutingData, path: str | os.PathLike, split: str | None = None) -> Path:
    """Write a PNG of per-model mean cost (USD per query, log x) vs mean quality, with the
    Pareto frontier drawn as a line. `split` None uses every query. Returns the path."""
    fig = new_figure((7, 4.5))
    summary = data.model_summary(split)
    quality, cost = summary["quality"], summary["cost"]
    ok = np.isfinite(quality) & np.isfinite(cost) & (cost > 0)
    frontier = [k for k in data.pareto_frontier(split) if ok[k]]
    ax = fig.add_subplot()
    ax.scatter(cost[ok], quality[ok], color="tab:blue", zorder=3)
    for k in np.nonzero(ok)[0]:
        ax.annotate(data.model_names[k], (cost[k], quality[k]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if frontier:
        ax.plot(cost[frontier], quality[frontier], color="tab:red", lw=1.5, marker="o", label="Pareto frontier")
        ax.legend(loc="lower right")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.1)  # room for the model-name labels
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"models on split {split!r}" if split else "models on all queries")
    ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path)


if __name__ == "__main__":  # pragma: no cover - command-line convenience
    import sys

    from metarouter_jax.loaders import load_dataset

    sys.stdout.write(format_info(dataset_info(load_dataset(sys.argv[1] if len(sys.argv) > 1 else "synthetic"))) + "\n")
