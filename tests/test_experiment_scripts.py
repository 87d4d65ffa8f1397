"""The experiment scripts that make the README's tables run end to end on tiny settings, and their
result files record what they trained with (the dataset's recipe included)."""

import json
import subprocess
import sys

from conftest import REPO, child_env

import metarouter_jax as mr

TINY = ["--seeds", "0", "--steps", "100", "--users", "4",
        "--set", "chunk_steps=50", "tasks_per_step=4", "queries_per_task=8", "max_contexts=8", "hidden=16",
        "valid_users=8"]


def run_script(name: str, *argv: str, **env: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / name), *argv, *TINY], cwd=REPO / "experiments",
                          env=child_env(**env), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_lam_bands_on_synthetic_records_its_validation_split(tmp_path):
    run_script("lam_bands.py", "--data", "synthetic", "--bands", "2", "--valid-fraction", "0.2", "--out", str(tmp_path))
    result = json.loads((tmp_path / "lam_bands_synthetic.json").read_text())
    expected = mr.synthetic_data(seed=0).resplit_validation(0.2, seed=0)
    assert result["split_sizes"] == {name: int(expected.split(name).size) for name in ("train", "valid", "test")}
    assert result["config"]["num_steps"] == 100 and result["config"]["ema_decay"] == 0.0   # no recipe on synthetic
    assert result["provenance"]["command"].startswith("python experiments/lam_bands.py --data synthetic")
    assert len(result["runs"]["0"]["bands"]) == 2 and (tmp_path / "lam_bands_synthetic.md").is_file()
    aiq = result["runs"]["0"]["aiq"]["6"]                                 # the cost-quality curves' areas
    assert set(aiq["metarouter"]) == {"linear", "log_cost"} and 0.0 <= aiq["known"]["linear"] <= 1.0
    assert len(result["runs"]["0"]["cost_quality"]["6"]["known"][0]) == 2   # one (cost, quality) point per band
    assert "AIQ" in (tmp_path / "lam_bands_synthetic.md").read_text()
    assert (tmp_path / "lam_bands_synthetic_curves.png").stat().st_size > 10_000


def test_routerbench_script_trains_with_the_recipe(tmp_path, data_dir):
    run_script("routerbench.py", "--out", str(tmp_path), "--name", "tiny", METAROUTER_DATA=str(data_dir))
    result = json.loads((tmp_path / "tiny.json").read_text())
    # RECIPES["routerbench"]: 20% of the train and valid queries held out, the average kept, log10(lam) in [0, 4]
    assert result["split_sizes"] == {"train": 1774, "valid": 443, "test": 947}
    assert result["config"]["ema_decay"] == 0.99 and result["config"]["log10_lam_range"] == [0.0, 4.0]
    assert result["config"]["answer_weight"] == 1.0
    assert set(result["runs"]["0"]) >= {"uniform", "informative", "active", "validation", "identification", "held_out"}
    assert "pair_accuracy" in result["runs"]["0"]["informative"]["metarouter"]["6"]
    assert set(result["runs"]["0"]["held_out"]["active"]["6"]) == {"asked_share", "users_with_unasked"}
    assert "held-out pairs that a context asked" in (tmp_path / "tiny.md").read_text()
    assert "mlp_posterior" in result["runs"]["0"]["informative"] and (tmp_path / "tiny.md").is_file()


def test_readout_routing_routes_three_ways(tmp_path):
    run_script("readout_routing.py", "--out", str(tmp_path))
    result = json.loads((tmp_path / "readout_routing_synthetic.json").read_text())
    assert result["config"]["answer_weight"] == 1.0                      # the readout's loss, on by default here
    run = result["runs"]["0"]
    assert set(run["normalized_utility"]) == {"known", "readout", "mlp_known"}
    assert all(-1.0 < v <= 1.0 for v in run["normalized_utility"].values())
    assert set(run["test_error"]) == set(run["train_error"]) == {"readout", "mlp"}
    assert (tmp_path / "readout_routing_synthetic.md").is_file()
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "readout_routing.py"), "--out", str(tmp_path),
                           "--set", "answer_weight=0"], cwd=REPO / "experiments", env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "answer_weight must be > 0" in proc.stderr


def test_ablations_script_names_its_file_and_can_leave_out_the_reference_baselines(tmp_path):
    run_script("ablations.py", "--variants", "full", "no_entropy", "--no-reference", "--name", "tiny_ablations",
               "--out", str(tmp_path))
    result = json.loads((tmp_path / "tiny_ablations.json").read_text())
    assert list(result["variants"]) == ["full", "no_entropy"] and (tmp_path / "tiny_ablations.md").is_file()
    assert not (tmp_path / "ablations_synthetic.json").exists()
    run = result["variants"]["no_entropy"]["runs"]["0"]
    assert result["variants"]["no_entropy"]["hparams"]["entropy_start"] == 0.0
    assert "metarouter" in run["informative"] and not set(run["informative"]) & set(mr.evaluation.REFERENCE_METHODS)


def test_ood_fixed_sets_one_model_chosen_on_the_training_families_beside_the_best_in_hindsight(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "ood_fixed.py"), "--data", "synthetic",
                           "--seeds", "0", "1", "--users", "16", "--out", str(tmp_path)], cwd=REPO / "experiments",
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "ood_fixed.json").read_text())["results"]["synthetic"]
    assert result["train_families"] == ["qa", "chat"] and set(result["groups"]) == {"code", "math"}
    for runs in result["groups"].values():
        assert set(runs) == {"0", "1"}
        for run in runs.values():   # the best fixed model on the test queries is at least any fixed model
            assert -1.0 < run["fixed_from_training"] <= run["best_fixed"] + 1e-6 <= 1.0
    assert "one model" in proc.stdout.lower() and (tmp_path / "ood_fixed.md").is_file()
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "ood_fixed.py"), "--out", str(tmp_path),
                           "--set", "hidden=8"], cwd=REPO / "experiments", env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nothing is trained here" in proc.stderr


def test_ood_guard_trains_routers_and_sends_far_queries_to_the_fixed_model(tmp_path):
    run_script("ood_fixed.py", "--data", "synthetic", "--guard", "--out", str(tmp_path))
    result = json.loads((tmp_path / "ood_guard.json").read_text())
    synthetic = result["results"]["synthetic"]
    assert synthetic["config"]["num_steps"] == 100 and result["percentile"] == 1.0
    run = synthetic["runs"]["0"]
    assert set(run) == {"valid (training families)", "code", "math", "seconds"}
    for name in ("valid (training families)", "code", "math"):
        assert set(run[name]) == {"known", "fixed_from_training", "guarded", "far_share"}
        assert 0.0 <= run[name]["far_share"] <= 1.0
    assert run["valid (training families)"]["far_share"] < 0.1          # the 1st percentile of these queries
    code = run["code"]     # every code query is far from the QA training queries: the guard routes none
    assert code["far_share"] == 1.0 and code["guarded"] == code["fixed_from_training"]
