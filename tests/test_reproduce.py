"""experiments/reproduce.py: rerun a result file's recorded command and compare its numbers."""

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments"))
import reproduce  # noqa: E402

from metarouter_jax import config as mr_config  # noqa: E402


def test_every_committed_result_records_a_runnable_command():
    """Each file of experiments/results/ names an existing script; a recorded --out is dropped
    (the rerun writes elsewhere)."""
    files = sorted((REPO / "experiments" / "results").glob("*.json"))
    assert files
    for path in files:
        command = reproduce.recorded_command(path)
        assert command[0].startswith("experiments/") and (REPO / command[0]).is_file(), path
        assert "--out" not in command and not any(a.startswith("--out=") for a in command), path


def test_compare_numbers_keys_and_times():
    committed = {"provenance": {"commit": "a"}, "seconds": 10.0,
                 "runs": {"0": {"metarouter": {"6": 0.64, "pr": float("nan")}, "old_metric": [1.0, 2.0]},
                          "label": "informative"}}
    rerun = {"provenance": {"commit": "b"}, "seconds": 99.0,
             "runs": {"0": {"metarouter": {"6": 0.6405, "pr": float("nan")}, "new_metric": 3.0},
                      "label": "uniform"}}
    result = reproduce.compare(committed, rerun, tolerance=1e-3)
    assert result.compared == 2 and not result.over                       # times, provenance, labels left out
    assert result.max_diff == pytest.approx(5e-4) and result.where == "/runs/0/metarouter/6"
    assert (result.only_committed, result.only_rerun) == (2, 1)
    moved = reproduce.compare(committed, rerun, tolerance=1e-4)
    assert moved.over == [("/runs/0/metarouter/6", 0.64, 0.6405)]
    assert reproduce.compare({"x": 1.0}, {"x": float("nan")}, 1.0).max_diff == math.inf
    assert reproduce.compare({"x": 1.0}, {"x": "1.0"}, 1.0).over == [("/x", 1.0, "1.0")]
    other = reproduce.compare({"x": [1.0, 2.0]}, {"x": {"a": 1.0}}, 1.0)              # another structure
    assert (other.compared, other.only_committed, other.only_rerun) == (0, 2, 1)
    assert "1 figures, largest difference 0.0005" in reproduce.compare({"a": 1.0}, {"a": 1.0005}, 1e-3).line(1e-3)


def fake_checkout(root: Path, value: float, written: float) -> Path:
    """A checkout whose experiments/fake.py writes {"runs": {"x": written}} as fake.json to --out,
    and whose committed fake.json holds `value`, recorded with a --out of its own."""
    (root / "experiments" / "results").mkdir(parents=True)
    (root / "experiments" / "fake.py").write_text(textwrap.dedent(f"""
        import argparse, json, pathlib
        parser = argparse.ArgumentParser()
        parser.add_argument("--scale", type=float, default=1.0)
        parser.add_argument("--set", nargs="*", default=[])
        parser.add_argument("--out", type=pathlib.Path)
        args = parser.parse_args()
        (args.out / "fake.json").write_text(json.dumps({{"seconds": 1.0, "runs": {{"x": {written} * args.scale}}}}))
    """))
    result = root / "experiments" / "results" / "fake.json"
    result.write_text(json.dumps({"provenance": {"command": "python experiments/fake.py --scale 2 --out /tmp/old"},
                                  "runs": {"x": value}}))
    return result


def test_rerun_and_compare(tmp_path, capsys):
    fake_checkout(tmp_path / "same", value=0.5, written=0.25)
    assert reproduce.main(["fake", "--root", str(tmp_path / "same"), "--out", str(tmp_path / "o1")]) == 0
    out = capsys.readouterr().out
    assert "fake: reproduced: 1 figures, largest difference 0, 0 beyond 0.001" in out and (tmp_path / "o1" / "fake.json").exists()
    fake_checkout(tmp_path / "moved", value=0.5, written=0.3)
    assert reproduce.main(["fake", "--root", str(tmp_path / "moved"), "--out", str(tmp_path / "o2")]) == 1
    out = capsys.readouterr().out
    assert "fake: MOVED" in out and "/runs/x: committed 0.5, rerun 0.6" in out


