"""RoutingData validation, descriptors and the synthetic default's statistical character."""

import numpy as np
import pytest

import metarouter_jax as mr
from metarouter_jax.data import DataError, RoutingData
from metarouter_jax.splits import select_models


def make(q=6, k=3, d=4, splits=None, **over):
    rng = np.random.default_rng(0)
    args = dict(embeddings=rng.normal(size=(q, d)), quality=rng.integers(0, 2, (q, k)).astype(float),
                cost=rng.uniform(1e-4, 1e-2, (q, k)), family=np.zeros(q, int))
    args.update(over)
    return RoutingData.create(args["embeddings"], args["quality"], args["cost"], args["family"],
                              model_names=[f"m{i}" for i in range(args["quality"].shape[1])],
                              family_names=["f"], splits=splits)


def test_valid_data_builds():
    data = make()
    assert data.num_queries == 6 and data.num_models == 3 and data.observed.all()


@pytest.mark.parametrize("over, message", [
    (dict(embeddings=np.zeros((6,))), "embeddings must be"),
    (dict(quality=np.zeros((5, 3))), "quality must be"),
    (dict(cost=np.zeros((6, 2))), "cost must have the shape"),
    (dict(quality=np.full((6, 3), 1.5)), "quality must lie in"),
    (dict(cost=-np.ones((6, 3))), "negative cost"),
    (dict(family=np.full(6, 3)), "family ids"),
    (dict(embeddings=np.full((6, 4), np.nan)), "embeddings hold NaN"),
    (dict(quality=np.full((6, 3), np.nan)), "no observed model"),
])
def test_bad_input_is_named(over, message):
    with pytest.raises(DataError, match=message):
        make(**over)


def test_nan_is_masked_and_reported_not_zeroed():
    quality = np.ones((6, 3))
    quality[0, 1] = np.nan
    data = make(quality=quality)
    assert not data.observed[0, 1] and np.isnan(data.quality[0, 1])
    assert any("masked" in note for note in data.notes)
    from metarouter_jax.tasks import RoutingArrays
    arrays = RoutingArrays.from_data(data)
    assert not bool(arrays.observed[0, 1])


def test_unknown_model_and_split_names():
    data = make()
    with pytest.raises(KeyError, match="unknown model"):
        data.model_index(["m0", "gpt-9"])
    with pytest.raises(KeyError, match="unknown split"):
        data.split("nope")
    with pytest.raises(ValueError, match="empty"):
        data.pool_mask(np.zeros(3, bool))


def test_splits_from_masks_or_indices_only():
    mask = np.array([True, False, True, False, False, True])
    assert make(splits={"train": mask}).split("train").tolist() == [0, 2, 5]      # not indices 1, 0, 1, ...
    assert make().with_splits(valid=mask).split("valid").tolist() == [0, 2, 5]
    with pytest.raises(DataError, match=r"split 'train': a boolean mask must have shape \(6,\)"):
        make(splits={"train": mask[:4]})
    with pytest.raises(DataError, match="split 'train' must hold integer query indices or a boolean mask"):
        make(splits={"train": [0.7, 1.9]})                                        # not truncated to 0, 1
    with pytest.raises(DataError, match="split 'valid' must hold integer"):
        make().with_splits(valid=np.array([1.0]))
    data = make().with_splits(train=[0, 1], valid=[])                               # an empty split is data
    assert data.nonempty_split("train").tolist() == [0, 1]
    with pytest.raises(DataError, match="split 'valid' is empty"):                  # ... that training refuses
        data.nonempty_split("valid")
    with pytest.raises(KeyError, match="unknown split"):
        data.nonempty_split("calib")


def test_holdout_from_an_empty_split_names_it():
    data = make().with_splits(e=[])
    with pytest.raises(DataError, match="split 'e' is empty"):
        data.holdout("e", 0.5, "v")
    with pytest.raises(KeyError, match="unknown split 'nope'"):
        data.holdout("nope", 0.5, "v")


