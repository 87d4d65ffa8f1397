"""Sweeps: seeds x grid as one vmapped program, equal to single runs; the `metarouter sweep` CLI."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import child_env

import metarouter_jax as mr
from metarouter_jax.cli import load_data, main
from metarouter_jax.config import Hparams
from metarouter_jax.sweep import SweepResult, best_router, sweep_hparams

TINY_ARGS = ["num_steps=10", "chunk_steps=5", "tasks_per_step=4", "queries_per_task=8", "max_contexts=4",
             "hidden=16", "latent_dim=4", "query_dim=4", "valid_users=8", "calib_queries=32"]


def test_grid_is_seeds_times_product():
    hparams, seeds = sweep_hparams({"learning_rate": [1e-3, 3e-3], "entropy_start": [0.05, 0.1, 0.2]}, [7, 9])
    assert hparams.batch_shape == (12,) and seeds.tolist() == [7] * 6 + [9] * 6
    lr, ent = np.asarray(hparams.learning_rate), np.asarray(hparams.entropy_start)
    assert len({(s, a, b) for s, a, b in zip(seeds, lr, ent)}) == 12          # every combination once
    np.testing.assert_allclose(np.asarray(hparams.weight_decay), Hparams().weight_decay)  # the rest: defaults
    hparams, seeds = sweep_hparams({}, [3])
    assert hparams.batch_shape == (1,) and seeds.tolist() == [3]
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        sweep_hparams({"learning_rat": [1e-3]}, [0])
    with pytest.raises(ValueError, match="at least one seed"):
        sweep_hparams({"learning_rate": [1e-3]}, [])
    hparams, seeds = sweep_hparams({"learning_rate": 1e-3}, [0])                   # one value, no list
    assert hparams.batch_shape == (1,) and np.isclose(float(hparams.learning_rate[0]), 1e-3)
    with pytest.raises(ValueError, match="grid axis 'learning_rate' must be a number or a list of numbers"):
        sweep_hparams({"learning_rate": "1e-3"}, [0])
    with pytest.raises(ValueError, match="grid axis 'learning_rate'"):
        sweep_hparams({"learning_rate": [[1e-3, 3e-3]]}, [0])
    with pytest.raises(ValueError, match="seeds must be integers"):
        sweep_hparams({}, [0.5])
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        sweep_hparams({"learning_rate": [1e-3, float("nan")]}, [0])
    with pytest.raises(ValueError, match=r"seeds repeat \(\[0, 1, 0\]\)"):
        sweep_hparams({}, [0, 1, 0])
    with pytest.raises(ValueError, match=r"grid axes repeat a value \(in float32, as they train\): .*learning_rate"):
        sweep_hparams({"learning_rate": [1e-3, 1e-3]}, [0])
    with pytest.raises(ValueError, match="grid axes repeat a value"):      # one float32: the same configuration
        sweep_hparams({"learning_rate": [1e-3, 1.00000001e-3]}, [0])
    with pytest.raises(ValueError, match=r"seeds \[5, 4294967301\] are equal modulo 2\*\*32"):   # the same key
        sweep_hparams({}, [5, 2**32 + 5])
    assert jax.random.key_data(jax.random.key(5)).tolist() == jax.random.key_data(jax.random.key(2**32 + 5)).tolist()


def test_a_sweep_whose_every_configuration_diverged_has_no_best_router():
    hparams, seeds = sweep_hparams({"learning_rate": [1e29, 1e30]}, [0])
    result = SweepResult(None, None, None, seeds, hparams, ("learning_rate",), np.full(2, np.nan),
                         np.full(2, -np.inf), {}, None, None)
    with pytest.raises(ValueError, match="every configuration of the sweep diverged"):
        best_router(result, None)


def test_a_configuration_whose_known_router_diverged_ranks_last(monkeypatch):
    """`fit` stops where the known router diverges; a sweep's MetaRouter would start from that
    router's initial parameters, so such a configuration is ranked last (-inf), whatever it scores."""
    from metarouter_jax import sweep as sweep_module

    real = sweep_module._train_configs

    def known_diverges_in_the_first(trainer, seeds, hparams, stream, *args, **kwargs):
        states, history = real(trainer, seeds, hparams, stream, *args, **kwargs)
        if stream == "known":
            states = states.replace(best_score=states.best_score.at[0].set(-jnp.inf))
        return states, history

    monkeypatch.setattr(sweep_module, "_train_configs", known_diverges_in_the_first)
    config = mr.TrainConfig(num_steps=10, chunk_steps=5, tasks_per_step=4, queries_per_task=8, max_contexts=4,
                            hidden=16, latent_dim=4, query_dim=4, valid_users=8, calib_queries=32)
    result = sweep_module.run_sweep(load_data("synthetic", 0), config, {"learning_rate": [3e-3, 1e-3]}, [0])
    assert result.known_params is not None                       # the warm start ran
    assert result.best_utility[0] == result.final_utility[0] == -np.inf and np.isfinite(result.best_utility[1])
    assert result.best_index == 1


