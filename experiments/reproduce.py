"""Rerun committed results from the command each one recorded, and compare the numbers.

    python experiments/reproduce.py routerbench lam_bands_routerbench [--tolerance 0.001] [--out DIR]
    python experiments/reproduce.py --match routerbench --dry-run     # the commands only, nothing run
    python experiments/reproduce.py --all --dry-run                    # every committed result's command

Every result file in experiments/results/ records the command that wrote it (`provenance.command`,
experiments/common.py). This reruns each distinct command once, writing to --out (a temporary
folder by default) instead of experiments/results/, and compares every number of each file the run
wrote with the committed file of that name: how many figures it compared, the largest absolute
difference and where, and how many moved by more than --tolerance. Times (keys holding "second")
and the provenance are not compared. A run at a later commit may report figures the committed file
lacks, or lack some it has: those are counted, not compared. NaN equals NaN.

The training configurations (every "config" entry) are compared first, field by field: a result
made before a recipe or a default changed trains differently today, and its rerun says which fields
moved, the `--set` settings that restore them, and at which commit the file was made (rerun it
there: `git worktree add DIR COMMIT`). A field
the committed file lacks (added to TrainConfig later) counts as moved only where the rerun's value
is not the value it trained with then: the field's default, or, for a field whose default changed
when it was added (`config.LEGACY_VALUES`: `cost_units`, "all" before 2026-12-01), that old value,
which the rerun is then given (`--set cost_units=all`), so that such a result reproduces today.

Exit status 0 when every figure is within the tolerance, 1 when one moved further or a run failed
or wrote none of its files, 2 for a bad request. Runs take minutes each (the commands' own times
are in the README); the runs share the compilation cache of the experiments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Comparison:
    """Numbers compared between a committed result and its rerun."""
    compared: int = 0
    max_diff: float = 0.0
    where: str = ""
    over: list = dataclasses.field(default_factory=list)       # (path, committed, rerun) beyond the tolerance
    only_committed: int = 0
    only_rerun: int = 0

    def line(self, tolerance: float) -> str:
        text = (f"{self.compared} figures, largest difference {self.max_diff:.3g}"
                + (f" at {self.where}" if self.where else "") + f", {len(self.over)} beyond {tolerance:g}")
        if self.only_committed or self.only_rerun:
            text += f"; {self.only_committed} only in the committed file, {self.only_rerun} only in the rerun"
        return text


def _skipped(key: str) -> bool:
    return key in ("provenance", "config") or "second" in key


def _configs(value, path: str = "") -> dict[str, dict]:
    """Every training configuration in a result (each "config" entry), by its path."""
    found = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "config" and isinstance(item, dict):
                found[f"{path}/{key}"] = item
            elif key != "provenance":
                found.update(_configs(item, f"{path}/{key}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.update(_configs(item, f"{path}/{i}"))
    return found


def config_changes(committed, rerun, defaults: dict) -> list[tuple[str, object, object]]:
    """(path/field, committed value, rerun value) for each training-configuration field that
    differs; a field the committed file lacks differs only where the rerun's value is not
    `defaults`' (the field was added later, with that default). Missing values read None."""
    old, new = _configs(committed), _configs(rerun)
    changes = []
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path, {}), new.get(path, {})
        for field in sorted(a.keys() | b.keys()):
            if field not in a and field in defaults and b[field] == defaults[field]:
                continue
            if a.get(field) != b.get(field):
                changes.append((f"{path}/{field}", a.get(field), b.get(field)))
    return changes


def set_hint(changes, defaults: dict) -> str:
    """The `--set` settings that restore a result's top-level config fields (a field it lacks
    takes TrainConfig's default), or "" where a change is nested (per-variant configs) or a field
    no longer exists."""
    settings = []
    for where, old, _ in changes:
        field = where.removeprefix("/config/")
        if "/" in field or field not in defaults:
            return ""
        value = defaults[field] if old is None else old
        # as `--set` reads them: JSON (true, [0,4]), a string as it is
        settings.append(f"{field}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}")
    return " ".join(settings)


