"""Hyperparameter sweeps as ONE program: seeds x a grid of `Hparams`, vmapped.

Every configuration shares the static `TrainConfig` (shapes, loop counts); what varies is a
seed and traced hyperparameters, so the S configurations train side by side in one jitted,
vmapped chunk function, called once per chunk (which gives progress between chunks and is
still one compiled program). With a mesh of several devices the configuration axis is
sharded across them (`parallel.shard_configs`).

What a traced grid cannot vary (a static `TrainConfig` field: a size, a loop count, a switch
such as `answer_weight > 0`, which adds a readout) `run_sweeps` varies over a grid of its own:
one such program per combination of static values, each compiled once, the configurations of
all of them ranked together (`best_of`, and the tables and plot, which take the list too).

Configuration i with seed s is trained exactly as `MetaRouter.fit(data, config, hparams_i,
seed=s, companions=False)` trains its routers (same keys, the same warm start from the known
router), up to float reassociation. A config whose `latent_source` is "profile" or "none"
sweeps known-preference or agnostic routers alone (to tune those baselines); no MetaRouter
comes of such a sweep (`best_router` refuses it).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarouter_jax.checkpoint import write_atomically
from metarouter_jax.config import VALID_LABELS, Hparams, TrainConfig
from metarouter_jax.data import RoutingData
from metarouter_jax.figures import new_figure, png_path, save_png
from metarouter_jax.networks import NetworkConfig
from metarouter_jax.parallel import CONFIG_AXIS, replicate, resolve_mesh, shard_configs, to_host
from metarouter_jax.profiles import LinearProfiles, check_profile_family
from metarouter_jax.router import DataInfo, MetaRouter, check_trains_metarouter, router_config, warm_starts
from metarouter_jax.streams import seed_key
from metarouter_jax.training import check_data, make_train, run_training


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a sweep found; S configurations, C chunks.

    seeds: [S]; hparams: Hparams with [S] fields; swept: the hparam names given a grid axis;
    final_utility / best_utility: [S] the early-stopping score (`TrainConfig.valid_criterion`:
    held-out normalised utility by default) after the last chunk / the best over chunks (whose
    parameters are kept), -inf where the known router it started from diverged; history: name ->
    [S, C] per-chunk metrics; best_params: the best parameters, every leaf [S, ...];
    info: the training data's summary a router saves (`DataInfo`, with the atoms' utility
    scales); known_params, known_history: the same for the known-preference routers of a warm
    start; net_config, profiles: what the parameters belong to (as in `MetaRouter`); static: the
    static TrainConfig values this sweep varied from the others of a `run_sweeps` (else empty).
    """

    config: TrainConfig
    net_config: NetworkConfig
    profiles: LinearProfiles
    seeds: np.ndarray
    hparams: Hparams
    swept: tuple[str, ...]
    final_utility: np.ndarray
    best_utility: np.ndarray
    history: dict[str, np.ndarray]
    best_params: object
    info: DataInfo
    known_params: object = None       # the known routers the MetaRouters started from ([S, ...]), if any
    known_history: dict | None = None
    static: dict = dataclasses.field(default_factory=dict)   # the static values of a `run_sweeps` part

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def best_index(self) -> int:
        """The configuration with the highest best early-stopping score (first one on ties)."""
        return int(np.argmax(self.best_utility))

    @property
    def configs(self) -> list[dict]:
        """Per configuration: its seed, the static values of its part of a `run_sweeps` and the
        values of the swept hyperparameters."""
        return [{"seed": int(self.seeds[i]), **self.static,
                 **{name: _short(getattr(self.hparams, name)[i]) for name in self.swept}} for i in range(self.size)]

    def hparams_at(self, i: int) -> Hparams:
        return jax.tree.map(lambda x: x[i], self.hparams)

    def params_at(self, i: int):
        return jax.tree.map(lambda x: x[i], self.best_params)

    @property
    def score_key(self) -> str:
        """The history key of the early-stopping score ("valid_utility" by default)."""
        return self.config.valid_key

    def rows(self) -> list[dict]:
        """One dict per configuration: seed, swept values, final and best early-stopping score
        (keys final_valid_utility and best_valid_utility by default)."""
        return [{"config": i, **cfg, f"final_{self.score_key}": float(self.final_utility[i]),
                 f"best_{self.score_key}": float(self.best_utility[i])} for i, cfg in enumerate(self.configs)]


def _short(x) -> float:
    """A float32 as the shortest decimal that reads back to it (1e-3, not 0.0010000000475)."""
    return float(str(np.float32(x)))


