"""The own-family quality input (`TrainConfig.family_quality`) and calibration descriptors
(`TrainConfig.descriptor_split`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax import adaptation
from metarouter_jax.data import DataError
from metarouter_jax.networks import own_family_quality
from metarouter_jax.training import make_train


@pytest.fixture(scope="module")
def calib_data(small_data):
    """small_data with a calibration split: the training queries and a third of the test queries."""
    test = small_data.split("test")
    return small_data.with_splits(calib=np.concatenate([small_data.split("train"), test[::3]]))


@pytest.fixture(scope="module")
def family_router(calib_data, tiny_config):
    return mr.MetaRouter.fit(calib_data, tiny_config.replace(family_quality=True, descriptor_split="calib"), seed=0)


def test_own_family_quality_reads_the_query_family_column():
    desc = jnp.asarray([[0.5, 0.1, -0.2, 0.3], [-0.5, -0.1, 0.2, -0.3]])  # [K=2, 1 + F=3]
    np.testing.assert_allclose(own_family_quality(desc, 0), [0.1, -0.1])
    np.testing.assert_allclose(own_family_quality(desc, 2), [0.3, -0.3])
    np.testing.assert_allclose(own_family_quality(desc, -1), [0.0, 0.0])   # unknown family
    np.testing.assert_allclose(own_family_quality(desc, None), [0.0, 0.0])
    batched = jax.vmap(own_family_quality, in_axes=(None, 0))(desc, jnp.asarray([1, -1]))
    np.testing.assert_allclose(batched, [[-0.2, 0.2], [0.0, 0.0]])


def test_descriptors_come_from_the_calibration_split(family_router, calib_data):
    np.testing.assert_array_equal(family_router.info.descriptors, calib_data.descriptors("calib"))
    np.testing.assert_allclose(family_router.info.descriptor_centre, calib_data.descriptor_centre("calib"))
    assert not np.array_equal(calib_data.descriptors("calib"), calib_data.descriptors("train"))
    arrays = family_router.arrays_for(calib_data)      # evaluation reads the same split
    np.testing.assert_array_equal(np.asarray(arrays.descriptors), family_router.info.descriptors)


def test_a_missing_descriptor_split_is_named(small_data, tiny_config):
    with pytest.raises(KeyError, match="calib"):
        make_train(tiny_config.replace(descriptor_split="calib"), small_data)
    empty = small_data.with_splits(calib=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="'calib' is empty"):
        make_train(tiny_config.replace(descriptor_split="calib"), empty)


def test_the_policy_reads_the_query_family(family_router, calib_data):
    router, queries = family_router, calib_data.split("test")[:64]
    emb, fam = calib_data.embeddings[queries], calib_data.family[queries]
    z = np.asarray(router.adapt(mr.Contexts.empty(router.config.max_contexts, calib_data.embed_dim)))
    params, desc = router.params["metarouter"], router.info.descriptors
    allowed = np.ones(len(router.model_names), bool)
    own = adaptation.route_scores(router.graphdef, params, emb, z, desc, allowed, jnp.asarray(fam))
    other = adaptation.route_scores(router.graphdef, params, emb, z, desc, allowed, jnp.asarray((fam + 1) % 4))
    unknown = adaptation.route_scores(router.graphdef, params, emb, z, desc, allowed, jnp.full(fam.shape, -1))
    assert not np.allclose(own, other) and not np.allclose(own, unknown)
    # route() takes names or ids; without families every query is of an unknown family
    names = np.asarray(calib_data.family_names)[fam]
    np.testing.assert_array_equal(router.route(z, emb, family=names), np.argmax(own, -1))
    np.testing.assert_array_equal(router.route(z, emb, family=fam), np.argmax(own, -1))
    np.testing.assert_array_equal(router.route(z, emb), np.argmax(unknown, -1))


def test_route_rejects_bad_families(family_router, calib_data):
    z, emb = np.zeros(family_router.net_config.latent_dim), calib_data.embeddings[:3]
    with pytest.raises(KeyError, match="unknown task family name"):
        family_router.route(z, emb, family=["qa", "poetry", "qa"])
    with pytest.raises(ValueError, match="one task family per query"):
        family_router.route(z, emb, family=[0, 1])
    with pytest.raises(ValueError, match="family ids must be"):
        family_router.route(z, emb, family=[0, 1, 9])


def test_a_router_without_the_input_ignores_families(trained_router, small_data):
    assert "in_family" not in trained_router.params["metarouter"]["policy"]
    z = np.ones(trained_router.net_config.latent_dim)
    emb = small_data.embeddings[:50]
    np.testing.assert_array_equal(trained_router.route(z, emb, family=np.zeros(50, int)),
                                  trained_router.route(z, emb))


def test_save_load_and_evaluate_keep_the_family_input(family_router, calib_data, tmp_path):
    family_router.save(tmp_path / "router")
    loaded = mr.MetaRouter.load(tmp_path / "router")
    assert loaded.net_config.family_quality and loaded.config.descriptor_split == "calib"
    queries = calib_data.split("test")[:40]
    z = np.random.default_rng(0).normal(size=(3, loaded.net_config.latent_dim))
    fam = calib_data.family[queries]
    np.testing.assert_array_equal(loaded.route(z, calib_data.embeddings[queries], family=fam),
                                  family_router.route(z, calib_data.embeddings[queries], family=fam))
    report = mr.evaluate(loaded, calib_data, n_users=8, seed=0, n_contexts=(0, 4))
    assert np.isfinite(report.results["uniform"]["metarouter"][4]["normalized_utility"])


def test_route_text_passes_one_family_or_one_per_text(family_router, calib_data):
    class Embedder:  # fixed embeddings of three test queries, whatever the texts
        def embed(self, texts):
            return calib_data.embeddings[calib_data.split("test")[: len(texts)]]

    z = np.random.default_rng(1).normal(size=family_router.net_config.latent_dim)
    emb = Embedder().embed("abc")
    names = np.asarray(family_router.model_names)
    for family, ids in (("code", [1, 1, 1]), (["qa", "math", "chat"], [0, 2, 3])):
        expected = names[family_router.route(z, emb, family=np.asarray(ids))].tolist()
        assert family_router.route_text(z, ["a", "b", "c"], embedder=Embedder(), family=family) == expected
