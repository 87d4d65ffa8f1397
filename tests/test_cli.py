"""The `metarouter` command line, end to end on a tiny config."""

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax import cli
from metarouter_jax.cli import eval_data_source, load_data, main, parse_overrides
from metarouter_jax.contexts import Contexts
from metarouter_jax.data import DataError

TINY = ["num_steps=20", "chunk_steps=10", "tasks_per_step=4", "queries_per_task=8", "max_contexts=4",
        "hidden=16", "latent_dim=4", "query_dim=4", "valid_users=8", "calib_queries=32"]


def test_overrides_are_parsed_and_checked():
    config, hparams = parse_overrides(["num_steps=40", "lr=0.01", "beta_range=[2,20]", "profile=budget"])
    assert config == {"num_steps": 40, "beta_range": (2, 20), "profile": "budget"}
    assert hparams == {"learning_rate": 0.01}
    with pytest.raises(ValueError, match="unknown setting"):
        parse_overrides(["hiddn=3"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["hidden"])


@pytest.mark.parametrize("pair, expected", [
    ("hidden=abc", "hidden=abc: expected an integer"),
    ("hidden=16.5", "hidden=16.5: expected an integer"),
    ("num_steps=20.0", "num_steps=20.0: expected an integer"),
    ("lr=abc", "lr=abc: expected a finite number"),
    ("gaussian_encoder=1", "gaussian_encoder=1: expected true or false"),
    ("beta_range=3", r"beta_range=3: expected two finite numbers \[lo, hi\]"),
    ("frozen=policy", "frozen=policy: expected a list of network parts"),
])
def test_overrides_of_the_wrong_type_name_the_setting(pair, expected):
    with pytest.raises(ValueError, match=f"^{expected}"):
        parse_overrides([pair])
    assert parse_overrides(["frozen=[\"policy\"]", "log10_lam_range=null", "profile=budget"])[0] == {
        "frozen": ("policy",), "log10_lam_range": None, "profile": "budget"}


def test_train_then_eval(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic", "--out", str(out), "--quiet", "--save-every", "10", "--seed", "7",
                 "--valid-fraction", "0.3", *TINY]) == 0
    assert (out / "config.json").exists() and (out / "router" / "router.json").exists()
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["config"]["num_steps"] == 20 and recorded["data_seed"] == 7 and recorded["valid_fraction"] == 0.3
    assert "valid: 840" in capsys.readouterr().out   # 0.3 of the 2,800 train and valid queries
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "router"]  # no temporary file
    assert (out / "checkpoints" / "metarouter").is_dir()
    capsys.readouterr()
    loaded = []
    monkeypatch.setattr(cli, "load_data", lambda name, seed=0: loaded.append((name, seed)) or load_data(name, seed))
    resplits, resplit = [], cli.resplit
    monkeypatch.setattr(cli, "resplit", lambda data, f, seed: resplits.append((f, seed)) or resplit(data, f, seed))
    assert main(["eval", str(out / "router"), "--users", "8", "--n-contexts", "0", "2", "--json",
                 str(tmp_path / "reports" / "eval.json")]) == 0                   # its folder is made
    assert loaded == [("synthetic", 7)]  # the training data and split, not --seed's (0)
    assert resplits == [(0.3, 7)]        # and its validation share: the train split the scales came from
    printed = capsys.readouterr().out
    assert "pair strategy: uniform" in printed and "pair strategy: informative" in printed
    assert "preference recovery" in printed and "bt_posterior" in printed
    result = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert set(result["informative"]["best_fixed"]) == {"0", "2"}
    # A one-model pool, by band (one evaluation: each is a program of its own to compile).
    assert main(["eval", str(out / "router"), "--users", "2", "--n-contexts", "0", "--strategies", "uniform",
                 "--pool", "coder-7b", "--bands", "2", "--no-reference", "--json", str(tmp_path / "bands.json")]) == 0
    printed = capsys.readouterr().out
    assert "pool: coder-7b" in printed and "log10(lam) " in printed
    by_band = json.loads((tmp_path / "bands.json").read_text())
    assert len(by_band["by_band"]) == 2 and len(by_band["bands"]) == 3 and "uniform" in by_band["all"]
    costs = {m: by_n["0"]["cost"] for m, by_n in by_band["all"]["uniform"].items()}
    assert len(set(costs.values())) == 1, costs        # one routable model: every method answers with it
    assert "bt_bayes" in costs and "linucb" not in costs and "mlp_known" not in costs   # --no-reference
    assert set(by_band["identification"]["uniform"]["0"]) == {"bt_posterior_error", "bt_posterior_sd",
                                                              "metarouter_error"}
    # One routable model: no pair to hold out, so no share (NaN, written null) and no user with an unasked pair.
    assert by_band["held_out"]["uniform"]["0"] == {"asked_share": None, "users_with_unasked": 0}
    # Two routers (two training seeds, each with its own data seed): each evaluated as alone, then the spread.
    other = tmp_path / "run8"
    assert main(["train", "--data", "synthetic", "--out", str(other), "--quiet", "--seed", "8", "--valid-fraction", "0.3",
                 *TINY]) == 0                                # as above: the same shapes, programs already compiled
    capsys.readouterr()
    loaded.clear()
    args = ["--users", "8", "--n-contexts", "0", "2"]   # as the evaluation above: its compiled program serves
    assert main(["eval", str(out / "router"), str(other / "router"), *args, "--json", str(tmp_path / "two.json")]) == 0
    assert loaded == [("synthetic", 7), ("synthetic", 8)]
    printed = capsys.readouterr().out
    assert "mean ± std over 2 routers" in printed and "preference recovery PR(n)" in printed
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["checkpoints"] == [str(out / "router"), str(other / "router")] and len(two["reports"]) == 2
    for n in ("0", "2"):
        values = [r["informative"]["metarouter"][n]["normalized_utility"] for r in two["reports"]]
        summary = two["summary"]["informative"]["metarouter"][n]["normalized_utility"]
        assert summary["mean"] == pytest.approx(np.mean(values)) and summary["std"] == pytest.approx(np.std(values))
    for path, router_seed in ((out, 7), (other, 8)):   # each as `eval` alone evaluates it, same test users
        alone = mr.evaluate(mr.MetaRouter.load(path / "router"), cli.resplit(load_data("synthetic", router_seed),
                            json.loads((path / "config.json").read_text())["valid_fraction"], router_seed),
                            n_users=8, n_contexts=(0, 2))
        alone.write_json(tmp_path / "alone.json")                  # as written: NaN (PR of tiny routers) as null
        assert json.loads((tmp_path / "alone.json").read_text()) == two["reports"][router_seed - 7]
    banded = ["--users", "2", "--n-contexts", "0", "--strategies", "uniform", "--no-reference", "--bands", "2",
              "--pool", "coder-7b", "tiny-1b"]   # as the evaluation above (the pool is an argument of its program)
    assert main(["eval", str(out / "router"), str(other / "router"), *banded]) == 0   # other data, other range
    assert "no summary by band: the routers' log10(lam) ranges differ" in capsys.readouterr().out
    shutil.copytree(out, tmp_path / "copy")     # the same router and data twice: the same bands, no spread
    assert main(["eval", str(out / "router"), str(tmp_path / "copy" / "router"), *banded,
                 "--json", str(tmp_path / "b.json")]) == 0
    assert re.search(r"log10\(lam\) \S+, uniform: known \S+ ± 0.000, best_fixed", capsys.readouterr().out)
    result = json.loads((tmp_path / "b.json").read_text())
    assert len(result["summary_by_band"]) == 2 and all("by_band" in r for r in result["reports"])
    assert main(["eval", str(out / "router"), str(out / "router")]) == 2
    assert "a router is given twice" in capsys.readouterr().err
    assert main(["eval", str(out / "router"), str(other / "router"), "--bands", "2", "--curves", "c.png"]) == 2
    assert "--curves draws one router's" in capsys.readouterr().err
    assert main(["eval", str(out / "router"), "--users", "2", "--bands", "0"]) == 2
    assert "bands must be >= 1" in capsys.readouterr().err
    assert main(["eval", str(out / "router"), "--profile", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown profile family 'nope'")   # not the KeyError's repr
    (tmp_path / "adir").mkdir()
    assert main(["eval", str(out / "router"), "--json", str(tmp_path / "adir")]) == 2
    assert f"error: --json {tmp_path / 'adir'}: is a directory" in capsys.readouterr().err
    # A refused rerun (the checkpoints there are of another configuration) keeps the config.json
    # that describes router/.
    recorded = (out / "config.json").read_text()
    assert main(["train", "--data", "synthetic", "--out", str(out), "--quiet", *TINY, "hidden=8"]) == 2
    assert re.search("another training run .*config.hidden: 16 saved, 8 now", capsys.readouterr().err)
    assert (out / "config.json").read_text() == recorded


def test_clear_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no saved router" in capsys.readouterr().err
    assert main(["data", "info", "no-such-dataset"]) == 2
    assert "unknown" in capsys.readouterr().err.lower()
    (tmp_path / "plot.png").mkdir()
    assert main(["data", "info", "synthetic", "--plot", str(tmp_path / "plot.png")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'plot.png'}: is a directory\n"
    (tmp_path / "afile").write_text("")   # an OSError from a command: an error line, not a traceback
    assert main(["data", "info", "synthetic", "--plot", str(tmp_path / "afile" / "plot.png")]) == 2
    assert re.search(f"^error: .*'{re.escape(str(tmp_path / 'afile'))}", capsys.readouterr().err)
    assert main(["data", "info", "synthetic", "--plot", str(tmp_path / "plot.pdf")]) == 2
    assert "plots are written as PNG" in capsys.readouterr().err


def test_data_info_with_plot(tmp_path, capsys):
    png = tmp_path / "frontier.png"
    assert main(["data", "info", "synthetic", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "frontier-xl" in out and "train" in out
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "info", "synthetic", "--plot", str(tmp_path / "frontier")]) == 0   # no suffix: PNG
    assert f"wrote {tmp_path / 'frontier.png'}" in capsys.readouterr().out and (tmp_path / "frontier.png").exists()


def test_eval_loads_the_data_with_the_recorded_seed(tmp_path):
    (tmp_path / "router").mkdir()

    def source(*argv, recorded=None):
        if recorded is not None:
            (tmp_path / "config.json").write_text(json.dumps(recorded))
        args = cli.build_parser().parse_args(["eval", str(tmp_path / "router"), *argv])
        return eval_data_source(args, args.checkpoint[0])

    assert source("--seed", "3") == ("synthetic", 3, None)                             # nothing recorded
    assert source("--seed", "3", recorded={"data": "synthetic", "seed": 7}) == ("synthetic", 7, None)
    assert source("--data", "synthetic", recorded={"data": "synthetic", "seed": 7}) == ("synthetic", 7, None)
    assert source("--data-seed", "5", recorded={"data": "synthetic", "seed": 7}) == ("synthetic", 5, None)
    assert source(recorded={"data": "synthetic", "data_seed": 2, "seed": 9}) == ("synthetic", 2, None)  # a sweep's
    assert source("--data", "routerarena", "--seed", "4", recorded={"data": "synthetic", "seed": 7}) == (
        "routerarena", 4, None)
    # The training run's validation share goes with its dataset, whatever the seed; not to another dataset.
    recorded = {"data": "synthetic", "seed": 7, "valid_fraction": 0.3}
    assert source(recorded=recorded) == ("synthetic", 7, 0.3)
    assert source("--data-seed", "5", recorded=recorded) == ("synthetic", 5, 0.3)
    assert source("--data", "routerarena", recorded=recorded) == ("routerarena", 0, None)


def test_failed_train_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--quiet", *TINY, "hidden=abc"]) == 2   # as every input error
    assert capsys.readouterr().err == "error: hidden=abc: expected an integer\n"
    assert main(["train", "--out", str(out), "--quiet", *TINY, "lr=-1"]) == 2
    assert "learning_rate must be > 0" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--quiet", *TINY, "valid_split=dev"]) == 2
    assert "unknown split 'dev'" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--quiet", *TINY, "profile=quadratic"]) == 2  # before the data
    err = capsys.readouterr()
    assert err.err.startswith("error: unknown profile family 'quadratic'") and "data:" not in err.out
    assert not out.exists()
    # A refused rerun keeps the config.json of the router already there.
    out.mkdir()
    (out / "config.json").write_text('{"data": "synthetic", "seed": 1}')
    assert main(["train", "--out", str(out), "--quiet", *TINY, "profile=quadratic"]) == 2
    assert (out / "config.json").read_text() == '{"data": "synthetic", "seed": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--out", str(tmp_path / "afile"), "--quiet", *TINY]) == 2
    assert f"error: --out {tmp_path / 'afile'}: is a file" in capsys.readouterr().err


def test_an_out_the_run_could_not_be_saved_to_is_refused_before_the_data_is_loaded(tmp_path, capsys, monkeypatch):
    """A folder of other files at OUT/router (saving the router would delete it) or a folder at
    OUT/config.json: refused before the data is loaded, nothing written. A previous router, or
    an empty folder, may be replaced."""
    def no_data(name, seed=0):
        raise DataError("the data would be loaded here")

    monkeypatch.setattr(cli, "load_data", no_data)
    out = tmp_path / "run"
    (out / "router").mkdir(parents=True)
    (out / "router" / "notes.txt").write_text("x")
    assert main(["train", "--out", str(out), "--quiet", *TINY]) == 2
    assert capsys.readouterr().err == (f"error: cannot save the router to {out / 'router'}: the directory holds "
                                       "other files (no router.json: not a saved router), which saving would delete\n")
    (out / "best_router").mkdir()
    (out / "best_router" / "notes.txt").write_text("x")
    assert main(["sweep", "--out", str(out), "--quiet"]) == 2
    assert f"error: cannot save the router to {out / 'best_router'}: the directory holds other files" \
        in capsys.readouterr().err
    (out / "router" / "notes.txt").unlink()
    (out / "config.json").mkdir()
    assert main(["train", "--out", str(out), "--quiet", *TINY]) == 2
    assert f"error: --out {out}: {out / 'config.json'} is a directory" in capsys.readouterr().err
    (out / "config.json").rmdir()
    (out / "router").rmdir()
    (out / "router").write_text("x")
    assert main(["train", "--out", str(out), "--quiet", *TINY]) == 2
    assert f"error: cannot save the router to {out / 'router'}: it is a file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["best_router", "router"]   # no checkpoints/, no config.json
    assert (out / "router").read_text() == "x" and (out / "best_router" / "notes.txt").read_text() == "x"
    (out / "router").unlink()
    for router in ([], ["router.json"]):   # an empty folder, a previous router: on to the data
        (out / "router").mkdir(exist_ok=True)
        for name in router:
            (out / "router" / name).write_text("{}")
        assert main(["train", "--out", str(out), "--quiet", *TINY]) == 2
        assert "the data would be loaded here" in capsys.readouterr().err


def test_a_named_dataset_trains_with_its_recipe_beneath_explicit_settings(capsys):
    def applied(*argv):
        args = cli.build_parser().parse_args(["train", *argv])
        return tuple(cli.with_recipe(args, parse_overrides(args.overrides)[0]))

    recipe = {"log10_lam_range": (0.0, 4.0), "ema_decay": 0.99, "answer_weight": 1.0}
    assert applied("--data", "routerbench") == (recipe, 0.2, "routerbench")
    assert "recipe for routerbench: --valid-fraction 0.2 log10_lam_range=[0,4] ema_decay=0.99 answer_weight=1" in capsys.readouterr().out
    assert applied("--data", "routerbench_0shot", "--valid-fraction", "0.1", "ema_decay=0") == (
        {**recipe, "ema_decay": 0}, 0.1, "routerbench_0shot")                # explicit settings win
    assert applied("--data", "routerbench", "--recipe", "none") == ({}, None, None)
    assert applied("--data", "synthetic", "hidden=8") == ({"hidden": 8}, None, None)   # no recipe: unchanged
    assert capsys.readouterr().out.count("recipe for") == 1


def test_train_on_routerbench_records_the_recipe_for_eval(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("METAROUTER_DATA", str(data_dir))
    out = tmp_path / "rb"
    assert main(["train", "--data", "routerbench", "--out", str(out), "--quiet", "--save-every", "0", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "recipe for routerbench" in printed and "valid: 443" in printed
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["recipe"] == "routerbench" and recorded["valid_fraction"] == 0.2
    assert recorded["config"]["ema_decay"] == 0.99 and recorded["config"]["log10_lam_range"] == [0.0, 4.0]
    resplits, resplit = [], cli.resplit
    monkeypatch.setattr(cli, "resplit", lambda data, f, seed: resplits.append((f, seed)) or resplit(data, f, seed))
    assert main(["eval", str(out / "router"), "--users", "4", "--n-contexts", "0", "--strategies", "uniform",
                 "--no-reference"]) == 0
    assert resplits == [(0.2, 0)]     # eval splits as training did
    capsys.readouterr()
    assert main(["data", "info", "routerbench"]) == 0
    assert "recipe (metarouter train/sweep apply it" in capsys.readouterr().out
    assert main(["data", "info", "synthetic"]) == 0
    assert "recipe" not in capsys.readouterr().out


def test_a_recipe_prints_as_settings_the_command_reads_back():
    from metarouter_jax.recipes import RECIPES

    for name, recipe in RECIPES.items():
        args = cli.build_parser().parse_args(["train", "--data", name, "--recipe", "none", *recipe.describe().split()])
        assert args.valid_fraction == recipe.valid_fraction, name
        assert cli.checked_config(parse_overrides(args.overrides)[0]) == cli.checked_config(dict(recipe.config)), name


def test_a_missing_optional_extra_is_an_error_line(tmp_path, capsys, monkeypatch):
    """Plotting without matplotlib, embedding a CSV without its npz or routing text without the
    text extra: "error: <how to install it>", exit status 2, no traceback."""
    from types import SimpleNamespace

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)       # the import fails as if not installed
    assert main(["data", "info", "synthetic", "--plot", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == "error: plotting needs matplotlib: pip install 'metarouter_jax[plot]'\n"
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    csv_file = tmp_path / "log.csv"                                  # no embeddings npz beside it
    csv_file.write_text("sample_id,prompt,eval_name,a,b,a|total_cost,b|total_cost\n"
                        + "".join(f"q{i},question {i},mbpp,1,0,0.1,0.01\n" for i in range(4)))
    assert main(["data", "info", str(csv_file)]) == 2
    assert capsys.readouterr().err.startswith("error: TextEmbedder needs the optional 'text' extra")
    router = SimpleNamespace(info=SimpleNamespace(family_names=("mbpp",)), net_config=SimpleNamespace(family_quality=False),
                             check_texts=lambda texts, family=None: list(texts))
    monkeypatch.setattr(mr.MetaRouter, "load", lambda path: router)
    assert main(["route", str(tmp_path / "router"), "--feedback", str(tmp_path / "f.jsonl"), "a query"]) == 2
    assert capsys.readouterr().err.startswith("error: TextEmbedder needs the optional 'text' extra")


def test_route_refuses_an_unknown_family_and_an_empty_query(tmp_path, capsys, monkeypatch, trained_router):
    """`MetaRouter.check_texts` (route_text's checks) runs before the embedder is loaded."""
    def no_embedder():
        raise AssertionError("the embedder is loaded after the arguments are checked")

    families = list(trained_router.info.family_names)
    assert families and not trained_router.net_config.family_quality
    monkeypatch.setattr(mr.MetaRouter, "load", lambda path: trained_router)
    monkeypatch.setattr(mr, "TextEmbedder", no_embedder)
    route = ["route", str(tmp_path / "router"), "--feedback", str(tmp_path / "f.jsonl")]
    assert main([*route, "--family", "mbp", "a query"]) == 2           # ignored before, by a router without family_quality
    assert capsys.readouterr().err == f"error: unknown task family name(s) ['mbp']; the router's families: {families}\n"
    assert main([*route, "a query", " "]) == 2
    assert capsys.readouterr().err == "error: query text 2 of 2 is empty: give the text of each query to route\n"
    with pytest.raises(AssertionError, match="the embedder is loaded"):   # a known family: on to routing
        main([*route, "--family", families[0], "a query"])
    assert "--family has no effect: the router was trained without family_quality" in capsys.readouterr().err


def test_route_text_checks_its_arguments_before_embedding(trained_router):
    class NoEmbedder:
        def embed(self, texts):
            raise AssertionError("embedded before the arguments were checked")

    latent = trained_router.adapt(Contexts.empty(4, trained_router.info.embed_dim))
    for texts, family, pool, error, match in (
            (["a query", ""], None, None, ValueError, "query text 2 of 2 is empty"),
            (["a query", 3], None, None, TypeError, "query text 2 of 2 is a int"),
            ("a query", "mbp", None, KeyError, "unknown task family name"),
            ([], "mbp", None, KeyError, "unknown task family name"),
            (["a", "b"], ["x", "y", "z"], None, ValueError, "one task family per query"),
            ("a query", None, ["gpt-17"], KeyError, "gpt-17")):
        with pytest.raises(error, match=match):
            trained_router.route_text(latent, texts, pool=pool, family=family, embedder=NoEmbedder())
    # Names in an object array (a pandas column) are names; no queries need no family.
    emb = np.zeros((2, trained_router.info.embed_dim), np.float32)
    families = np.asarray(trained_router.info.family_names[:2], dtype=object)
    assert trained_router.route(latent, emb, family=families).shape == (2,)
    assert trained_router.route(latent, emb[:0], family=[]).shape == (0,)


def test_loader_notes_are_printed_where_data_is_loaded(tmp_path, capsys, monkeypatch):
    """A model dropped from a CSV, masked cells, queries left out: `train`, `sweep` and `eval`
    say so (not only `data info`), one line each; --quiet leaves them out."""
    data = load_data("synthetic", 0)
    noted = dataclasses.replace(data, notes=("column(s) ['gpt-5'] not read", "3 cells masked"))
    monkeypatch.setattr(cli, "load_data", lambda name, seed=0: noted)

    def stop(*args, **kwargs):
        raise ValueError("stopped before training")

    monkeypatch.setattr(mr.MetaRouter, "fit", stop)
    monkeypatch.setattr("metarouter_jax.sweep.run_sweeps", stop)
    for command in ("train", "sweep"):
        assert main([command, "--out", str(tmp_path / command), *TINY]) == 2
        printed = capsys.readouterr().out
        assert "note on synthetic: column(s) ['gpt-5'] not read\nnote on synthetic: 3 cells masked\n" in printed, command
        assert main([command, "--out", str(tmp_path / command), "--quiet", *TINY]) == 2
        assert "note on" not in capsys.readouterr().out
    args = cli.build_parser().parse_args(["eval", str(tmp_path / "router")])
    assert cli.eval_data(args, args.checkpoint[0])[2] is noted
    assert capsys.readouterr().out == "note on synthetic: column(s) ['gpt-5'] not read\nnote on synthetic: 3 cells masked\n"


def test_keep_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--keep", "0"])
    assert exit_.value.code == 2 and "argument --keep: must be >= 1, got 0" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["train", "--keep", "1"]).keep == 1


def test_an_output_file_in_a_folder_that_cannot_be_written_is_refused_first(tmp_path, capsys, monkeypatch):
    """Checked before the router and data are loaded, not after the evaluation."""
    (tmp_path / "ro").mkdir()
    access = cli.os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != tmp_path / "ro" and access(path, mode))
    assert main(["eval", str(tmp_path / "missing"), "--json", str(tmp_path / "ro" / "reports" / "eval.json")]) == 2
    assert capsys.readouterr().err == (f"error: --json {tmp_path / 'ro' / 'reports' / 'eval.json'}: "
                                       f"cannot write in {tmp_path / 'ro'}\n")
    cli.check_file_target(str(tmp_path / "eval.json"), "--json")     # a folder that can be written: fine
