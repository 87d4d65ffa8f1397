"""metarouter_jax: meta-learned LLM routers that adapt to a user's cost-quality preference.

    import metarouter_jax as mr
    data = mr.synthetic_data(seed=0)
    router = mr.MetaRouter.fit(data, mr.TrainConfig(), seed=0)
    ctx = router.contexts_from_feedback(data, query_idx, model_a, model_b, prefers_a, capacity=16)
    latent = router.adapt(ctx)
    choice = router.route(latent, data.embeddings[idx])
    report = mr.evaluate(router, data, split="test")
"""

from metarouter_jax import curves  # noqa: F401  (mr.curves: cost-quality curves and AIQ of banded reports)
from metarouter_jax.checkpoint import CheckpointError
from metarouter_jax.compile_cache import disable_compilation_cache, enable_compilation_cache
from metarouter_jax.config import Hparams, TrainConfig
from metarouter_jax.contexts import PAIR_STRATEGIES, Contexts
from metarouter_jax.data import DataError, RoutingData, data_root
from metarouter_jax.evaluation import DEFAULT_N_CONTEXTS, EvalReport, evaluate
from metarouter_jax.loaders import (DATASETS, load_dataset, load_llmrouter, load_routellm, load_routerarena,
                                    load_routerbench)
from metarouter_jax.profiles import PROFILE_FAMILIES, make_profiles, register_profile_family
from metarouter_jax.router import MetaRouter
from metarouter_jax.synthetic import synthetic_data
from metarouter_jax.training import make_train, run_training

__version__ = "0.1.0"


def __getattr__(name):
    # The text embedder needs the optional `text` extra; import it only when asked for.
    if name == "TextEmbedder":
        from metarouter_jax.text import TextEmbedder
        return TextEmbedder
    raise AttributeError(f"module 'metarouter_jax' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "Contexts", "DATASETS", "DEFAULT_N_CONTEXTS", "DataError", "EvalReport", "Hparams",
    "MetaRouter", "PAIR_STRATEGIES", "PROFILE_FAMILIES", "RoutingData", "TextEmbedder", "TrainConfig",
    "data_root", "disable_compilation_cache", "enable_compilation_cache", "evaluate", "load_dataset",
    "load_llmrouter", "load_routellm", "load_routerarena", "load_routerbench", "make_profiles", "make_train",
    "register_profile_family", "run_training", "synthetic_data",
]
