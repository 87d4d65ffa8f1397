"""Bad input to the public entry points gets a clear error that names the problem."""

import dataclasses
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax import router as router_module
from metarouter_jax.cli import main
from metarouter_jax.config import Hparams
from metarouter_jax.feedback import contexts_from_jsonl, read_feedback
from metarouter_jax.networks import init_router_net
from metarouter_jax.router import DataInfo
from metarouter_jax.training import make_train


@pytest.fixture(scope="module")
def router(small_data, tiny_config):
    """An untrained router (initial parameters for all three routers): input checks need no training."""
    trainer = make_train(tiny_config, small_data)
    _, params = init_router_net(trainer.net_config, jax.random.key(0))
    info = DataInfo.from_data(small_data, trainer.arrays, tiny_config.train_split, trainer.atoms)
    return mr.MetaRouter(tiny_config, Hparams.create(), trainer.net_config, trainer.profiles,
                         {name: params for name in ("metarouter", "known", "agnostic")}, info)


class Embedder:
    """Zero embeddings; records what it was asked to embed."""

    def __init__(self, dim):
        self.dim, self.calls = dim, []

    def embed(self, texts):
        self.calls.append(texts)
        return np.zeros((len(texts), self.dim), np.float32)


def test_route_text_takes_one_string_as_one_text(router, small_data):
    z = np.zeros(router.net_config.latent_dim)
    embedder = Embedder(small_data.embed_dim)
    one = router.route_text(z, "Write a haiku about routers.", embedder=embedder)
    assert embedder.calls == [["Write a haiku about routers."]] and len(one) == 1 and one[0] in router.model_names
    assert len(router.route_text(z, ["a", "b"], embedder=embedder)) == 2 and embedder.calls[-1] == ["a", "b"]
    # MiniLM's 384-d embeddings for a router trained on other ones: the embedder is named, not query_emb
    with pytest.raises(ValueError, match=rf"text embedder gives embeddings of shape \(1, 384\), this router was "
                                         rf"trained on {small_data.embed_dim}-d ones"):
        router.route_text(z, "a", embedder=Embedder(384))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_latent_is_refused(router, small_data, bad):
    """argmax over NaN scores is model 0 everywhere: a silent, wrong routing."""
    z = np.zeros((2, router.net_config.latent_dim))
    z[1, 0] = bad
    with pytest.raises(ValueError, match="latent.*NaN/inf"):
        router.route(z, small_data.embeddings[:3])
    embedder = Embedder(small_data.embed_dim)
    with pytest.raises(ValueError, match="latent.*NaN/inf"):
        router.route_text(z[1], ["hello"], embedder=embedder)
    assert embedder.calls == []                              # refused before embedding anything


def test_adapt_refuses_model_indices_outside_the_router(router, small_data):
    """A gather clamps an out-of-range index (model 7 of 5 reads model 4): refused on concrete
    contexts; padding is not checked, nor are contexts under a trace."""
    ctx = mr.Contexts.from_feedback(small_data, [0, 1], [0, 1], [2, 3], [True, False], capacity=4)
    for name, index in (("model_a", 7), ("model_b", -1)):
        bad = ctx.replace(**{name: getattr(ctx, name).at[1].set(index)})
        with pytest.raises(ValueError, match=rf"{name} holds model indices outside \[0, 5\)"):
            router.adapt(bad)
    padded = ctx.replace(model_a=ctx.model_a.at[3].set(99))  # not a valid context: harmless
    np.testing.assert_array_equal(router.adapt(padded), router.adapt(ctx))
    np.testing.assert_allclose(jax.jit(router.adapt)(ctx), router.adapt(ctx), rtol=1e-6, atol=1e-6)


def test_unknown_router_name_lists_the_routers(router, small_data):
    z = np.zeros(router.net_config.latent_dim)
    ctx = mr.Contexts.empty(4, small_data.embed_dim)
    with pytest.raises(ValueError, match=r"unknown router 'bogus'.*\['agnostic', 'known', 'metarouter'\]"):
        router.route(z, small_data.embeddings[:3], router="bogus")
    with pytest.raises(ValueError, match=r"unknown router 'bogus'.*\['agnostic', 'known', 'metarouter'\]"):
        router.adapt(ctx, router="bogus")


