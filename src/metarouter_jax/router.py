"""`MetaRouter`: the public object. Meta-train, save/load, adapt to users, route queries.

A fitted MetaRouter holds three routers trained on the same user distribution:
`metarouter` (latent from the user's contexts), and, for evaluation, the companions
`known` (latent from the true profile: the upper bound) and `agnostic` (no latent).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarouter_jax import adaptation, checkpoint
from metarouter_jax.config import FROZEN_WHEN_WARM, VALID_KEYS, Hparams, TrainConfig
from metarouter_jax.contexts import Contexts, feedback_outcomes
from metarouter_jax.data import RoutingData, pool_mask
from metarouter_jax.networks import NetworkConfig, init_router_net, router_graphdef
from metarouter_jax.parallel import TASK_AXIS, resolve_mesh, shard_tasks, to_host
from metarouter_jax.profiles import make_atoms, make_profiles
from metarouter_jax.streams import seed_key
from metarouter_jax.tasks import RoutingArrays
from metarouter_jax.training import make_train, network_fields, run_training

LATENT_SOURCE = {"metarouter": "contexts", "known": "profile", "agnostic": "none"}


def warm_starts(config: TrainConfig) -> bool:
    """Whether the MetaRouter starts from the known router (a profile-space latent shared with it).

    On 0/1 logs this keeps the policy as well generalised as the known router, which early
    stopping on the MetaRouter's own score alone did not (measured on RouterBench 0-shot)."""
    return config.profile_latent and config.joint_known


def check_trains_metarouter(config: TrainConfig, what: str) -> None:
    """Refuse a config whose `latent_source` is not "contexts" where a MetaRouter is to come of it
    (`fit` sets each of its routers' latent source itself, `router_config`; a sweep of another
    latent source trains known-preference or agnostic routers alone)."""
    if config.latent_source != "contexts":
        raise ValueError(f"{what} trains a MetaRouter, whose latent comes from contexts: config.latent_source must be "
                         f"'contexts' (the default), got {config.latent_source!r} (the known-preference and agnostic "
                         "routers are trained beside it: companions=True; to train one alone, make_train + run_training, "
                         "or sweep.run_sweep without best_router)")


