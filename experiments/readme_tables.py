"""The README's result tables, made from the committed result files.

    python experiments/readme_tables.py            # check: print what differs, exit 1 if anything does
    python experiments/readme_tables.py --write    # rewrite those tables in README.md

Each table made here follows a marker line in README.md, `<!-- table: KIND key=value ... -->`
(invisible when rendered), which names how to make it from `experiments/results/`; the table
itself is the Markdown table that starts on the next non-blank line. KIND is a key of `KINDS`:

- `curves file=F strategy=S metric=M [methods=a,b,...]`: one row per method, mean ± std over
  seeds at every n, as the experiment scripts write them (F: synthetic_linear.json, routerbench.json, ...);
- `held_out [file=F] [strategies=a,b]`: how often the held-out pairs repeat a context, per strategy
  at every n (a curves file written at or after commit 3f1cac9);
- `ood`, `same_queries`, `unseen_models`, `pool_sizes`: the generalisation summaries
  (generalisation_<data>.json), at n = 6;
- `ood_calibrated`: the calibrated new-family summary (ood_calibrated_<data>.json), at n = 6;
- `ablations`: one row per data set and variant (ablations_<data>.json), at n = 6;
- `lam_bands [data=D]`: one row per log10(lam) band (lam_bands_<data>.json);
- `lam_bands_compare base=B variant=V labels=a,b`: two lam_bands files (B.json, V.json, the same
  seeds) side by side, band by band;
- `lam_bands_summary files=A,B,...`: lam_bands files (the same seeds), one row each over the whole
  range, with their validation scores;
- `aiq [file=lam_bands_routerbench]`: each method's AIQ over the bands of a lam_bands file (written
  at or after commit 65b6b17), per USD and per decade of cost.

So a rerun's numbers reach the README by `--write`, and the test suite runs the check: a README
table that no longer matches its result file fails it. Prose figures beside the tables are not
checked; a rerun still means rereading them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import numpy as np

from common import CURVE_METHODS, cell, curve_table, held_out_table, table
from lam_bands import aiq_table, band_table, comparison_table, summary_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- table: (\w+)((?: [\w.]+=[\w.,]+)*) -->$")
SUMMARY_METHODS = ("metarouter", "bt_posterior", "known", "agnostic", "best_fixed")
SUMMARY_HEADER = "MetaRouter | posterior-mean plug-in | known | agnostic | best fixed in hindsight"
DATA_LABEL = {"synthetic": "synthetic", "llmrouter": "LLMRouter", "routerbench": "RouterBench",
              "llmrouter_unseen": "LLMRouter unseen"}


def data_label(name: str) -> str:
    """A data set's label in a table; a variant's file ("routerbench_answer0",
    "llmrouter_unseen_ema") adds its suffix to the longest data set name it starts with."""
    base = max((k for k in DATA_LABEL if name == k or name.startswith(k + "_")), key=len, default=None)
    if base is None:
        raise KeyError(f"no data set label for {name!r}: one of {sorted(DATA_LABEL)}, or one of them and _VARIANT")
    variant = name[len(base) + 1:]
    return DATA_LABEL[base] + (f" ({variant})" if variant else "")


def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise FileNotFoundError(f"result file {path} does not exist (a README table marker names it)")
    return json.loads(path.read_text())


def n6(runs, report, strategy, method, metric="normalized_utility") -> str:
    """mean ± std over seeds at n = 6 of report(run)[strategy][method]."""
    return cell([report(run)[strategy][method]["6"][metric] for run in runs])


def curves(file: str, strategy: str, metric: str, methods: str = ",".join(CURVE_METHODS)) -> list[str]:
    return curve_table(load(file)["runs"].values(), strategy, metric, methods.split(","))


def _group_label(data: str, group: str, families: list[str], first: bool, count: str = "") -> str:
    """'LLMRouter, code (human_eval, mbpp)' on a group's first row, 'LLMRouter, code' after it."""
    detail = count or (", ".join(families) if families != [group] else "")
    return f"{data_label(data)}, {group}" + (f" ({detail})" if first and detail else "")


def ood(data: str = "synthetic,llmrouter") -> list[str]:
    rows = []
    for name in data.split(","):
        study = load(f"generalisation_{name}.json")["ood"]
        runs = list(study["runs"].values())
        for group, families in study["test_families"].items():
            for i, strategy in enumerate(("uniform", "informative")):
                label = _group_label(name, group, families, first=i == 0)
                rows.append([label, strategy] + [n6(runs, lambda r: r[group], strategy, m) for m in SUMMARY_METHODS])
    return table(["data, test families", "pairs", *SUMMARY_HEADER.split(" | ")], rows)