BASE = {"query": "q", "model_a": "tiny-1b", "model_b": "frontier-xl", "preferred": "a"}


@pytest.mark.parametrize("line, message", [
    ({**BASE, "quality_a": 5.0}, r"quality_a must be in \[0, 1\].*got 5.0"),
    ({**BASE, "quality_b": -1}, r"quality_b must be in \[0, 1\].*got -1"),
    ({**BASE, "quality_a": None}, "quality_a must be a number, got None"),
    ({**BASE, "cost_b": None}, "cost_b must be a number, got None"),
    ({**BASE, "quality_a": "high"}, "quality_a must be a number, got 'high'"),
    ({**BASE, "cost_a": -0.5}, r"cost_a must be >= 0 \(USD\), got -0.5"),
    ('{"query": "q", "model_a": "tiny-1b", "model_b": "frontier-xl", "preferred": "a", "quality_a": NaN}',
     "quality_a is nan"),
    ("[1, 2]", "a feedback line must be a JSON object, got list"),
    ('"query model_a model_b preferred"', "a feedback line must be a JSON object, got str"),
    ({**BASE, "query": None}, "query must be a non-empty string, got None"),      # was a TypeError when embedded
    ({**BASE, "query": 5}, "query must be a non-empty string, got 5"),
    ({**BASE, "query": ""}, "query must be a non-empty string, got ''"),        # was embedded silently
    ({**BASE, "query": " "}, "query must be a non-empty string, got ' '"),
    ({**BASE, "model_b": "tiny-1b", "preferred": "tiny-1b"}, "model_a and model_b are both 'tiny-1b'"),
    (json.dumps(BASE)[:-1] + ', "cost_a": 1' + "0" * 400 + "}", "cost_a is an integer of 401 digits, too large"),
])
def test_bad_feedback_outcomes_name_the_field_and_line(tmp_path, line, message):
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps(BASE) + "\n\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(ValueError, match=rf"feedback.jsonl:3: {message}"):
        read_feedback(path)


def test_feedback_file_to_contexts_names_the_problem(router, small_data, tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps(BASE) + "\n" + json.dumps({**BASE, "cost_a": None}) + "\n")
    with pytest.raises(ValueError, match="feedback.jsonl:2: cost_a must be a number"):
        contexts_from_jsonl(router, path, Embedder(small_data.embed_dim))
    path.write_text(json.dumps({**BASE, "quality_a": 1.0, "cost_a": 0.002}) + "\n")
    ctx = contexts_from_jsonl(router, path, Embedder(small_data.embed_dim))
    assert int(ctx.count) == 1 and float(ctx.outcome_a[0, 0]) == 1.0
    path.write_text(json.dumps(BASE) + "\n\n\n" + json.dumps({**BASE, "model_b": "gpt-5"}) + "\n")
    with pytest.raises(KeyError, match="feedback.jsonl:4: unknown model 'gpt-5'"):   # the file's line, blanks counted
        contexts_from_jsonl(router, path, Embedder(small_data.embed_dim))
    path.write_text(json.dumps(BASE) + "\n")
    with pytest.raises(ValueError, match="text embedder gives embeddings of shape"):
        contexts_from_jsonl(router, path, Embedder(384))


