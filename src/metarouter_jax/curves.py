"""Cost-quality curves over the preference range and their area, RouterBench's AIQ.

A report evaluated by log10(lam) band (`evaluate(..., bands=B)`) gives each method one
operating point per band: the mean cost (USD per query) and mean quality of its routed answers
for users of that band. Users to whom a dollar is worth less quality (smaller lam) buy dearer models, so over
the bands the points trace the method's cost-quality curve.

RouterBench (Hu et al. 2024) scores such a curve by AIQ, the average improvement in quality.
The curve is the non-decreasing convex hull of the points: their upper concave hull (any point
on a segment is reached by sending each query to one of the two operating points at its ends
at random: cost and quality mix linearly) up to
its best quality (spending more never has to lose quality). AIQ is the hull's mean quality
over a cost range [c_min, c_max] common to the methods compared:

    AIQ = 1 / (c_max - c_min) * integral from c_min to c_max of hull(c) dc

Outside the hull's own cost span [c_0, c_last] (its cheapest and dearest points):
  - right of c_last the curve stays at the quality of c_last: a larger budget may be left unspent;
  - left of c_0 it is 0: no operating point costs that little.
With `log_cost` the same curve is averaged over log10(cost) instead, each decade of cost weighing
alike (costs then must be > 0): costs of LLM pools span orders of magnitude, and on a linear
axis the dearest decade outweighs all the others. Between vertices the curve stays linear in
cost (what mixing reaches), so on the log axis it bows; it is not re-interpolated in log10(cost).

Pure numpy; `plot_cost_quality` needs matplotlib (`pip install 'metarouter_jax[plot]'`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metarouter_jax.evaluation import FLAT
from metarouter_jax.figures import new_figure, png_path, save_png

STEPS = 16  # drawn points per line between two operating points (plot_cost_quality)


def _points(cost, quality) -> tuple[np.ndarray, np.ndarray]:
    """cost, quality as float arrays [P], checked: 1-D, equally long, P >= 1, finite, cost >= 0."""
    try:
        cost, quality = np.asarray(cost, dtype=float), np.asarray(quality, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cost and quality must be real numbers: {err}") from None
    if cost.ndim != 1 or quality.ndim != 1:
        raise ValueError(f"cost and quality must be 1-D arrays of points, got shapes {cost.shape} and {quality.shape}")
    if cost.shape != quality.shape:
        raise ValueError(f"cost and quality must have the same length, got {cost.size} and {quality.size}")
    if cost.size < 1:
        raise ValueError("a cost-quality curve needs at least 1 point, got 0")
    for name, x in (("cost", cost), ("quality", quality)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} holds NaN or inf: {x.tolist()}")
    if np.any(cost < 0):
        raise ValueError(f"cost (USD per query) must be >= 0, got {cost.tolist()}")
    return cost, quality


def _check_log_cost(log_cost) -> bool:
    if not isinstance(log_cost, (bool, np.bool_)):
        raise TypeError(f"log_cost must be True (per decade of cost) or False (per USD), got {log_cost!r}")
    return bool(log_cost)


def nondecreasing_hull(cost, quality) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing convex hull of points (cost [P] USD, quality [P]).

    Returns (hull_cost [H], hull_quality [H]), sorted by increasing cost: the vertices of the upper
    concave hull from the cheapest point up to the first point of highest quality. Points under
    the hull, on it between two vertices, or dearer than the best one are dropped; of points of
    equal cost only the best counts. Quality then strictly increases along the hull.
    """
    cost, quality = _points(cost, quality)
    order = np.lexsort((-quality, cost))             # by cost; at equal cost the best first
    hull: list[int] = []
    for i in order:
        if hull and cost[i] == cost[hull[-1]]:
            continue                                 # a worse point at the same cost
        # Pop the last vertex while it lies on or under the chord from the one before to i.
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (cost[b] - cost[a]) * (quality[i] - quality[a]) - (quality[b] - quality[a]) * (cost[i] - cost[a])
            if cross < 0:
                break
            hull.pop()
        hull.append(i)
    hull_cost, hull_quality = cost[hull], quality[hull]
    best = int(np.argmax(hull_quality))              # the first at the highest quality: the rest descends
    return hull_cost[:best + 1], hull_quality[:best + 1]


