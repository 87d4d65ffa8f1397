"""Loaders for public routing-log formats; each returns a validated `RoutingData`."""

from metarouter_jax.loaders.routerbench import load_routerbench
from metarouter_jax.loaders.llmrouter import load_llmrouter
from metarouter_jax.loaders.routerarena import load_routerarena
from metarouter_jax.loaders.routellm import load_routellm
from metarouter_jax.loaders.registry import DATASETS, load_dataset

__all__ = ["load_routerbench", "load_llmrouter", "load_routerarena", "load_routellm", "load_dataset", "DATASETS"]