def test_feedback_file_not_utf8_is_named(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_bytes(json.dumps(BASE).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"feedback.jsonl: not UTF-8 text \(invalid start byte: byte 0xff at offset"):
        read_feedback(path)


def test_feedback_capacity_below_one_is_refused_not_the_default(router, small_data, tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps(BASE) + "\n")
    embedder = Embedder(small_data.embed_dim)
    for capacity in (0, -2):
        with pytest.raises(ValueError, match=f"capacity must be an integer >= 1.*got {capacity}"):
            contexts_from_jsonl(router, path, embedder, capacity=capacity)
    assert contexts_from_jsonl(router, path, embedder).capacity == router.config.max_contexts   # None: the default
    assert contexts_from_jsonl(router, path, embedder, capacity=3).capacity == 3


@pytest.mark.parametrize("field, values, message", [
    ("quality_a", [1.0, 0.5, 1.5], r"quality_a must be in \[0, 1\].*got 1.5 at index 2"),
    ("cost_b", [0.01, -0.01, 0.01], r"cost_b must be >= 0 \(USD\), got -0.01 at index 1"),
    ("quality_b", [0.0, np.nan, 1.0], "quality_b holds NaN/inf at index 1"),
])
def test_explicit_outcomes_name_the_feedback(router, field, values, message):
    outcomes = {"quality_a": [1.0] * 3, "cost_a": [0.01] * 3, "quality_b": [0.0] * 3, "cost_b": [0.001] * 3,
                field: values}
    with pytest.raises(ValueError, match=message):
        router.contexts_from_outcomes(np.zeros((3, router.info.embed_dim)), [0, 1, 2], [1, 2, 3], [1, 0, 1],
                                      **outcomes)


def test_save_replaces_only_a_saved_router(router, tmp_path):
    """Saving deletes what was at the path: only a router saved before or an empty directory."""
    own = tmp_path / "notes"
    own.mkdir()
    (own / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="holds other files.*not a saved router"):
        router.save(own)
    assert (own / "notes.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        router.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    (tmp_path / "empty").mkdir()
    router.save(tmp_path / "empty")
    router.save(tmp_path / "empty")                          # a saved router is replaced
    assert mr.MetaRouter.load(tmp_path / "empty").model_names == router.model_names


def test_eval_of_zero_users_is_refused(router, tmp_path, capsys):
    router.save(tmp_path / "router")
    assert main(["eval", str(tmp_path / "router"), "--users", "0"]) == 2
    assert "n_users must be >= 1" in capsys.readouterr().err


def test_fit_names_the_router_whose_training_diverged(small_data, tiny_config, monkeypatch):
    """A run whose best validation score is not finite produced no usable parameters (a real
    diverging run ends so: test_training.py::test_diverged_parameters_are_never_kept_as_best)."""
    diverged = SimpleNamespace(best_score=jnp.asarray(-jnp.inf), best_params=None)
    monkeypatch.setattr(router_module, "run_training", lambda *args, **kwargs: (diverged, {}))
    with pytest.raises(ValueError, match=r"training the 'known' router diverged.*lower learning_rate than 0.5"):
        mr.MetaRouter.fit(small_data, tiny_config, Hparams.create(learning_rate=0.5))


def test_pools_capacities_names_and_router_metadata_of_the_wrong_kind(router, small_data, tmp_path):
    k = small_data.num_models
    with pytest.raises(ValueError, match=f"one entry per model \\({k}\\), got shape \\(2,\\)"):
        router.pool_mask([True, False])
    with pytest.raises(ValueError, match="model names, model indices or a bool mask, got \\[0.9\\]"):
        router.pool_mask([0.9])                      # was model 0
    with pytest.raises(ValueError, match="at least one"):
        router.pool_mask([])
    for capacity in (0, -1, 2.0):
        with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
            mr.Contexts.empty(capacity, small_data.embed_dim)
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        mr.Contexts.from_feedback(small_data, [], [], [], [], capacity=0)
    with pytest.raises(mr.DataError, match="sequence of names, got the string 'abcde'"):
        mr.RoutingData.create(small_data.embeddings, small_data.quality, small_data.cost, small_data.family,
                              model_names="abcde", family_names=small_data.family_names)
    router.save(tmp_path / "r")
    (tmp_path / "r" / "router.json").write_text("[1, 2]")
    with pytest.raises(mr.CheckpointError, match="holds a JSON list, not an object"):
        mr.MetaRouter.load(tmp_path / "r")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["data"].update(embed_dim=7), "data.embed_dim 7 != network.embed_dim"),
    (lambda m: m["data"].update(model_names=m["data"]["model_names"][:-1]), r"one row per model \(4\)"),
    (lambda m: m["data"].update(log_cost_std=float("nan")), "log10-cost standardisation"),
    (lambda m: m.update(history=3), "'int' object has no attribute 'items'"),
    (lambda m: m["network"].update(hidden="x"), "NetworkConfig.hidden must be an integer >= 1, got 'x'"),
    (lambda m: m["data"].update(atom_scales=[float("nan")] * len(m["data"]["atom_scales"])),
     "atom_scales must be positive finite numbers"),
    (lambda m: m["data"]["descriptors"][0].__setitem__(0, float("nan")), "descriptors must be finite"),
    (lambda m: m["profiles"].update(log10_lam_range=[0.0, float("nan")]), "log10_lam_range .* is not finite"),
    (lambda m: m["data"].update(mean_cost=["a"] * len(m["data"]["mean_cost"])), "mean_cost must be one number per model"),
    (lambda m: m["data"].update(model_names=[m["data"]["model_names"][0]] * len(m["data"]["model_names"])),
     "model_names must be distinct"),
    (lambda m: m["data"].update(descriptor_centre=[0.0]), "descriptor_centre must be 5 finite numbers"),
    (lambda m: m.update(routers=["a", "b", "c"]), r"routers \['a', 'b', 'c'\]"),
])
def test_router_json_that_disagrees_with_itself_is_corrupt(router, tmp_path, edit, message):
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    edit(meta)
    (tmp_path / "r" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(mr.CheckpointError, match=f"router.json is corrupt: .*{message}"):
        mr.MetaRouter.load(tmp_path / "r")


def test_synthetic_sizes_and_zero_width_embeddings_are_named(small_data):
    with pytest.raises(ValueError, match="num_queries must be an integer >= 1, got -5"):
        mr.synthetic_data(num_queries=-5)
    with pytest.raises(mr.DataError, match=r"\[Q, D\] with D >= 1, got shape \(1200, 0\)"):
        mr.RoutingData.create(small_data.embeddings[:, :0], small_data.quality, small_data.cost, small_data.family,
                              model_names=small_data.model_names, family_names=small_data.family_names)


def test_parameters_holding_nan_are_neither_saved_nor_loaded(router, tmp_path, monkeypatch):
    broken = mr.MetaRouter(router.config, router.hparams, router.net_config, router.profiles,
                           jax.tree.map(lambda x: x * np.nan, router.params), router.info)
    with pytest.raises(ValueError, match=r"cannot save a router whose parameters hold NaN/inf \(\['agnostic'\]"):
        broken.save(tmp_path / "r")
    assert not (tmp_path / "r").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match=f"cannot save the router to {tmp_path / 'f' / 'r'}: .* is a file"):
        router.save(tmp_path / "f" / "r")
    monkeypatch.setattr(router_module, "_non_finite", lambda params: [])   # as a damaged file would hold them
    broken.save(tmp_path / "r")
    monkeypatch.undo()
    with pytest.raises(mr.CheckpointError, match="hold NaN/inf .*a diverged or damaged router"):
        mr.MetaRouter.load(tmp_path / "r")