def _config_module(root: Path = ROOT):
    """`metarouter_jax.config` of the checkout at `root` (the first one imported stays imported)."""
    sys.path.insert(0, str(root / "src"))
    try:
        from metarouter_jax import config
    finally:
        sys.path.pop(0)
    return config


def config_defaults(root: Path = ROOT) -> dict:
    """What a config lacking a field trained with, as a result file records it (JSON: tuples as
    lists): TrainConfig's default, or the field's `LEGACY_VALUES` value where the default changed."""
    return {**_config_module(root).TrainConfig().to_json(), **json.loads(json.dumps(legacy_values(root)))}


def legacy_values(root: Path = ROOT) -> dict:
    """`config.LEGACY_VALUES`: the fields whose default changed when they were added, with the
    value a config made before had."""
    return dict(getattr(_config_module(root), "LEGACY_VALUES", {}))


def with_legacy_settings(command: list[str], committed, root: Path = ROOT) -> list[str]:
    """`command` with `--set FIELD=VALUE` for each `LEGACY_VALUES` field that a training config
    of the committed result lacks (it was made before the field existed, with that value); added
    to the command's own --set settings (one --set option takes them all)."""
    configs = _configs(committed).values()
    settings = [f"{field}={value}" for field, value in legacy_values(root).items()
                if any(field not in config for config in configs)]
    if not settings:
        return command
    command = [part for arg in command
               for part in (["--set", arg.removeprefix("--set=")] if arg.startswith("--set=") else [arg])]
    if "--set" not in command:
        return [*command, "--set", *settings]
    at = len(command) - command[::-1].index("--set")   # after the last --set: the one argparse keeps
    return command[:at] + settings + command[at:]


def compare(committed, rerun, tolerance: float, path: str = "", result: Comparison | None = None) -> Comparison:
    """Walk two JSON values side by side: numbers are compared, dicts by key, lists by position."""
    result = Comparison() if result is None else result
    if isinstance(committed, dict) and isinstance(rerun, dict):
        for key in committed.keys() | rerun.keys():
            if _skipped(key):
                continue
            if key not in rerun:
                result.only_committed += _count(committed[key])
            elif key not in committed:
                result.only_rerun += _count(rerun[key])
            else:
                compare(committed[key], rerun[key], tolerance, f"{path}/{key}", result)
    elif isinstance(committed, list) and isinstance(rerun, list):
        for i, (a, b) in enumerate(zip(committed, rerun)):
            compare(a, b, tolerance, f"{path}[{i}]", result)
        result.only_committed += sum(map(_count, committed[len(rerun):]))
        result.only_rerun += sum(map(_count, rerun[len(committed):]))
    elif _is_number(committed) and _is_number(rerun):
        result.compared += 1
        a, b = float(committed), float(rerun)
        diff = 0.0 if (math.isnan(a) and math.isnan(b)) or a == b else abs(a - b)   # inf == inf: 0
        if math.isnan(diff):
            diff = math.inf                                                        # NaN against a number
        if diff > result.max_diff:
            result.max_diff, result.where = diff, path
        if diff > tolerance:
            result.over.append((path, committed, rerun))
    elif _is_number(committed) or _is_number(rerun):       # a number against something else
        result.compared += 1
        result.max_diff, result.where = math.inf, path
        result.over.append((path, committed, rerun))
    elif committed != rerun:                   # labels (no figures), or structures that differ
        result.only_committed += _count(committed)
        result.only_rerun += _count(rerun)
    return result


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _count(value) -> int:
    """The numbers in a JSON value (what a missing key leaves uncompared)."""
    if isinstance(value, dict):
        return sum(_count(v) for k, v in value.items() if not _skipped(k))
    if isinstance(value, list):
        return sum(map(_count, value))
    return int(_is_number(value))


