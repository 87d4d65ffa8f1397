"""Cost-quality curves over the preference bands and RouterBench's AIQ, on hand-made points."""

import math
import re

import numpy as np
import pytest

from metarouter_jax.curves import (aiq, aiq_json, aiq_table, common_cost_range, cost_quality_points, format_aiq,
                                   free_points, nondecreasing_hull, plot_cost_quality, report_aiq)
from metarouter_jax.evaluation import EvalReport


def test_hull_drops_points_under_it_and_the_decreasing_tail():
    # (2, 0.3) lies under the chord (1, 0.2)-(3, 0.6); (4, 0.5) and (5, 0.3) cost more for less.
    cost, quality = nondecreasing_hull([4, 2, 1, 5, 3], [0.5, 0.3, 0.2, 0.3, 0.6])      # unsorted input
    np.testing.assert_array_equal(cost, [1, 3])
    np.testing.assert_array_equal(quality, [0.2, 0.6])
    # A concave run stays whole; a point on a chord and a worse one at the same cost go.
    cost, quality = nondecreasing_hull([1, 2, 3, 4, 2, 1.5], [0.2, 0.5, 0.6, 0.6, 0.4, 0.35])
    np.testing.assert_array_equal(cost, [1, 2, 3])      # (1.5, 0.35) is on the chord; (4, 0.6) adds nothing
    np.testing.assert_array_equal(quality, [0.2, 0.5, 0.6])
    cost, quality = nondecreasing_hull([0.01], [0.7])
    np.testing.assert_array_equal(cost, [0.01])
    np.testing.assert_array_equal(quality, [0.7])
    # A cheapest point that is also the best is the whole hull.
    np.testing.assert_array_equal(nondecreasing_hull([1, 2, 3], [0.9, 0.5, 0.8])[0], [1])


def test_aiq_of_hand_computed_curves():
    assert aiq([1, 2, 3], [0.7, 0.7, 0.7], (1, 3)) == pytest.approx(0.7)          # flat: its quality
    assert aiq([0, 0.5, 1], [0, 0.5, 1], (0, 1)) == pytest.approx(0.5)             # a ramp: its mean
    assert aiq([0, 1], [0, 1], (0, 2)) == pytest.approx((0.5 + 1.0) / 2)           # flat right of the dearest
    assert aiq([1], [0.8], (0, 2)) == pytest.approx(0.8 / 2)                       # 0 left of the cheapest
    assert aiq([0, 2], [0, 1], (1, 3)) == pytest.approx((0.75 + 1.0) / 2)          # range across the span
    assert aiq([5, 6], [0.5, 0.9], (1, 3)) == 0.0                                  # all dearer than the range
    assert aiq([1, 2, 3, 4], [0.2, 0.3, 0.6, 0.5], (1, 3)) == pytest.approx(0.4)   # the hull's, not the points'


def test_aiq_over_log_cost():
    # One point at 1 USD, range 0.1-10: one decade at 0, one at 0.5.
    assert aiq([1], [0.5], (0.1, 10), log_cost=True) == pytest.approx(0.25)
    assert aiq([1], [0.5], (0.1, 10)) == pytest.approx(0.5 * 9 / 9.9)
    # A ramp linear in cost from (1, 0) to (10, 0.9): q = 0.1 (c - 1), and per decade
    # integral of 0.1 (c - 1) dlog10(c) from 1 to 10 = 0.9 / ln(10) - 0.1.
    assert aiq([1, 10], [0, 0.9], (1, 10), log_cost=True) == pytest.approx(0.9 / math.log(10) - 0.1)
    # The closed form against a fine Riemann sum of the curve over log10(cost).
    cost, quality = [0.001, 0.004, 0.02, 0.3], [0.3, 0.5, 0.55, 0.8]
    grid = np.geomspace(0.0005, 1.0, 200_001)
    curve = np.where(grid < cost[0], 0.0, np.interp(grid, *nondecreasing_hull(cost, quality)))
    log_grid = np.log10(grid)
    riemann = np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(log_grid)) / np.log10(1.0 / 0.0005)   # numpy 1.26: no trapezoid
    assert aiq(cost, quality, (0.0005, 1.0), log_cost=True) == pytest.approx(riemann, abs=1e-4)