def test_hand_built_contexts_of_the_wrong_shape_or_kind_are_named(router, small_data):
    ctx = mr.Contexts.from_feedback(small_data, [1, 2], [0, 1], [1, 2], [True, False], capacity=8)
    router.adapt(ctx)
    for bad, message in [
        ("hello", "adapt takes Contexts .* got str"),
        (ctx.replace(mask=ctx.mask[:5]), r"query_emb has shape \(8, 32\), expected \(5, 32\)"),
        (ctx.replace(mask=ctx.mask.astype(jnp.int32)), "mask must be a bool array"),
        (ctx.replace(model_a=ctx.model_a.astype(jnp.float32)), "model_a must hold integer indices, got float32"),
        (ctx.replace(label=ctx.label.at[0].set(5.0)), "label must be 1 .* or 0"),
        (ctx.replace(outcome_b=ctx.outcome_b.at[1, 0].set(jnp.nan)), "outcome_b holds NaN/inf on a valid context"),
        (ctx.replace(model_b=ctx.model_b.at[0].set(0)), r"compare a model with itself"),
        (ctx.replace(family=ctx.family.at[1].set(99)), r"family holds ids outside \[-1, "),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            router.adapt(bad)
    # An unused slot may hold anything, NaN included: it must not reach the latent (0 x NaN in the
    # encoder's masked sums made every entry NaN).
    padded = ctx.replace(query_emb=ctx.query_emb.at[5].set(jnp.nan), outcome_a=ctx.outcome_a.at[5].set(jnp.inf),
                         outcome_b=ctx.outcome_b.at[5, 0].set(jnp.nan), label=ctx.label.at[5].set(jnp.nan))
    np.testing.assert_array_equal(router.adapt(padded), router.adapt(ctx))


def test_one_pool_name_is_one_model_and_families_must_match(router, small_data):
    name = small_data.model_names[1]
    np.testing.assert_array_equal(router.pool_mask(name), router.pool_mask([name]))   # not its characters
    np.testing.assert_array_equal(small_data.pool_mask(name), router.pool_mask([name]))
    with pytest.raises(ValueError, match=r"model names, model indices or a bool mask, got \[0.9\]"):
        small_data.pool_mask([0.9])                                                     # was model 0
    renamed = dataclasses.replace(small_data, family_names=tuple(f + "_x" for f in small_data.family_names))
    with pytest.raises(ValueError, match="the data's families .* are not the router's"):
        router.arrays_for(renamed)


def test_router_outcomes_check_families_and_capacity(router, small_data):
    emb = np.zeros((1, small_data.embed_dim), np.float32)
    args = (emb, [0], [1], [True], [1.0], [0.01], [0.0], [0.001])
    with pytest.raises(ValueError, match=rf"family ids .* must be in \[-1, {small_data.num_families}\), got 77"):
        router.contexts_from_outcomes(*args, family=[77])
    with pytest.raises(ValueError, match="capacity must be an integer >= 1 .* got 0"):
        router.contexts_from_outcomes(*args, capacity=0)        # not the default
    assert router.contexts_from_outcomes(*args).capacity == router.config.max_contexts


def test_data_refuses_empty_model_names_and_training_models_without_answers(small_data, tiny_config):
    """An empty model name was refused only after training (by the router's DataInfo); a model
    with no answer on the training split made every descriptor NaN and training 'diverge'."""
    names = ("",) + small_data.model_names[1:]
    with pytest.raises(mr.DataError, match=r"model names must be non-empty, got \[''\] at index \[0\]"):
        mr.RoutingData.create(small_data.embeddings, small_data.quality, small_data.cost, small_data.family,
                              model_names=names, family_names=small_data.family_names, splits=small_data.splits)
    quality = small_data.quality.copy()
    quality[small_data.split("train"), 2] = np.nan
    unanswered = mr.RoutingData.create(small_data.embeddings, quality, small_data.cost, small_data.family,
                                       model_names=small_data.model_names, family_names=small_data.family_names,
                                       splits=small_data.splits)
    with pytest.raises(mr.DataError, match=rf"models \['{small_data.model_names[2]}'\] have no answer .* split 'train'"):
        make_train(tiny_config, unanswered)


def test_fit_refuses_what_it_cannot_train(small_data, tiny_config):
    """A batch of hyperparameters reached the optimiser as a shape error; a dict as config an
    AttributeError; a negative save_every was read as 0."""
    with pytest.raises(ValueError, match=r"fit trains one configuration: these hparams hold a batch of shape \(2,\)"):
        mr.MetaRouter.fit(small_data, tiny_config, hparams=Hparams.create(learning_rate=[1e-3, 3e-3]))
    with pytest.raises(TypeError, match=r"fit's config must be a TrainConfig, got dict \(TrainConfig\(\*\*settings\)"):
        mr.MetaRouter.fit(small_data, {"num_steps": 20})
    with pytest.raises(TypeError, match="fit's data must be a RoutingData, got str"):
        mr.MetaRouter.fit("synthetic", tiny_config)
    with pytest.raises(ValueError, match="save_every must be >= 0"):
        mr.MetaRouter.fit(small_data, tiny_config, save_every=-5)
    with pytest.raises(ValueError, match="embed_dim must be an integer >= 1"):
        mr.Contexts.empty(4, 0)
    from metarouter_jax import sweep
    with pytest.raises(ValueError, match="non-empty list of them .* an empty list"):
        sweep.best_of([])