def test_a_sweep_of_another_latent_source_makes_no_metarouter(tmp_path, capsys):
    """latent_source "profile" / "none" sweeps known-preference or agnostic routers alone (fit
    sets each router's latent source itself): no MetaRouter is made of them, and the CLI, which
    saves the best one, refuses them before loading the data."""
    hparams, seeds = sweep_hparams({"learning_rate": [1e-3]}, [0])
    result = SweepResult(mr.TrainConfig(latent_source="none"), None, None, seeds, hparams, ("learning_rate",),
                         np.full(1, 0.5), np.full(1, 0.5), {}, None, None)
    with pytest.raises(ValueError, match="best_router trains a MetaRouter.*latent_source must be 'contexts'"):
        best_router(result, None)
    with pytest.raises(ValueError, match="fit trains a MetaRouter.*got 'profile'"):
        mr.MetaRouter.fit(load_data("synthetic", 0), mr.TrainConfig(latent_source="profile"))
    assert main(["sweep", "--out", str(tmp_path), "--data", "no-such-data", "latent_source=none"]) == 2
    assert "error: metarouter sweep trains a MetaRouter" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_static_or_bad_grid_values_are_named(tmp_path, capsys):
    for args, message in [(["--grid", "hidden=16,abc"], "error: hidden=abc: expected an integer"),
                          (["--grid", "answer_weight=0,-1"], "error: static grid values {'answer_weight': -1}: "
                                                             "answer_weight must be a finite number >= 0"),
                          (["--grid", "hidden=16,32", "hidden=16"], "error: hidden: given both one value and several"),
                          (["--grid", "hidden=16,16"], "error: static grid axis 'hidden' repeats a value"),
                          (["--grid", "lr=1e-3,fast"], "error: learning_rate='fast': hyperparameter values must be numbers"),
                          (["--grid", "learning_rat=1e-3"], "error: unknown setting 'learning_rat'"),
                          (["--seeds", "0", "one"], "error: --seeds takes integers, got 'one'")]:
        assert main(["sweep", "--out", str(tmp_path), *args]) == 2
        assert capsys.readouterr().err.startswith(message)
    assert not any(tmp_path.iterdir())                          # refused before anything was written


def child(out: str) -> dict:
    """`metarouter sweep` as a user runs it, then the best configuration trained on its own."""
    # Settings after --seeds, as users type them, must not be read as seeds.
    # With the parameter average on and early stopping by the worst band, so that the sweep's warm
    # start, its early stopping of the average and its criterion are checked against the single run too.
    assert main(["sweep", "--data", "synthetic", "--out", out, "--quiet", "--grid", "lr=1e-3,3e-3",
                 "--valid-fraction", "0.2", "--seeds", "0", "1", *TINY_ARGS, "ema_decay=0.5",
                 "valid_criterion=worst_band"]) == 0
    router = mr.MetaRouter.load(Path(out) / "best_router")
    seed = json.loads((Path(out) / "config.json").read_text())["seed"]
    # The same configuration trained alone: its known router first, then the warm-started MetaRouter.
    data = load_data("synthetic", 0).resplit_validation(0.2, seed=0)   # as --valid-fraction 0.2 (data seed 0)
    alone = mr.MetaRouter.fit(data, router.config, router.hparams, seed=seed, companions=False)
    assert sorted(router.params) == sorted(alone.params) == ["known", "metarouter"]
    diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), router.params, alone.params)
    history_diff = max(float(np.abs(router.history[r][k] - alone.history[r][k]).max())
                       for r in ("known", "metarouter") for k in ("valid_utility", "valid_worst_band"))
    return {"params_diff": {jax.tree_util.keystr(p): d for p, d in jax.tree_util.tree_leaves_with_path(diffs)},
            "history_diff": history_diff, "learning_rate": float(router.hparams.learning_rate)}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Runs `child` in a subprocess (with conftest's fast-compile XLA_FLAGS, inherited)."""
    out = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run([sys.executable, __file__, str(out)], env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best: configuration" in proc.stdout and "| config | seed | learning_rate |" in proc.stdout
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_writes_tables_plot_and_best_router(swept):
    sweep_dir, _ = swept
    rows = list(csv.DictReader(open(sweep_dir / "sweep.csv")))
    assert [(int(r["seed"]), float(r["learning_rate"])) for r in rows] == [(0, 1e-3), (0, 3e-3), (1, 1e-3), (1, 3e-3)]
    best = json.loads((sweep_dir / "config.json").read_text())["best"]
    assert best["config"] == int(np.argmax([float(r["best_valid_worst_band"]) for r in rows]))   # the criterion's
    assert " * |" in (sweep_dir / "sweep.md").read_text() and (sweep_dir / "sweep.png").stat().st_size > 0
    assert "Each setting over its seeds" in (sweep_dir / "sweep.md").read_text()      # two seeds
    router = mr.MetaRouter.load(sweep_dir / "best_router")
    assert router.config.num_steps == 10 and float(router.hparams.learning_rate) == pytest.approx(best["learning_rate"])
    assert router.config.ema_decay == 0.5                          # the saved router keeps its static settings
    assert router.config.valid_criterion == "worst_band"
    assert json.loads((sweep_dir / "config.json").read_text())["valid_fraction"] == 0.2
    data = load_data("synthetic", 0)
    choice = router.route(router.adapt(mr.Contexts.empty(4, data.embed_dim)), data.embeddings[:5])
    assert choice.shape == (5,) and ((choice >= 0) & (choice < data.num_models)).all()


def test_best_configuration_equals_its_single_run(swept):
    """vmap over configurations == one run with the same seed and hyperparameters."""
    _, measured = swept
    assert measured["history_diff"] < 1e-4
    diffs = dict(measured["params_diff"])
    assert any("['known']['policy']" in k for k in diffs) and any("['metarouter']['encoder']" in k for k in diffs)
    assert max(diffs.values()) < 1e-5, diffs


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))