@pytest.mark.parametrize("cost, quality, cost_range, message", [
    ([1, np.nan], [0.1, 0.2], (0, 1), "cost holds NaN or inf"),
    ([1, 2], [0.1, np.inf], (0, 1), "quality holds NaN or inf"),
    ([1, 2, 3], [0.1, 0.2], (0, 1), "same length, got 3 and 2"),
    ([], [], (0, 1), "at least 1 point"),
    ([1, 2], [0.1, 0.2], (1, 1), "cost_range must be increasing"),
    ([1, 2], [0.1, 0.2], (2, 1), "cost_range must be increasing"),
    ([1, 2], [0.1, 0.2], (0, np.inf), "cost_range holds NaN or inf"),
    ([1, 2], [0.1, 0.2], (0, 1, 2), "two numbers"),
    ([-1, 2], [0.1, 0.2], (0, 1), "cost .USD per query. must be >= 0"),
    (["a", 2], [0.1, 0.2], (0, 1), "cost and quality must be real numbers"),
    ([1 + 1j, 2], [0.1, 0.2], (0, 1), "cost and quality must be real numbers"),
])
def test_aiq_refuses_bad_input(cost, quality, cost_range, message):
    with pytest.raises(ValueError, match=message):
        aiq(cost, quality, cost_range)


def test_log_cost_needs_positive_costs():
    with pytest.raises(ValueError, match="cost_range must be > 0"):
        aiq([1, 2], [0.1, 0.2], (0, 2), log_cost=True)
    with pytest.raises(ValueError, match="costs must be > 0"):
        aiq([0, 2], [0.1, 0.2], (1, 2), log_cost=True)
    with pytest.raises(TypeError, match="log_cost must be True .* or False"):
        aiq([1, 2], [0.1, 0.2], (1, 2), log_cost="no")     # not read as truthy


def metrics(cost, quality):
    return {"normalized_utility": 0.0, "preference_recovery": 0.0, "quality": quality, "cost": cost}


def banded_report(adaptive: dict, flat: dict, ns=(0, 4), strategy="uniform") -> EvalReport:
    """An EvalReport by band, by hand: adaptive[method][n] and flat[method] are lists of one
    (cost, quality) per band."""
    bands = len(next(iter(flat.values())))
    labels = [f"{-3 + b:.2f}-{-2 + b:.2f}" for b in range(bands)]
    by_band = {}
    for b, label in enumerate(labels):
        table = {m: {n: metrics(*by_n[n][b]) for n in ns} for m, by_n in adaptive.items()}
        table.update({m: {n: metrics(*points[b]) for n in ns} for m, points in flat.items()})
        by_band[label] = EvalReport({strategy: table}, {"log10_lam_band": [-3 + b, -2 + b]})
    overall = EvalReport({strategy: {}}, {"bands": list(range(-3, -2 + bands)), "n_contexts": list(ns)})
    return EvalReport(overall.results, overall.settings, by_band=by_band)


@pytest.fixture
def report():
    # Bands of increasing lam. The metarouter at n=4 dominates bt_mle (cheaper for at least as much
    # quality in every band); at n=0 it is the agnostic router, one operating point.
    return banded_report(
        adaptive={"metarouter": {0: [(0.002, 0.5)] * 3, 4: [(0.001, 0.5), (0.004, 0.7), (0.02, 0.8)]},
                  "bt_mle": {0: [(0.002, 0.5)] * 3, 4: [(0.002, 0.45), (0.008, 0.65), (0.04, 0.8)]}},
        flat={"random": [(0.01, 0.55)] * 3, "known": [(0.001, 0.55), (0.003, 0.72), (0.02, 0.85)]})