def _axis(name: str, values) -> np.ndarray:
    """One grid axis as a 1-D array of numbers; a single number is a one-value axis."""
    array = np.asarray(values)
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"grid axis {name!r} must be a number or a list of numbers, got {values!r}")
    return array


def sweep_hparams(hparam_grid: dict[str, Sequence[float] | float], seeds: Sequence[int]) -> tuple[Hparams, np.ndarray]:
    """The Cartesian product seeds x grid, seeds outermost: (Hparams [S], seeds [S])."""
    seeds = np.asarray(list(seeds))
    if seeds.size == 0:
        raise ValueError("a sweep needs at least one seed")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be integers, got {seeds.tolist()}")
    if np.unique(seeds).size != seeds.size:
        raise ValueError(f"seeds repeat ({seeds.tolist()}): a repeated seed trains the same configuration again")
    if np.unique(seeds.astype(object) % 2**32).size != seeds.size:   # jax.random.key keeps a seed's low 32 bits
        raise ValueError(f"seeds {seeds.tolist()} are equal modulo 2**32, and JAX's keys keep only a seed's low "
                         "32 bits: they would train the same configuration again")
    axes = {name: _axis(name, values) for name, values in hparam_grid.items()}
    empty = [name for name, values in axes.items() if values.size == 0]
    if empty:
        raise ValueError(f"grid axes without values: {empty}")
    repeated = [name for name, values in axes.items() if np.unique(values.astype(np.float32)).size != values.size]
    if repeated:
        raise ValueError(f"grid axes repeat a value (in float32, as they train): "
                         f"{[(n, axes[n].tolist()) for n in repeated]}")
    grid = Hparams.grid(**axes) if axes else Hparams.create()
    grid = jax.tree.map(lambda x: jnp.reshape(x, (-1,)), grid)                  # [G]
    per_seed = grid.batch_shape[0]
    hparams = jax.tree.map(lambda x: jnp.tile(x, seeds.size), grid)             # [S * G]
    return hparams, np.repeat(seeds.astype(np.int64), per_seed)


def _pad(tree, size: int):
    """Repeat the last configuration until the leading axis has `size` entries."""
    if jax.tree.leaves(tree)[0].shape[0] == size:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], 0)]), tree)


def _train_configs(trainer, seeds: np.ndarray, hparams: Hparams, stream: str, padded: int, mesh, *,
                   init_params=None, on_chunk: Callable | None = None, chunk_offset: int = 0, total_chunks: int = 0):
    """Train S configurations of one router side by side (one jitted, vmapped chunk function).

    Keys as `MetaRouter.fit` gives its router `stream` (a name of `streams.STREAMS`). Returns
    (final states with leaves [padded, ...], history name -> [S, C])."""
    config, size = trainer.config, len(seeds)
    keys = jax.vmap(lambda s: jax.random.split(seed_key(s, stream)))(jnp.asarray(seeds))
    key_init, key_valid = _pad((keys[:, 0], keys[:, 1]), padded)
    hparams_run = _pad(hparams, padded)

    # One jitted init per configuration, stacked: compiles about 2.5x faster than a vmapped init.
    states = [trainer.jit_init(key_init[i], jax.tree.map(lambda x: x[i], hparams_run)) for i in range(padded)]
    states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    if init_params is not None:  # warm start (as run_training's init_params)
        states = states.start_from(init_params)
    data_args = trainer.data_args()
    valid = jax.jit(lambda args, keys_, hps: jax.vmap(trainer.bind(args).validation_users)(keys_, hps))(
        data_args, key_valid, hparams_run)                                     # each run's fixed validation set
    if mesh is not None:
        data_args = replicate(data_args, mesh)
        states, hparams_run, valid = shard_configs((states, hparams_run, valid), mesh)
    chunk = jax.jit(lambda args, states_, hps, valid_: jax.vmap(trainer.bind(args).run_chunk)(states_, hps, valid_))

    history: dict[str, list[np.ndarray]] = {}
    for index in range(config.num_chunks):
        states, metrics = chunk(data_args, states, hparams_run, valid)
        metrics = {k: v[:size] for k, v in to_host(metrics).items()}
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
        if on_chunk is not None:
            on_chunk(chunk_offset + index, total_chunks or config.num_chunks, metrics)
    return states, {k: np.stack(v, axis=1) for k, v in history.items()}                 # [S, C]


