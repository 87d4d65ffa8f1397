"""Configuration: static `TrainConfig` (shapes, loop counts, switches) and traced `Hparams`.

Everything that sets a shape or a loop count is static and lives in the frozen dataclass;
everything a sweep may vary is an array in the `Hparams` pytree, so `jax.vmap(train)` over
hyperparameters is one program (STYLE.md, habit 2).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

LATENT_SOURCES = ("contexts", "profile", "none")
LOSSES = ("full", "bandit")
LIKELIHOODS = ("learned", "bradley_terry")
# early stopping's score (`TrainConfig.valid_criterion`) -> its history key (`Trainer.validation_score`)
VALID_KEYS = {"utility": "valid_utility", "worst_band": "valid_worst_band"}
VALID_CRITERIA = tuple(VALID_KEYS)
# where the log10-cost standardisation is measured: the training queries (the descriptor split)
# or every query of the data, test included (every result and router made before the field existed)
COST_UNITS = ("train", "all")
# Fields whose default changed: a recorded config (result file, router.json, training checkpoint)
# that lacks the field was made with this value, not today's default (`TrainConfig.from_dict`).
LEGACY_VALUES = {"cost_units": "all"}
# early stopping's score -> what it is, in words (the CLI's printouts, the sweep's table and plot)
VALID_LABELS = {"utility": "held-out normalised utility",
                "worst_band": "worst log10(lam) band's margin over the best fixed model"}
FREEZABLE = ("encoder", "policy", "profile_embedding", "profile_head")
FROZEN_WHEN_WARM = ("policy", "profile_embedding")  # the known router's parts a warm-started MetaRouter keeps
POSITIVE_INTS = ("num_steps", "chunk_steps", "tasks_per_step", "queries_per_task", "max_contexts",
                 "hidden", "latent_dim", "query_dim", "valid_users", "valid_bands", "calib_queries")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the networks and hyperparameters are float32


def _is_number(x) -> bool:
    return (_is_int(x) or isinstance(x, (float, np.floating))) and bool(np.isfinite(x)) and abs(x) <= FLOAT32_MAX


def expected_type(kind: str, value) -> str | None:
    """What a value of a field annotated `kind` must be, or None when `value` is one. TrainConfig
    checks its fields with it, and the command line its `key=value` overrides."""
    if kind.startswith("tuple[float, float]"):  # a (lo, hi) range, optional where "| None"
        ok = (value is None and kind.endswith("None")) or (
            isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_number, value)))
        return None if ok else "two finite numbers [lo, hi]"
    if kind == "tuple[str, ...]":
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of network parts, e.g. ['policy']"
    tests = {"int": (_is_int, "an integer"), "float": (_is_number, "a finite number (in float32's range)"),
             "jnp.ndarray": (_is_number, "a finite number (in float32's range)"),  # one Hparams value per run
             "bool": (lambda v: isinstance(v, (bool, np.bool_)), "true or false"),
             "str": (lambda v: isinstance(v, str), "a string")}
    test, text = tests.get(kind, (lambda v: True, ""))
    return None if test(value) else text


def _check_types(config: TrainConfig) -> None:
    """Each field has its annotated type (ints are ints, not 2.5 or "16"); lists become tuples."""
    for field in dataclasses.fields(config):
        name, value, kind = field.name, getattr(config, field.name), field.type
        expected = expected_type(kind, value)
        if expected:
            raise ValueError(f"{name} must be {expected}, got {value!r}")
        if isinstance(value, list):
            object.__setattr__(config, name, tuple(value))
        elif kind in ("int", "float"):  # numpy numbers -> Python's, for JSON
            object.__setattr__(config, name, int(value) if kind == "int" else float(value))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static meta-training configuration.

    Loop and batch sizes: `num_steps` meta-steps of `tasks_per_step` sampled users, each with
    `queries_per_task` training queries and a context set of capacity `max_contexts`; steps run
    in jitted chunks of `chunk_steps`, after each of which the router is scored on held-out
    users and queries (`valid_split`) and the best parameters are kept (early stopping).
    """

    num_steps: int = 2000
    chunk_steps: int = 100
    tasks_per_step: int = 32
    queries_per_task: int = 32
    max_contexts: int = 32
    # networks
    hidden: int = 64
    latent_dim: int = 16
    query_dim: int = 8             # small query pathway: routers overfit per-query 0/1 labels
    gaussian_encoder: bool = False
    profile_latent: bool = True    # encoder infers profile features, shared embedding with `known`
    context_query: bool = False    # the encoder's per-context features see the query embeddings (memorisation
                                   # risk); the utility head v_psi(x, d, outcome, z) of the pair loss and of
                                   # inner refinement reads the query either way (DESIGN.md section 6)
    context_family: bool = False   # ... and their task family (one-hot; did not help family-weight users at n = 6)
    family_quality: bool = False   # the policy sees each model's calibration quality on the query's own task
                                   # family (needs the family when routing; carries over to new families)
    answer_weight: float = 0.0     # > 0: a supervised auxiliary loss on the policy's answer components, a
                                   # linear readout of each answer's quality (cross-entropy) and log cost
    model_identity: bool = False   # the policy also learns a free vector per model, beside its descriptor:
                                   # the router then routes only the models it was trained on
    posterior_atoms: int = 128     # > 0: atomic posterior over this many prior profiles, Bayes-decision routing
    likelihood: str = "bradley_terry"  # the atomic posterior's likelihood: each atom's Bradley-Terry likelihood
                                       # plus a learned correction, or "learned" (a per-context network alone)
    inner_steps: int = 0
    first_order: bool = False
    # task distribution
    profile: str = "linear"
    log10_lam_range: tuple[float, float] | None = None  # None: the data's Pareto-frontier range
    beta_range: tuple[float, float] = (3.0, 30.0)        # Bradley-Terry rationality, log-uniform
    informative_fraction: float = 0.5                    # users whose pairs use the informative strategy
    pool_dropout: float = 0.0                            # chance a model leaves a training user's pool
    observe_quality: bool = True
    # objective
    loss: str = "full"                                   # "full" (expected utility) or "bandit" (REINFORCE)
    latent_source: str = "contexts"                      # "profile": known-preference; "none": agnostic
    joint_known: bool = True      # with profile_latent: also train the known-profile pathway each step
    freeze_known: bool = True     # MetaRouter.fit: the warm-started MetaRouter keeps the known router's
                                  # policy and profile embedding fixed and trains its encoder on top
    frozen: tuple[str, ...] = ()  # RouterNet parts whose parameters do not train (set by fit)
    ema_decay: float = 0.0        # > 0: validation scores, and early stopping keeps, a running average of the
                                  # parameters (the mean of the iterates, then an EMA with this decay); 0: the iterate
    # noise-injection switches (their levels are Hparams)
    label_flips: bool = True
    outcome_noise: bool = True
    random_counts: bool = True
    latent_noise: bool = True
    # data
    train_split: str = "train"
    valid_split: str = "valid"
    valid_users: int = 128
    valid_criterion: str = "utility"  # what early stopping keeps the best of: "utility" (mean normalised utility
                                      # of the validation users) or "worst_band" (the lowest, over `valid_bands`
                                      # log10(lam) bands of them, of the band's mean margin over the best fixed
                                      # model in hindsight; on RouterBench it kept routers that barely route, README)
    valid_bands: int = 4
    calib_queries: int = 256
    descriptor_split: str = ""    # the calibration split the model descriptors come from ("": train_split)
    cost_units: str = "train"     # the log10-cost standardisation's mean and std over the observed cells of
                                  # the descriptor split's queries ("train"), or of every query ("all": the
                                  # held-out and test queries' costs shape the units; before 2026-12-01)

    def __post_init__(self):
        _check_types(self)
        if self.latent_source not in LATENT_SOURCES:
            raise ValueError(f"latent_source must be one of {LATENT_SOURCES}, got {self.latent_source!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_steps % self.chunk_steps:
            raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of chunk_steps ({self.chunk_steps})")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.posterior_atoms and (self.posterior_atoms < 2 or not self.profile_latent or self.gaussian_encoder):
            raise ValueError(f"posterior_atoms={self.posterior_atoms}: an atomic posterior needs at least 2 atoms, "
                             "profile_latent=True and gaussian_encoder=False")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.likelihood == "bradley_terry" and self.posterior_atoms and not self.observe_quality:
            raise ValueError("likelihood='bradley_terry' scores the atoms' utilities of the answers, which needs "
                             "their quality: with observe_quality=False set likelihood='learned'")
        unknown = sorted(set(self.frozen) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"frozen holds unknown network parts {unknown}; parts: {FREEZABLE}")
        if not (math.isfinite(self.answer_weight) and self.answer_weight >= 0.0):
            raise ValueError(f"answer_weight must be a finite number >= 0 (0: no answer loss), got {self.answer_weight}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no parameter average), got {self.ema_decay}")
        if self.cost_units not in COST_UNITS:
            raise ValueError(f"cost_units must be one of {COST_UNITS}, got {self.cost_units!r}")
        if self.valid_criterion not in VALID_CRITERIA:
            raise ValueError(f"valid_criterion must be one of {VALID_CRITERIA}, got {self.valid_criterion!r}")
        if self.valid_bands > self.valid_users:
            raise ValueError(f"valid_bands ({self.valid_bands}) must be at most valid_users ({self.valid_users}): "
                             "every band needs a validation user")
        if not 0.0 <= self.pool_dropout < 1.0:
            raise ValueError(f"pool_dropout must be in [0, 1), got {self.pool_dropout}")
        if not 0.0 <= self.informative_fraction <= 1.0:
            raise ValueError(f"informative_fraction must be in [0, 1], got {self.informative_fraction}")
        lo, hi = self.beta_range
        if not 0.0 < lo <= hi:  # log-uniform: both ends positive
            raise ValueError(f"beta_range must be two positive numbers lo <= hi, got {self.beta_range}")
        if self.log10_lam_range is not None and not self.log10_lam_range[0] < self.log10_lam_range[1]:
            raise ValueError(f"log10_lam_range must be (lo, hi) with lo < hi, got {self.log10_lam_range}")

    @property
    def descriptor_source(self) -> str:
        """The split the model descriptors are computed from."""
        return self.descriptor_split or self.train_split

    @property
    def num_chunks(self) -> int:
        return self.num_steps // self.chunk_steps

    @property
    def valid_key(self) -> str:
        """The history key of early stopping's score (`VALID_KEYS`; "valid_utility" by default)."""
        return VALID_KEYS[self.valid_criterion]

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> dict[str, Any]:
        """`to_dict()` as a JSON file records it (tuples as lists): what result files and
        config.json hold, for comparing with them."""
        return json.loads(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A recorded config (`to_dict`); a field it lacks takes its `LEGACY_VALUES` value where
        the default has changed since (the config was made before the field existed), else the
        default."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        values = {**LEGACY_VALUES, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}}
        return cls(**values)


@struct.dataclass
class Hparams:
    """Traced hyperparameters (arrays); vmap over a batch of them to sweep."""

    learning_rate: jnp.ndarray = 3e-3
    weight_decay: jnp.ndarray = 1e-3
    entropy_start: jnp.ndarray = 0.1   # entropy weight, annealed geometrically ...
    entropy_end: jnp.ndarray = 0.01    # ... to this (DESIGN.md section 9: avoids early collapse)
    flip_max: jnp.ndarray = 0.1        # label-flip probability ~ U[0, flip_max] per training user
    outcome_noise: jnp.ndarray = 0.1   # std of Gaussian noise on context outcome features
    latent_noise: jnp.ndarray = 0.1    # std of Gaussian noise on the latent
    query_noise: jnp.ndarray = 0.3     # std of Gaussian noise on the policy's query projection
    pair_weight: jnp.ndarray = 0.5     # held-out pairwise-prediction auxiliary loss
    profile_weight: jnp.ndarray = 0.5  # profile-prediction auxiliary loss (training profiles are known)
    kl_weight: jnp.ndarray = 0.01      # KL to N(0, I) for the Gaussian encoder

    @classmethod
    def create(cls, **values) -> "Hparams":
        """Hyperparameters as float32 arrays, broadcast to one common shape.

        Give arrays of length S for some fields to get a batch of S configurations (the others
        are repeated), ready for `jax.vmap(trainer.train)`.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {sorted(fields)}")
        merged = {}
        for name, value in {**cls().to_dict(), **values}.items():
            try:
                merged[name] = jnp.asarray(value, jnp.float32)
            except (TypeError, ValueError):
                raise ValueError(f"hyperparameter {name} must be a number or an array of numbers, "
                                 f"got {value!r}") from None
            _check_hparam(name, merged[name])
        try:
            shape = jnp.broadcast_shapes(*(v.shape for v in merged.values()))
        except ValueError as err:
            raise ValueError(f"hyperparameter arrays have incompatible shapes: "
                             f"{ {k: v.shape for k, v in merged.items() if v.shape} }") from err
        return cls(**{k: jnp.broadcast_to(v, shape) for k, v in merged.items()})

    @classmethod
    def grid(cls, **axes) -> "Hparams":
        """The Cartesian product of the given value lists, flattened to one batch axis [S]."""
        names = list(axes)
        mesh = np.meshgrid(*[np.asarray(axes[n], np.float32) for n in names], indexing="ij")
        return cls.create(**{n: m.ravel() for n, m in zip(names, mesh)})

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.learning_rate))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> dict[str, Any]:
        return {k: jnp.asarray(v).tolist() for k, v in self.to_dict().items()}


def _check_hparam(name: str, value: jnp.ndarray) -> None:
    """Every hyperparameter is a finite rate, weight or noise level >= 0 (learning_rate > 0;
    flip_max, a probability, <= 1). Traced values (inside jit/vmap) are not checked."""
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value).ravel()
    checks = [(~np.isfinite(v), "be finite")]
    checks.append((v <= 0, "be > 0") if name == "learning_rate" else (v < 0, "be >= 0"))
    if name == "flip_max":
        checks.append((v > 1, "be <= 1 (a probability)"))
    for bad, need in checks:
        if np.any(bad):
            raise ValueError(f"hyperparameter {name} must {need}, got {v[bad][:5].tolist()}")


def dumps(config: TrainConfig, hparams: Hparams) -> str:
    return json.dumps({"config": config.to_dict(), "hparams": hparams.to_json()}, indent=2)