def test_points_and_aiq_of_a_banded_report(report):
    points = cost_quality_points(report, "uniform", 4)
    assert list(points) == ["metarouter", "bt_mle", "random", "known"]
    np.testing.assert_array_equal(points["metarouter"][0], [0.001, 0.004, 0.02])
    np.testing.assert_array_equal(points["bt_mle"][1], [0.45, 0.65, 0.8])
    np.testing.assert_array_equal(points["random"][0], [0.01] * 3)
    assert common_cost_range(points) == (0.001, 0.04)
    for log_cost in (False, True):
        scores = report_aiq(report, "uniform", 4, log_cost=log_cost)
        for method, (cost, quality) in points.items():       # one common range for every method
            assert scores[method] == pytest.approx(aiq(cost, quality, (0.001, 0.04), log_cost=log_cost))
        assert scores["metarouter"] > scores["bt_mle"]       # dominating points: the larger area
        assert scores["known"] > scores["metarouter"]
    # Over linear cost the dear end dominates: random's flat 0.55 from 0.01 USD on scores high.
    linear, logged = report_aiq(report, "uniform", 4), report_aiq(report, "uniform", 4, log_cost=True)
    assert linear["random"] == pytest.approx(0.55 * 0.03 / 0.039)
    assert logged["random"] == pytest.approx(0.55 * math.log10(4) / math.log10(40))
    # An explicit range overrides the common one.
    assert report_aiq(report, "uniform", 4, cost_range=(0.02, 0.04))["metarouter"] == pytest.approx(0.8)


def test_one_cost_for_every_point_gives_the_quality_there():
    # A one-model pool: every method answers with the same model, so the common range is one cost.
    one = banded_report(adaptive={"metarouter": {0: [(0.01, 0.6)] * 2, 4: [(0.01, 0.6)] * 2}},
                        flat={"random": [(0.01, 0.6)] * 2})
    assert report_aiq(one, "uniform", 4) == {"metarouter": 0.6, "random": 0.6}
    assert report_aiq(one, "uniform", 4, log_cost=True) == {"metarouter": 0.6, "random": 0.6}


def test_a_free_model_has_no_aiq_per_decade(tmp_path):
    """A band routed to a model of cost 0 (a local model, say): the AIQ per USD stands, per decade
    of cost there is none (NaN, said once), and the plot draws the cost axis linear."""
    free = banded_report(adaptive={"metarouter": {0: [(0.0, 0.4), (0.01, 0.6)], 4: [(0.0, 0.5), (0.01, 0.7)]}},
                         flat={"random": [(0.005, 0.5)] * 2})
    assert free_points(free, "uniform", 4) == ["metarouter"]
    table = aiq_table(free)
    assert table["uniform"][4]["metarouter"]["linear"] == pytest.approx(aiq([0.0, 0.01], [0.5, 0.7], (0.0, 0.01)))
    assert all(math.isnan(v["log_cost"]) for by_n in table["uniform"].values() for v in by_n.values())
    assert "no log-cost AIQ: metarouter routed a band to a model of cost 0" in format_aiq(free, table)
    with pytest.raises(ValueError, match=r"no AIQ per decade of cost at strategy 'uniform', n=4: \['metarouter'\]"):
        report_aiq(free, "uniform", 4, log_cost=True)
    pytest.importorskip("matplotlib")
    assert plot_cost_quality(free, "uniform", 4, tmp_path / "free.png").exists()


def test_aiq_tables_are_checked_against_their_report(report):
    table = aiq_table(report)
    assert format_aiq(report, table) == format_aiq(report)
    for bad, message in (({"uniform": {}}, "holds no n for strategy 'uniform'"),
                         ({"active": table["uniform"]}, "strategy 'active' is not the report's"),
                         ({"uniform": {4: {"known": table["uniform"][4]["known"]}}}, "methods at 'uniform', n=4")):
        for write in (format_aiq, aiq_json):
            with pytest.raises(ValueError, match=message):
                write(report, bad)