def run_sweep(data: RoutingData, config: TrainConfig, hparam_grid: dict[str, Sequence[float]],
              seeds: Sequence[int], mesh: jax.sharding.Mesh | str | None = "auto", *,
              on_chunk: Callable | None = None) -> SweepResult:
    """Train every (seed, grid point) configuration side by side as one compiled program.

    As in `MetaRouter.fit`, with a profile-space latent shared with the known-preference router
    (`profile_latent` and `joint_known`), the known routers of all configurations are swept
    first and each MetaRouter starts from its own (with `freeze_known`, on their frozen policy).

    Args:
      hparam_grid: Hparams field -> values (a single number: one value); the sweep is seeds x
        the Cartesian product.
      mesh: a 1-D `jax.sharding.Mesh` to shard the configurations across (padded to a
        multiple of its size with copies of the last one); "auto": every device JAX sees
        when there are several (`parallel.resolve_mesh`); None: the default device.
      on_chunk: called as on_chunk(chunk_index, num_chunks, metrics: name -> np.ndarray [S]);
        with the warm start the index runs through the known routers' chunks, then the
        MetaRouters' (num_chunks counts both).
    """
    mesh = resolve_mesh(mesh, CONFIG_AXIS)
    hparams, seeds = sweep_hparams(hparam_grid, seeds)
    size = len(seeds)
    padded = size if mesh is None else -(-size // mesh.size) * mesh.size
    warm_start = config.latent_source == "contexts" and warm_starts(config)
    stages = 2 if warm_start else 1
    common = dict(on_chunk=on_chunk, total_chunks=stages * config.num_chunks)
    known_params, known_history, run_config, init = None, None, config, None
    known_diverged = np.zeros(size, bool)
    if warm_start:
        known = make_train(router_config(config, "known"), data)
        states, known_history = _train_configs(known, seeds, hparams, "known", padded, mesh, **common)
        # `fit` stops where the known router diverged; a sweep ranks such a configuration last
        known_diverged = ~np.isfinite(to_host(states.best_score)[:size])
        init = states.best_params
        known_params = jax.tree.map(lambda x: jnp.asarray(x[:size]), to_host(init))
        run_config = router_config(config, "metarouter")
    trainer = make_train(run_config, data)
    states, history = _train_configs(trainer, seeds, hparams, "metarouter", padded, mesh,
                                     init_params=init, chunk_offset=(stages - 1) * config.num_chunks, **common)
    best_params = jax.tree.map(lambda x: jnp.asarray(x[:size]), to_host(states.best_params))
    info = DataInfo.from_data(data, trainer.arrays, config.descriptor_source, trainer.atoms)
    final_score = np.where(known_diverged, -np.inf, history[config.valid_key][:, -1])
    best_score = np.where(known_diverged, -np.inf, to_host(states.best_score)[:size])
    return SweepResult(config, trainer.net_config, trainer.profiles, seeds, hparams, tuple(hparam_grid),
                       final_score, best_score, history, best_params, info, known_params, known_history)


def static_grid_configs(config: TrainConfig, static_grid: dict[str, Sequence]) -> list[tuple[dict, TrainConfig]]:
    """(values, config) for each combination of the static grid's values (TrainConfig field ->
    a list of values; the Cartesian product, the last field fastest), every config checked before
    anything trains (its fields, its profile family; `check_parts` checks them against the data).
    No static grid: the config alone, with no values."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(static_grid) - fields)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} in the static grid")
    if "valid_criterion" in static_grid:   # the score the configurations are ranked by: one for all
        raise ValueError("valid_criterion cannot vary in a sweep: it is the score every configuration is ranked "
                         "by; run one sweep per criterion")
    for name, values in static_grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"static grid axis {name!r} must be a non-empty list of values, got {values!r}")
        if any(a == b for i, a in enumerate(values) for b in values[:i]):
            raise ValueError(f"static grid axis {name!r} repeats a value: {values}")
    parts = []
    for combination in itertools.product(*static_grid.values()):
        values = dict(zip(static_grid, combination))
        try:
            part = config.replace(**values)
            check_profile_family(part.profile)
        except (KeyError, TypeError, ValueError) as err:   # a KeyError's str() is its message's repr
            raise ValueError(f"static grid values {values}: {_message(err)}") from None
        parts.append(({name: getattr(part, name) for name in values}, part))   # as the config holds them (tuples, not lists)
    return parts


def check_parts(parts: Sequence[tuple[dict, TrainConfig]], data: RoutingData) -> None:
    """Raise a ValueError naming its values for the first part (of `static_grid_configs`) that
    `make_train` would refuse on `data` (`training.check_data`). Every part is checked before
    the first one trains, so a bad last value is not found only after the others have trained."""
    for values, config in parts:
        try:
            check_data(config, data)
        except (KeyError, ValueError) as err:
            raise ValueError(f"static grid values {values}: {_message(err)}") from None


def _message(err: Exception):
    """An error's message; a KeyError's str() is the repr of its message, quotes and all."""
    return err.args[0] if isinstance(err, KeyError) and err.args else err


def run_sweeps(data: RoutingData, config: TrainConfig, static_grid: dict[str, Sequence],
               hparam_grid: dict[str, Sequence[float]], seeds: Sequence[int],
               mesh: jax.sharding.Mesh | str | None = "auto", *, on_chunk: Callable | None = None,
               on_part: Callable | None = None, on_result: Callable | None = None) -> list[SweepResult]:
    """`run_sweep` once per combination of static TrainConfig values (`static_grid_configs`): what
    one traced program cannot vary, such as `hidden` or `answer_weight`. Each part is one
    compiled program of seeds x `hparam_grid`; its `SweepResult.static` holds its values. Rank
    them together with `best_of` (`format_markdown`, `write_tables` and `plot_sweep` take the
    list). Every part is checked against `data` (`check_parts`) before the first one trains.
    on_part(index, num_parts, values) is called before each part trains, on_result(results)
    after it with the parts finished so far (a long sweep can write its tables as it goes)."""
    parts = static_grid_configs(config, static_grid)
    check_parts(parts, data)
    sweep_hparams(hparam_grid, seeds)   # a bad grid or seed list fails before anything trains
    results = []
    for index, (values, part_config) in enumerate(parts):
        if on_part is not None:
            on_part(index, len(parts), values)
        result = run_sweep(data, part_config, hparam_grid, seeds, mesh, on_chunk=on_chunk)
        results.append(dataclasses.replace(result, static=values))
        if on_result is not None:
            on_result(list(results))
    return results


def _parts(result) -> list:
    """A sweep, or the list of a `run_sweeps`, as a list of sweeps (refused when empty)."""
    parts = list(result) if isinstance(result, (list, tuple)) else [result]
    if not parts:
        raise ValueError("expected a SweepResult or a non-empty list of them (run_sweep's, run_sweeps'), got "
                         "an empty list")
    return parts


def best_of(results: SweepResult | Sequence[SweepResult]) -> tuple[SweepResult, int]:
    """The sweep holding the best configuration of a `run_sweeps` list (or of one sweep), and its
    index among all the list's configurations (the tables' numbering): the highest best
    early-stopping score, the first on ties (so the part's own `best_index` is the same one)."""
    parts = _parts(results)
    index = int(np.argmax(np.concatenate([np.asarray(p.best_utility) for p in parts])))
    offsets = np.cumsum([0] + [p.size for p in parts])
    return parts[int(np.searchsorted(offsets, index, side="right")) - 1], index


def table_rows(results: SweepResult | Sequence[SweepResult]) -> list[dict]:
    """Every configuration's row (`SweepResult.rows`), numbered over all sweeps of a list."""
    rows, offset = [], 0
    for part in _parts(results):
        rows += [{**row, "config": row["config"] + offset} for row in part.rows()]
        offset += part.size
    return rows


def best_router(result: SweepResult | Sequence[SweepResult], data: RoutingData, *, companions: bool = False,
                on_chunk: Callable | None = None) -> MetaRouter:
    """A `MetaRouter` holding the sweep's best configuration (its best parameters); of a
    `run_sweeps` list, the best configuration of all its sweeps (`best_of`).

    It holds the known-preference router the MetaRouter started from, when there was one;
    companions=True also trains the agnostic companion (and the known one if the sweep had
    none) with that configuration's hyperparameters and seed, which `evaluate` needs.
    on_chunk: progress of the companions, as on_chunk(router_name, chunk, num_chunks, metrics).
    """
    result = best_of(result)[0]
    i = result.best_index
    if not np.isfinite(result.best_utility[i]):
        raise ValueError(f"every configuration of the sweep diverged (no finite held-out score; "
                         f"learning rates {np.unique(np.asarray(result.hparams.learning_rate)).tolist()}): "
                         "no router to keep")
    check_trains_metarouter(result.config, "best_router")
    config, hparams, seed = result.config, result.hparams_at(i), int(result.seeds[i])
    params = {"metarouter": result.params_at(i)}
    history = {"metarouter": {k: v[i] for k, v in result.history.items()}}
    if result.known_params is not None:
        params["known"] = jax.tree.map(lambda x: x[i], result.known_params)
        history["known"] = {k: v[i] for k, v in result.known_history.items()}
    if companions:
        for name in ("known", "agnostic"):
            if name in params:
                continue
            companion = make_train(router_config(config, name), data)
            progress = (lambda c, n, m, name=name: on_chunk(name, c, n, m)) if on_chunk else None
            state, history[name] = run_training(companion, seed_key(seed, name),
                                                hparams, on_chunk=progress)
            params[name] = state.best_params
    return MetaRouter(config, hparams, result.net_config, result.profiles, params, result.info, history)


# ---------------------------------------------------------------------- reports (on request)
def seed_summary(results: SweepResult | Sequence[SweepResult]) -> list[dict]:
    """One dict per setting (static values and swept hyperparameters, in the tables' order) with
    its number of seeds and the mean, standard deviation (over seeds, ddof 0) and minimum of the
    best kept early-stopping score: how a setting does across seeds, which the single best
    configuration does not say."""
    rows = table_rows(results)
    score = f"best_{_parts(results)[0].score_key}"
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        setting = {k: v for k, v in row.items() if k not in ("config", "seed") and not k.startswith(("final_", "best_"))}
        groups.setdefault(tuple(setting.items()), []).append(row)
    summary = []
    for setting, members in groups.items():
        values = np.asarray([m[score] for m in members], np.float64)
        summary.append({**dict(setting), "seeds": len(members), f"mean_{score}": float(values.mean()),
                        f"std_{score}": float(values.std()), f"min_{score}": float(values.min())})
    return summary


def _markdown(rows: list[dict], marked: int | None, first: str) -> list[str]:
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for i, row in enumerate(rows):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        if i == marked:
            cells[names.index(first)] += " *"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_markdown(result: SweepResult | Sequence[SweepResult]) -> str:
    """The sweep (or every sweep of a `run_sweeps` list) as a Markdown table, the best
    configuration marked with *; with several seeds, a second table of each setting's mean over
    them (`seed_summary`), the best mean marked."""
    rows, best = table_rows(result), best_of(result)[1]
    lines = _markdown(rows, best, "config")
    summary, mean = seed_summary(result), f"mean_best_{_parts(result)[0].score_key}"
    if any(s["seeds"] > 1 for s in summary):
        lines += ["", "Each setting over its seeds (the best kept score):", ""]
        lines += _markdown(summary, int(np.argmax([s[mean] for s in summary])), "seeds")
    return "\n".join(lines) + "\n"


def write_tables(result: SweepResult | Sequence[SweepResult], out_dir: str | Path) -> list[Path]:
    """Write sweep.csv and sweep.md (one row per configuration, of every sweep of a list) to
    `out_dir`, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(result)

    def write_csv(tmp: Path):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    markdown = format_markdown(result)
    write_atomically(out / "sweep.csv", write_csv)
    write_atomically(out / "sweep.md", lambda tmp: tmp.write_text(markdown))
    return [out / "sweep.csv", out / "sweep.md"]


def plot_sweep(result: SweepResult | Sequence[SweepResult], path: str | Path) -> Path:
    """Final and best early-stopping score per configuration (of every sweep of a list), as
    grouped bars, to a PNG at `path` (`figures.save_png`: .png added where it has no suffix;
    needs matplotlib). No pyplot: the caller's matplotlib backend is left as it was."""
    path = png_path(path)   # a wrong suffix refused before drawing
    parts = _parts(result)
    configs = [cfg for part in parts for cfg in part.configs]
    final, best = (np.concatenate([np.asarray(getattr(p, name)) for p in parts])
                   for name in ("final_utility", "best_utility"))
    def text(v) -> str:   # numbers short (1e-3), static values (a profile name, True) as they are
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    labels = [f"#{i} " + " ".join(f"{k}={text(v)}" for k, v in cfg.items()) for i, cfg in enumerate(configs)]
    x = np.arange(len(configs))
    fig = new_figure((max(5.0, 0.5 * len(configs) + 2.0), 4.0))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, final, 0.4, label="final")
    ax.bar(x + 0.2, best, 0.4, label="best (kept)")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(textwrap.fill(VALID_LABELS[parts[0].config.valid_criterion], 32))
    ax.set_title(f"sweep: {len(configs)} configurations (best: {best_of(result)[1]})")
    ax.legend(loc="lower right")
    return save_png(fig, path)