def router_config(config: TrainConfig, name: str) -> TrainConfig:
    """The configuration one of a MetaRouter's routers trains with (`fit` and sweeps alike)."""
    run = config.replace(latent_source=LATENT_SOURCE[name])
    if name == "metarouter" and warm_starts(config) and config.freeze_known:
        run = run.replace(frozen=FROZEN_WHEN_WARM)
    return run


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a router must remember about its training data to route new queries."""

    model_names: tuple[str, ...]
    family_names: tuple[str, ...]
    descriptors: np.ndarray  # [K, Dd]
    log_cost_mean: float
    log_cost_std: float
    embed_dim: int
    mean_quality: tuple[float, ...]  # per model, on the descriptor (calibration) split
    mean_cost: tuple[float, ...]     # per model, USD, on the descriptor (calibration) split
    atom_scales: tuple[float, ...] = ()  # the atomic posterior's utility scales (empty: no atoms)
    # What the descriptors' columns were centred on (RoutingData.descriptor_centre of the training
    # split): new models are described in these units. Empty for routers saved before it existed.
    descriptor_centre: tuple[float, ...] = ()

    def __post_init__(self):
        """Refuse what no router could have been trained with (e.g. read from a damaged router.json)."""
        names, k = self.model_names, len(self.model_names)
        if not k or not all(isinstance(n, str) and n for n in names) or len(set(names)) != k:
            raise ValueError(f"model_names must be distinct non-empty strings, got {list(names)}")
        if not all(isinstance(n, str) for n in self.family_names):
            raise ValueError(f"family_names must be strings, got {list(self.family_names)}")
        descriptors = np.asarray(self.descriptors)
        if descriptors.ndim != 2 or descriptors.shape[0] != k or not np.all(np.isfinite(descriptors)):
            raise ValueError(f"descriptors must be finite, one row per model ({k}), got shape {descriptors.shape}")
        if not (np.isfinite(self.log_cost_mean) and np.isfinite(self.log_cost_std) and self.log_cost_std > 0):
            raise ValueError(f"log10-cost standardisation ({self.log_cost_mean}, {self.log_cost_std})")
        for name in ("mean_quality", "mean_cost"):  # NaN: a model with no answers on the split
            values = getattr(self, name)
            if len(values) != k or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(f"{name} must be one number per model ({k}), got {list(values)[:8]}")
        scales = np.asarray(self.atom_scales, float)
        if not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"atom_scales must be positive finite numbers, got {scales.tolist()[:8]}")
        centre = np.asarray(self.descriptor_centre, float)
        if centre.size and (centre.shape != descriptors.shape[1:] or not np.all(np.isfinite(centre))):
            raise ValueError(f"descriptor_centre must be {descriptors.shape[1]} finite numbers (one per descriptor "
                             f"column), got {centre.tolist()}")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "descriptors": self.descriptors.tolist()}

    @classmethod
    def from_data(cls, data: RoutingData, arrays: RoutingArrays, split: str, atoms=None) -> "DataInfo":
        """What to remember of `data`, with descriptors and cost units from its training `arrays`
        (and the utility scales of the trainer's `atoms`, measured on its training queries)."""
        summary = data.model_summary(split)
        return cls(data.model_names, data.family_names, np.asarray(arrays.descriptors),
                   float(arrays.log_cost_mean), float(arrays.log_cost_std), data.embed_dim,
                   tuple(map(float, summary["quality"])), tuple(map(float, summary["cost"])),
                   () if atoms is None else tuple(map(float, np.asarray(atoms.scale))),
                   tuple(map(float, data.descriptor_centre(split))))

    @classmethod
    def from_json(cls, d: dict) -> "DataInfo":
        return cls(tuple(d["model_names"]), tuple(d["family_names"]), np.asarray(d["descriptors"], np.float32),
                   float(d["log_cost_mean"]), float(d["log_cost_std"]), int(d["embed_dim"]),
                   tuple(d["mean_quality"]), tuple(d["mean_cost"]), tuple(d.get("atom_scales", ())),
                   tuple(d.get("descriptor_centre", ())))


def _non_finite(params: dict) -> list[str]:
    """The paths of the parameter arrays holding NaN or inf."""
    return [f"{jax.tree_util.keystr(path)}" for path, x in jax.tree_util.tree_leaves_with_path(params)
            if not np.all(np.isfinite(np.asarray(x)))]


class MetaRouter:
    """A meta-trained, preference-aware router (see the README for the API tour)."""

    def __init__(self, config: TrainConfig, hparams: Hparams, net_config: NetworkConfig, profiles,
                 params: dict, info: DataInfo, history: dict | None = None):
        self.config, self.hparams, self.net_config = config, hparams, net_config
        self.profiles, self.params, self.info = profiles, params, info
        self.history = history or {}
        self.graphdef = router_graphdef(net_config)
        self.atoms = None
        if net_config.posterior_atoms:
            self.atoms = make_atoms(profiles, net_config.posterior_atoms)
            if info.atom_scales:
                self.atoms = self.atoms.with_scales(info.atom_scales)
            elif net_config.likelihood == "bradley_terry":
                raise ValueError("a Bradley-Terry likelihood head scores the atoms' utilities: the router's DataInfo "
                                 "must hold their atom_scales (DataInfo.from_data(..., atoms))")
        self._adapt = jax.jit(self._adapt_batched)
        self._route = jax.jit(self._route_batched)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(cls, data: RoutingData, config: TrainConfig | None = None, hparams: Hparams | None = None,
            seed: int = 0, *, companions: bool = True, progress: Callable | None = None,
            checkpoint_dir: str | Path | None = None, save_every: int = 0, keep: int = 3,
            mesh: jax.sharding.Mesh | str | None = "auto") -> "MetaRouter":
        """Meta-train on `data` (and the known/agnostic companions unless `companions=False`).

        Args:
          progress: called as progress(router_name, chunk, num_chunks, metrics).
          checkpoint_dir: if given, training states are saved every `save_every` steps under
            `<dir>/<router_name>/` (last `keep` kept) and a rerun resumes from them.
          mesh: the devices each meta-step's task batch is split across (data parallel,
            `parallel.shard_tasks`; the same parameters as one device within float tolerance).
            "auto": every device JAX sees, when there are several and `tasks_per_step` divides
            over them (otherwise one device, with a warning); a 1-D `jax.sharding.Mesh`: that
            mesh (ValueError if `tasks_per_step` does not divide over it); None: one device.
            The returned router's parameters are on one device either way.
        """
        config = config or TrainConfig()
        hparams = hparams or Hparams.create()
        for name, value, kind in (("data", data, RoutingData), ("config", config, TrainConfig),
                                  ("hparams", hparams, Hparams)):
            if not isinstance(value, kind):
                raise TypeError(f"fit's {name} must be a {kind.__name__}, got {type(value).__name__}"
                                + (" (TrainConfig(**settings) / Hparams.create(**settings))" if isinstance(value, dict)
                                   else ""))
        check_trains_metarouter(config, "fit")
        batched = [f.name for f in dataclasses.fields(hparams) if np.ndim(getattr(hparams, f.name)) != 0]
        if batched:
            shape = np.shape(getattr(hparams, batched[0]))
            raise ValueError(f"fit trains one configuration: these hparams hold a batch of shape {shape}; sweep "
                             "them with sweep.run_sweep (metarouter sweep), which trains them all as one program")
        if save_every < 0 or keep < 1:
            raise ValueError(f"save_every must be >= 0 (0: no checkpoints) and keep >= 1, got {save_every}, {keep}")
        mesh = resolve_mesh(mesh, TASK_AXIS, config.tasks_per_step)
        # With a warm start the known-preference router is trained first and the MetaRouter
        # starts from it (with `freeze_known`, its encoder trains on the frozen known policy).
        warm_start = warm_starts(config)
        names = ("known", "metarouter", "agnostic") if companions or warm_start else ("metarouter",)
        params, history, trainer = {}, {}, None
        for name in names:
            if name == "agnostic" and not companions:
                continue
            trainer = make_train(router_config(config, name), data)
            run_trainer = trainer if mesh is None else shard_tasks(trainer, mesh)
            ckpt = None
            if checkpoint_dir is not None:
                ckpt = checkpoint.TrainCheckpointer(Path(checkpoint_dir) / name, every=save_every, keep=keep)
            on_chunk = (lambda c, n, m, name=name: progress(name, c, n, m)) if progress else None
            try:
                init = params["known"] if name == "metarouter" and warm_start else None
                state, hist = run_training(run_trainer, seed_key(seed, name), hparams,
                                           on_chunk=on_chunk, checkpointer=ckpt, init_params=init)
            finally:
                if ckpt is not None:
                    ckpt.close()
            if not np.isfinite(float(state.best_score)):  # no chunk ended with finite parameters
                raise ValueError(f"training the {name!r} router diverged (best validation score "
                                 f"{float(state.best_score)}): try a lower learning_rate than "
                                 f"{float(hparams.learning_rate):.3g}")
            params[name], history[name] = state.best_params, hist
        if mesh is not None:  # off the mesh (its replicas), so that routing runs on one device
            params = jax.device_put(to_host(params), jax.local_devices()[0])
        info = DataInfo.from_data(data, trainer.arrays, config.descriptor_source, trainer.atoms)
        return cls(config, hparams, trainer.net_config, trainer.profiles, params, info, history)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the router to directory `path` (atomically: nothing half-written is left).

        Replaces a router saved there before or an empty directory; refuses anything else at
        `path` (FileExistsError), since replacing it deletes it (`checkpoint.save_tree`). Refuses
        parameters that hold NaN/inf (ValueError): they would route every query to model 0."""
        bad = _non_finite(self.params)
        if bad:
            raise ValueError(f"cannot save a router whose parameters hold NaN/inf ({', '.join(bad[:4])})")
        meta = {
            "format_version": checkpoint.FORMAT_VERSION,
            "config": self.config.to_dict(),
            "hparams": self.hparams.to_json(),
            "network": dataclasses.asdict(self.net_config),
            "profiles": {"name": self.profiles.name,
                         **{k: v for k, v in dataclasses.asdict(self.profiles).items() if k != "name"}},
            "data": self.info.to_json(),
            "routers": sorted(self.params),
            "history": {r: {k: np.asarray(v).tolist() for k, v in h.items()} for r, h in self.history.items()},
        }
        checkpoint.save_tree(path, self.params, meta)

    @classmethod
    def load(cls, path: str | Path) -> "MetaRouter":
        """Load a router written by `save`; a clear `CheckpointError` if missing or corrupt."""
        meta = checkpoint.load_metadata(path)
        try:
            if meta.get("format_version") != checkpoint.FORMAT_VERSION:
                raise checkpoint.CheckpointError(
                    f"{path}: format version {meta.get('format_version')}, this metarouter_jax reads version "
                    f"{checkpoint.FORMAT_VERSION} (routers saved by another version must be retrained)")
            # Routers saved before the likelihood option had the learned head.
            config = TrainConfig.from_dict({"likelihood": meta["network"].get("likelihood", "learned"), **meta["config"]})
            hparams = Hparams.create(**meta["hparams"])
            net_config = NetworkConfig(**meta["network"])
            prof = dict(meta["profiles"])
            profiles = make_profiles(prof.pop("name"), **{k: tuple(v) if isinstance(v, list) else v
                                                           for k, v in prof.items()})
            if not np.all(np.isfinite(profiles.log10_lam_range)):
                raise ValueError(f"profiles.log10_lam_range {list(profiles.log10_lam_range)} is not finite")
            info = DataInfo.from_json(meta["data"])
            names = meta["routers"]
            if "metarouter" not in names or not set(names) <= set(LATENT_SOURCE) or len(set(names)) != len(names):
                raise ValueError(f"routers {names}: 'metarouter' and at most once each of {sorted(LATENT_SOURCE)}")
            history = {r: {k: np.asarray(v, np.float64) for k, v in h.items()} for r, h in meta.get("history", {}).items()}
            disagree = {name: (value, getattr(net_config, name)) for name, value in network_fields(config).items()
                        if getattr(net_config, name) != value}
            if disagree:
                raise ValueError(f"its config and its network disagree on {sorted(disagree)} "
                                 f"(config, network: {list(disagree.values())[:3]})")
            if info.embed_dim != net_config.embed_dim:
                raise ValueError(f"data.embed_dim {info.embed_dim} != network.embed_dim {net_config.embed_dim}")
            if info.descriptors.shape != (len(info.model_names), net_config.descriptor_dim):
                raise ValueError(f"{len(info.model_names)} model names and descriptors of shape "
                                 f"{info.descriptors.shape} (network descriptor_dim {net_config.descriptor_dim})")
            _, template = init_router_net(net_config, jax.random.key(0))
            router = cls(config, hparams, net_config, profiles, {name: template for name in names}, info, history)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(f"{path}/router.json is corrupt: {err!r}") from err
        router.params = checkpoint.load_tree(path, router.params, meta.get("arrays_sha256"))
        bad = _non_finite(router.params)
        if bad:
            raise checkpoint.CheckpointError(f"router arrays in {path} hold NaN/inf ({', '.join(bad[:4])}): "
                                             "a diverged or damaged router")
        return router

    # ------------------------------------------------------------------ inference
    @property
    def model_names(self) -> tuple[str, ...]:
        return self.info.model_names

    @property
    def model_means(self) -> dict[str, tuple[float, ...]]:
        """Per-model mean quality and mean cost (USD) on the training split."""
        return {"quality": self.info.mean_quality, "cost": self.info.mean_cost}

    @property
    def validation(self) -> dict[str, dict[str, float]]:
        """Each trained router's held-out scores at the chunk whose parameters it keeps (the best
        by `TrainConfig.valid_criterion`; validation users on the training data's held-out
        queries, never test users): "utility", the mean normalised utility, and "worst_band", the
        lowest log10(lam) band's mean margin over the best fixed model (`Trainer.validation_score`;
        absent from routers saved before it was recorded). Chunks that ended with diverged (NaN)
        parameters score NaN and are skipped, as training skips them."""
        criterion = self.config.valid_key
        out = {}
        for name, h in self.history.items():
            kept = np.asarray(h[criterion], np.float64)
            index = int(np.nanargmax(kept)) if np.isfinite(kept).any() else None   # the first best: the kept one
            out[name] = {key.removeprefix("valid_"): float(h[key][index]) if index is not None else float("nan")
                         for key in VALID_KEYS.values() if key in h}
        return out

    @property
    def best_valid_utility(self) -> dict[str, float]:
        """Each trained router's held-out normalised utility with the parameters it keeps (with the
        default `valid_criterion` the best over training): the model-selection signal
        (`validation` has the worst-band margin beside it)."""
        return {name: scores["utility"] for name, scores in self.validation.items()}

    def contexts_from_outcomes(self, query_emb, model_a, model_b, prefers_a, quality_a, cost_a,
                               quality_b, cost_b, capacity: int | None = None, family=None) -> Contexts:
        """Contexts in this router's units from explicit outcomes (see `Contexts.from_outcomes`)."""
        return Contexts.from_outcomes(
            query_emb, model_a, model_b, prefers_a, quality_a, cost_a, quality_b, cost_b,
            capacity=self.config.max_contexts if capacity is None else capacity, num_models=len(self.model_names),
            log_cost_stats=(self.info.log_cost_mean, self.info.log_cost_std), family=family,
            num_families=len(self.info.family_names))

    def contexts_from_feedback(self, data: RoutingData, query_idx, model_a, model_b, prefers_a,
                               capacity: int | None = None) -> Contexts:
        """Contexts in this router's units from users' judgements on queries of `data`: query
        indices into `data`, models by name or by index into `data`'s models (as
        `Contexts.from_feedback`). Models and task families are matched to this router's by name,
        so `data` may order or subset them differently; a model this router does not route is
        refused (`with_models` makes a router of `data`'s models)."""
        self._check_embed_dim(data)
        outcomes = feedback_outcomes(data, query_idx, model_a, model_b)
        def to_ours(ours_names, names) -> np.ndarray:   # data's index -> this router's (-1: none)
            ours = {name: i for i, name in enumerate(ours_names)}
            return np.array([ours.get(name, -1) for name in names], np.int32)

        model_ids = to_ours(self.model_names, data.model_names)
        for side in ("model_a", "model_b"):
            mapped = model_ids[outcomes[side]]
            if (mapped < 0).any():
                unknown = sorted(data.model_names[i] for i in np.unique(outcomes[side][mapped < 0]))
                raise ValueError(f"{side} names models this router does not route: {unknown}; it routes "
                                 f"{list(self.model_names)} (router.with_models(data) routes data's models)")
            outcomes[side] = mapped
        # a family the router never saw: unknown (-1)
        outcomes["family"] = to_ours(self.info.family_names, data.family_names)[outcomes["family"]]
        return self.contexts_from_outcomes(**outcomes, prefers_a=prefers_a, capacity=capacity)

    def arrays_for(self, data: RoutingData, descriptor_split: str | None = None) -> RoutingArrays:
        """Device arrays of `data` in this router's units (its cost standardisation and its
        model descriptors; for another model set, see `with_models`)."""
        split = descriptor_split or self.config.descriptor_source
        self._check_embed_dim(data)
        units = (self.info.log_cost_mean, self.info.log_cost_std)
        arrays = RoutingArrays.from_data(data, split, units, self._descriptors_for(data, split))
        # Standardised on the device, as evaluate's recorded results were (float32 XLA; the host's
        # float64 can differ in the last bit).
        log_cost = jnp.where(arrays.observed, (jnp.log10(jnp.maximum(arrays.cost, 1e-12)) - units[0]) / units[1], 0.0)
        return arrays.replace(log_cost=log_cost)

    def _check_embed_dim(self, data: RoutingData) -> None:
        if data.embed_dim != self.info.embed_dim:
            raise ValueError(f"data embeddings are {data.embed_dim}-d, the router was trained on {self.info.embed_dim}-d")

    def _descriptors_for(self, data: RoutingData, split: str, centring: str = "router") -> np.ndarray:
        """The router's own descriptors for its model set; for another set (models added, removed
        or unseen in training), descriptors from `data`'s `split`, by default centred as the
        router's training descriptors were, so a model that was in training keeps its descriptor."""
        if data.family_names != self.info.family_names:  # also the ids a family-aware router reads
            raise ValueError(f"models are described by their quality per task family: the data's families "
                             f"{list(data.family_names)} are not the router's {list(self.info.family_names)}")
        if data.model_names == self.model_names:
            return self.info.descriptors
        # Routers saved before the centre was kept: the data's own centring.
        centre = self.info.descriptor_centre if centring == "router" else ()
        return data.descriptors(split, centre=centre or None)

    def with_models(self, data: RoutingData, split: str | None = None, centring: str = "router") -> "MetaRouter":
        """This router for the models of `data` (added, removed or replaced; nothing is retrained).

        Each model is described from `data`'s calibration `split` (default: the training split
        name); the policy scores any model by its descriptor. The result routes, adapts, saves
        and evaluates with the new model set (names, indices and pools are `data`'s). For the
        router's own model set (the same names in the same order) its descriptors are kept.

        centring: "router" (default) subtracts what the router's training descriptors were centred
        on, so the models that stay keep their descriptors; "data" centres on the new set's own
        mean over models, as training did (experiments/generalisation.py measures both).
        """
        if centring not in ("router", "data"):
            raise ValueError(f"centring must be 'router' or 'data', got {centring!r}")
        if self.net_config.num_models and tuple(data.model_names) != tuple(self.model_names):
            raise ValueError(f"this router learned a vector for each of its own models (model_identity=True): it "
                             f"routes only {list(self.model_names)}, in that order; got {list(data.model_names)}")
        split = split or self.config.descriptor_source
        self._check_embed_dim(data)
        summary = data.model_summary(split)
        info = dataclasses.replace(
            self.info, model_names=tuple(data.model_names),
            descriptors=self._descriptors_for(data, split, centring),
            mean_quality=tuple(map(float, summary["quality"])), mean_cost=tuple(map(float, summary["cost"])))
        return MetaRouter(self.config, self.hparams, self.net_config, self.profiles, self.params, info, self.history)

    def _adapt_batched(self, params, contexts: Contexts, descriptors):
        batch_shape = contexts.mask.shape[:-1]
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[len(batch_shape):]), contexts)
        z = jax.vmap(adaptation.adapt, in_axes=(None, None, 0, None, None, None, None))(
            self.graphdef, params, flat, descriptors, self.config.inner_steps, self.config.first_order, self.atoms)
        return z.reshape(batch_shape + z.shape[-1:])

    def adapt(self, contexts: Contexts, router: str = "metarouter") -> jax.Array:
        """Each user's routing weights [..., Z] (the adapted latent) from contexts [..., N].

        Leading axes: many users at once. With the default atomic-posterior encoder the weights
        are the posterior average of the prior profiles' weights (Bayes-decision routing)."""
        params = self._router_params(router)
        if not isinstance(contexts, Contexts):
            raise TypeError(f"adapt takes Contexts (Contexts.from_feedback, from_outcomes, contexts_from_jsonl), "
                            f"got {type(contexts).__name__}")
        if contexts.query_emb.shape[-1] != self.info.embed_dim:
            raise ValueError(f"contexts hold {contexts.query_emb.shape[-1]}-d query embeddings, "
                             f"the router expects {self.info.embed_dim}-d")
        if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(contexts)):
            self._check_contexts(contexts)  # only concrete arrays can be checked (not under a trace)
        return self._adapt(params, contexts, self.info.descriptors)

    def _check_contexts(self, contexts: Contexts) -> None:
        """Refuse hand-built contexts whose arrays disagree in shape or kind, or whose valid
        contexts hold model indices out of range, labels other than 0/1, or NaN/inf."""
        mask = np.asarray(contexts.mask)
        shape = mask.shape
        if mask.dtype != bool or not shape:
            raise ValueError(f"contexts' mask must be a bool array [..., N], got {mask.dtype}{list(shape)}")
        want = {"query_emb": shape + (self.info.embed_dim,), "model_a": shape, "model_b": shape,
                "outcome_a": shape + (2,), "outcome_b": shape + (2,), "label": shape, "family": shape}
        arrays = {name: np.asarray(getattr(contexts, name)) for name in want}
        for name, x in arrays.items():
            if x.shape != want[name]:
                raise ValueError(f"contexts' {name} has shape {x.shape}, expected {want[name]} (mask {shape})")
            if name in ("model_a", "model_b", "family") and x.dtype.kind not in "iu":
                raise ValueError(f"contexts' {name} must hold integer indices, got {x.dtype}")
        num_models = len(self.model_names)
        for name in ("model_a", "model_b"):
            # A gather clamps an index out of range: a valid context naming model 7 of 5 would
            # silently read model 4's descriptor.
            index = arrays[name][mask]
            if index.size and (index.min() < 0 or index.max() >= num_models):
                raise ValueError(f"contexts' {name} holds model indices outside [0, {num_models}) "
                                 f"(got {index.min()}..{index.max()}): this router has {num_models} models")
        if np.any((arrays["model_a"] == arrays["model_b"]) & mask):
            raise ValueError("contexts compare a model with itself on a valid context (model_a == model_b): such "
                             "a judgement says nothing of the user's trade-off")
        family, num_families = arrays["family"][mask], len(self.info.family_names)
        if family.size and (family.min() < -1 or family.max() >= num_families):   # a gather would clamp it too
            raise ValueError(f"contexts' family holds ids outside [-1, {num_families}) (got {family.min()}.."
                             f"{family.max()}): this router knows {num_families} task families (-1: unknown)")
        label = arrays["label"]
        if not np.all((label == 0) | (label == 1) | ~mask):
            raise ValueError("contexts' label must be 1 (a preferred) or 0 (b preferred) on every valid context")
        for name in ("query_emb", "outcome_a", "outcome_b"):
            x = arrays[name]  # a finite sum: every entry finite (an overflowing one gets the exact check)
            if not np.isfinite(x.sum()) and not np.isfinite(x).all(-1)[mask].all():
                raise ValueError(f"contexts' {name} holds NaN/inf on a valid context")

    def _router_params(self, router: str):
        """The parameters of one of this MetaRouter's routers, by name."""
        if router not in self.params:
            raise ValueError(f"unknown router {router!r}; this MetaRouter has {sorted(self.params)}")
        return self.params[router]

    def _checked_latent(self, latent) -> np.ndarray:
        """The routing weights as a float32 host array, refused unless [..., Z] and finite."""
        latent = np.asarray(latent, np.float32)
        if latent.shape[-1:] != (self.net_config.latent_dim,):
            raise ValueError(f"latent must end in {self.net_config.latent_dim}, got shape {latent.shape}")
        if not np.all(np.isfinite(latent)):
            # argmax over NaN scores is model 0 for every query: a silent, wrong routing
            raise ValueError("the latent (routing weights) holds NaN/inf: cannot route with it")
        return latent

    def _route_batched(self, params, latent, query_emb, descriptors, allowed, family=None):
        def one_user(z):
            scores = adaptation.route_scores(self.graphdef, params, query_emb, z, descriptors, allowed, family)
            return jnp.argmax(scores, -1)

        batch_shape = latent.shape[:-1]
        out = jax.vmap(one_user)(latent.reshape((-1, latent.shape[-1])))
        return out.reshape(batch_shape + out.shape[-1:])

    def route(self, latent, query_emb, pool: Sequence[str] | Sequence[int] | np.ndarray | None = None,
              router: str = "metarouter", family=None) -> np.ndarray:
        """Model index per query: latent (routing weights) [..., Z], query_emb [Q, D] -> [..., Q] int32.

        pool: the routable models (names, indices or a [K] bool mask); None = all.
        family: the queries' task families, [Q] names or ids (-1: unknown), for a router trained
        with `family_quality`; another router routes every query as of an unknown family, but
        checks the names and ids all the same (a misspelt family is an error with any router).
        """
        params = self._router_params(router)
        latent = self._checked_latent(latent)
        query_emb = np.asarray(query_emb, np.float32)
        if query_emb.ndim != 2 or query_emb.shape[1] != self.info.embed_dim:
            raise ValueError(f"query_emb must be [Q, {self.info.embed_dim}], got shape {query_emb.shape}")
        if not np.all(np.isfinite(query_emb)):
            raise ValueError("query embeddings hold NaN/inf")
        # Host arrays go to the jitted program as they are: one transfer, no extra dispatch each.
        family = self._query_family(family, query_emb.shape[0])
        return np.asarray(self._route(params, latent, query_emb, self.info.descriptors, self.pool_mask(pool), family))

    def _query_family(self, family, num_queries: int) -> np.ndarray | None:
        """[Q] int32 family ids from names or ids; None where the policy does not read them
        (checked all the same: a misspelt family is an error with any router)."""
        if family is None:
            return np.full(num_queries, -1, np.int32) if self.net_config.family_quality else None
        family = np.asarray(family)
        if family.shape != (num_queries,):
            raise ValueError(f"family must give one task family per query ({num_queries}), got shape {family.shape}")
        names = self.info.family_names
        if family.size == 0:                 # no queries: nothing to name (np.asarray([]) is float)
            family = family.astype(np.int32)
        elif family.dtype.kind == "O" and all(isinstance(f, str) for f in family.tolist()):
            family = family.astype(str)      # names in an object array (a pandas column of strings)
        if family.dtype.kind in "US":
            unknown = sorted(set(family.tolist()) - set(names))
            if unknown:
                raise KeyError(f"unknown task family name(s) {unknown}; the router's families: {list(names)}")
            return np.asarray([names.index(f) for f in family.tolist()], np.int32)
        if family.dtype.kind not in "iu" or (family.size and (family.min() < -1 or family.max() >= len(names))):
            raise ValueError(f"family ids must be integers in [-1, {len(names)}), got {family.tolist()[:8]}")
        return family.astype(np.int32) if self.net_config.family_quality else None

    def pool_mask(self, pool) -> np.ndarray:
        """[K] bool mask of a pool given as None (every model), a bool mask, names or indices."""
        return pool_mask(self.model_names, pool)

    def check_texts(self, texts: str | Sequence[str], family=None, pool=None) -> list[str]:
        """`route_text`'s arguments checked without embedding anything: every text a non-empty
        string (as a feedback file's queries), the family names or ids known to the router (also
        where it does not read them: a misspelt family is an error), the pool's models. Returns
        the texts as a list (a single string is one text)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(texts, start=1):
            if not isinstance(text, str):
                raise TypeError(f"query text {i} of {len(texts)} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise ValueError(f"query text {i} of {len(texts)} is empty: give the text of each query to route")
        if isinstance(family, str):          # one name for every text: checked even for no text
            self._query_family([family], 1)
        else:
            self._query_family(family, len(texts))
        self.pool_mask(pool)
        return texts

    def embed_texts(self, texts: Sequence[str], embedder) -> np.ndarray:
        """[Q, D] embeddings of `texts` by `embedder`, refused unless D is the router's width."""
        emb = np.asarray(embedder.embed(list(texts)), np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.info.embed_dim:
            raise ValueError(f"the text embedder gives embeddings of shape {emb.shape}, this router was trained on "
                             f"{self.info.embed_dim}-d ones: raw text needs a router trained on that embedder's "
                             "embeddings of its queries")
        return emb

    def route_text(self, latent, texts: str | Sequence[str], pool=None, embedder=None, family=None) -> list:
        """Embed raw query texts (the optional `text` extra) and route them; returns model names.

        A single string is one text (a list of one name), not a sequence of characters.
        family: one task-family name for every text, or one per text (see `route`)."""
        self._checked_latent(latent)  # these before loading an embedder for nothing
        texts = self.check_texts(texts, family, pool)
        if isinstance(family, str):
            family = [family] * len(texts)
        if embedder is None:
            from metarouter_jax.text import TextEmbedder
            embedder = TextEmbedder()
        choice = self.route(latent, self.embed_texts(texts, embedder), pool=pool, family=family)
        return np.asarray(self.model_names, dtype=object)[choice].tolist()