def test_report_errors(report):
    with pytest.raises(ValueError, match="not evaluated by band"):
        cost_quality_points(EvalReport({"uniform": {}}, {}), "uniform", 0)
    with pytest.raises(ValueError, match="unknown strategy 'active'.*evaluated: \\['uniform'\\]"):
        report_aiq(report, "active", 4)
    with pytest.raises(ValueError, match="n=2 contexts was not evaluated; evaluated: \\[0, 4\\]"):
        report_aiq(report, "uniform", 2)
    with pytest.raises(ValueError, match="cost_range must be increasing"):
        report_aiq(report, "uniform", 4, cost_range=(0.04, 0.001))
    broken = banded_report(adaptive={"metarouter": {0: [(0.01, 0.6)] * 2, 4: [(np.nan, 0.6)] * 2}},
                           flat={"random": [(0.01, 0.6)] * 2})
    with pytest.raises(ValueError, match="method 'metarouter', strategy 'uniform', n=4: cost holds NaN"):
        report_aiq(broken, "uniform", 4)


def test_plot_cost_quality(report, tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_cost_quality(report, "uniform", 4, tmp_path / "curves")
    assert path == tmp_path / "curves.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_cost_quality(report, "uniform", 4, tmp_path / "two.png", methods=["known", "metarouter"]).exists()
    with pytest.raises(ValueError, match="unknown methods \\['nope'\\]"):
        plot_cost_quality(report, "uniform", 4, tmp_path / "x.png", methods=["nope"])
    assert plot_cost_quality(report, "uniform", 4, tmp_path / "new" / "one", methods="known") == \
        tmp_path / "new" / "one.png"                      # one name, not its letters; the folder made
    with pytest.raises(ValueError, match="no methods to plot"):
        plot_cost_quality(report, "uniform", 4, tmp_path / "x.png", methods=[])
    for bad, message in ((tmp_path / "x.pdf", "plots are written as PNG"), (tmp_path, "is a directory")):
        with pytest.raises(ValueError, match=message):
            plot_cost_quality(report, "uniform", 4, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "new", "two.png"]   # nothing half-written


def test_eval_command_prints_and_writes_the_aiq(trained_router, small_data, tmp_path, capsys, monkeypatch):
    import json

    from metarouter_jax import cli

    pytest.importorskip("matplotlib")
    trained_router.save(tmp_path / "router")           # no config.json beside it: the data is --data's
    monkeypatch.setattr(cli, "load_data", lambda name, seed=0: small_data)
    assert cli.main(["eval", str(tmp_path / "router"), "--users", "2", "--curves", str(tmp_path / "c.png")]) == 2
    assert "--curves needs --bands B" in capsys.readouterr().err
    for bad, message in (("c.v2", "plots are written as PNG"), ("eval.json", "plots are written as PNG")):
        assert cli.main(["eval", str(tmp_path / "router"), "--users", "2", "--bands", "2", "--curves",
                         str(tmp_path / bad), "--json", str(tmp_path / "eval.json")]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "evaluated in" not in captured.out    # refused before evaluating
    assert cli.main(["eval", str(tmp_path / "router"), "--users", "2", "--n-contexts", "0", "2", "--strategies",
                     "uniform", "--bands", "2", "--curves", str(tmp_path / "figs" / "curves.png"),
                     "--json", str(tmp_path / "eval.json")]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("AIQ uniform, n=2 "))
    assert "linear / log10 cost" in line
    for method in ("metarouter", "bt_posterior", "known", "random"):
        assert re.search(f"{method} [01]\\.\\d{{3}} / [01]\\.\\d{{3}}", line), line
    assert f"wrote {tmp_path / 'figs' / 'curves.png'}" in printed                   # its folder made
    assert (tmp_path / "figs" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tmp_path / "eval.json").read_text())
    assert len(result["by_band"]) == 2 and set(result["aiq"]["uniform"]) == {"0", "2"}
    assert set(result["aiq"]["uniform"]["2"]) == set(result["all"]["uniform"])   # every method
    for n in ("0", "2"):
        lo, hi = result["aiq_cost_range"]["uniform"][n]
        costs = [by_n[n]["cost"] for band in result["by_band"].values() for by_n in band["uniform"].values()]
        assert (lo, hi) == (min(costs), max(costs))
        for scores in result["aiq"]["uniform"][n].values():
            assert set(scores) == {"linear", "log_cost"} and all(0 <= v <= 1 for v in scores.values())