def same_queries(data: str = "synthetic,llmrouter") -> list[str]:
    rows = []
    for name in data.split(","):
        study = load(f"generalisation_{name}.json")["ood"]
        runs = list(study["runs"].values())
        for group in study["test_families"]:
            label = f"{data_label(name)}, {group} ({study['same_queries'][group]})"
            for key, trained in (("in_distribution", "every family"), ("same_queries", "QA families only")):
                report = lambda r, k=f"{group}_{key}": r[k]  # noqa: E731
                rows.append([label, trained, n6(runs, report, "informative", "metarouter"),
                             n6(runs, report, "uniform", "metarouter")]
                            + [n6(runs, report, "informative", m) for m in SUMMARY_METHODS[2:]])
    header = ["data, family group (test-split queries)", "router trained on", "MetaRouter n=6, informative",
              "MetaRouter n=6, uniform", "known", "agnostic", "best fixed in hindsight"]
    return table(header, rows)


def ood_calibrated(data: str = "llmrouter,synthetic") -> list[str]:
    rows = []
    for name in data.split(","):
        results = load(f"ood_calibrated_{name}.json")
        runs = list(results["runs"].values())
        for group in results["test_families"]:
            count = f"{results['test_queries'][group]:,} queries"
            for i, (variant, label) in enumerate((("descriptors", "descriptors"),
                                                  ("family_quality", "+ own-family quality"))):
                rows.append([_group_label(name, group, [], first=i == 0, count=count), label]
                            + [n6(runs, lambda r: r[variant][group], "informative", m) for m in SUMMARY_METHODS])
    return table(["data, test families", "router", *SUMMARY_HEADER.split(" | ")], rows)


def ood_fixed(data: str = "synthetic,llmrouter") -> list[str]:
    """The routers given the preference (generalisation_<data>.json) beside one model chosen on the
    training families for the same users (ood_fixed.json), on each unseen family group."""
    fixed = load("ood_fixed.json")["results"]
    rows = []
    for name in data.split(","):
        study = load(f"generalisation_{name}.json")["ood"]
        runs = list(study["runs"].values())
        for group, families in study["test_families"].items():
            rows.append([_group_label(name, group, families, first=True),
                         n6(runs, lambda r: r[group], "informative", "known"),
                         n6(runs, lambda r: r[group], "informative", "metarouter"),
                         *(cell([run[m] for run in fixed[name]["groups"][group].values()])
                           for m in ("fixed_from_training", "best_fixed"))])
    return table(["data, test families", "known router", "MetaRouter n=6, informative",
                  "one model chosen on the training families", "best fixed in hindsight"], rows)


def ood_guard(file: str = "ood_guard") -> list[str]:
    """ood_fixed.py --guard: the known router, the fixed model and the guarded router per query set."""
    rows = []
    for name, result in load(f"{file}.json")["results"].items():
        for queries in result["query_sets"]:
            runs = [run[queries] for run in result["runs"].values()]
            rows.append([data_label(name), queries, *(cell([r[m] for r in runs])
                                                      for m in ("known", "fixed_from_training", "guarded")),
                         f"{np.mean([r['far_share'] for r in runs]):.2f}"])
    return table(["data", "queries", "known router", "one model chosen on the training families", "guarded",
                  "share sent to that model"], rows)


def unseen_models(data: str = "synthetic,routerbench") -> list[str]:
    rows = []
    for name in data.split(","):
        study = load(f"generalisation_{name}.json")["pool"]
        runs = list(study["runs"].values())
        without = "trained without the unseen model" + ("s" if len(study["unseen"]) > 1 else "")
        for key, label in (("seen", "trained with every model"), ("unseen", without)):
            for strategy in ("uniform", "informative"):
                rows.append([data_label(name), label, strategy]
                            + [n6(runs, lambda r: r[key], strategy, m) for m in SUMMARY_METHODS])
    return table(["data", "router", "pairs", *SUMMARY_HEADER.split(" | ")], rows)


def pool_sizes(data: str = "routerbench", strategy: str = "informative") -> list[str]:
    runs = list(load(f"generalisation_{data}.json")["sizes"]["runs"].values())
    sizes = sorted((k for k in runs[0] if k.isdigit()), key=int)
    labels = ("MetaRouter", "posterior-mean plug-in", "known", "agnostic", "best fixed in hindsight")
    rows = [[label] + [f"{np.mean([r[s][strategy][m]['6']['normalized_utility'] for r in runs]):.3f}" for s in sizes]
            for m, label in zip(SUMMARY_METHODS, labels)]
    return table(["pool size", *sizes], rows)