def read_result(path: Path) -> dict:
    """A result file's JSON object; ValueError naming the file where it is not one."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable result file: {err}") from None
    if not isinstance(result, dict):
        raise ValueError(f"{path}: not a readable result file: it holds a {type(result).__name__}, not an object")
    return result


def recorded_command(path: Path, root: Path = ROOT, result: dict | None = None) -> list[str]:
    """The argv (script path first, relative to `root`) of the command that wrote result file
    `path` (whose contents `result` holds where already read), without its --out. ValueError
    where the file records no runnable command."""
    provenance = (read_result(path) if result is None else result).get("provenance") or {}
    command = provenance.get("command") if isinstance(provenance, dict) else None
    if not command:
        raise ValueError(f"{path}: records no command (no provenance.command)")
    argv = shlex.split(command)
    if len(argv) < 2 or argv[0] != "python" or not argv[1].startswith("experiments/"):
        raise ValueError(f"{path}: the recorded command {command!r} is not `python experiments/SCRIPT.py ...`")
    if not (root / argv[1]).is_file():
        raise ValueError(f"{path}: the recorded command's script {argv[1]} does not exist")
    args, skip = [], False
    for arg in argv[2:]:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            args.append(arg)
    return [argv[1], *args]


def select(names, match: str | None, results: Path) -> list[Path]:
    """The result files asked for: by name (with or without .json) and/or by a substring."""
    files = sorted(results.glob("*.json"))
    chosen = [f for f in files if match is not None and match in f.stem]
    for name in names:
        path = results / (name if name.endswith(".json") else f"{name}.json")
        if not path.is_file():
            raise ValueError(f"no result file {path.name} in {results}; there are: "
                             + ", ".join(f.stem for f in files))
        chosen.append(path)
    if not chosen:
        raise ValueError(f"no result file matches {match!r} in {results}" if match is not None
                         else "name result files, or --match a part of their names")
    return sorted(set(chosen))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="result files of experiments/results/ (NAME or NAME.json)")
    parser.add_argument("--match", default=None, help="also every result file whose name contains this")
    parser.add_argument("--all", action="store_true", help="every result file (hours of runs: see --dry-run)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest absolute difference of a figure that counts as reproduced (default 0.001)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the rerun's files (default: a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)   # the tests' own checkout
    args = parser.parse_args(argv)
    if not (args.tolerance >= 0 and math.isfinite(args.tolerance)):
        parser.error(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
    results = args.root / "experiments" / "results"
    try:
        files = select(args.names, "" if args.all else args.match, results)
        commands: dict[tuple, list[Path]] = {}
        committed_files = {path: read_result(path) for path in files}
        for path, committed in committed_files.items():
            command = with_legacy_settings(recorded_command(path, args.root, committed), committed, args.root)
            commands.setdefault(tuple(command), []).append(path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for command, paths in commands.items():
            print(f"{' '.join(p.stem for p in paths)}: python {shlex.join(command)}")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="metarouter-reproduce-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(args.root / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    failed, defaults = False, config_defaults(args.root)
    for command, paths in commands.items():
        print(f"\n== {' '.join(p.stem for p in paths)}: python {shlex.join(command)} --out {out}", flush=True)
        start = time.time()
        run = subprocess.run([sys.executable, *command, "--out", str(out)], cwd=args.root, env=env)
        if run.returncode != 0:
            print(f"FAILED: exit status {run.returncode}")
            failed = True
            continue
        print(f"ran in {time.time() - start:.0f} s")
        for path in paths:
            rerun = out / path.name
            if not rerun.is_file():
                print(f"{path.stem}: FAILED, the run wrote no {path.name}")
                failed = True
                continue
            committed, again = committed_files[path], json.loads(rerun.read_text())
            changes = config_changes(committed, again, defaults)
            if changes:
                made_at = (committed.get("provenance") or {}).get("commit") or "?"   # None: made outside git
                print(f"{path.stem}: TRAINED DIFFERENTLY: the command trains with another configuration today "
                      f"than at commit {made_at[:12]}, where the file was made (rerun it there):")
                for where, old, new in changes[:10]:
                    print(f"  {where}: committed {old}, rerun {new}")
                hint = set_hint(changes, defaults)
                if hint:
                    print(f"  or rerun today with: --set {hint}")
            result = compare(committed, again, args.tolerance)
            print(f"{path.stem}: {'reproduced' if not result.over else 'MOVED'}: {result.line(args.tolerance)}")
            for where, old, new in result.over[:10]:
                print(f"  {where}: committed {old}, rerun {new}")
            failed |= bool(result.over or changes)
    print(f"\nrerun files in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
