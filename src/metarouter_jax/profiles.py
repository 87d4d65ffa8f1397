"""Preference profiles: families of user utilities u(quality, cost), each with a prior.

A profile is a small pytree of arrays (one user); a `ProfileFamily` is a static object
that samples them and evaluates their utility, in the style of learned_optimization's
`TaskFamily`. Every family carries `log10_lam` (willingness to pay, quality points per USD)
so that Bradley-Terry plug-ins can infer it and the known-preference router can be fed it;
`linear_profile(log10_lam)` embeds the linear special case into a richer family.

All functions are written for ONE user and ONE query; callers vmap.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from metarouter_jax.data import RoutingData

Profile = dict  # name -> array; one user's parameters


def _rbf(x, lo, hi, num):
    """Raw value scaled to [-1, 1] plus `num` radial-basis bumps over [lo, hi].

    A single scalar log10(lam) is easy for a router to ignore (DESIGN.md section 9); the
    bumps give every region of the range its own input direction.
    """
    centres = jnp.linspace(lo, hi, num)
    width = (hi - lo) / (num - 1)
    raw = 2.0 * (x - lo) / (hi - lo) - 1.0
    return jnp.concatenate([raw[None], jnp.exp(-0.5 * ((x - centres) / width) ** 2)])


@dataclasses.dataclass(frozen=True)
class LinearProfiles:
    """u = q - lam * c, with log10(lam) ~ U[lo, hi]."""

    log10_lam_range: tuple[float, float] = (0.0, 4.0)
    num_rbf: int = 8
    name: str = "linear"

    def sample(self, key) -> Profile:
        lo, hi = self.log10_lam_range
        return {"log10_lam": jax.random.uniform(key, (), minval=lo, maxval=hi)}

    def linear_profile(self, log10_lam) -> Profile:
        return {"log10_lam": jnp.asarray(log10_lam, jnp.float32)}

    def utility(self, profile: Profile, quality, cost, family):
        """quality, cost: [K] (USD); family: scalar id. Returns [K]."""
        del family
        return quality - 10.0 ** profile["log10_lam"] * cost

    def features(self, profile: Profile):
        """[num_rbf + 1] features for the known-preference router."""
        return _rbf(profile["log10_lam"], *self.log10_lam_range, self.num_rbf)

    def targets(self, profile: Profile):
        """[1] standardised quantities an auxiliary head learns to predict from the latent."""
        lo, hi = self.log10_lam_range
        return (2.0 * (profile["log10_lam"] - lo) / (hi - lo) - 1.0)[None]

    @property
    def feature_dim(self) -> int:
        return self.num_rbf + 1

    @property
    def target_dim(self) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class FamilyWeightProfiles(LinearProfiles):
    """u = w[family] * q - lam * c: a user who values quality differently per task family.

    log w ~ N(0, sigma^2) per family, independently. One lam cannot express "code answers
    are worth paying for, trivia is not", so a linear model is misspecified for these users.
    """

    num_families: int = 1
    weight_sigma: float = 0.8
    name: str = "family_weights"

    def sample(self, key) -> Profile:
        key_lam, key_w = jax.random.split(key)
        profile = super().sample(key_lam)
        profile["log_weights"] = self.weight_sigma * jax.random.normal(key_w, (self.num_families,))
        return profile

    def linear_profile(self, log10_lam) -> Profile:
        return {"log10_lam": jnp.asarray(log10_lam, jnp.float32),
                "log_weights": jnp.zeros((self.num_families,))}

    def utility(self, profile: Profile, quality, cost, family):
        """Where the family is unknown (-1: raw text, real users) quality counts at weight 1."""
        weight = jnp.where(family >= 0, jnp.exp(profile["log_weights"][jnp.maximum(family, 0)]), 1.0)
        return weight * quality - 10.0 ** profile["log10_lam"] * cost

    def features(self, profile: Profile):
        return jnp.concatenate([super().features(profile), profile["log_weights"] / self.weight_sigma])

    def targets(self, profile: Profile):
        return jnp.concatenate([super().targets(profile), profile["log_weights"] / self.weight_sigma])

    @property
    def feature_dim(self) -> int:
        return self.num_rbf + 1 + self.num_families

    @property
    def target_dim(self) -> int:
        return 1 + self.num_families


@dataclasses.dataclass(frozen=True)
class BudgetProfiles(LinearProfiles):
    """u = q - lam * c - penalty * max(0, c / cap - 1): a soft per-query budget cap (USD).

    log10(cap) ~ U[cap_range]; above the cap the utility falls steeply, whatever the quality.
    """

    log10_cap_range: tuple[float, float] = (-4.0, -1.5)
    penalty: float = 2.0
    name: str = "budget"

    def sample(self, key) -> Profile:
        key_lam, key_cap = jax.random.split(key)
        profile = super().sample(key_lam)
        lo, hi = self.log10_cap_range
        profile["log10_cap"] = jax.random.uniform(key_cap, (), minval=lo, maxval=hi)
        return profile

    def linear_profile(self, log10_lam) -> Profile:
        """The user with this lam and the loosest cap of the prior: the nearest to a linear user
        that the known router was trained on (a cap of 1e10 USD, the linear user itself, was
        read by it as an input far outside its training range, clipped)."""
        return {"log10_lam": jnp.asarray(log10_lam, jnp.float32),
                "log10_cap": jnp.asarray(self.log10_cap_range[1], jnp.float32)}

    def utility(self, profile: Profile, quality, cost, family):
        over = jnp.maximum(cost / 10.0 ** profile["log10_cap"] - 1.0, 0.0)
        return super().utility(profile, quality, cost, family) - self.penalty * over

    def features(self, profile: Profile):
        lo, hi = self.log10_cap_range
        cap = jnp.clip(2.0 * (profile["log10_cap"] - lo) / (hi - lo) - 1.0, -2.0, 2.0)
        return jnp.concatenate([super().features(profile), cap[None]])

    def targets(self, profile: Profile):
        return jnp.concatenate([super().targets(profile), self.features(profile)[-1:]])

    @property
    def feature_dim(self) -> int:
        return self.num_rbf + 2

    @property
    def target_dim(self) -> int:
        return 2


@struct.dataclass
class Atoms:
    """A fixed set of G profiles spanning the prior: the support of an atomic posterior.

    features: [G, F] their `features` (the known router's input); targets: [G, T] their
    standardised `targets`; width: kernel width in target space (median distance from an atom
    to its nearest neighbour), used to score a posterior against a true profile; log10_lam:
    [G] their willingness to pay (what an informative pair tests); profiles: the atoms'
    parameters (a `Profile` with a leading [G] axis) and family: their `ProfileFamily`, so their
    utilities can be evaluated; scale: [G] their utility scales on the training queries (as
    users are normalised; 1 until `with_scales` measures them).
    """

    features: jax.Array
    targets: jax.Array
    width: jax.Array
    log10_lam: jax.Array
    profiles: Profile
    scale: jax.Array
    family: LinearProfiles = struct.field(pytree_node=False)

    def utilities(self, quality, cost, task_family):
        """[G, N] each atom's scale-normalised utility of N answers (quality, cost USD, family: [N])."""
        u = jax.vmap(self.family.utility, in_axes=(0, None, None, None))(self.profiles, quality, cost, task_family)
        return u / self.scale[:, None]

    def with_scales(self, scales) -> "Atoms":
        """The atoms with measured utility scales [G] (`tasks.utility_scale` of each atom)."""
        scales = jnp.asarray(scales, jnp.float32)
        if scales.shape != self.scale.shape or not bool(jnp.all(scales > 0)):
            raise ValueError(f"atom scales must be {self.scale.shape[0]} positive numbers, got shape {scales.shape}")
        return self.replace(scale=scales)


def make_atoms(profiles: LinearProfiles, num: int) -> Atoms:
    """G atoms: log10(lam) on the midpoints of G equal bins of the prior range (exactly a grid
    for linear users), the family's other parameters drawn from its prior with a fixed key."""
    if num < 2:
        raise ValueError(f"an atomic posterior needs at least 2 atoms, got {num}")
    key_sample, key_order = jax.random.split(jax.random.key(0))
    atoms = jax.vmap(profiles.sample)(jax.random.split(key_sample, num))
    lo, hi = profiles.log10_lam_range
    lam = lo + (hi - lo) * (jnp.arange(num) + 0.5) / num
    atoms["log10_lam"] = lam if len(atoms) == 1 else jax.random.permutation(key_order, lam)
    features = jax.vmap(profiles.features)(atoms)
    targets = np.asarray(jax.vmap(profiles.targets)(atoms))
    dist = np.sqrt(((targets[:, None] - targets[None]) ** 2).sum(-1)) + np.diag(np.full(num, np.inf))
    return Atoms(features=features, targets=jnp.asarray(targets), width=jnp.asarray(np.median(dist.min(1)), jnp.float32),
                 log10_lam=jnp.asarray(atoms["log10_lam"], jnp.float32), profiles=atoms,
                 scale=jnp.ones((num,), jnp.float32), family=profiles)


PROFILE_FAMILIES: dict[str, Callable[..., LinearProfiles]] = {
    "linear": LinearProfiles,
    "family_weights": FamilyWeightProfiles,
    "budget": BudgetProfiles,
}


def check_profile_family(name: str) -> None:
    """Raise KeyError unless `name` is a registered profile family (before any data is loaded)."""
    if name not in PROFILE_FAMILIES:
        raise KeyError(f"unknown profile family {name!r}; registered: {sorted(PROFILE_FAMILIES)}")


def make_profiles(name: str, data: RoutingData | None = None, **kwargs) -> LinearProfiles:
    """Build a registered profile family; data-dependent sizes (families) come from `data`."""
    check_profile_family(name)
    cls = PROFILE_FAMILIES[name]
    if name == "family_weights" and "num_families" not in kwargs:
        if data is None:
            raise ValueError("the family_weights profile needs the data (its number of families)")
        kwargs["num_families"] = data.num_families
    return cls(**kwargs)


def register_profile_family(name: str, factory: Callable[..., LinearProfiles]) -> None:
    """Add a profile family to the registry (for user-defined utilities)."""
    if name in PROFILE_FAMILIES:
        raise ValueError(f"profile family {name!r} is already registered")
    PROFILE_FAMILIES[name] = factory


def frontier_log10_lam_range(data: RoutingData, split: str = "train", margin: float = 0.5) -> tuple[float, float]:
    """A log10(lam) range in which every Pareto-frontier model is the best fixed choice for some lam.

    Between consecutive frontier models (by mean cost) the switch point is
    lam = dq / dc; the range covers all switch points with `margin` decades either side.
    """
    frontier = data.pareto_frontier(split)
    summary = data.model_summary(split)
    q, c = summary["quality"][frontier], summary["cost"][frontier]
    if frontier.size < 2:
        return (0.0, 4.0)
    switch = np.log10(np.diff(q) / np.diff(c))
    return (float(np.floor((switch.min() - margin) * 2) / 2), float(np.ceil((switch.max() + margin) * 2) / 2))