def test_resplit_validation_moves_only_train_and_valid(small_data):
    more = small_data.resplit_validation(0.4, seed=3)
    pool = np.union1d(small_data.split("train"), small_data.split("valid"))
    np.testing.assert_array_equal(np.union1d(more.split("train"), more.split("valid")), pool)
    assert not set(more.split("train")) & set(more.split("valid"))
    assert abs(more.split("valid").size - 0.4 * pool.size) <= small_data.num_families    # stratified rounding
    for name in set(small_data.splits) - {"train", "valid"}:
        np.testing.assert_array_equal(more.split(name), small_data.split(name))
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        small_data.resplit_validation(1.0)


def test_descriptors_shape_and_centring(small_data):
    desc = small_data.descriptors("train")
    assert desc.shape == (small_data.num_models, 1 + small_data.num_families)
    np.testing.assert_allclose(desc.mean(0), 0.0, atol=1e-5)


def test_descriptors_centred_on_a_reference_keep_a_changed_pool_in_its_units(small_data):
    """Centred on the full data's reference, the models left after removing one keep their
    descriptors; centred on their own mean, every one of them moves."""
    full = small_data.descriptors("train")
    centre = small_data.descriptor_centre("train")
    np.testing.assert_allclose(small_data.descriptors("train", centre=centre), full, atol=1e-6)
    fewer = select_models(small_data, small_data.model_names[1:])
    np.testing.assert_allclose(fewer.descriptors("train", centre=centre), full[1:], atol=1e-6)
    assert np.abs(fewer.descriptors("train") - full[1:]).min(0).max() > 0.05  # own centring shifts a whole column
    with pytest.raises(ValueError, match="descriptor centre needs 5 values"):
        small_data.descriptors("train", centre=centre[:-1])


def test_synthetic_has_the_character_of_real_logs():
    data = mr.synthetic_data(seed=0)
    assert set(np.unique(data.quality)) == {0.0, 1.0}
    lo, hi = np.percentile(data.cost, [1, 99])
    assert np.log10(hi / lo) >= 3.0                    # costs over three orders of magnitude
    best_per_family = {int(np.argmax(data.quality[data.family == f].mean(0)[:-1])) for f in range(data.num_families)}
    assert len(best_per_family) >= 2                   # below the frontier model, no one model is best everywhere
    assert data.pareto_frontier("train").size >= 3
    again = mr.synthetic_data(seed=0)
    np.testing.assert_array_equal(data.quality, again.quality)   # seeded


def test_frontier_range_makes_every_frontier_model_best_somewhere():
    data = mr.synthetic_data(seed=0)
    from metarouter_jax.profiles import frontier_log10_lam_range

    lo, hi = frontier_log10_lam_range(data)
    s = data.model_summary("train")
    frontier = set(data.pareto_frontier("train").tolist())
    winners = {int(np.argmax(s["quality"] - 10 ** l * s["cost"])) for l in np.linspace(lo, hi, 400)}
    assert frontier <= winners


def test_a_model_of_the_same_mean_cost_but_worse_is_off_the_frontier():
    """Of two models of equal mean cost only the better is on the frontier, whatever their order
    (the worse one, listed first, stayed on it: a zero cost gap, an infinite switch point, and
    frontier_log10_lam_range returned (x, inf), from which training drew its users)."""
    from metarouter_jax.profiles import frontier_log10_lam_range

    quality = np.tile([0.3, 0.5, 0.9], (40, 1)).astype(np.float32)
    cost = np.tile([1e-3, 1e-3, 1e-2], (40, 1)).astype(np.float32)
    data = mr.RoutingData.create(np.ones((40, 2)), quality, cost, np.zeros(40, np.int32), model_names=["a", "b", "c"],
                                 family_names=["f"], splits={"train": np.arange(40)})
    assert data.pareto_frontier("train").tolist() == [1, 2]
    lo, hi = frontier_log10_lam_range(data)
    assert np.isfinite([lo, hi]).all() and lo < np.log10(0.4 / 9e-3) < hi     # b -> c switches at 44
