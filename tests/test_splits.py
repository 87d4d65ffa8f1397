"""Split protocols, model pools, model selection and the dataset inspector."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from metarouter_jax.data import RoutingData
from metarouter_jax.inspect_data import dataset_info, format_info, plot_frontier
from metarouter_jax.splits import (PoolSplit, in_distribution, model_pools, ood_by_family, select_models,
                                   stratified_split)
from metarouter_jax.synthetic import synthetic_data


@pytest.fixture(scope="module")
def syn() -> RoutingData:
    return synthetic_data(seed=0, num_queries=600)


def _tiny(splits=None) -> RoutingData:
    """6 queries, 3 models, 3 families; query 5 has only model 'c' observed."""
    quality = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0], [np.nan, np.nan, 1]], np.float32)
    cost = np.tile(np.array([1e-4, 1e-3, 1e-2], np.float32), (6, 1))
    return RoutingData.create(np.eye(6, 4, dtype=np.float32) + 0.1, quality, cost, np.array([0, 0, 1, 1, 2, 2]),
                              model_names=["a", "b", "c"], family_names=["qa", "code", "math"], splits=splits)


def _assert_partition(parts, pool):
    joined = np.concatenate(list(parts.values()))
    assert joined.size == np.unique(joined).size, "splits overlap"
    assert np.array_equal(np.sort(joined), np.sort(pool))


# ---------------------------------------------------------------- stratified_split
def test_stratified_split_partition_and_proportions():
    family = np.repeat(np.arange(5), [1, 2, 7, 50, 333])
    fractions = {"train": 0.6, "valid": 0.1, "test": 0.3}
    parts = stratified_split(family, fractions, seed=1)
    _assert_partition(parts, np.arange(family.size))
    for f in range(5):
        n = (family == f).sum()
        for name, frac in fractions.items():
            assert abs((family[parts[name]] == f).sum() - frac * n) < 1.0 + 1e-9
    again = stratified_split(family, fractions, seed=1)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = stratified_split(family, fractions, seed=2)
    assert not np.array_equal(parts["test"], other["test"])


def test_stratified_split_subset_and_validation():
    family = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    parts = stratified_split(family, {"a": 0.5, "b": 0.5, "c": 0.0}, seed=0, indices=[0, 1, 3, 4, 5, 6])
    assert set(parts) == {"a", "b"}
    _assert_partition(parts, [0, 1, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(family, {"a": 0.5, "b": 0.4})
    with pytest.raises(ValueError, match=">= 0"):
        stratified_split(family, {"a": 1.5, "b": -0.5})
    with pytest.raises(ValueError, match="finite numbers >= 0"):    # a NaN part was dropped, the rest taken
        stratified_split(family, {"train": float("nan"), "test": 1.0})


def test_stratified_split_tiny_families_expected_sizes():
    # a family of 2 at 0.6/0.1/0.3: over many seeds valid gets a member about 20% of the time
    family = np.zeros(2, int)
    hits = sum(stratified_split(family, {"train": 0.6, "valid": 0.1, "test": 0.3}, seed=s)["valid"].size
               for s in range(400))
    assert 40 < hits < 120


# ---------------------------------------------------------------- in_distribution
def test_in_distribution(syn):
    d = in_distribution(syn, seed=3)
    assert set(d.splits) == {"train", "valid", "test"}
    _assert_partition(d.splits, np.arange(syn.num_queries))
    assert len(d.split("test")) == pytest.approx(0.3 * syn.num_queries, abs=syn.num_families)
    for f in range(syn.num_families):
        n = (syn.family == f).sum()
        assert abs((syn.family[d.split("train")] == f).sum() - 0.6 * n) <= 1
    assert syn.splits is not d.splits and set(syn.splits) == {"train", "valid", "test"}  # input untouched
    two = in_distribution(syn, {"fit": 0.5, "eval": 0.5}, seed=0)
    assert set(two.splits) == {"fit", "eval"}


def test_in_distribution_keeps_excluded_rows_out():
    d = _tiny(splits={"train": [0, 1, 2], "test": [3, 4]})  # query 5 in no split
    out = in_distribution(d, {"train": 0.5, "test": 0.5})
    _assert_partition(out.splits, [0, 1, 2, 3, 4])


# ---------------------------------------------------------------- ood_by_family
def test_ood_by_family(syn):
    d = ood_by_family(syn, ["qa", "code"], ["math"], valid_fraction=0.2, seed=0)
    fam = lambda s: {syn.family_names[f] for f in syn.family[d.split(s)]}  # noqa: E731
    assert fam("train") == {"qa", "code"} and fam("valid") == {"qa", "code"} and fam("test") == {"math"}
    _assert_partition({k: d.split(k) for k in ("train", "valid")},
                      np.nonzero(np.isin(syn.family, [syn.family_names.index(f) for f in ("qa", "code")]))[0])
    assert "chat" not in {syn.family_names[f] for s in d.splits.values() for f in syn.family[s]}
    no_valid = ood_by_family(syn, "qa", ["chat", "math"], valid_fraction=0)
    assert set(no_valid.splits) == {"train", "test"}


def test_ood_by_family_errors(syn):
    with pytest.raises(KeyError, match=r"\['poetry'\].*known families: \['qa', 'code', 'math', 'chat'\]"):
        ood_by_family(syn, ["qa"], ["poetry"])
    with pytest.raises(ValueError, match=r"both train and test: \['code'\]"):
        ood_by_family(syn, ["qa", "code"], ["code"])
    with pytest.raises(ValueError, match="empty"):
        ood_by_family(syn, [], ["code"])


# ---------------------------------------------------------------- model pools
def test_model_pools(syn):
    pools = model_pools(syn, ["tiny-1b", "coder-7b", "generalist-70b"], ["tiny-1b", "mathstral-13b", "frontier-xl"])
    assert isinstance(pools, PoolSplit)
    assert pools.train_mask.tolist() == [True, True, False, True, False]
    assert pools.test_mask.tolist() == [True, False, True, False, True]
    assert pools.unseen == ("mathstral-13b", "frontier-xl")
    train_mask, test_mask, unseen = model_pools(syn, [0, 1], np.array([True, True, False, False, False]))
    assert unseen == () and test_mask.sum() == 2
    with pytest.raises(KeyError, match=r"\['gpt-9'\].*known models"):
        model_pools(syn, ["tiny-1b"], ["gpt-9"])
    with pytest.raises(ValueError, match="test_models: the pool is empty"):
        model_pools(syn, ["tiny-1b"], [])
    with pytest.raises(ValueError, match="empty"):
        model_pools(syn, ["tiny-1b"], np.zeros(5, bool))


# ---------------------------------------------------------------- select_models
def test_select_models():
    d = _tiny(splits={"train": [0, 1, 2, 5], "test": [3, 4]})
    s = select_models(d, ["c", "a"])
    assert s.model_names == ("c", "a") and s.quality[:, 0].tolist() == d.quality[:, 2].tolist()
    assert 5 in s.split("train")  # 'c' is observed on query 5
    ab = select_models(d, ["a", "b"])
    assert 5 not in ab.split("train") and any("no observed answer" in n for n in ab.notes)
    assert sum("are unknown (NaN)" in n for n in ab.notes) == 1
    with pytest.raises(KeyError, match=r"\['z'\].*known models: \['a', 'b', 'c'\]"):
        select_models(d, ["a", "z"])
    with pytest.raises(ValueError, match="at least 2"):
        select_models(d, ["a"])
    with pytest.raises(ValueError, match="repeated"):
        select_models(d, ["a", "a"])


# ---------------------------------------------------------------- inspect_data
def test_dataset_info_and_format(syn):
    d = _tiny(splits={"train": [0, 1, 2, 5], "test": [3]})
    info = dataset_info(d)
    json.dumps(info)  # plain Python values only
    assert info["num_queries"] == 6 and info["unassigned_queries"] == 1
    assert info["splits"]["train"]["queries"] == 4
    assert info["splits"]["train"]["per_family"] == {"qa": 2, "code": 1, "math": 1}
    assert info["splits"]["test"]["per_family"] == {"code": 1}
    train_models = info["splits"]["train"]["models"]
    assert train_models["a"]["quality"] == pytest.approx(2 / 3) and train_models["a"]["observed"] == 3
    assert train_models["c"]["cost"] == pytest.approx(1e-2)
    assert info["splits"]["train"]["pareto_frontier"] == ["a", "c"]
    assert info["splits"]["train"]["oracle_quality"] == pytest.approx(1.0)
    assert info["missing_cells"] == {"quality": 2, "cost": 0, "per_model": {"a": 1, "b": 1, "c": 0}}
    # Trade-off pairs (better and dearer than another answer on the query): c over b on query 0,
    # c over a and c over b on query 1; a user's answer flips at log10(dq / dc).
    tradeoffs = info["splits"]["train"]["tradeoffs"]
    assert tradeoffs["pairs"] == 3
    assert tradeoffs["switch_quantiles"]["1%"] == pytest.approx(np.log10(1 / (1e-2 - 1e-4)), abs=1e-3)
    assert tradeoffs["switch_quantiles"]["50%"] == pytest.approx(np.log10(1 / (1e-2 - 1e-3)), abs=1e-3)
    assert info["splits"]["test"]["tradeoffs"]["pairs"] == 2   # b over a, c over a on query 3
    text = format_info(info)
    for word in ("qa", "code", "math", "train", "test", "mean quality", "Notes:", "3 trade-off pairs"):
        assert word in text
    none = dataset_info(_tiny(splits={"train": [2, 5]}))   # equal quality, or one model: nothing to trade
    assert none["splits"]["train"]["tradeoffs"] == {"pairs": 0, "switch_quantiles": None}
    assert "no trade-off pairs" in format_info(none)
    big = format_info(dataset_info(syn))
    assert all(m in big for m in syn.model_names)


def test_plot_frontier(syn, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
    out = plot_frontier(syn, tmp_path / "frontier.png", split="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'metarouter_jax\[plot\]'"):
        plot_frontier(syn, tmp_path / "again.png")