def test_dry_run_and_bad_requests(tmp_path, capsys):
    result = fake_checkout(tmp_path, value=0.5, written=0.25)
    assert reproduce.main(["--all", "--dry-run", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "fake: python experiments/fake.py --scale 2\n"
    assert reproduce.main(["nope", "--root", str(tmp_path)]) == 2
    assert "no result file nope.json" in capsys.readouterr().err
    assert reproduce.main(["--root", str(tmp_path)]) == 2
    assert "name result files" in capsys.readouterr().err
    result.write_text(json.dumps({"runs": {}}))
    assert reproduce.main(["fake", "--root", str(tmp_path)]) == 2
    assert "records no command" in capsys.readouterr().err
    result.write_text(json.dumps({"provenance": {"command": "python experiments/gone.py"}}))
    assert reproduce.main(["fake", "--root", str(tmp_path)]) == 2
    assert "script experiments/gone.py does not exist" in capsys.readouterr().err


def test_config_changes_name_what_trains_differently():
    defaults = {"ema_decay": 0.0, "answer_weight": 0.0, "hidden": 64}
    committed = {"config": {"ema_decay": 0.99, "hidden": 64},
                 "variants": {"full": {"config": {"hidden": 64}}}}
    same_today = {"config": {"ema_decay": 0.99, "hidden": 64, "answer_weight": 0.0},   # a field added since, at its default
                  "variants": {"full": {"config": {"hidden": 64, "answer_weight": 0.0}}}}
    assert reproduce.config_changes(committed, same_today, defaults) == []
    recipe_moved = {"config": {"ema_decay": 0.99, "hidden": 64, "answer_weight": 1.0},
                    "variants": {"full": {"config": {"hidden": 32, "answer_weight": 0.0}}}}
    assert reproduce.config_changes(committed, recipe_moved, defaults) == [
        ("/config/answer_weight", None, 1.0), ("/variants/full/config/hidden", 64, 32)]
    assert reproduce.compare(committed, recipe_moved, 1e-3).compared == 0     # configs are not figures
    top_level = {"config": {"ema_decay": 0.99, "hidden": 64, "answer_weight": 1.0, "log10_lam_range": [0.0, 4.0]}}
    top_level["config"] |= {"label_flips": True, "profile": "linear"}
    before = {"config": {"ema_decay": 0.0, "hidden": 64, "log10_lam_range": [-1.0, 3.0], "label_flips": False,
                         "profile": "budget"}}
    defaults = {**defaults, "log10_lam_range": [-1.0, 3.0], "label_flips": True, "profile": "linear"}
    changes = reproduce.config_changes(before, top_level, defaults)
    hint = reproduce.set_hint(changes, defaults)
    assert hint == ("answer_weight=0.0 ema_decay=0.0 label_flips=false log10_lam_range=[-1.0,3.0] profile=budget")
    from metarouter_jax.cli import parse_overrides
    assert parse_overrides(hint.split())[0] == {"answer_weight": 0.0, "ema_decay": 0.0, "label_flips": False,
                                                "log10_lam_range": (-1.0, 3.0), "profile": "budget"}
    assert reproduce.set_hint(reproduce.config_changes(committed, recipe_moved, defaults), defaults) == ""  # nested
    assert reproduce.config_defaults()["answer_weight"] == 0.0
    assert reproduce.config_defaults()["cost_units"] == "all" != mr_config.TrainConfig().cost_units   # changed default


def test_a_result_made_before_a_default_changed_reruns_with_its_old_value():
    """cost_units changed its default when it was added: a result whose configs lack it trained
    with "all", and its rerun is given that (merged into the command's own --set settings)."""
    old = {"config": {"hidden": 64}, "variants": {"a": {"config": {"hidden": 32}}}}
    command = ["experiments/x.py", "--seeds", "0"]
    assert reproduce.with_legacy_settings(command, old) == [*command, "--set", "cost_units=all"]
    assert reproduce.with_legacy_settings(["experiments/x.py", "--set", "hidden=32", "--seeds", "0"], old) == [
        "experiments/x.py", "--set", "cost_units=all", "hidden=32", "--seeds", "0"]
    assert reproduce.with_legacy_settings(["experiments/x.py", "--set=hidden=32", "--seeds", "0"], old) == [
        "experiments/x.py", "--set", "cost_units=all", "hidden=32", "--seeds", "0"]   # not a second --set
    new = {"config": {"hidden": 64, "cost_units": "train"}}
    assert reproduce.with_legacy_settings(command, new) == command
    assert reproduce.with_legacy_settings(command, {"runs": {}}) == command          # nothing trained
    rerun = {"config": {"hidden": 64, "cost_units": "all"}, "variants": {"a": {"config": {"hidden": 32, "cost_units": "all"}}}}
    assert reproduce.config_changes(old, rerun, reproduce.config_defaults()) == []
    assert mr_config.TrainConfig.from_dict({"hidden": 64}).cost_units == "all"      # a router.json of before


def test_a_result_trained_differently_today_fails_and_names_its_commit(tmp_path, capsys):
    result = fake_checkout(tmp_path, value=0.5, written=0.25)
    recorded = json.loads(result.read_text())
    result.write_text(json.dumps({**recorded, "provenance": {**recorded["provenance"], "commit": "abc123def4567890"},
                                  "config": {"answer_weight": 0.5}}))
    assert reproduce.main(["fake", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "fake: TRAINED DIFFERENTLY" in out and "at commit abc123def456" in out
    assert "/config/answer_weight: committed 0.5, rerun None" in out and "fake: reproduced" in out