def ablations(data: str = "synthetic,routerbench") -> list[str]:
    rows = []
    for name in data.split(","):
        for variant, result in load(f"ablations_{name}.json")["variants"].items():
            runs = list(result["runs"].values())
            same = lambda r: r  # noqa: E731
            rows.append([data_label(name), f"`{variant}`", n6(runs, same, "uniform", "metarouter"),
                         n6(runs, same, "informative", "metarouter"),
                         n6(runs, same, "informative", "metarouter", "preference_recovery"),
                         cell([r["informative"]["known"]["0"]["normalized_utility"] for r in runs]),
                         f"{np.mean([r['seconds'] for r in runs]):.0f}"])
    header = ["data", "variant", "MetaRouter n=6, uniform", "MetaRouter n=6, informative", "PR(6), informative",
              "known", "training s per seed"]
    return table(header, rows)


def lam_bands(data: str = "routerbench") -> list[str]:
    result = load(f"lam_bands_{data}.json")
    return band_table(list(result["runs"].values()), result["tradeoff_share"],
                      ("known", "best_fixed", "agnostic", "metarouter", "bt_bayes"),
                      ["log10(lam)", "known", "best fixed in hindsight", "agnostic", "MetaRouter n=6, informative",
                       "exact Bayes decision n=6", "known minus best fixed, per seed"])


def lam_bands_compare(base: str, variant: str, labels: str) -> list[str]:
    """Two lam_bands result files (base.json, variant.json) band by band; labels: "a,b"."""
    runs = [load(f"{name}.json")["runs"] for name in (base, variant)]
    if list(runs[0]) != list(runs[1]):
        raise ValueError(f"{base} holds seeds {list(runs[0])} and {variant} seeds {list(runs[1])}: compare the same")
    return comparison_table(*(list(r.values()) for r in runs), tuple(labels.split(",")))


def lam_bands_summary(files: str) -> list[str]:
    """Several lam_bands result files ("a,b,c": a.json, ...), one row each over the whole range."""
    results = [load(f"{name}.json") for name in files.split(",")]
    seeds = [list(r["runs"]) for r in results]
    if any(s != seeds[0] for s in seeds):
        raise ValueError(f"{files}: the files hold different seeds {seeds}: compare the same")
    return summary_table(results)


def held_out(file: str = "routerbench.json", strategies: str = "uniform,informative,active") -> list[str]:
    return held_out_table(load(file)["runs"].values(), strategies.split(","))


def aiq(file: str = "lam_bands_routerbench") -> list[str]:
    """The AIQ of each method's cost-quality curve over a lam_bands file's bands, mean ± std over seeds."""
    return aiq_table(list(load(f"{file}.json")["runs"].values()))


KINDS = {"aiq": aiq, "curves": curves, "lam_bands": lam_bands, "lam_bands_compare": lam_bands_compare,
         "lam_bands_summary": lam_bands_summary, "ood": ood,
         "same_queries": same_queries, "ood_calibrated": ood_calibrated, "ood_fixed": ood_fixed, "ood_guard": ood_guard, "unseen_models": unseen_models,
         "pool_sizes": pool_sizes, "ablations": ablations, "held_out": held_out}


def tables(lines: list[str]) -> list[tuple[int, int, list[str]]]:
    """(first line, end line, made table) for every marker of README lines `lines`."""
    found = []
    for i, line in enumerate(lines):
        match = MARKER.match(line)
        if line.startswith("<!-- table:") and not match:
            raise ValueError(f"README.md line {i + 1}: malformed table marker {line!r}")
        if not match:
            continue
        kind, args = match.group(1), dict(a.split("=", 1) for a in match.group(2).split())
        if kind not in KINDS:
            raise ValueError(f"README.md line {i + 1}: unknown table kind {kind!r}; known: {sorted(KINDS)}")
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        if end == start:
            raise ValueError(f"README.md line {i + 1}: no Markdown table follows the marker")
        try:
            made = KINDS[kind](**args)
        except (KeyError, TypeError) as err:
            raise ValueError(f"README.md line {i + 1}: cannot make {kind} {args}: {err!r}") from err
        found.append((start, end, made))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the README tables (default: check only)")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    lines = args.readme.read_text().split("\n")
    found = tables(lines)
    stale = [(s, e, made) for s, e, made in found if lines[s:e] != made]
    for start, end, made in stale:
        print(f"{args.readme.name} line {start + 1}: table differs from its result file", file=sys.stderr)
        sys.stderr.writelines(line + "\n" for line in difflib.unified_diff(lines[start:end], made, "README", "results",
                                                                             lineterm="", n=0))
    if args.write and stale:
        for start, end, made in reversed(stale):
            lines[start:end] = made
        tmp = args.readme.with_suffix(".md.tmp")
        tmp.write_text("\n".join(lines))
        tmp.replace(args.readme)
        print(f"rewrote {len(stale)} of {len(found)} tables in {args.readme}")
        return 0
    print(f"{len(found) - len(stale)} of {len(found)} README tables match their result files")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