def _check_range(cost_range) -> tuple[float, float]:
    """(c_min, c_max) as floats, checked: two finite numbers, c_min < c_max."""
    bounds = np.asarray(cost_range, dtype=float)
    if bounds.shape != (2,):
        raise ValueError(f"cost_range must be two numbers (c_min, c_max), got {cost_range!r}")
    if not np.all(np.isfinite(bounds)):
        raise ValueError(f"cost_range holds NaN or inf: {cost_range!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo < hi:
        raise ValueError(f"cost_range must be increasing (c_min < c_max), got {cost_range!r}")
    return lo, hi


def _check_positive(cost: np.ndarray, what: str) -> None:
    if np.any(cost <= 0):
        raise ValueError(f"log_cost averages over log10(cost): {what} must be > 0, got {np.asarray(cost).tolist()}")


def _measure(u: float, v: float, log_cost: bool) -> float:
    """Length of the cost interval [u, v] on the axis averaged over: USD or decades."""
    return float(np.log10(v / u)) if log_cost else v - u


def _curve_mean(hull_cost: np.ndarray, hull_quality: np.ndarray, lo: float, hi: float, log_cost: bool) -> float:
    """Mean over costs [lo, hi] (USD; per decade with `log_cost`) of the curve through the hull's
    vertices: linear in cost between them (mixing two operating points mixes their cost and
    quality linearly), hull_quality[-1] right of the dearest vertex, 0 left of the cheapest.
    With lo == hi, the curve's value at that cost."""
    c, q = hull_cost, hull_quality
    if lo == hi:
        return 0.0 if lo < c[0] else float(np.interp(lo, c, q))
    area = 0.0
    a, b = max(lo, c[0]), min(hi, c[-1])
    if b > a:                                        # the hull's own span, segment by segment
        knots = np.concatenate([[a], c[(c > a) & (c < b)], [b]])
        values = np.interp(knots, c, q)
        for u, v, qu, qv in zip(knots[:-1], knots[1:], values[:-1], values[1:]):
            if log_cost:                             # integral of (alpha + beta c) dc / (c ln 10)
                beta = (qv - qu) / (v - u)
                area += ((qu - beta * u) * np.log(v / u) + beta * (v - u)) / np.log(10.0)
            else:
                area += (v - u) * (qu + qv) / 2
    right = max(lo, c[-1])
    if hi > right:                                   # beyond the dearest point: flat
        area += float(q[-1]) * _measure(right, hi, log_cost)
    return float(area) / _measure(lo, hi, log_cost)


def aiq(cost, quality, cost_range, log_cost: bool = False) -> float:
    """RouterBench's AIQ of one method's operating points (cost [P] USD, quality [P]).

    The mean of the non-decreasing hull's quality over `cost_range` (c_min, c_max), c_min < c_max:
    linear in cost between the hull's vertices, at the dearest vertex's quality right of it, 0
    left of the cheapest. `log_cost` averages the same curve per decade of cost (over log10(cost);
    costs and range > 0) instead of per USD. Give the methods compared the same `cost_range`.
    """
    lo, hi = _check_range(cost_range)
    hull_cost, hull_quality = nondecreasing_hull(cost, quality)
    if _check_log_cost(log_cost):
        _check_positive(hull_cost, "costs")
        _check_positive(np.array([lo, hi]), "cost_range")
    return _curve_mean(hull_cost, hull_quality, lo, hi, log_cost)


def cost_quality_points(report, strategy: str, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{method: (cost [B] USD, quality [B])} of a report evaluated by band, bands in the report's
    order (increasing log10(lam)). Adaptive methods are read at n contexts; a flat baseline
    (`evaluation.FLAT`: the same for every n) at n too, or at its one value if n is not listed."""
    if not getattr(report, "by_band", None):
        raise ValueError("this report was not evaluated by band: evaluate(..., bands=B) gives each method "
                         "one cost-quality point per band")
    for band, band_report in report.by_band.items():
        if strategy not in band_report.results:
            raise ValueError(f"unknown strategy {strategy!r} (band {band}); evaluated: {list(band_report.results)}")
    methods = next(iter(report.by_band.values())).results[strategy]
    evaluated = sorted({m for by_n in methods.values() for m in by_n})
    if n not in evaluated:
        raise ValueError(f"n={n!r} contexts was not evaluated; evaluated: {evaluated}")
    points = {}
    for method in methods:
        rows = []
        for band, band_report in report.by_band.items():
            by_n = band_report.results[strategy].get(method)
            if by_n is None:
                raise ValueError(f"method {method!r} is missing from band {band}")
            if n in by_n:
                rows.append(by_n[n])
            elif method in FLAT:
                rows.append(next(iter(by_n.values())))
            else:
                raise ValueError(f"method {method!r} has no result at n={n} in band {band}")
        points[method] = (np.array([r["cost"] for r in rows], float), np.array([r["quality"] for r in rows], float))
    return points


def common_cost_range(points: dict) -> tuple[float, float]:
    """(min, max) cost over every method's points of `cost_quality_points`."""
    costs = np.concatenate([np.asarray(c, float) for c, _ in points.values()])
    return float(costs.min()), float(costs.max())


def report_aiq(report, strategy: str, n: int, cost_range=None, log_cost: bool = False) -> dict[str, float]:
    """{method: AIQ} of a report evaluated by band, at n contexts, every method over the same
    cost range: `cost_range`, else the min and max cost over all the methods' band points. Where
    every point has the same cost (a one-model pool) that default range is a single cost, and
    each method's AIQ is its hull's quality there."""
    points = cost_quality_points(report, strategy, n)
    for method, (cost, quality) in points.items():
        try:
            _points(cost, quality)
        except ValueError as err:
            raise ValueError(f"method {method!r}, strategy {strategy!r}, n={n}: {err}") from None
    lo, hi = common_cost_range(points) if cost_range is None else _check_range(cost_range)
    if _check_log_cost(log_cost) and cost_range is None and lo <= 0:
        raise ValueError(f"no AIQ per decade of cost at strategy {strategy!r}, n={n}: "
                         f"{free_points(report, strategy, n)} routed a band to a model of cost 0")
    if log_cost:
        _check_positive(np.array([lo, hi]), "cost_range")
    out = {}
    for method, (cost, quality) in points.items():
        hull_cost, hull_quality = nondecreasing_hull(cost, quality)
        if log_cost:
            _check_positive(hull_cost, f"costs of {method!r}")
        out[method] = _curve_mean(hull_cost, hull_quality, lo, hi, log_cost)
    return out


def free_points(report, strategy: str, n: int) -> list[str]:
    """The methods with an operating point of cost 0 at (strategy, n): a model that costs nothing
    was routed to for a whole band. Per decade of cost their curves start at -inf."""
    return [m for m, (cost, _) in cost_quality_points(report, strategy, n).items() if np.any(cost <= 0)]


def aiq_table(report) -> dict:
    """{strategy: {n: {method: {"linear": AIQ, "log_cost": AIQ}}}} of a report evaluated by band:
    `report_aiq` per USD and per decade of cost, at every strategy and n of the report. Where a
    method has a band point of cost 0 (`free_points`) no common range of log10 costs exists: every
    method's log-cost AIQ is NaN there."""
    if not getattr(report, "by_band", None):
        raise ValueError("this report was not evaluated by band: evaluate(..., bands=B)")
    table = {}
    for strategy in report.results:
        table[strategy] = {}
        for n in report.settings["n_contexts"]:
            linear, logged = _both_aiqs(report, strategy, n)
            table[strategy][n] = {m: {"linear": linear[m], "log_cost": logged[m]} for m in linear}
    return table


def _both_aiqs(report, strategy: str, n: int) -> tuple[dict, dict]:
    """({method: AIQ per USD}, {method: AIQ per decade of cost, NaN where a point costs 0})."""
    linear = report_aiq(report, strategy, n)
    if free_points(report, strategy, n):
        return linear, dict.fromkeys(linear, float("nan"))
    return linear, report_aiq(report, strategy, n, log_cost=True)


def _check_table(report, table: dict) -> None:
    """Raise unless `table` is an `aiq_table` of `report`: its strategies, n and methods."""
    for strategy, by_n in table.items():
        if strategy not in report.results:
            raise ValueError(f"the AIQ table's strategy {strategy!r} is not the report's: {list(report.results)}")
        if not by_n:
            raise ValueError(f"the AIQ table holds no n for strategy {strategy!r}")
        for n, methods in by_n.items():
            points = cost_quality_points(report, strategy, n)
            if set(methods) != set(points):
                raise ValueError(f"the AIQ table's methods at {strategy!r}, n={n} are not the report's: "
                                 f"{sorted(methods)} against {sorted(points)}")


def format_aiq(report, table: dict | None = None) -> str:
    """One line per strategy: each method's AIQ at the largest n, per USD / per decade of cost, and
    the common cost range. `table` is the report's `aiq_table` (computed when None)."""
    table = aiq_table(report) if table is None else table
    _check_table(report, table)
    lines = []
    for strategy, by_n in table.items():
        n = max(by_n)
        lo, hi = common_cost_range(cost_quality_points(report, strategy, n))
        free = free_points(report, strategy, n)
        lines.append(f"AIQ {strategy}, n={n} (cost-quality hull over the bands, ${lo:.3g}-${hi:.3g} per query; "
                     "linear / log10 cost): " + ", ".join(
                         f"{m} {v['linear']:.3f} / {v['log_cost']:.3f}" for m, v in by_n[n].items())
                     + (f" (no log-cost AIQ: {', '.join(free)} routed a band to a model of cost 0)" if free else ""))
    return "\n".join(lines)


def aiq_json(report, table: dict | None = None) -> dict:
    """{"aiq": `aiq_table` with n as strings, "aiq_cost_range": {strategy: {n: [lo, hi] USD}}}: the
    AIQ entries a banded report's JSON carries (`table` computed when None)."""
    table = aiq_table(report) if table is None else table
    _check_table(report, table)
    return {"aiq": {s: {str(n): v for n, v in by_n.items()} for s, by_n in table.items()},
            "aiq_cost_range": {s: {str(n): list(common_cost_range(cost_quality_points(report, s, n))) for n in by_n}
                               for s, by_n in table.items()}}


def _mixing_line(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points [STEPS * (P - 1) + 1] drawing the lines between consecutive operating points as
    mixing them reaches (what the AIQ integrates): linear in cost, so curved on a log axis.
    Point STEPS * i is operating point i. Straight where a cost is <= 0 (no log axis then)."""
    if len(cost) < 2 or np.any(cost <= 0):
        return cost, quality
    start, end = cost[:-1], cost[1:]
    line_cost = np.geomspace(start, end, STEPS + 1)[:-1]                            # [STEPS, P - 1]
    width = np.where(end != start, end - start, 1.0)
    share = np.where(end != start, (line_cost - start) / width,                     # equal costs: a vertical line
                     np.linspace(0.0, 1.0, STEPS + 1)[:-1, None])
    line_quality = quality[:-1] + share * (quality[1:] - quality[:-1])
    return np.append(line_cost.T.ravel(), cost[-1]), np.append(line_quality.T.ravel(), quality[-1])


def plot_cost_quality(report, strategy: str, n: int, path: str | os.PathLike, methods=None) -> Path:
    """Write a PNG of each method's cost-quality curve over the bands (line and markers through
    its band points, its non-decreasing hull dashed), cost on a log axis, the legend giving
    each method's AIQ (linear / log10 cost, over the common range of all the report's methods).
    `methods` picks and orders the methods drawn (a name or names; default all). A path without
    suffix gets .png; its folder is made if missing. Where a band point costs 0 (`free_points`)
    the cost axis is linear and the legend has no log-cost AIQ. Returns the path written (needs
    matplotlib)."""
    path = png_path(path)
    points = cost_quality_points(report, strategy, n)
    methods = list(points) if methods is None else [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError(f"no methods to plot; evaluated: {list(points)}")
    unknown = [m for m in methods if m not in points]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; evaluated: {list(points)}")
    free = bool(free_points(report, strategy, n))
    linear, logged = _both_aiqs(report, strategy, n)
    fig = new_figure((10, 5.5))
    import matplotlib   # installed: new_figure found it

    ax = fig.add_subplot()
    palette = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    for i, method in enumerate(methods):
        cost, quality = points[method]
        color = palette(i % palette.N)
        ax.plot(*_mixing_line(cost, quality), color=color, lw=1.2, marker="o", ms=4,
                markevery=list(range(0, STEPS * (len(cost) - 1) + 1, STEPS)) if np.all(cost > 0) else None,
                label=f"{method} (AIQ {linear[method]:.3f} / {logged[method]:.3f})")
        ax.plot(*_mixing_line(*nondecreasing_hull(cost, quality)), color=color, ls="--", lw=2.4, alpha=0.4)
    if not free:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD)" if free else "mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality of the routed answers")
    ax.set_title(f"cost-quality over {len(report.by_band)} log10(lam) bands, {strategy}, n={n}\n"
                 "band points in order of lam, dashed: their non-decreasing hull; lines linear in cost (mixtures)\n"
                 "legend: AIQ over linear / log10 cost",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    return save_png(fig, path)