def test_plot_sweep_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """No pyplot, no matplotlib.use: a notebook's backend survives plotting a sweep."""
    matplotlib = pytest.importorskip("matplotlib")
    from types import SimpleNamespace

    from metarouter_jax.sweep import plot_sweep

    before = matplotlib.get_backend()
    matplotlib.use("svg")             # the caller's choice (any but Agg, which plots are written with)
    try:
        result = SimpleNamespace(configs=[{"learning_rate": 1e-3}, {"learning_rate": 3e-3}], size=2,
                                 final_utility=np.array([0.5, 0.6]), best_utility=np.array([0.55, 0.62]),
                                 config=mr.TrainConfig(), best_index=1)
        assert plot_sweep(result, tmp_path / "sweep") == tmp_path / "sweep.png"
        assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_static_grid_runs_a_program_per_value_and_ranks_them_together(tmp_path):
    """What a traced grid cannot vary (answer_weight > 0 adds a readout to the network) runs as one
    sweep per value; the tables number and rank every configuration together, and the best router
    is the best configuration's, with its own static value."""
    from metarouter_jax.sweep import best_of, format_markdown, run_sweeps, static_grid_configs, table_rows, write_tables

    config = mr.TrainConfig(
        num_steps=10, chunk_steps=5, tasks_per_step=4, queries_per_task=8, max_contexts=4, hidden=16, latent_dim=4,
        query_dim=4, valid_users=8, calib_queries=32)
    # The CLI's data: its test below loads these programs from the session's compilation cache.
    data, parts_seen, finished = load_data("synthetic", 0), [], []
    results = run_sweeps(data, config, {"answer_weight": [0.0, 2.0]}, {"learning_rate": [1e-3, 3e-3]}, [0],
                         on_part=lambda i, n, values: parts_seen.append((i, n, values)),
                         on_result=lambda done: finished.append([r.static for r in done]))
    assert parts_seen == [(0, 2, {"answer_weight": 0.0}), (1, 2, {"answer_weight": 2.0})]
    assert finished == [[{"answer_weight": 0.0}], [{"answer_weight": 0.0}, {"answer_weight": 2.0}]]
    assert [r.config.answer_weight for r in results] == [0.0, 2.0]
    assert [r.net_config.answer_readout for r in results] == [False, True]      # two networks: two programs
    rows = table_rows(results)
    assert [(r["config"], r["answer_weight"], r["learning_rate"]) for r in rows] == [
        (0, 0.0, 1e-3), (1, 0.0, 3e-3), (2, 2.0, 1e-3), (3, 2.0, 3e-3)]
    part, best = best_of(results)
    scores = [r["best_valid_utility"] for r in rows]
    assert best == int(np.argmax(scores)) and part is results[best // 2] and part.best_index == best % 2
    assert f"| {best} * |" in format_markdown(results)
    write_tables(results, tmp_path)
    assert len(list(csv.DictReader(open(tmp_path / "sweep.csv")))) == 4
    if importlib.util.find_spec("matplotlib"):
        from metarouter_jax.sweep import plot_sweep
        assert plot_sweep(results, tmp_path / "sweep.png").stat().st_size > 0     # every part's bars
    router = best_router(results, data)
    assert router.config.answer_weight == rows[best]["answer_weight"]
    # a tuple field as a static axis, given as lists (as JSON would give it): the tables still write
    listed = static_grid_configs(config, {"beta_range": [[3.0, 30.0], [1.0, 10.0]]})
    assert [values for values, _ in listed] == [{"beta_range": (3.0, 30.0)}, {"beta_range": (1.0, 10.0)}]
    assert router.hparams.learning_rate == pytest.approx(rows[best]["learning_rate"])
    assert static_grid_configs(config, {}) == [({}, config)]                    # no static grid: one program
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\] in the static grid"):
        static_grid_configs(config, {"learning_rate": [1e-3]})
    with pytest.raises(ValueError, match="static grid axis 'hidden' must be a non-empty list of values, got 32"):
        static_grid_configs(config, {"hidden": 32})
    with pytest.raises(ValueError, match="valid_criterion cannot vary in a sweep"):
        static_grid_configs(config, {"valid_criterion": ["utility", "worst_band"]})


def test_cli_static_grid(tmp_path):
    """`metarouter sweep` with several values of a TrainConfig field: the tables gain its column,
    and the best router and config.json are the best configuration's."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--quiet", "--no-plot", "--grid", "answer_weight=0,2", "lr=1e-3,3e-3",
                 *TINY_ARGS]) == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["answer_weight"], float(r["learning_rate"])) for r in rows] == [
        ("0.0", 1e-3), ("0.0", 3e-3), ("2.0", 1e-3), ("2.0", 3e-3)]   # as the config holds them
    recorded = json.loads((out / "config.json").read_text())
    best = recorded["best"]
    assert best["config"] == int(np.argmax([float(r["best_valid_utility"]) for r in rows]))
    assert recorded["static_grid"] == {"answer_weight": [0, 2]}
    assert recorded["config"]["answer_weight"] == best["answer_weight"]
    router = mr.MetaRouter.load(out / "best_router")
    assert router.config.answer_weight == best["answer_weight"]
    assert (router.params["metarouter"]["policy"].get("readout") is not None) == (best["answer_weight"] > 0)


def test_seed_summary_averages_each_setting_over_its_seeds():
    from types import SimpleNamespace

    from metarouter_jax.sweep import format_markdown, seed_summary

    class Part(SimpleNamespace):
        def rows(self):
            return [{"config": i, **c, "final_valid_utility": f, "best_valid_utility": b}
                    for i, (c, f, b) in enumerate(zip(self.configs, self.final_utility, self.best_utility))]

    def part(answer_weight, best):
        return Part(configs=[{"seed": s, "answer_weight": answer_weight, "learning_rate": lr}
                             for s in (0, 1) for lr in (1e-3, 3e-3)], size=4, score_key="valid_utility",
                    final_utility=np.asarray(best) - 0.01, best_utility=np.asarray(best))

    # The single best run (0.70: weight 1, seed 1, lr 1e-3) is not the best setting on the mean.
    parts = [part(0.0, [0.60, 0.64, 0.62, 0.66]), part(1.0, [0.50, 0.63, 0.70, 0.55])]
    summary = seed_summary(parts)
    assert [(s["answer_weight"], s["learning_rate"], s["seeds"]) for s in summary] == [
        (0.0, 1e-3, 2), (0.0, 3e-3, 2), (1.0, 1e-3, 2), (1.0, 3e-3, 2)]
    np.testing.assert_allclose([s["mean_best_valid_utility"] for s in summary], [0.61, 0.65, 0.60, 0.59])
    np.testing.assert_allclose([s["std_best_valid_utility"] for s in summary], [0.01, 0.01, 0.10, 0.04])
    np.testing.assert_allclose([s["min_best_valid_utility"] for s in summary], [0.60, 0.64, 0.50, 0.55])
    table = format_markdown(parts)
    assert "| 6 * |" in table and "| 0 | 0.003 | 2 * |" in table        # the best run; the best mean
    single = part(0.0, [0.60, 0.64, 0.62, 0.66])
    single.configs = single.configs[:2]
    single.size, single.best_utility = 2, single.best_utility[:2]
    assert "over its seeds" not in format_markdown(single)                # one seed: nothing to average


def test_every_static_grid_value_is_checked_before_anything_trains(tmp_path, capsys, monkeypatch):
    """A bad value of the second program (a misspelt profile family, a split the data lacks) is
    refused before the first program trains, not after it."""
    from metarouter_jax import sweep

    trained = []
    monkeypatch.setattr(sweep, "run_sweep", lambda *args, **kwargs: trained.append(args) or 1 / 0)
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--quiet", "--grid", "profile=linear,quadratc", *TINY_ARGS]) == 2
    assert capsys.readouterr().err.startswith("error: static grid values {'profile': 'quadratc'}: unknown profile "
                                              "family 'quadratc'; registered: ")
    for axis, bad in (("valid_split", "valid,nope"), ("train_split", "train,nope"), ("descriptor_split", "train,nope")):
        assert main(["sweep", "--out", str(out), "--quiet", "--grid", f"{axis}={bad}", *TINY_ARGS]) == 2
        assert capsys.readouterr().err.startswith(f"error: static grid values {{'{axis}': 'nope'}}: unknown split "
                                                  "'nope'; this data has ['test', 'train', 'valid']"), axis
    assert trained == [] and not out.exists()
    config, data = mr.TrainConfig(), load_data("synthetic", 0)
    with pytest.raises(ValueError, match="static grid values {'valid_split': 'nope'}: unknown split 'nope'"):
        sweep.run_sweeps(data, config, {"valid_split": ["valid", "nope"]}, {}, [0])
    with pytest.raises(ValueError, match="static grid values {'profile': 'quadratc'}: unknown profile family"):
        sweep.static_grid_configs(config, {"profile": ["linear", "quadratc"]})
    assert trained == []


def fake_run_sweep(fail_at: int | None = None, score: float = 0.5):
    """A stand-in for `sweep.run_sweep`: a result of the right shape at once; raises on part `fail_at`."""
    calls = []

    def run(data, config, hparam_grid, seeds, mesh=None, *, on_chunk=None):
        calls.append(config)
        if len(calls) - 1 == fail_at:
            raise ValueError(f"part {fail_at} failed")
        hparams, seeds = sweep_hparams(hparam_grid, seeds)
        scores = np.full(len(seeds), score)
        return SweepResult(config, None, None, seeds, hparams, tuple(hparam_grid), scores, scores, {}, None, None)

    return run


def test_a_rerun_never_leaves_two_sweeps_in_one_folder(tmp_path, capsys, monkeypatch):
    """The outputs of an earlier sweep in --out (its config.json, best router, plot, tables) are
    removed before the new sweep writes its first table: a sweep that fails after that leaves
    its own tables only, not beside the earlier sweep's best router and config.json."""
    from metarouter_jax import sweep

    out = tmp_path / "sweep"

    def earlier_sweep():
        (out / "best_router").mkdir(parents=True, exist_ok=True)
        for name in ("best_router/router.json", "config.json", "sweep.png", "sweep.csv", "sweep.md"):
            (out / name).write_text("{}")
        (out / "notes.txt").write_text("mine")                      # not a sweep's: left alone

    earlier_sweep()
    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep(fail_at=1))   # the second program fails
    assert main(["sweep", "--out", str(out), "--quiet", "--no-plot", "--grid", "ema_decay=0.5,0.9", *TINY_ARGS]) == 2
    assert capsys.readouterr().err == "error: part 1 failed\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sweep.csv", "sweep.md"]
    assert "| 0 * | 0 | 0.5 |" in (out / "sweep.md").read_text()         # the new sweep's first program
    earlier_sweep()
    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep(score=float("nan")))   # every configuration diverged
    assert main(["sweep", "--out", str(out), "--quiet", "--no-plot", *TINY_ARGS]) == 2
    assert "every configuration of the sweep diverged" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sweep.csv", "sweep.md"]
    earlier_sweep()
    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep(fail_at=0))   # nothing written: the earlier sweep stays
    assert main(["sweep", "--out", str(out), "--quiet", "--no-plot", *TINY_ARGS]) == 2
    assert (out / "config.json").exists() and (out / "best_router" / "router.json").exists()
    assert (out / "sweep.png").exists()


def test_tables_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous tables whole and no temporary file."""
    from metarouter_jax.sweep import write_tables

    result = fake_run_sweep()(None, mr.TrainConfig(), {"learning_rate": [1e-3, 3e-3]}, [0])
    write_tables(result, tmp_path)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert sorted(before) == ["sweep.csv", "sweep.md"] and len(before["sweep.csv"].splitlines()) == 3

    def full_disk(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_tables(result, tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
